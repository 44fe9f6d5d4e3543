"""`ablate run --executor ray` on a local Ray instance (2 CPUs): same runs and losses as the
local executor, evaluations streamed to the driver's SQLite file or written straight into
PostgreSQL, and a killed worker's run interrupted, then completed by the next `ablate run`.

Each CLI call starts its own local Ray instance (a few seconds) on this machine's CPUs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from ablate.storage.store import Store

from .conftest import SMOKE_MATRIX
from .test_runner import ablate, poll, query, wait_for, write_matrix

ray = pytest.importorskip("ray", reason="Ray not installed: pip install 'ablate[ray]'")

RAY = ("--executor", "ray", "--cpus-per-run", "2")  # one run at a time, 2 threads: as local


def runs(db: Path) -> list[tuple]:
    return query(db, "select hash, name, status, attempt, final_val_loss from runs order by id")


def curves(db: Path) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for name, step, loss in query(db, "select r.name, e.step, e.val_loss from evals e join runs r "
                                      "on r.id = e.run_id order by r.id, e.step"):
        out.setdefault(name, []).append((step, loss))
    return out


def start_and_wait_for_evals(matrix: Path, db: Path, n: int) -> tuple[subprocess.Popen, int]:
    """`ablate run --executor ray` in the background, until a running run has n evaluations."""
    runner = ablate("run", str(matrix), *RAY, db=db, cwd=matrix.parent, background=True)
    run_id = wait_for(lambda: poll(
        db, "select r.id from runs r where r.status='running' and "
            "(select count(*) from evals e where e.run_id=r.id) >= ?", n), timeout=900,
        what=f"{n} evaluation(s)", process=runner)[0][0]
    return runner, run_id


def test_without_ray_the_command_says_how_to_install_it(tmp_path):
    matrix = tmp_path / "m.yaml"
    matrix.write_text("name: m\ndesign: one-at-a-time\ntoggles: [sdpa]\n")
    code = ("import sys; sys.modules['ray'] = None; from ablate.cli import app; "
            "sys.argv = ['ablate', 'run', sys.argv[1], '--executor', 'ray']; app()")
    result = subprocess.run([sys.executable, "-c", code, str(matrix)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'ablate[ray]'" in lines[0], result.stderr


def test_a_cluster_that_wants_its_token_is_named_as_the_cause(monkeypatch, tmp_path):
    """Recent Ray turns token authentication on by default, and a driver without the cluster's
    token is refused: the one error line says what to set."""
    from ablate.execution.ray_executor import RayExecutor, RayUnavailable

    def refuse(**_):
        raise ray.exceptions.AuthenticationError("InvalidAuthToken: the cluster refused the request")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(RayUnavailable, match=r"HEAD:6379.*token authentication: run with RAY_AUTH_MODE=token"):
        RayExecutor(log_dir=tmp_path, address="HEAD:6379")


def test_ray_executor_runs_the_smoke_matrix_like_the_local_executor(tmp_path, hn_csv, smoke_db):
    """Two of experiments/smoke.yaml's runs, the baseline and a toggle, through Ray (one CPU, one
    thread per run: as the local executor runs it with two jobs on the two cores) against the
    same runs (their identities) of the session's local smoke run."""
    spec = yaml.safe_load(SMOKE_MATRIX.read_text())
    spec.update(name="smoke-ray", toggles=spec["toggles"][:1])
    spec.pop("db")
    matrix = tmp_path / "smoke-ray.yaml"
    matrix.write_text(yaml.safe_dump(spec))
    ray_db = tmp_path / "ray.db"
    remote = ablate("run", str(matrix), "--data", hn_csv, "--executor", "ray",
                    "--log-dir", str(tmp_path / "logs"), db=ray_db, cwd=tmp_path)
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert "Ray cluster" in remote.stdout
    got = runs(ray_db)
    expected = {r[0]: r for r in runs(smoke_db.db)}
    assert len(got) == 2 and all(r[2] == "completed" for r in got)
    assert [r[:4] for r in got] == [expected[r[0]][:4] for r in got]  # same identities, names, statuses
    assert [r[4] for r in got] == pytest.approx([expected[r[0]][4] for r in got], rel=1e-6)
    local_curves, ray_curves = curves(smoke_db.db), curves(ray_db)
    assert ray_curves.keys() == {r[1] for r in got}
    for name, curve in ray_curves.items():
        assert [s for s, _ in curve] == [s for s, _ in local_curves[name]]
        assert [v for _, v in curve] == pytest.approx([v for _, v in local_curves[name]], rel=1e-6)
    # the driver committed everything; one log per run, with the worker that trained it
    logs = sorted((tmp_path / "logs" / "smoke-ray").glob("*/run*-attempt1.log"))
    assert len(logs) == 2 and all("running on host" in p.read_text() for p in logs)


