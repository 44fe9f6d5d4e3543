"""Schema migrations on a database written by schema 1's ablate (tests/fixtures/results-v1.db:
three experiments, seven runs, one of them failed, with their evaluations and step metrics,
written by `ablate run` with the fake trainer at commit ffcde02).

The migrations these tests apply are registered here (the package has none yet): the machinery
is what is tested, on the kind of file the next schema change will meet.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from ablate.cli import app
from ablate.results.frames import load_evals, load_runs
from ablate.results.report import build_report
from ablate.storage import migrations
from ablate.storage.database import StoreError
from ablate.storage.migrations import Migration, backup_path, latest_version
from ablate.storage.store import Store

from .conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "results-v1.db"
DATA = ("experiments", "runs", "experiment_runs", "evals", "step_metrics")


def add_note(conn) -> None:
    conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN note TEXT")


NOTE = Migration("runs get a free-text note", add_note)
REAL = list(migrations.MIGRATIONS)  # the tests' own migrations come after these
LATEST = latest_version()  # today's schema; a test's NOTE takes it to LATEST + 1


def broken(conn) -> None:
    add_note(conn)
    conn.exec_driver_sql("UPDATE runs SET note = 'half done'")
    raise RuntimeError("this migration fails after changing the database")


@pytest.fixture
def v1(tmp_path) -> Path:
    """A copy of the fixture: tests never touch the committed file."""
    copy = tmp_path / "results.db"
    shutil.copy(FIXTURE, copy)
    return copy


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def rows(path: Path, table: str, columns: str = "*") -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT {columns} FROM {table} ORDER BY 1").fetchall()


def version(path: Path) -> int:
    return int(rows(path, "meta", "value")[0][0])


def columns(path: Path, table: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def content(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table but meta, in the columns schema 1 had."""
    return {t: rows(path, t, ", ".join(columns(FIXTURE, t))) for t in DATA}


def test_the_fixture_is_a_schema_1_database_with_runs_evals_and_experiments():
    assert version(FIXTURE) == 1
    counts = {t: len(rows(FIXTURE, t)) for t in DATA}
    assert counts == {"experiments": 3, "runs": 7, "experiment_runs": 9, "evals": 19,
                      "step_metrics": 55}
    assert sorted(r[0] for r in rows(FIXTURE, "runs", "status")) == ["completed"] * 6 + ["failed"]


def test_todays_code_opens_the_fixture_with_everything_intact(v1):
    before = content(v1)
    with Store(url(v1), create=False) as store:
        assert store.upgraded == (1, latest_version()) and store.version == latest_version()
    assert content(v1) == before
    runs = load_runs(v1)
    assert len(runs) == 9 and runs["status"].value_counts().to_dict() == {"completed": 8, "failed": 1}
    assert len(load_evals(v1, "fixture")) == 6 * 3  # three evaluations per run
    assert build_report(v1, "fixture").ranking["n"].sum() == 6


def test_migrated_fixture_has_exactly_the_schema_of_a_fresh_database(v1, tmp_path):
    """What every migration must keep true: an upgraded database is one created today."""
    Store(url(v1), create=False).close()
    fresh = tmp_path / "fresh.db"
    Store(url(fresh)).close()

    def schema(path: Path) -> dict:
        engine = create_engine(url(path))
        try:
            with engine.connect() as conn:
                found = inspect(conn)
                return {t: ([(c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(t)],
                            sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                                   for i in found.get_indexes(t)),
                            found.get_pk_constraint(t)["constrained_columns"])
                        for t in found.get_table_names()}
        finally:
            engine.dispose()

    assert schema(v1) == schema(fresh)
    assert version(v1) == version(fresh) == latest_version()


def test_a_migration_runs_on_open_keeps_a_copy_and_records_the_version(v1, monkeypatch):
    monkeypatch.setattr(migrations, "MIGRATIONS", [*REAL, NOTE])
    before = content(v1)
    with Store(url(v1), create=False) as store:
        assert (store.upgraded, store.version, store.backup) == ((1, LATEST + 1), LATEST + 1, backup_path(v1, 1))
        assert store.run(1).status in ("completed", "failed")
    assert version(v1) == LATEST + 1
    assert columns(v1, "runs")[-1] == "note" and set(columns(FIXTURE, "runs")) < set(columns(v1, "runs"))
    assert content(v1) == before  # every run, evaluation and experiment, unchanged
    copy = v1.with_name("results.db.bak-v1")
    assert version(copy) == 1 and content(copy) == before
    with Store(url(v1), create=False) as again:  # nothing left to do
        assert again.upgraded is None


