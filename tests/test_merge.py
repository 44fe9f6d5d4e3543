"""`ablate db merge OTHER.db`: results trained elsewhere join this database, matched by identity,
in one transaction, without ever writing the other database."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from ablate.cli import app
from ablate.execution.identity import merge
from ablate.execution.matrix import load_matrix
from ablate.execution.runner import plan, register
from ablate.results.report import build_report
from ablate.storage import merge as merge_module
from ablate.storage.database import COPY_PREFIX
from ablate.storage.migrations import latest_version
from ablate.storage.schema import MAX_DESCRIPTION_CHARS, MAX_ERROR_CHARS, MAX_NAME_CHARS
from ablate.storage.schema import Run
from ablate.storage.store import Store
from ablate.training.config import TrainConfig
from ablate.training.datasource import fingerprint

from .test_migrations import FIXTURE

EVAL_KEY = "r.hash, e.attempt = r.attempt, e.step, e.val_loss, e.val_loss_full, e.train_loss"


def rows(path: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def content(path: Path) -> dict[str, list[tuple]]:
    """What a merge may change, keyed by identity rather than by row id."""
    return {
        "runs": rows(path, "SELECT hash, name, status, attempt, final_val_loss, steps FROM runs "
                           "ORDER BY hash"),
        "experiments": rows(path, "SELECT name, description, yaml_text FROM experiments ORDER BY name"),
        "links": rows(path, "SELECT e.name, r.hash, l.name, l.position FROM experiment_runs l "
                            "JOIN experiments e ON e.id = l.experiment_id JOIN runs r ON "
                            "r.id = l.run_id ORDER BY 1, 2"),
        "evals": rows(path, f"SELECT {EVAL_KEY} FROM evals e JOIN runs r ON r.id = e.run_id "
                            "WHERE e.attempt = r.attempt ORDER BY 1, 3"),
        "steps": rows(path, "SELECT r.hash, s.step, s.train_loss FROM step_metrics s JOIN runs r "
                            "ON r.id = s.run_id WHERE s.attempt = r.attempt ORDER BY 1, 2"),
    }


def run_hash(config: dict) -> str:
    """The identity the runner gives a Mainrun config."""
    cfg = TrainConfig.from_dict(config)
    return cfg.identity_hash(fingerprint(cfg.data))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def source(tmp_path) -> Path:
    """The schema-1 fixture, its hand-made failed run given the identity its config has."""
    copy = tmp_path / "other.db"
    shutil.copy(FIXTURE, copy)
    with closing(sqlite3.connect(copy)) as conn:
        conn.execute("UPDATE runs SET hash = ? WHERE hash = '0000000000000000'",
                     (run_hash({"lr": 1e9}),))
        conn.commit()
    return copy


def test_merge_into_an_empty_database_copies_everything_and_reports_the_same(source, tmp_path):
    target = tmp_path / "results.db"
    before = sha(source)
    with Store(f"sqlite:///{target}") as store:
        report = merge(store, source)
    assert content(target) == content(source)
    assert (report.runs_added, len(report.experiments_added), report.conflicts) == (7, 3, [])
    assert report.evals_added == len(content(source)["evals"])
    assert sha(source) == before  # read through a copy, never written
    exp = rows(target, "SELECT name FROM experiments ORDER BY id")[0][0]
    assert build_report(f"sqlite:///{target}", exp).ranking.equals(
        build_report(f"sqlite:///{source}", exp).ranking)


def test_merging_twice_keeps_each_completed_run_once(source, tmp_path):
    target = tmp_path / "results.db"
    with Store(f"sqlite:///{target}") as store:
        merge(store, source)
        once = content(target)
        again = merge(store, source)
    assert content(target) == once
    completed = sum(s == "completed" for _, _, s, *_ in once["runs"])
    assert (again.runs_added, again.runs_completed, again.runs_kept) == (0, 0, completed)
    assert again.experiments_added == [] and again.conflicts == []


def test_a_run_completed_there_completes_the_same_identity_here(source, tmp_path):
    """Here the run was interrupted (its partial attempt stays as history); there it completed:
    afterwards it is completed here, by a new attempt holding the other database's evals."""
    target = tmp_path / "results.db"
    shutil.copy(source, target)
    done = rows(source, "SELECT hash FROM runs WHERE status = 'completed' ORDER BY hash")[0][0]
    with Store(f"sqlite:///{target}") as store:
        store._write(lambda s: s.execute(update(Run).where(Run.hash == done).values(
            status="interrupted", final_val_loss=None)))
        report = merge(store, source)
    assert (report.runs_completed, report.runs_added, report.conflicts) == (1, 0, [])
    (status, attempt, final), = rows(target, f"SELECT status, attempt, final_val_loss FROM runs "
                                             f"WHERE hash = '{done}'")
    (their_attempt, their_final), = rows(source, f"SELECT attempt, final_val_loss FROM runs "
                                                 f"WHERE hash = '{done}'")
    assert (status, attempt, final) == ("completed", their_attempt + 1, their_final)
    assert content(target)["evals"] == content(source)["evals"]