def test_killed_ray_worker_run_is_interrupted_then_completed_by_the_next_run(tmp_path, hn_csv):
    matrix = write_matrix(tmp_path, "raykill", "[sdpa]", epochs=3)
    db = tmp_path / "r.db"
    runner, victim = start_and_wait_for_evals(matrix, db, 2)
    log = next((tmp_path / "ablate-logs" / "raykill").glob(f"*/run{victim}-attempt1.log"))
    pid = int(re.search(r"running on host \S+ pid (\d+)", log.read_text()).group(1))
    assert pid != runner.pid
    # the worker runs like a local job: not at Ray's niceness 15, which gave a tiny run a
    # thirtieth of the CPU beside busy processes, nor with spinning OpenMP threads
    assert os.getpriority(os.PRIO_PROCESS, pid) == 0
    assert b"OMP_WAIT_POLICY=PASSIVE" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    before = query(db, "select attempt, step, val_loss from evals where run_id=? order by step", victim)
    os.kill(pid, signal.SIGKILL)  # the Ray worker process training the run
    out, _ = runner.communicate(timeout=900)
    assert runner.returncode == 1, out  # a run was interrupted
    status, error = query(db, "select status, error from runs where id=?", victim)[0]
    assert status == "interrupted" and "Ray worker lost" in error, error
    assert set(before) <= set(query(db, "select attempt, step, val_loss from evals where run_id=?", victim))
    assert query(db, "select count(*) from runs where status='completed'") == [(1,)]  # the other run

    again = ablate("run", str(matrix), *RAY, db=db, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert query(db, "select status, attempt from runs where id=?", victim) == [("completed", 2)]
    assert query(db, "select count(*), count(distinct hash), sum(status='completed') from runs") == [(2, 2, 2)]
    assert query(db, "select count(*) from (select run_id, attempt, step from evals "
                     "group by run_id, attempt, step having count(*) > 1)") == [(0,)]
    old = dict(query(db, "select step, val_loss from evals where run_id=? and attempt=1", victim))
    new = dict(query(db, "select step, val_loss from evals where run_id=? and attempt=2", victim))
    assert len(old) >= 2 and all(new[s] == pytest.approx(v, rel=1e-6) for s, v in old.items())


def test_ctrl_c_under_ray_interrupts_the_runs_and_leaves_none_running(tmp_path, hn_csv):
    matrix = write_matrix(tmp_path, "rayctrlc", "[sdpa]", epochs=6)
    db = tmp_path / "r.db"
    runner, run_id = start_and_wait_for_evals(matrix, db, 1)
    committed = query(db, "select attempt, step, val_loss from evals where run_id=?", run_id)
    runner.send_signal(signal.SIGINT)
    out, _ = runner.communicate(timeout=600)
    assert runner.returncode == 130, out
    assert query(db, "select status from runs where id=?", run_id) == [("interrupted",)]
    assert query(db, "select count(*) from runs where status='running'") == [(0,)]
    assert set(committed) <= set(query(db, "select attempt, step, val_loss from evals where run_id=?", run_id))


def test_ablate_joins_a_running_ray_cluster_by_its_address(tmp_path, hn_csv):
    """The README's cluster path: a cluster already running (here one this test starts, with
    3 CPUs, a count this 2-core machine would never detect for a private instance), and
    `ablate run --executor ray --address HOST:PORT` sending its runs there."""
    matrix = write_matrix(tmp_path, "join", "[]")
    matrix.write_text(matrix.read_text().replace("design: one-at-a-time", "design: list")
                      .replace("toggles: []", "toggles: []\nruns: [{name: baseline, toggles: []}]"))
    db = tmp_path / "r.db"
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024**2)
    try:
        address = ray.get_runtime_context().gcs_address
        result = ablate("run", str(matrix), "--executor", "ray", "--address", address, db=db, cwd=tmp_path)
    finally:
        ray.shutdown()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ray cluster (3 CPUs" in result.stdout, result.stdout
    assert query(db, "select status, attempt from runs") == [("completed", 1)]


def test_ray_workers_write_straight_into_postgresql(tmp_path, hn_csv, pg_url):
    matrix = write_matrix(tmp_path, "raypg", "[]")  # one run: the baseline
    matrix.write_text(matrix.read_text().replace("design: one-at-a-time", "design: list")
                      .replace("toggles: []", "toggles: []\nruns: [{name: baseline, toggles: []}]"))
    cmd = [sys.executable, "-m", "ablate", "run", str(matrix), *RAY, "--db", pg_url]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)  # a hang guard: Ray starts slowly on a busy machine
    assert result.returncode == 0, result.stdout + result.stderr
    with Store(pg_url, create=False) as store:
        assert sorted(store.query(text("select status, attempt from runs"))) == [("completed", 1)]
        per_run = store.query(text("select run_id, count(*), count(distinct step) from evals group by run_id"))
        assert len(per_run) == 1 and all(n == distinct and n >= 3 for _, n, distinct in per_run)
    log = next((tmp_path / "ablate-logs" / "raypg").glob("*/run*-attempt1.log")).read_text()
    assert "written by the worker" in log and '"step": 1' in log
