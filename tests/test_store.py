"""The results store: schema versioning, run life cycle, and safety under parallel workers."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time

import pytest
from sqlalchemy import event

from ablate.execution.runner import process_alive
from ablate.storage.database import StoreError, default_url
from ablate.storage.migrations import latest_version
from ablate.storage.store import Store


def _url(path) -> str:
    return f"sqlite:///{path}"


def _planned(n: int, prefix: str = "r", start: int = 0) -> list[dict]:
    return [
        {"hash": f"{prefix}{i:04d}", "name": f"{prefix}{i}", "config": {"lr": 0.1 * i},
         "toggles": [f"t{i}"], "seed": 1, "position": i}
        for i in range(start, start + n)
    ]


@pytest.fixture
def store(tmp_path):
    with Store(_url(tmp_path / "results.db")) as s:
        yield s


@pytest.fixture
def exp_runs(store):
    exp = store.upsert_experiment("exp", "desc", "yaml: 1", 3.5, "one_at_a_time")
    return exp, store.add_runs(exp, _planned(3))


# ------------------------------------------------------------------- opening & schema


def test_default_url(monkeypatch):
    monkeypatch.delenv("ABLATE_DB", raising=False)
    assert default_url() == "sqlite:///results.db"
    monkeypatch.setenv("ABLATE_DB", "postgresql://x/y")
    assert default_url() == "postgresql://x/y"


def test_create_writes_schema_version_and_reopens(tmp_path):
    path = tmp_path / "results.db"
    Store(_url(path)).close()
    con = sqlite3.connect(path)
    assert con.execute("select value from meta where key='schema_version'").fetchone() == (str(latest_version()),)
    con.close()
    with Store(_url(path), create=False) as store:
        assert store.experiment("nope") is None


def test_sqlite_pragmas_and_begin_immediate_for_writes(store):
    with store._engine.connect() as conn:
        pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("busy_timeout") == 30000
        assert pragma("synchronous") == 1  # NORMAL
        assert pragma("foreign_keys") == 1
    statements = []
    event.listen(store._engine, "before_cursor_execute", lambda c, cur, stmt, *a: statements.append(stmt))
    store.upsert_experiment("e", "", "", None, "d")
    assert statements[0] == "BEGIN IMMEDIATE"
    statements.clear()
    store.experiment("e")
    assert statements[0] == "BEGIN"


def test_newer_schema_refused_and_file_untouched(tmp_path):
    path = tmp_path / "results.db"
    Store(_url(path)).close()
    con = sqlite3.connect(path)
    newer = latest_version() + 1
    con.execute(f"update meta set value='{newer}' where key='schema_version'")
    con.commit()
    con.close()
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    with pytest.raises(StoreError, match=rf"newer ablate \(schema {newer}, this one reads {newer - 1}\); upgrade ablate"):
        Store(_url(path))
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == mtime


def test_older_schema_refused(tmp_path):
    path = tmp_path / "results.db"
    Store(_url(path)).close()
    con = sqlite3.connect(path)
    con.execute("update meta set value='0' where key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="no migration"):
        Store(_url(path))


def test_foreign_database_refused(tmp_path):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("create table t (x)")
    con.close()
    with pytest.raises(StoreError, match="not an ablate results database"):
        Store(_url(path))


def test_missing_directory_is_a_clear_error(tmp_path):
    path = tmp_path / "no" / "such" / "results.db"
    with pytest.raises(StoreError, match=str(path.parent)):
        Store(_url(path))
    assert not path.parent.exists()


def test_unwritable_directory_is_a_clear_error(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: make the permission check see what a user would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    try:
        with pytest.raises(StoreError, match=f"cannot write results database {locked / 'results.db'}"):
            Store(_url(locked / "results.db"))
    finally:
        locked.chmod(0o700)


def test_read_only_open_of_missing_file(tmp_path):
    path = tmp_path / "results.db"
    with pytest.raises(StoreError, match=f"no results database at {path}"):
        Store(_url(path), create=False)
    assert not path.exists()


# ------------------------------------------------------------------ experiments & runs


def test_upsert_experiment_updates_in_place(store):
    first = store.upsert_experiment("exp", "a", "y1", 3.0, "d")
    again = store.upsert_experiment("exp", "b", "y2", None, "d")
    assert first == again
    exp = store.experiment("exp")
    assert (exp.description, exp.yaml_text, exp.reference) == ("b", "y2", None)
    assert exp.created_at.tzinfo is not None and exp.updated_at >= exp.created_at


def test_add_runs_idempotent_and_shared_by_hash(store):
    a = store.upsert_experiment("a", "", "", None, "d")
    b = store.upsert_experiment("b", "", "", None, "d")
    ids_a = store.add_runs(a, _planned(3))
    assert store.add_runs(a, _planned(3)) == ids_a
    shared = _planned(2, start=1)  # r0001, r0002 exist already
    shared[0]["name"], shared[0]["position"] = "renamed", 5
    ids_b = store.add_runs(b, shared + _planned(1, prefix="new"))
    assert ids_b[:2] == ids_a[1:]
    assert len(set(ids_a + ids_b)) == 4
    entries = store.runs_for(b)
    assert [e.name for e in entries] == ["new0", "r2", "renamed"]  # ordered by position
    assert entries[2].run.name == "r1" and entries[2].run.config == {"lr": 0.1}
    assert [e.name for e in store.runs_for(a)] == ["r0", "r1", "r2"]


def test_add_runs_keeps_completed_work(store, exp_runs):
    exp, ids = exp_runs
    run = store.claim(ids, host="h", pid=1, code_version="v")
    store.finish(run.id, run.attempt, {"final_val_loss": 2.0})
    store.add_runs(exp, _planned(3))
    assert store.run(ids[0]).status == "completed"


def test_add_runs_makes_the_experiment_what_its_matrix_says_now(store, exp_runs):
    exp, ids = exp_runs  # three runs linked
    kept = store.add_runs(exp, _planned(2))  # the matrix file lost its third run
    assert [e.run.id for e in store.runs_for(exp)] == kept == ids[:2]
    assert store.run(ids[2]) is not None  # unlinked, never deleted: its results stay shared


def test_add_runs_unknown_experiment(store):
    with pytest.raises(StoreError, match="no experiment"):
        store.add_runs(999, _planned(1))


# ---------------------------------------------------------------------------- claiming


def test_claim_order_attempt_and_exhaustion(store, exp_runs):
    _, ids = exp_runs
    order = [ids[2], ids[0], ids[1]]
    first = store.claim(order, host="h", pid=7, code_version="abc")
    assert (first.id, first.status, first.attempt, first.host, first.pid) == (ids[2], "running", 1, "h", 7)
    assert first.started_at is not None and first.heartbeat_at is not None
    assert store.claim(order, host="h", pid=7, code_version="abc").id == ids[0]
    assert store.claim(order, host="h", pid=7, code_version="abc").id == ids[1]
    assert store.claim(order, host="h", pid=7, code_version="abc") is None
    assert store.claim([], host="h", pid=7, code_version="abc") is None


def test_claim_takes_interrupted_and_clears_old_results(store, exp_runs):
    _, ids = exp_runs
    run = store.claim(ids[:1], host="h", pid=1, code_version="v")
    store.fail(run.id, 1, "killed", "tb", status="interrupted")
    again = store.claim(ids[:1], host="h", pid=2, code_version="v")
    assert (again.id, again.attempt, again.error, again.traceback, again.pid) == (run.id, 2, None, None, 2)


def _worker(url: str, run_ids: list[int]) -> list[int]:
    """A worker process: claim until nothing is left, recording 5 evals per run."""
    claimed = []
    with Store(url) as store:
        while (run := store.claim(run_ids, host="h", pid=os.getpid(), code_version="v")) is not None:
            claimed.append(run.id)
            store.set_pid(run.id, os.getpid(), "cpu")
            for step in range(5):
                store.record_eval(run.id, run.attempt, {"step": step, "val_loss": 1.0 / (step + 1)},
                                  [{"step": step, "train_loss": 1.0}])
            store.finish(run.id, run.attempt, {"final_val_loss": 0.2, "steps": 5})
    return claimed


def test_parallel_workers_claim_each_run_exactly_once(tmp_path):
    check_parallel_claims(_url(tmp_path / "results.db"))


def check_parallel_claims(url: str) -> None:
    """Four processes claim 40 runs from one database; each run is trained exactly once."""
    with Store(url) as store:
        exp = store.upsert_experiment("par", "", "", None, "d")
        ids = store.add_runs(exp, _planned(40))
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        claimed = pool.starmap(_worker, [(url, ids)] * 4)
    flat = [run_id for per_worker in claimed for run_id in per_worker]
    assert sorted(flat) == sorted(ids)
    with Store(url, create=False) as store:
        for entry in store.runs_for(exp):
            assert (entry.run.status, entry.run.attempt) == ("completed", 1)
            assert [e.step for e in store.evals(entry.run.id)] == list(range(5))


# ------------------------------------------------------------------- evals & results


def test_record_eval_columns_extra_and_idempotent(store, exp_runs):
    _, ids = exp_runs
    run = store.claim(ids, host="h", pid=1, code_version="v")
    metrics = {"step": 10, "val_loss": 2.5, "lr": 1e-3, "tokens_seen": 12345, "ppl": 12.2}
    steps = [{"step": 9, "train_loss": 2.7, "lr": 1e-3, "junk": 1}, {"step": 10, "train_loss": 2.6}]
    assert store.record_eval(run.id, run.attempt, metrics, steps) is True
    assert store.record_eval(run.id, run.attempt, metrics, steps) is False
    (ev,) = store.evals(run.id)
    assert (ev.step, ev.val_loss, ev.lr, ev.tokens_seen, ev.extra) == (10, 2.5, 1e-3, 12345, {"ppl": 12.2})
    assert [(m.step, m.train_loss) for m in store.step_metrics(run.id)] == [(9, 2.7), (10, 2.6)]


def test_evals_default_to_current_attempt(store, exp_runs):
    _, ids = exp_runs
    run = store.claim(ids[:1], host="h", pid=1, code_version="v")
    store.record_eval(run.id, 1, {"step": 1, "val_loss": 3.0})
    store.fail(run.id, 1, "boom")
    store.requeue(ids, {"failed"})
    store.claim(ids[:1], host="h", pid=1, code_version="v")
    store.record_eval(run.id, 2, {"step": 1, "val_loss": 2.0})
    assert [e.val_loss for e in store.evals(run.id)] == [2.0]
    assert [e.val_loss for e in store.evals(run.id, attempt=1)] == [3.0]


def test_finish_splits_known_and_extra_result_fields(store, exp_runs):
    _, ids = exp_runs
    run = store.claim(ids, host="h", pid=1, code_version="v")
    assert store.finish(run.id, 1, {"final_val_loss": 1.5, "best_val_loss": 1.4, "best_step": 90,
                                    "param_count": 10_000_000_000, "truncated": 0, "device": "cuda",
                                    "peak_mem_gb": 3.2})
    done = store.run(run.id)
    assert (done.status, done.final_val_loss, done.best_step, done.param_count) == ("completed", 1.5, 90, 10**10)
    assert (done.truncated, done.device, done.result) == (False, "cuda", {"peak_mem_gb": 3.2})
    assert done.finished_at is not None


def test_stale_attempt_cannot_overwrite_newer_one(store, exp_runs):
    _, ids = exp_runs
    old = store.claim(ids[:1], host="h", pid=1, code_version="v")
    store.fail(old.id, old.attempt, "lost", status="interrupted")
    new = store.claim(ids[:1], host="h", pid=2, code_version="v")
    assert new.attempt == old.attempt + 1
    beat = store.run(new.id).heartbeat_at
    assert store.finish(old.id, old.attempt, {"final_val_loss": 9.9}) is False
    assert store.fail(old.id, old.attempt, "late failure") is False
    assert store.heartbeat(old.id, old.attempt) is False
    current = store.run(new.id)
    assert (current.status, current.attempt, current.final_val_loss, current.error) == ("running", 2, None, None)
    assert current.heartbeat_at == beat
    assert store.heartbeat(new.id, new.attempt) is True
    assert store.finish(new.id, new.attempt, {"final_val_loss": 1.0}) is True


def test_fail_keeps_traceback_tail(store, exp_runs):
    _, ids = exp_runs
    run = store.claim(ids, host="h", pid=1, code_version="v")
    store.fail(run.id, 1, "ValueError: x", "a" * 5000 + "END")
    failed = store.run(run.id)
    assert failed.status == "failed" and failed.error == "ValueError: x"
    assert len(failed.traceback) == 4000 and failed.traceback.endswith("END")
    with pytest.raises(ValueError):
        store.fail(run.id, 1, "x", status="completed")


# ---------------------------------------------------------------- reaping & requeueing


def test_reap_stale_marks_dead_pids_and_silent_runs(store, exp_runs):
    _, ids = exp_runs
    dead = store.claim(ids, host="here", pid=111, code_version="v")
    live = store.claim(ids, host="here", pid=222, code_version="v")
    remote = store.claim(ids, host="there", pid=111, code_version="v")
    reaped = store.reap_stale(host="here", stale_after_s=3600, pid_alive=lambda pid: pid != 111)
    assert reaped == [dead.id]
    run = store.run(dead.id)
    assert run.status == "interrupted" and "111" in run.error
    assert store.run(live.id).status == "running" and store.run(remote.id).status == "running"
    time.sleep(0.05)
    assert store.reap_stale(host="here", stale_after_s=0.01, pid_alive=lambda pid: True) == [live.id, remote.id]
    assert "no heartbeat" in store.run(remote.id).error


def test_reap_stale_with_the_runners_check_of_real_pids(store, exp_runs):
    _, ids = exp_runs
    mine = store.claim(ids, host="here", pid=os.getpid(), code_version="v")
    assert store.reap_stale(host="here", stale_after_s=3600, pid_alive=process_alive) == []
    assert store.run(mine.id).status == "running"


def test_requeue_by_status_never_touches_running(store, exp_runs):
    _, ids = exp_runs
    done = store.claim(ids, host="h", pid=1, code_version="v")
    store.finish(done.id, 1, {})
    failed = store.claim(ids, host="h", pid=1, code_version="v")
    store.fail(failed.id, 1, "boom")
    running = store.claim(ids, host="h", pid=1, code_version="v")
    assert store.requeue(ids, {"failed"}) == 1
    assert store.run(failed.id).status == "queued"
    assert store.requeue(ids, {"completed", "failed", "interrupted", "running", "queued"}) == 1
    assert store.run(done.id).status == "queued"
    assert store.run(running.id).status == "running"
    with pytest.raises(ValueError):
        store.requeue(ids, {"bogus"})


def _train_all(store, ids):
    while (run := store.claim(ids, host="h", pid=1, code_version="v")) is not None:
        store.finish(run.id, run.attempt, {})


def test_a_second_rerun_joins_the_open_one_and_trains_nothing_twice(store, exp_runs):
    """Runners started with --rerun all seconds apart: the second finds the first's rerun open
    (a run still queued) and requeues none of the runs it covered, finished or not."""
    _, ids = exp_runs
    _train_all(store, ids)
    assert store.requeue(ids, {"completed"}) == 3
    first = store.claim(ids, host="a", pid=1, code_version="v")
    store.finish(first.id, first.attempt, {})  # retrained by the first runner before the second starts
    assert store.requeue(ids, {"completed"}) == 0
    assert store.run(first.id).status == "completed"
    _train_all(store, ids)
    assert [store.run(i).attempt for i in ids] == [2, 2, 2]


def test_a_rerun_after_the_last_one_finished_is_a_new_one(store, exp_runs):
    _, ids = exp_runs
    _train_all(store, ids)
    assert store.requeue(ids, {"completed"}) == 3
    _train_all(store, ids)
    assert store.requeue(ids, {"completed"}) == 3
    _train_all(store, ids)
    assert [store.run(i).attempt for i in ids] == [3, 3, 3]


def test_a_rerun_killed_midway_is_continued_and_covers_runs_it_missed(store, exp_runs):
    _, ids = exp_runs
    _train_all(store, ids[:2])  # the third run has never been trained: not part of the rerun
    assert store.requeue(ids, {"completed"}) == 2
    done = store.claim(ids, host="a", pid=1, code_version="v")
    store.finish(done.id, done.attempt, {})
    killed = store.claim(ids, host="a", pid=1, code_version="v")
    store.fail(killed.id, killed.attempt, "runner killed", status="interrupted")
    store.finish(*(lambda r: (r.id, r.attempt))(store.claim([ids[2]], host="b", pid=2, code_version="v")), {})
    assert store.requeue(ids, {"completed", "failed", "interrupted"}) == 1  # ids[2] joins the rerun
    assert store.run(done.id).status == "completed" and store.run(ids[2]).status == "queued"
    stamps = {store.run(i).requeued_at for i in ids}
    assert len(stamps) == 1 and None not in stamps
