"""Seeds until decided: `seeds: {min, max}` adds seeds round by round to the comparisons still
inconclusive; stopped with Ctrl-C and run again, it ends with the runs and verdicts of an
uninterrupted run, training no completed run twice. Jobs run the torch-free fake trainer."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from typer.testing import CliRunner

from ablate.cli import app
from ablate.execution.matrix import MatrixError, load_matrix, parse_matrix
from ablate.execution.seeds import verdict_plan
from ablate.execution.sequential import until_decided

from .conftest import REPO

TRAINER = "tests.fake_trainer:train"
# The fake trainer's losses are a hash of config and step: paired sds ~0.02, so with min_effect
# 0.03 some comparisons decide after 3, 4 or 5 seeds and others never (checked below).
MATRIX = """name: ud
design: one-at-a-time
base: {overrides: {epochs: 1, evals_per_epoch: 2}}
execution: {devices: cpu, jobs_per_device: 2}
min_effect: 0.03
seeds: {min: 3, max: 6}
toggles: [{lr: [0.001, 0.002, 0.003, 0.004]}]
"""


def ablate(tmp: Path, db: Path, *extra: str, wait: bool = True, sleep: float = 0.0):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
               FAKE_SLEEP_S=str(sleep))
    cmd = [sys.executable, "-m", "ablate", "run", str(tmp / "ud.yaml"), "--db", f"sqlite:///{db}",
           "--trainer", TRAINER, "--log-dir", str(tmp / "logs"), *extra]
    if wait:
        return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def query(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(sql).fetchall()


def linked(db: Path) -> set[tuple]:
    return set(query(db, "SELECT er.name, r.seed, r.status FROM experiment_runs er JOIN runs r ON r.id = er.run_id"))


def verdicts(db: Path) -> list[tuple]:
    out = subprocess.run([sys.executable, "-m", "ablate", "report", "--db", str(db), "-f", "json"],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return [(e["effect"], e["n"], e["verdict"], round(e["estimate"], 12)) for e in json.loads(out.stdout)["effects"]]


def test_interrupted_and_run_again_ends_as_an_uninterrupted_run(tmp_path):
    (tmp_path / "ud.yaml").write_text(MATRIX)
    clean = tmp_path / "clean.db"
    done = ablate(tmp_path, clean)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "after 3 seeds, 5 configuration(s) still undecided get seed 1340" in done.stdout
    expected = verdicts(clean)
    seeds_per_effect = sorted(n for _, n, _, _ in expected)
    assert seeds_per_effect[0] < 6 and seeds_per_effect[-1] == 6  # rounds stopped where decided
    assert {v for _, _, v, _ in expected} >= {"negligible", "inconclusive"}
    assert len(linked(clean)) < 5 * 6  # fewer runs than the full budget

    stopped = tmp_path / "stopped.db"
    runner = ablate(tmp_path, stopped, wait=False, sleep=0.3)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # into the second round: its runs registered and training
        try:
            if query(stopped, "SELECT count(*) FROM runs WHERE seed = 1340 AND status = 'running'") != [(0,)]:
                break
        except sqlite3.OperationalError:  # not created yet
            pass
        time.sleep(0.1)
    else:
        pytest.fail("the second round never started")
    runner.send_signal(signal.SIGINT)
    assert runner.wait(timeout=180) == 130, runner.stdout.read()
    first_round = query(stopped, "SELECT id, attempt FROM runs WHERE seed < 1340 AND status = 'completed'")
    assert len(first_round) == 15 and {a for _, a in first_round} == {1}

    again = ablate(tmp_path, stopped)
    assert again.returncode == 0, again.stdout + again.stderr
    assert linked(stopped) == linked(clean) and verdicts(stopped) == expected
    assert query(stopped, f"SELECT id, attempt FROM runs WHERE id IN ({','.join(str(i) for i, _ in first_round)})") \
        == first_round  # nothing completed was trained again
    assert query(stopped, "SELECT count(*) = count(DISTINCT hash) FROM runs") == [(1,)]

    rerun = ablate(tmp_path, stopped)  # a finished matrix: replays its looks, trains nothing
    assert rerun.returncode == 0 and "trained 0 run(s)" in rerun.stdout


def test_seed_range_and_min_effect_in_the_matrix_file(tmp_path):
    matrix = parse_matrix(MATRIX, tmp_path / "ud.yaml")
    assert matrix.seeds == [1337 + i for i in range(6)] and matrix.first_seeds == 3
    assert (verdict_plan(MATRIX).min_effect, verdict_plan(MATRIX).looks) == (0.03, 4)
    assert (verdict_plan("name: x").min_effect, verdict_plan("name: x").looks) == (0.005, 1)
    (tmp_path / "ud.yaml").write_text(MATRIX)
    out = CliRunner().invoke(app, ["plan", str(tmp_path / "ud.yaml"), "--db", str(tmp_path / "p.db")])
    assert out.exit_code == 0 and "the first round is seeds [1337, 1338, 1339]" in " ".join(out.stdout.split())
    with pytest.raises(MatrixError, match="seeds"):
        parse_matrix(MATRIX.replace("max: 6", "max: 2"), tmp_path / "ud.yaml")
    with pytest.raises(MatrixError, match="min_effect"):
        parse_matrix(MATRIX.replace("min_effect: 0.03", "min_effect: -1"), tmp_path / "ud.yaml")


def test_until_decided_option_turns_listed_seeds_into_the_first_round(tmp_path):
    listed = tmp_path / "listed.yaml"
    listed.write_text(MATRIX.replace("seeds: {min: 3, max: 6}", "seeds: [1337, 1338]"))
    matrix = until_decided(load_matrix(listed), 5)
    assert matrix.seeds == [1337 + i for i in range(5)] and matrix.first_seeds == 2
    assert (verdict_plan(matrix.text).min_effect, verdict_plan(matrix.text).looks) == (0.03, 4)  # α over 4 looks
    listed.write_text(MATRIX.replace("seeds: {min: 3, max: 6}", "seeds: [1, 5]"))
    with pytest.raises(MatrixError, match="one by one"):
        until_decided(load_matrix(listed), 5)
    out = subprocess.run([sys.executable, "-m", "ablate", "run", str(listed), "--max-seeds", "4"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "--max-seeds is for --until-decided" in out.stderr
