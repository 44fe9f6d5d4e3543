"""Acceptance: `ablate run experiments/smoke.yaml` on 2 CPU cores, and reading its results.

Everything here shares one run of the smoke matrix (the session fixture `smoke_db`).
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.execution import runner as ablate_runner
from ablate.execution.matrix import load_matrix
from ablate.training.data import prepare

from .conftest import REPO, SMOKE_MATRIX

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def query(db, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(sql, params).fetchall()


def mainrun_eval_steps(train_tokens: int, cfg) -> list[int]:
    """MAINRUN.md §5 and §8: the steps at which a full run evaluates."""
    batches_per_epoch = train_tokens // (cfg.block_size * cfg.batch_size)
    steps_per_epoch = batches_per_epoch // cfg.grad_accum_steps
    max_steps = cfg.epochs * steps_per_epoch
    interval = steps_per_epoch // cfg.evals_per_epoch
    return [s for s in range(1, max_steps + 1) if s == 1 or s % interval == 0 or s == max_steps]


def flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def test_smoke_run_completes_every_run(smoke_db):
    """How long it takes is measured by `benchmarks/run.py --only smoke` (BENCHMARKS.md), never
    asserted here: a slower or busier machine is not a failure."""
    assert smoke_db.returncode == 0
    assert "9 completed" in flat(smoke_db.stdout)


def test_one_completed_run_per_config_with_every_evaluation(smoke_db, hn_csv):
    matrix = load_matrix(SMOKE_MATRIX)
    planned = matrix.expand(hn_csv)
    hashes = [row.hash for row in ablate_runner.plan(matrix, hn_csv)]
    assert len(planned) == 9 and len(set(hashes)) == len(planned)

    linked = query(smoke_db, """
        select er.position, er.name, r.hash, r.status, r.attempt, r.seed, r.steps, r.max_steps,
               r.final_val_loss, r.truncated
        from experiment_runs er join experiments e on e.id = er.experiment_id
        join runs r on r.id = er.run_id where e.name = ? order by er.position""", matrix.name)
    assert [(pos, name, h) for pos, name, h, *_ in linked] == [
        (i, p.name, h) for i, (p, h) in enumerate(zip(planned, hashes))]
    assert query(smoke_db, "select count(*) from runs") == [(len(planned),)]

    expected_steps = {}
    for p, (*_, status, attempt, seed, steps, max_steps, final, truncated) in zip(planned, linked):
        assert (status, attempt, seed, truncated) == ("completed", 1, p.seed, 0), p.name
        data = prepare(p.config)  # the tokenized data (cached by the run), read independently
        key = (len(data.train_ids), p.config.block_size, p.config.batch_size, p.config.epochs)
        expected_steps.setdefault(key, mainrun_eval_steps(len(data.train_ids), p.config))
        want = expected_steps[key]
        assert steps == max_steps == want[-1], p.name
        got = query(smoke_db, """
            select ev.step, ev.val_loss, ev.val_loss_full, ev.eval_coverage from evals ev
            join runs r on r.id = ev.run_id and ev.attempt = r.attempt
            where r.hash = ? order by ev.step""", hashes[planned.index(p)])
        assert [s for s, *_ in got] == want, p.name
        assert all(v is not None and full is not None and 0 < cov <= 1 for _, v, full, cov in got)
        assert got[-1][1] == pytest.approx(final)
    # every step between evaluations has its train loss, lr and grad norm
    assert query(smoke_db, "select count(*) from step_metrics") == [(sum(
        steps for *_, steps, _max, _f, _t in linked),)]
    assert query(smoke_db, "select count(*) from runs where error is not null") == [(0,)]


def test_running_again_trains_nothing(smoke_db):
    before = query(smoke_db, "select id, attempt, started_at, finished_at from runs order by id")
    evals_before = query(smoke_db, "select count(*) from evals")
    again = subprocess.run(smoke_db.cmd, cwd=smoke_db.cwd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to train" in flat(again.stdout)
    assert query(smoke_db, "select id, attempt, started_at, finished_at from runs order by id") == before
    assert query(smoke_db, "select count(*) from evals") == evals_before


def _report_args(smoke_db, *extra: str) -> list[str]:
    return ["report", str(SMOKE_MATRIX), "--db", smoke_db.url, *extra]


def test_report_renders_in_process(smoke_db):
    result = CliRunner().invoke(app, _report_args(smoke_db))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "smoke — one-at-a-time" in out and "baseline" in out and "onecycle_fix" in out
    assert "not the reference 1.754" in flat(out)  # a CPU-sized matrix: only the baseline is fair


def test_report_renders_as_a_subprocess(smoke_db):
    """As a user runs it. How long that takes is `benchmarks/run.py --only report`'s figure
    against the bare imports in the same run (BENCHMARKS.md), not an assert."""
    proc = subprocess.run([sys.executable, "-m", "ablate", *_report_args(smoke_db)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "smoke — one-at-a-time" in proc.stdout and "onecycle_fix" in proc.stdout


def _pipe_cells(line: str) -> list[str]:
    assert line.startswith("|") and line.endswith("|"), line
    return [c.strip() for c in re.split(r"(?<!\\)\|", line[1:-1])]


def test_report_markdown_is_a_valid_pipe_table(smoke_db):
    result = CliRunner().invoke(app, _report_args(smoke_db, "--format", "markdown"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("## smoke")
    tables, current = [], []
    for line in lines + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    assert len(tables) == 2  # the ranking and the effects
    for table in tables:
        header = _pipe_cells(table[0])
        assert all(header) and len(table) >= 3
        assert re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", table[1]), table[1]
        assert len(_pipe_cells(table[1])) == len(header)
        for row in table[2:]:
            assert len(_pipe_cells(row)) == len(header), row
    ranking = tables[0]
    header = _pipe_cells(ranking[0])
    assert header[:2] == ["#", "config"] and "final" in header
    configs = [_pipe_cells(row)[1] for row in ranking[2:]]
    assert sorted(configs) == sorted(p.name for p in load_matrix(SMOKE_MATRIX).expand())


def test_report_json_matches_the_database(smoke_db):
    result = CliRunner().invoke(app, _report_args(smoke_db, "--format", "json"))
    report = json.loads(result.stdout)
    finals = dict(query(smoke_db, "select name, final_val_loss from runs"))
    for row in report["ranking"]:
        assert row["final"] == pytest.approx(finals[row["name"]])


def test_plot_writes_a_png(smoke_db, tmp_path):
    out = tmp_path / "curves.png"
    result = CliRunner().invoke(app, ["plot", str(SMOKE_MATRIX), "--db", smoke_db.url, "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000, len(data)