def test_conflicting_results_for_one_identity_are_reported_and_not_overwritten(source, tmp_path):
    target = tmp_path / "results.db"
    shutil.copy(source, target)
    done = rows(source, "SELECT hash FROM runs WHERE status = 'completed' ORDER BY hash")[0][0]
    with Store(f"sqlite:///{target}") as store:
        store._write(lambda s: s.execute(update(Run).where(Run.hash == done).values(
            final_val_loss=9.99)))
    mine = content(target)
    result = CliRunner().invoke(app, ["db", "merge", str(source), "--db", str(target)])
    assert result.exit_code == 1
    assert "conflict: " in result.output and done in result.output and "9.99" in result.output
    assert content(target) == mine


def test_a_merge_that_fails_midway_leaves_the_target_unchanged(source, tmp_path, monkeypatch):
    target = tmp_path / "results.db"
    other = tmp_path / "other-run.db"
    shutil.copy(source, other)
    with Store(f"sqlite:///{target}") as store:
        merge(store, source)
    with closing(sqlite3.connect(other)) as conn:  # new identities (other seeds) for the second merge
        for run_id, config in conn.execute("SELECT id, config FROM runs").fetchall():
            config = {**json.loads(config), "seed": 100 + run_id}
            conn.execute("UPDATE runs SET config = ?, hash = ?, seed = ? WHERE id = ?",
                         (json.dumps(config), run_hash(config), config["seed"], run_id))
        conn.commit()
    before = content(target)
    copied = []

    def copy_then_die(session, run_id, attempt, src, report):
        if copied:
            raise KeyboardInterrupt  # as a Ctrl-C would, after the first run's rows went in
        copied.append(run_id)
        original(session, run_id, attempt, src, report)

    original = merge_module._copy_attempt
    monkeypatch.setattr(merge_module, "_copy_attempt", copy_then_die)
    with Store(f"sqlite:///{target}") as store, pytest.raises(KeyboardInterrupt):
        merge(store, other)
    assert copied and content(target) == before
    assert rows(target, "PRAGMA integrity_check") == [("ok",)]


def test_a_database_of_an_older_schema_merges_without_being_written(source, tmp_path):
    assert latest_version() > 1  # the fixture is older than this ablate
    before = sha(source)
    target = tmp_path / "results.db"
    with Store(f"sqlite:///{target}") as store:
        report = merge(store, source)
    assert report.runs_added == 7 and content(target) == content(source)
    assert sha(source) == before and rows(source, "SELECT value FROM meta") == [("1",)]
    assert rows(target, "SELECT value FROM meta") == [(str(latest_version()),)]


