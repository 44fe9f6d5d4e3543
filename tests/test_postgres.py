"""The results store on PostgreSQL: test_store.py's backend-neutral tests again, the parallel
claim test, and two `ablate run` runners sharing a matrix, against a real server.

The server comes from $ABLATE_TEST_PG_URL (`.ci/run` starts one; locally: `source
.ci/postgres.sh && pg_start`). Each test gets its own empty schema. Without the variable these
tests are skipped with that reason, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from sqlalchemy import text

from ablate.storage import migrations
from ablate.storage.database import StoreError
from ablate.storage.migrations import Migration
from ablate.storage.store import Store

from . import test_store as sqlite_suite
from .test_migrations import NOTE, broken
from .test_runner import write_matrix
from .test_store import check_parallel_claims, exp_runs  # noqa: F401 - exp_runs: a fixture, on this module's store

# Tests of test_store.py that take the `store` fixture but check SQLite itself.
SQLITE_ONLY = {"test_sqlite_pragmas_and_begin_immediate_for_writes"}
NEUTRAL_ARGS = {"store", "exp_runs", "monkeypatch"}


@pytest.fixture
def store(pg_url):
    with Store(pg_url) as s:
        yield s


# Every test of test_store.py that works on the `store` fixture runs here on PostgreSQL too:
# a new store test is covered on both backends without being written twice.
for _name, _test in list(vars(sqlite_suite).items()):
    if _name.startswith("test_") and inspect.isfunction(_test) and _name not in SQLITE_ONLY:
        _args = set(inspect.signature(_test).parameters)
        if _args & {"store", "exp_runs"} and _args <= NEUTRAL_ARGS:
            globals()[_name] = _test
del _name, _test


def test_the_store_really_is_postgresql(store):
    assert store._engine.dialect.name == "postgresql"
    with store._engine.connect() as conn:
        assert conn.execute(text("select current_schema()")).scalar().startswith("test_")


def test_parallel_workers_claim_each_run_exactly_once(pg_url):
    """FOR UPDATE SKIP LOCKED: four processes claim 40 runs; each is trained exactly once."""
    check_parallel_claims(pg_url)


def test_two_runners_share_a_matrix_on_postgresql(tmp_path, hn_csv, pg_url):
    matrix = write_matrix(tmp_path, "pgshared", "[sdpa, dropout_005]")
    cmd = [sys.executable, "-m", "ablate", "run", str(matrix), "--db", pg_url]
    runners = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in runners]
    assert [p.returncode for p in runners] == [0, 0], outs
    with Store(pg_url, create=False) as store:
        rows = store.query(text("select status, attempt from runs"))
        assert sorted(rows) == [("completed", 1)] * 3
        dupes = store.query(text("select run_id, step from evals group by run_id, attempt, step "
                                 "having count(*) > 1"))
        assert dupes == []
        steps = store.query(text("select run_id, count(*) from evals group by run_id"))
        assert len(steps) == 3 and len({n for _, n in steps}) == 1


def test_migrations_are_transactional_on_postgresql(pg_url, monkeypatch):
    """A failing migration rolls back its DDL; a working one is applied and recorded."""
    monkeypatch.setattr(migrations, "MIGRATIONS", [])
    Store(pg_url).close()  # a database of schema 1
    note_columns = text("select count(*) from information_schema.columns where table_schema = "
                        "current_schema() and table_name = 'runs' and column_name = 'note'")
    monkeypatch.setattr(migrations, "MIGRATIONS", [Migration("a broken one", broken)])
    with pytest.raises(StoreError, match="stays at schema 1"):
        Store(pg_url, create=False)
    monkeypatch.setattr(migrations, "MIGRATIONS", [])
    with Store(pg_url, create=False) as store:
        assert store.query(note_columns) == [(0,)]
    monkeypatch.setattr(migrations, "MIGRATIONS", [NOTE])
    with Store(pg_url, create=False) as store:
        assert (store.upgraded, store.backup) == ((1, 2), None)  # no file to copy on a server
        assert store.query(note_columns) == [(1,)]
        assert store.query(text("select value from meta where key = 'schema_version'")) == [("2",)]
