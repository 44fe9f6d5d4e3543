"""RESULTS.md cannot drift from results.db, and a committed run can be reproduced."""

from __future__ import annotations

import json
import shlex
import shutil
import sqlite3
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.results import document
from ablate.results.frames import load_evals, load_runs
from ablate.training.config import TrainConfig

from .conftest import REPO


@pytest.fixture
def committed_db(tmp_path):
    """A copy of the committed results.db: tests never touch the real one."""
    db = REPO / "results.db"
    assert db.is_file() and (REPO / "RESULTS.md").is_file(), "results.db and RESULTS.md are committed"
    copy = tmp_path / "results.db"
    shutil.copy(db, copy)
    return copy


def test_results_md_tables_equal_what_the_committed_database_gives(committed_db):
    since = REPO / document.COMMAND.split("--since ", 1)[1]  # the verdicts before issue 25, a snapshot
    assert document.committed_block(REPO / "RESULTS.md") == document.generated(committed_db, since)


def test_every_completed_run_is_complete_and_every_failure_has_its_reason(committed_db):
    runs = load_runs(committed_db)
    done = runs[runs["status"] == "completed"]
    assert len(done) and done["code_version"].notna().all() and done["wall_time_s"].notna().all()
    assert done["seed"].notna().all() and done["cfg.data"].notna().all()
    assert (done["steps"] == done["max_steps"]).all() and not done["truncated"].any()
    assert runs.loc[runs["status"].isin(["failed", "interrupted"]), "error"].notna().all()
    from ablate.results.frames import load_evals
    evals = load_evals(committed_db)
    for run_id, n in evals.groupby("run_id").size().items():  # step 1, 3 per epoch x 7, the end
        assert n >= 22, (run_id, n)


def test_every_committed_run_keeps_its_identity(committed_db):
    """A run's hash is its config's identity with the data's fingerprint: code that hashed a
    config differently would plan every committed run again instead of reusing it."""
    with sqlite3.connect(committed_db) as conn:
        stored = conn.execute("select hash, config, result from runs").fetchall()
    assert len(stored) > 50
    trained = [(json.loads(c), json.loads(r or "null")) for _, c, r in stored]
    fingerprints = {c["data"]: r["data_fingerprint"] for c, r in trained if r}  # queued runs: theirs
    for run_hash, config, _ in stored:  # is that of a trained run on the same file
        config = json.loads(config)
        fingerprint = fingerprints[config["data"]]
        assert TrainConfig.from_dict(config).identity_hash(fingerprint) == run_hash


@pytest.mark.parametrize("experiment, name, seed", [
    ("report-cpu", "baseline", 1337),  # Mainrun's SGD base
    ("report-cpu-adamw", "swiglu", 1338),  # the report's own base at the larger proxy, a toggle on
])
def test_a_committed_run_reproduces_with_its_as_command(committed_db, hn_csv, tmp_path, experiment, name, seed):
    runs = load_runs(committed_db, experiment=experiment)
    row = runs[(runs["status"] == "completed") & (runs["name"] == name) & (runs["seed"] == seed)].iloc[0]
    command = subprocess.run(
        [sys.executable, "-m", "ablate", "show", str(row["run_id"]), "--db", str(committed_db),
         "--as-command"], capture_output=True, text=True, check=True).stdout.strip()
    args = shlex.split(command)[1:]  # drop the leading `ablate`
    args[args.index("--data") + 1] = hn_csv  # the same titles, in the same order, wherever this runs
    evals = load_evals(committed_db, experiment=experiment)
    committed = dict(evals.loc[evals["run_id"] == row["run_id"], ["step", "val_loss"]].values)
    until = sorted(committed)[1]  # its first two evaluations (step 1 and a trained one): a truncated run keeps the schedule
    out = subprocess.run([sys.executable, "-m", "ablate", *args, "--max-steps", str(until), "--json"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    got = {r["step"]: r["val_loss"] for r in map(json.loads, out.splitlines())}
    assert len(got) == 2 and got == pytest.approx({s: committed[s] for s in got}, rel=1e-4)


def test_prose_outside_the_markers_survives_regeneration(tmp_path):
    """On a small database (the committed one's document is checked above; this is about the
    markers, and rendering its plots twice cost half a minute)."""
    db, doc = tmp_path / "r.db", tmp_path / "RESULTS.md"
    shutil.copy(REPO / "tests" / "fixtures" / "results-v1.db", db)
    assert document.write(doc, db)
    doc.write_text("# Results\n\nintro\n" + doc.read_text().split("\n", 1)[1] + "\n## Ours\nkept\n")
    assert not document.write(doc, db)  # already up to date
    assert doc.read_text().startswith("# Results\n\nintro\n") and doc.read_text().endswith("kept\n")
    assert doc.read_text().count(document.END) == 1


def test_readme_queries_run_on_the_committed_results(committed_db, monkeypatch, capsys):
    """The README's SQL and pandas examples, pointed at the committed experiment."""
    from .test_readme import DB_SECTION, blocks

    def ours(text: str) -> str:
        return text.replace("'smoke'", "'report-cpu'").replace('"smoke"', '"report-cpu"')

    with sqlite3.connect(committed_db) as conn:
        for sql in blocks("sql", DB_SECTION):
            if sql.startswith("-- on "):  # written for another database (test_readme runs it there)
                continue
            rows = conn.execute(ours(sql)).fetchall()
            assert rows or "failed" in sql, sql  # results.db has no failed run to list
    monkeypatch.chdir(committed_db.parent)  # `results.db` in the examples is the copy
    for code in blocks("python", DB_SECTION):
        exec(compile(ours(code), "README.md", "exec"), {})
    assert "onecycle_fix" in capsys.readouterr().out


def test_names_never_become_paths_or_markers(tmp_path):
    """Issue 26, cases 8 and 9: a merged experiment named `../../../../elsewhere/x` had its plot
    written four folders up, and a run name holding the end marker grew RESULTS.md at every
    regeneration. Now the plot is a slug beside the document, and the document is stable."""
    db, out = tmp_path / "r.db", tmp_path / "deep" / "RESULTS.md"
    out.parent.mkdir()
    shutil.copy(REPO / "tests" / "fixtures" / "results-v1.db", db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE experiments SET name = '../../../../elsewhere/x' WHERE name = 'fixture'")
        conn.execute(f"UPDATE experiment_runs SET name = '{document.END} x' WHERE run_id = 1")
    conn.close()
    runner = CliRunner()
    assert runner.invoke(app, ["results-md", "--db", str(db), "--out", str(out)]).exit_code == 0
    first = out.read_text()
    assert runner.invoke(app, ["results-md", "--db", str(db), "--out", str(out)]).exit_code == 0
    assert out.read_text() == first and first.count(document.END) == 1
    assert runner.invoke(app, ["results-md", "--db", str(db), "--out", str(out), "--check"]).exit_code == 0
    plots = sorted(p.name for p in tmp_path.rglob("*.png"))
    assert plots == sorted(p.name for p in out.parent.glob("*.png")) and len(plots) == 2
    assert document.plot_name("../../../../elsewhere/x") in plots
