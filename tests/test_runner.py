"""`ablate run` end to end: real jobs in real processes on a real SQLite file."""

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

from .conftest import HN_CSV

TINY_BASE = ("base:\n  overrides: {num_titles: 2000, vocab_size: 500, d_model: 32, n_layer: 1, "
             "n_head: 2, block_size: 32, batch_size: 8, epochs: %d, evals_per_epoch: 2}\n")


def write_matrix(tmp_path: Path, name: str, toggles: str, epochs: int = 1, extra: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ndesign: one-at-a-time\n" + TINY_BASE % epochs
                    + f"data: {HN_CSV}\ntoggles: {toggles}\n{extra}")
    return path


def ablate(*args: str, db: Path, cwd: Path, **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ablate", *args, "--db", f"sqlite:///{db}"]
    if kw.pop("background", False):
        return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def query(db: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(sql, params).fetchall()


def poll(db: Path, sql: str, *params) -> list[tuple]:
    """`query` while the runner may still be creating the schema."""
    try:
        return query(db, sql, *params) if db.exists() else []
    except sqlite3.OperationalError:
        return []


def wait_for(predicate, timeout: float = 120.0, what: str = "condition",
             process: subprocess.Popen | None = None):
    """Poll until predicate() is truthy; a process that ends first fails at once, with its output
    (a runner that died on start is not waited on for the whole guard)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            value = predicate()
            if value:
                return value
            out = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"the process ended ({process.returncode}) before {what}:\n{out}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def needs_data(hn_csv):
    return hn_csv


def test_matrix_runs_once_and_second_invocation_trains_nothing(tmp_path, needs_data):
    matrix = write_matrix(tmp_path, "m1", "[sdpa, dropout_005]")
    db = tmp_path / "r.db"
    first = ablate("run", str(matrix), db=db, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    runs = query(db, "select id, name, status, attempt, max_steps from runs order by id")
    assert [(r[1], r[2], r[3]) for r in runs] == [
        ("baseline", "completed", 1), ("sdpa", "completed", 1), ("dropout_005", "completed", 1)]
    max_steps = runs[0][4]
    interval = max_steps // 2  # one epoch, two evaluations per epoch
    expected = [s for s in range(1, max_steps + 1) if s == 1 or s % interval == 0 or s == max_steps]
    for run_id, *_ in runs:  # every evaluation of the run is there
        assert [s for (s,) in query(db, "select step from evals where run_id=? order by step",
                                    run_id)] == expected
    second = ablate("run", str(matrix), db=db, cwd=tmp_path)
    assert second.returncode == 0 and "nothing to train" in second.stdout
    assert query(db, "select count(*), max(attempt) from runs") == [(3, 1)]


def test_sigkilled_job_keeps_its_evals_and_is_completed_by_the_next_run(tmp_path, needs_data):
    matrix = write_matrix(tmp_path, "kill", "[sdpa]", epochs=3)
    db = tmp_path / "r.db"
    runner = ablate("run", str(matrix), db=db, cwd=tmp_path, background=True)
    # wait until the first run's job has committed at least two evaluations, then kill it
    pid = wait_for(lambda: poll(
        db, "select r.pid from runs r where r.status='running' and r.pid != ? and "
            "(select count(*) from evals e where e.run_id=r.id) >= 2", runner.pid), what="evals",
        process=runner)
    victim = query(db, "select id from runs where status='running'")[0][0]
    before = query(db, "select attempt, step, val_loss from evals where run_id=? order by step", victim)
    os.kill(pid[0][0], signal.SIGKILL)
    out, _ = runner.communicate(timeout=300)
    assert runner.returncode == 1, out  # a run was interrupted
    status, error = query(db, "select status, error from runs where id=?", victim)[0]
    assert status == "interrupted" and "SIGKILL" in error
    assert set(before) <= set(query(db, "select attempt, step, val_loss from evals where run_id=?", victim))
    assert query(db, "select count(*) from runs where status='completed'") == [(1,)]  # the other one

    again = ablate("run", str(matrix), db=db, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert query(db, "select status, attempt from runs where id=?", victim) == [("completed", 2)]
    assert query(db, "select count(*), count(distinct hash) from runs") == [(2, 2)]
    # the interrupted attempt's evaluations are kept, and the new attempt repeats them exactly
    old = dict(query(db, "select step, val_loss from evals where run_id=? and attempt=1", victim))
    new = dict(query(db, "select step, val_loss from evals where run_id=? and attempt=2", victim))
    assert old and all(new[s] == v for s, v in old.items())


def test_killed_runner_takes_its_job_down_and_next_run_recovers(tmp_path, needs_data):
    matrix = write_matrix(tmp_path, "killrunner", "[sdpa]", epochs=3)
    db = tmp_path / "r.db"
    runner = ablate("run", str(matrix), db=db, cwd=tmp_path, background=True)
    rows = wait_for(lambda: poll(
        db, "select id, pid from runs where status='running' and pid != ?", runner.pid), what="job",
        process=runner)
    run_id, job_pid = rows[0]
    runner.kill()
    runner.wait()
    wait_for(lambda: not _alive(job_pid), timeout=120, what="the orphaned job to exit")
    again = ablate("run", str(matrix), db=db, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert query(db, "select status from runs order by id") == [("completed",), ("completed",)]
    assert query(db, "select attempt from runs where id=?", run_id) == [(2,)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead for our purposes
        return f.read().split()[2] != "Z"


def test_two_runners_share_a_matrix_without_duplicates(tmp_path, needs_data):
    matrix = write_matrix(tmp_path, "shared", "[sdpa, swiglu, rmsnorm, dropout_005, ema]")
    db = tmp_path / "r.db"
    a = ablate("run", str(matrix), db=db, cwd=tmp_path, background=True)
    b = ablate("run", str(matrix), db=db, cwd=tmp_path, background=True)
    outs = [p.communicate(timeout=300)[0] for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, outs
    assert not any("locked" in o for o in outs), outs
    assert query(db, "select count(*), sum(status='completed'), max(attempt) from runs") == [(6, 6, 1)]
    assert query(db, "select count(*) from (select run_id, step from evals group by run_id, step "
                     "having count(*) > 1)") == [(0,)]


def test_raising_and_diverging_runs_fail_with_reason_and_the_rest_completes(tmp_path, needs_data):
    toggles = ("\n  - {name: bad_warmup, patch: {schedule: warmup_cosine, warmup_steps: 100000}}"
               "\n  - {name: diverge, patch: {lr: 1.0e+12, grad_clip: 1.0e+30}}"
               "\n  - dropout_005")
    matrix = write_matrix(tmp_path, "failing", toggles)
    db = tmp_path / "r.db"
    result = ablate("run", str(matrix), db=db, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr  # some failed: a script can tell
    rows = dict((n, (s, e)) for n, s, e in query(db, "select name, status, error from runs"))
    assert rows["baseline"][0] == rows["dropout_005"][0] == "completed"
    assert rows["bad_warmup"][0] == "failed" and "warmup_steps" in rows["bad_warmup"][1]
    assert rows["diverge"][0] == "failed" and "non-finite" in rows["diverge"][1]
    assert query(db, "select traceback like '%Traceback%' from runs where name='diverge'") == [(1,)]
    rerun = ablate("run", str(matrix), "--rerun", "failed", db=db, cwd=tmp_path)
    assert rerun.returncode == 1
    assert query(db, "select name, attempt from runs where status='failed' order by name") == [
        ("bad_warmup", 2), ("diverge", 2)]


def test_warm_workers_train_the_same_runs_and_leave_no_spare_behind(tmp_path, needs_data, monkeypatch):
    monkeypatch.setenv("ABLATE_TEST_TAG", str(tmp_path))  # inherited by the spares: find them
    matrix = write_matrix(tmp_path, "warm", "[sdpa]")
    cold_db, warm_db = tmp_path / "cold.db", tmp_path / "warm.db"
    cold = ablate("run", str(matrix), "--no-warm-workers", "--log-dir", "cold", db=cold_db, cwd=tmp_path)
    warm = ablate("run", str(matrix), "--warm-workers", "--log-dir", "warm", db=warm_db, cwd=tmp_path)
    assert cold.returncode == 0 and warm.returncode == 0, cold.stdout + warm.stdout + warm.stderr
    curve = ("select r.name, r.status, e.step, e.val_loss, e.train_loss from evals e "
             "join runs r on r.id = e.run_id order by r.id, e.step")
    assert query(warm_db, curve) == query(cold_db, curve)  # bit for bit: a spare only imported
    logs = sorted((tmp_path / "warm" / "warm").glob("*/run*-attempt1.log"))
    assert ["warm worker" in p.read_text() for p in logs] == [True, True]  # forked, the first too
    assert not any("warm worker" in p.read_text() for p in (tmp_path / "cold" / "warm").glob("*/run*.log"))
    assert all('"val_loss"' in p.read_text() for p in logs)  # each run's output in its own log
    assert _processes_tagged(str(tmp_path)) == []  # the last spare went with its runner


def _processes_tagged(tag: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"ABLATE_TEST_TAG={tag}".encode() in (proc / "environ").read_bytes():
                if (proc / "stat").read_text().split()[2] != "Z":
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("body, expected", [
    ("name: bad\ndesign: one-at-a-time\ntoggles: [swigl]\n", "did you mean 'swiglu'"),
    ("name: bad\ndesign: one-at-a-time\ntoggles: [sdpa]\nbase: {overrides: {d_model: big}}\n",
     "base.overrides.d_model"),
    ("name: bad\ndesign: one-at-a-time\ntoggles: [sdpa\n", "YAML"),
])
def test_bad_matrix_is_a_clear_error_and_writes_nothing(tmp_path, body, expected):
    matrix = tmp_path / "bad.yaml"
    matrix.write_text(body)
    db = tmp_path / "r.db"
    result = ablate("run", str(matrix), db=db, cwd=tmp_path)
    assert result.returncode == 2
    assert "bad.yaml" in result.stderr and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not db.exists()


@pytest.mark.parametrize("args, message", [
    (["--address", "auto"], "need --executor ray"),
    (["--executor", "ray", "--no-warm-workers"], "apply to the local executor"),
])
def test_options_of_the_other_executor_are_a_one_line_error(tmp_path, args, message):
    matrix = write_matrix(tmp_path, "opts", "[sdpa]")
    db = tmp_path / "r.db"
    result = ablate("run", str(matrix), *args, db=db, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not db.exists()


def test_plan_lists_runs_and_what_is_done(tmp_path, needs_data):
    matrix = write_matrix(tmp_path, "planned", "[sdpa, {name: same, patch: {dropout: 0.1}}]")
    db = tmp_path / "r.db"
    result = ablate("plan", str(matrix), db=db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 runs, 0 already completed" in result.stdout
    assert "'same' changes nothing" in result.stderr  # a no-op toggle is a warning, not a run


def test_ctrl_c_stops_jobs_and_marks_them_interrupted(tmp_path, needs_data):
    matrix = write_matrix(tmp_path, "ctrlc", "[sdpa]", epochs=3)
    db = tmp_path / "r.db"
    runner = ablate("run", str(matrix), db=db, cwd=tmp_path, background=True)
    run_id, job_pid = wait_for(lambda: poll(
        db, "select r.id, r.pid from runs r where r.status='running' and r.pid != ? and "
            "(select count(*) from evals e where e.run_id=r.id) >= 1", runner.pid), what="a job",
        process=runner)[0]
    runner.send_signal(signal.SIGINT)
    out, _ = runner.communicate(timeout=180)
    assert runner.returncode == 130, out
    assert "Interrupted: run again to continue (`ablate run" in " ".join(out.split())
    assert query(db, "select status, error from runs where id=?", run_id)[0][0] == "interrupted"
    assert not _alive(job_pid)
    assert query(db, "select count(*) from runs where status='running'") == [(0,)]


def test_resume_continues_a_killed_run_from_its_checkpoint_exactly(tmp_path, needs_data):
    matrix = write_matrix(tmp_path, "resume", "[]", epochs=3, extra="")
    matrix.write_text(matrix.read_text().replace("design: one-at-a-time", "design: list")
                      .replace("toggles: []", "toggles: []\nruns: [{name: baseline, toggles: []}]"))
    clean_db, db = tmp_path / "clean.db", tmp_path / "r.db"
    assert ablate("run", str(matrix), db=clean_db, cwd=tmp_path).returncode == 0
    runner = ablate("run", str(matrix), "--checkpoints", db=db, cwd=tmp_path, background=True)
    pid = wait_for(lambda: poll(
        db, "select r.pid from runs r where r.status='running' and r.pid != ? and "
            "(select count(*) from evals e where e.run_id=r.id) >= 3", runner.pid), what="evals",
        process=runner)
    os.kill(pid[0][0], signal.SIGKILL)
    runner.communicate(timeout=120)
    again = ablate("run", str(matrix), "--resume", db=db, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    (status, attempt, result), = query(db, "select status, attempt, result from runs")
    assert status == "completed" and attempt == 2
    assert json.loads(result)["resumed_from_step"] > 1
    curve = "select step, val_loss, train_loss from evals where attempt=? order by step"
    assert query(db, curve, 2) == query(clean_db, curve, 1)  # bit for bit, on CPU