def test_merge_errors_are_one_line(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    for other in (str(tmp_path / "missing.db"), str(junk)):
        result = CliRunner().invoke(app, ["db", "merge", other, "--db", str(tmp_path / "r.db")])
        assert result.exit_code == 2 and result.output.startswith("error:"), result.output
        assert "Traceback" not in result.output



def test_a_copy_left_by_a_killed_merge_is_removed_and_a_merge_leaves_none(source, tmp_path):
    """Case 14: a SIGKILLed merge cannot clean up its temporary copy; the next one does."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = Path(tempfile.gettempdir()) / f"{COPY_PREFIX}{dead.pid}-killed"
    left.mkdir(exist_ok=True)
    (left / "other.db").write_bytes(b"x" * 1000)
    with Store(f"sqlite:///{tmp_path / 'results.db'}") as store:
        merge(store, source)
    assert not left.exists()
    assert not list(Path(tempfile.gettempdir()).glob(f"{COPY_PREFIX}{os.getpid()}-*"))


def test_merging_a_database_with_a_corrupted_page_is_one_line(source, tmp_path):
    """Case 10: the target stays as it was and no traceback is shown."""
    data = bytearray(source.read_bytes())
    data[4096 * 15 + 100:4096 * 15 + 700] = b"\xff" * 600  # a page the merge reads, overwritten
    source.write_bytes(bytes(data))
    target = tmp_path / "results.db"
    Store(f"sqlite:///{target}").close()
    before = sha(target)
    result = CliRunner().invoke(app, ["db", "merge", str(source), "--db", str(target)])
    assert result.exit_code == 2 and result.output.startswith("error:"), result.output
    assert len(result.output.strip().splitlines()) == 1 and sha(target) == before
    assert "malformed" in result.output and str(source) in result.output


# --- what a merge refuses (issue 26, cases 1-3 and 10) ------------------------------------------

OWN = """
name: exp
design: one-at-a-time
trainer: {{command: "python train.py --lr {{lr}}"}}
params: {{lr: {lr}}}
min_effect: 0.01
toggles: [{{lr: [0.5]}}]
"""


def planned(folder: Path, lr: float = 0.1) -> Path:
    """A database holding one matrix of your own trainer, planned (nothing trained)."""
    folder.mkdir()
    (folder / "train.py").write_text('print(\'{"step": 1, "val_loss": 1.0}\')\n')
    (folder / "m.yaml").write_text(OWN.format(lr=lr))
    matrix = load_matrix(folder / "m.yaml")
    with Store(f"sqlite:///{folder / 'results.db'}") as store:
        register(store, matrix, plan(matrix))
    return folder / "results.db"


def merged(source: Path, target: Path, *options: str):
    return CliRunner().invoke(app, ["db", "merge", str(source), "--db", str(target), *options])


def refused_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("refused:")]


def test_a_same_named_experiment_of_another_matrix_is_refused_until_renamed(tmp_path):
    """Case 1: its runs were mixed into mine; now it is a refused item, or merged under a new name."""
    mine, theirs = planned(tmp_path / "mine"), planned(tmp_path / "theirs", lr=0.3)
    before = sha(mine)
    result = merged(theirs, mine)
    assert result.exit_code == 2 and sha(mine) == before, result.output
    (line,) = refused_lines(result.output)
    assert "experiment 'exp': another matrix" in line and "--rename-from exp:NEW" in line
    result = merged(theirs, mine, "--rename-from", "exp:exp-theirs")
    assert result.exit_code == 0, result.output
    links = dict(rows(mine, "SELECT e.name, count(*) FROM experiment_runs l JOIN experiments e "
                           "ON e.id = l.experiment_id GROUP BY 1"))
    assert links == {"exp": 2, "exp-theirs": 2}


def test_the_same_matrix_elsewhere_merges_into_the_same_experiment(tmp_path):
    """Its runs were planned in another directory: the same identities, the same experiment."""
    mine, theirs = planned(tmp_path / "mine"), planned(tmp_path / "theirs")
    result = merged(theirs, mine)
    assert result.exit_code == 0 and "0 new run(s)" in result.output, result.output


@pytest.mark.parametrize("edit", [
    "json_set(config, '$.lr', 0.5)",  # a hidden field changed after hashing
    "json_set(config, '$.trainer', json('{\"command\": \"sh -c id\"}'))",
])
def test_a_run_whose_config_was_edited_after_hashing_is_refused(source, tmp_path, edit):
    """Case 2: the foreign result ranked as mine, or my identities poisoned."""
    target = tmp_path / "results.db"
    Store(f"sqlite:///{target}").close()
    with closing(sqlite3.connect(source)) as conn:
        conn.execute(f"UPDATE runs SET config = {edit} WHERE id = 2")
        conn.commit()
    before = sha(target)
    result = merged(source, target)
    assert result.exit_code == 2 and sha(target) == before, result.output
    (line,) = refused_lines(result.output)
    assert "'lr=0.003' (" in line and ("edited after" in line or "not a run's config" in line), line


@pytest.mark.parametrize("sql, expected", [
    ("UPDATE runs SET config = 'null' WHERE id = 1", "config: expected a JSON object, got NoneType"),
    ("UPDATE runs SET config = '[]' WHERE id = 1", "config: expected a JSON object, got list"),
    ("UPDATE runs SET config = '{\"trainer\": 5}' WHERE id = 1", "unknown field 'trainer'"),
    ("UPDATE runs SET config = '{bad' WHERE id = 1", "runs.config is not valid JSON"),
    ("UPDATE evals SET extra = '[1,' WHERE run_id = 1", "evals.extra is not valid JSON"),
    ("UPDATE runs SET status = 'bogus' WHERE id = 1", "status 'bogus': expected one of"),
    ("UPDATE runs SET hash = '../../etc' WHERE id = 1", "hash: expected 16 to 64 hexadecimal digits"),
    ("INSERT INTO experiment_runs VALUES (1, 999, 'ghost', '[]', 99)", "to run id 999: no such run"),
    ("UPDATE experiments SET plan = '{x' WHERE name = 'fixture-list'", "experiments.plan is not valid JSON"),
])
def test_a_malformed_row_is_refused_in_one_line_or_left_out_when_asked(source, tmp_path, sql, expected):
    """Cases 3 and 10: report and show then failed, results-md tracebacked."""
    target = tmp_path / "results.db"
    for db in (target, source):  # the source upgraded: the newest schema's columns can be damaged too
        Store(f"sqlite:///{db}").close()
    with closing(sqlite3.connect(source)) as conn:
        conn.execute(sql)
        conn.commit()
    before = sha(target)
    result = merged(source, target)
    assert result.exit_code == 2 and sha(target) == before, result.output
    assert "Traceback" not in result.output
    (line,) = refused_lines(result.output)
    assert expected in line, line
    result = merged(source, target, "--skip-invalid")
    assert result.exit_code == 0 and "1 refused item(s) left out" in result.output, result.output
    assert CliRunner().invoke(app, ["report", "--db", str(target), "-e", "fixture"]).exit_code == 0


def test_a_tampered_run_and_a_foreign_experiment_refuse_the_merge_one_line_each(tmp_path):
    """The acceptance test: nothing of it gets in, and the target's bytes stay as they were."""
    mine, theirs = planned(tmp_path / "mine"), planned(tmp_path / "theirs", lr=0.3)
    with closing(sqlite3.connect(theirs)) as conn:
        conn.execute("UPDATE runs SET config = json_set(config, '$.trainer.command', 'sh -c id') "
                     "WHERE name = 'baseline'")
        conn.commit()
    before = sha(mine)
    result = merged(theirs, mine)
    assert result.exit_code != 0 and sha(mine) == before, result.output
    lines = refused_lines(result.output)
    assert len(lines) == 2, result.output
    assert "'baseline'" in lines[0] and "edited after" in lines[0] and "experiment 'exp'" in lines[1]
    assert "nothing written" in result.output


def test_merged_text_is_cut_to_the_caps_and_reading_stays_fast(source, tmp_path):
    """Case 7, merged: a 50 MB description made `report` take 540 s and 1.1 GB."""
    with closing(sqlite3.connect(source)) as conn:
        conn.execute("UPDATE runs SET error = ?, name = ? WHERE id = 7", ("e" * 1_000_000, "n" * 20_000))
        conn.execute("UPDATE experiments SET description = ?", ("d" * 5_000_000,))
        conn.commit()
    target = tmp_path / "results.db"
    with Store(f"sqlite:///{target}") as store:
        merge(store, source)
    (error, name), = rows(target, "SELECT length(error), length(name) FROM runs WHERE status = 'failed'")
    assert (error, name) == (MAX_ERROR_CHARS, MAX_NAME_CHARS)
    assert {d for d, in rows(target, "SELECT length(description) FROM experiments")} == {MAX_DESCRIPTION_CHARS}
    assert rows(target, "SELECT description FROM experiments")[0][0].endswith("5,000,000 characters in all]")
    for command in (["report", "-e", "fixture-failures"], ["runs", "--all"]):
        result = CliRunner().invoke(app, [*command, "--db", str(target)])
        assert result.exit_code == 0 and len(result.output) < 50_000  # the capped text, not megabytes


def test_a_run_whose_data_is_elsewhere_is_checked_by_its_stored_fingerprint(source, tmp_path):
    """A GPU machine's data path is not here: the fingerprint stored beside the run (schema 3)
    is what its identity is recomputed with; without one it cannot be checked, and is refused."""
    config = {"data": "/elsewhere/titles.csv", "seed": 9}
    identity = TrainConfig.from_dict(config).identity_hash("sha256:" + "ab" * 32)
    Store(f"sqlite:///{source}").close()  # upgraded to the schema that stores fingerprints
    with closing(sqlite3.connect(source)) as conn:
        conn.execute("UPDATE runs SET config = ?, hash = ?, fingerprint = ?, seed = 9 WHERE id = 1",
                     (json.dumps(config), identity, "sha256:" + "ab" * 32))
        conn.commit()
    target = tmp_path / "results.db"
    assert merged(source, target).exit_code == 0
    with closing(sqlite3.connect(source)) as conn:
        conn.execute("UPDATE runs SET fingerprint = NULL")
        conn.commit()
    result = merged(source, tmp_path / "fresh.db")
    assert result.exit_code == 2 and "cannot be checked" in refused_lines(result.output)[0], result.output


def test_a_backup_copy_left_by_a_killed_upgrade_is_removed_by_the_next_write(tmp_path):
    """Case 14: a SIGKILLed upgrade left `results.db.bak-v1.partial` (as large as the file)."""
    target = tmp_path / "results.db"
    Store(f"sqlite:///{target}").close()  # upgraded since: nobody is writing that copy now
    left = tmp_path / "results.db.bak-v1.partial"
    left.write_bytes(b"half a copy")
    Store(f"sqlite:///{target}", read_only=True, create=False).close()
    assert left.exists()  # reading changes nothing beside the file either
    Store(f"sqlite:///{target}").close()
    assert not left.exists()