def test_a_failed_migration_leaves_the_file_as_it_was(v1, monkeypatch):
    Store(url(v1), create=False).close()  # today's schema; the broken migration comes next
    monkeypatch.setattr(migrations, "MIGRATIONS", [*REAL, Migration("a broken one", broken)])
    before, runs_columns = v1.read_bytes(), columns(v1, "runs")
    with pytest.raises(StoreError, match=rf"migrating schema {LATEST} to {LATEST + 1} \(a broken one\) failed, "
                                         rf"so the database stays at schema {LATEST}: RuntimeError: this migration fails"):
        Store(url(v1), create=False)
    assert v1.read_bytes() == before
    assert version(v1) == LATEST and columns(v1, "runs") == runs_columns


def test_each_migration_is_its_own_transaction(v1, monkeypatch):
    """The second of two fails: the first stays applied and recorded, and the next open, with
    the second fixed, goes on from there."""
    def bad_index(conn):
        conn.exec_driver_sql("CREATE INDEX ix_runs_note ON runs (note)")
        raise RuntimeError("not yet")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*REAL, NOTE, Migration("index the note", bad_index)])
    with pytest.raises(StoreError, match=f"stays at schema {LATEST + 1}"):
        Store(url(v1), create=False)
    assert version(v1) == LATEST + 1
    good_index = Migration("index the note", lambda c: c.exec_driver_sql("CREATE INDEX ix_runs_note ON runs (note)"))
    monkeypatch.setattr(migrations, "MIGRATIONS", [*REAL, NOTE, good_index])
    with Store(url(v1), create=False) as store:
        assert store.upgraded == (LATEST + 1, LATEST + 2) and store.backup == backup_path(v1, LATEST + 1)
    assert version(v1) == LATEST + 2 and version(backup_path(v1, LATEST + 1)) == LATEST + 1


def test_a_newer_database_is_refused_naming_both_versions(v1, monkeypatch):
    monkeypatch.setattr(migrations, "MIGRATIONS", [*REAL, NOTE])
    Store(url(v1), create=False).close()  # now one past today's schema
    monkeypatch.setattr(migrations, "MIGRATIONS", REAL)
    before = v1.read_bytes()
    with pytest.raises(StoreError, match=rf"newer ablate \(schema {LATEST + 1}, this one reads {LATEST}\)"):
        Store(url(v1), create=False)
    assert v1.read_bytes() == before


def test_ablate_db_upgrade(v1, monkeypatch):
    first = CliRunner().invoke(app, ["db", "upgrade", "--db", str(v1)])
    assert first.exit_code == 0, first.output
    assert f"{v1}: schema 1 → {LATEST}; the file as it was: {v1}.bak-v1" in " ".join(first.output.split())
    second = CliRunner().invoke(app, ["db", "upgrade", "--db", str(v1)])
    assert second.exit_code == 0 and f"already at schema {LATEST}" in second.output
    missing = CliRunner().invoke(app, ["db", "upgrade", "--db", str(v1.with_name("none.db"))])
    assert missing.exit_code == 2 and "no results database" in missing.output


def test_a_reading_command_reads_an_older_file_through_an_upgraded_copy(v1):
    """`ablate runs` on a schema-1 file: the rows come from a migrated temporary copy and the
    file stays byte for byte what its ablate wrote (which can still read it), with no .bak."""
    before = v1.read_bytes()
    result = CliRunner().invoke(app, ["runs", "--all", "--db", str(v1), "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 1 + 9
    assert sorted(p.name for p in v1.parent.iterdir()) == [v1.name]  # no .bak, -wal or -shm
    assert v1.read_bytes() == before and version(v1) == 1
    v1.chmod(0o444)
    v1.parent.chmod(0o555)  # a read-only checkout: the same
    try:
        again = CliRunner().invoke(app, ["report", "--db", str(v1), "-e", "fixture", "--format", "csv"])
    finally:
        v1.parent.chmod(0o755)
        v1.chmod(0o644)
    assert again.exit_code == 0, again.output
    assert v1.read_bytes() == before
