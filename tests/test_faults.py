"""Fault injection: SIGKILL the runner and/or a job at precise points, then resume.

Jobs run `tests.fake_trainer:train` (no torch: a job starts in well under a second), which
pauses at named points (a marker file, then a wait) so a test can kill exactly there: before
the first evaluation, between evaluations, inside the database transaction that records one,
between a checkpoint's tmp file and its os.replace, during the replay of a restored run, and
before the result. After every runner exit the database must be intact, keep every evaluation
committed before each kill, hold each config once, and at the end every run is completed with
the numbers of an uninterrupted run. Also: resource faults (disk full for a checkpoint and for
the database, an unwritable database path, the data file vanishing mid-matrix) and load (four
runners and a report reader on one SQLite file).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ablate.execution.runner import process_alive
from ablate.training.config import ExecOptions

from . import fake_trainer

REPO = Path(__file__).resolve().parent.parent
TRAINER = "tests.fake_trainer:train"
BASE_LR = 0.006  # the mainrun preset's lr: the baseline run's key
TITLES = "title\n" + "a title of a few words\n" * 400  # text enough for one batch (plan checks it)


def write_matrix(tmp: Path, name: str, lrs: list[float], evals: int = 4, extra: str = "") -> Path:
    """One-at-a-time over lr: a baseline (lr 0.006) plus one run per listed lr."""
    path = tmp / f"{name}.yaml"
    path.write_text(f"name: {name}\ndesign: one-at-a-time\n"
                    f"base: {{overrides: {{epochs: 1, evals_per_epoch: {evals}}}}}\n"
                    f"execution: {{devices: cpu, jobs_per_device: 1}}\n"
                    f"toggles: [{{lr: {lrs}}}]\n{extra}")
    return path


def key(lr: float) -> str:
    return repr(float(lr))


class Bench:
    """A tmp dir with one matrix, one database, markers, and the fault tables for its jobs."""

    def __init__(self, tmp: Path, matrix: Path, pauses: dict | None = None, **faults: dict):
        self.tmp, self.matrix, self.db = tmp, matrix, tmp / "r.db"
        self.markers = tmp / "markers"
        self.markers.mkdir(exist_ok=True)
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
            FAKE_MARKERS=str(self.markers), FAKE_PAUSES=json.dumps(pauses or {}),
            **{f"FAKE_{k.upper()}": json.dumps(v) for k, v in faults.items()})
        self.snapshots: list[set] = []
        self.invocations = 0

    def start(self, *extra: str, resume: bool = True) -> subprocess.Popen:
        self.invocations += 1
        log = open(self.tmp / f"runner{self.invocations}.out", "w")
        cmd = [sys.executable, "-m", "ablate", "run", str(self.matrix), "--db", f"sqlite:///{self.db}",
               "--trainer", TRAINER, *["--resume"] * resume, "--log-dir", "logs", "--checkpoint-dir", "ckpt",
               *extra]
        proc = subprocess.Popen(cmd, cwd=self.tmp, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        proc.log_path = log.name
        log.close()
        return proc

    def output(self, proc: subprocess.Popen) -> str:
        return Path(proc.log_path).read_text()

    def wait_marker(self, name: str, runner: subprocess.Popen, timeout: float = 180) -> int:
        marker, deadline = self.markers / name, time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker.exists() and marker.stat().st_size:
                return int(marker.read_text())
            if runner.poll() is not None:
                raise RunnerExited(f"runner exited ({runner.returncode}) before {name}:\n{self.output(runner)}")
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {name}")

    def release(self, name: str) -> None:
        (self.markers / f"{name}.go").touch()

    def query(self, sql: str, *params) -> list[tuple]:
        with sqlite3.connect(self.db, timeout=30) as conn:
            return conn.execute(sql, params).fetchall()

    def exit_status(self) -> int:
        """What `ablate run` must exit with now: 1 while a run is failed or interrupted, else 0."""
        return int(bool(self.query("select count(*) from runs where status in ('failed', 'interrupted')")[0][0]))

    def snapshot(self) -> None:
        """Every evaluation committed so far: none of them may ever go missing."""
        self.snapshots.append(set(self.query(
            "select run_id, attempt, step, val_loss, train_loss from evals")))

    def check(self, n_runs: int) -> None:
        """What must hold after every runner exit, however it died."""
        assert self.query("pragma integrity_check") == [("ok",)]
        now = set(self.query("select run_id, attempt, step, val_loss, train_loss from evals"))
        for i, before in enumerate(self.snapshots):
            assert before <= now, f"evals committed before kill {i + 1} went missing: {sorted(before - now)[:5]}"
        assert self.query("select count(*), count(distinct hash), count(distinct config) from runs") == [
            (n_runs, n_runs, n_runs)]
        assert self.query("select count(*) from experiment_runs") == [(n_runs,)]

    def check_final(self, n_runs: int) -> dict[str, int]:
        """All completed, with exactly the curve and final loss of an uninterrupted run."""
        self.check(n_runs)
        rows = self.query("select id, config, status, attempt, final_val_loss, error from runs")
        attempts = {}
        for run_id, config, status, attempt, final, error in rows:
            config = json.loads(config)
            assert status == "completed", (config["lr"], status, error)
            clean: list[dict] = []
            os.environ.pop("FAKE_PAUSES", None)
            fake_trainer.train(config, clean.append, ExecOptions())  # uninterrupted, in-process
            assert final == clean[-1]["val_loss"]
            assert self.query("select step, val_loss, train_loss from evals where run_id=? and "
                              "attempt=? order by step", run_id, attempt) == [
                (e["step"], e["val_loss"], e["train_loss"]) for e in clean]
            attempts[key(config["lr"])] = attempt
        return attempts


class RunnerExited(AssertionError):
    pass


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_dead(pid: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while process_alive(pid):  # a zombie counts as dead
        assert time.monotonic() < deadline, f"process {pid} outlived its runner"
        time.sleep(0.02)


def drive(bench: Bench, events: list[tuple[str, str, str]], n_runs: int) -> int:
    """Run the matrix, killing at each (key, point, victim) in the order they are reached;
    victim: 'job' (SIGKILL the job, the runner goes on), 'runner' (SIGKILL the runner: its job
    gets SIGTERM and records itself interrupted) or 'both' (SIGKILL both: nobody records
    anything). Every kill of a runner ends an invocation; the next is `ablate run --resume`."""
    runner, kills = bench.start(), 0
    for k, point, victim in events:
        name = f"{k}@{point}"
        try:
            pid = bench.wait_marker(name, runner)
        except RunnerExited:  # it finished what it could: a resume goes on to the next point
            assert runner.returncode == bench.exit_status(), bench.output(runner)
            bench.check(n_runs)
            runner = bench.start()
            pid = bench.wait_marker(name, runner)
        if victim == "both":  # frozen first, so it cannot notice its job's death and record it
            os.kill(runner.pid, signal.SIGSTOP)
        if victim in ("job", "both"):
            kill(pid)
        if victim in ("runner", "both"):
            kill(runner.pid)
        kills += 1
        bench.snapshot()
        if point.startswith("commit:") and victim != "runner":
            # killed inside the transaction: that eval of that attempt never became visible
            wait_dead(pid)
            step = 10 * int(point.split(":")[1])
            assert bench.query("select count(*) from evals e join runs r on r.id=e.run_id where "
                               "e.attempt=r.attempt and e.step=? and json_extract(r.config,'$.lr')=?",
                               step, float(k)) == [(0,)], name
        if victim != "job":
            runner.wait(120)
            wait_dead(pid)  # the job: SIGKILLed, or finished recording its interruption
            bench.check(n_runs)
            runner = bench.start()
    assert runner.wait(120) in (0, 1), bench.output(runner)
    assert runner.returncode == bench.exit_status(), bench.output(runner)
    bench.check(n_runs)
    if bench.query("select count(*) from runs where status != 'completed'")[0][0]:
        final = bench.start()  # the runs whose jobs it lost are not retried in one invocation
        assert final.wait(120) == 0, bench.output(final)
    return kills


# 12 job kills in one 6-run matrix: six first attempts, then six resumed attempts.
JOB_KILLS = [
    (key(BASE_LR), "start", "job"),  # before the first evaluation
    (key(0.001), "before_eval:2", "job"),  # between evaluations
    (key(0.002), "commit:2", "job"),  # inside the eval's transaction, write lock held
    (key(0.003), "ckpt_tmp:3", "job"),  # checkpoint tmp written, not yet renamed
    (key(0.004), "report:4", "job"),  # last checkpoint in place, its eval not yet committed
    (key(0.005), "return", "job"),  # every eval committed, no result yet
    (key(BASE_LR), "after_eval:1", "job"),  # second attempt, from scratch (no checkpoint)
    (key(0.001), "report:1", "job"),  # replaying the restored eval 1
    (key(0.002), "commit:3", "job"),  # first new eval after the replay, mid-transaction
    (key(0.003), "ckpt_tmp:4", "job"),  # again mid-checkpoint, over an orphaned tmp file
    (key(0.004), "commit:2", "job"),  # replay mid-transaction
    (key(0.005), "after_eval:4", "job"),  # the whole replay committed, no result yet
]

# 8 runner kills in one 3-run matrix: each ends an invocation.
RUNNER_KILLS = [
    (key(BASE_LR), "before_eval:2", "runner"),
    (key(BASE_LR), "commit:3", "both"),  # both die mid-transaction: the run stays 'running'
    (key(0.001), "start", "runner"),
    (key(0.001), "ckpt_tmp:2", "both"),
    (key(0.001), "return", "runner"),
    (key(0.002), "commit:1", "runner"),  # SIGTERM lands inside the commit hook
    (key(0.002), "report:2", "both"),
    (key(0.002), "ckpt_tmp:3", "runner"),  # the resumed attempt, mid-checkpoint: SIGTERM there
]


def test_sigkilled_jobs_at_twelve_points_resume_to_the_clean_result(tmp_path):
    lrs = [0.001, 0.002, 0.003, 0.004, 0.005]
    pauses: dict[str, list[str]] = {}
    for k, point, _ in JOB_KILLS:
        pauses.setdefault(k, []).append(point)
    bench = Bench(tmp_path, write_matrix(tmp_path, "jobkills", lrs), pauses)
    assert drive(bench, JOB_KILLS, 6) == 12
    attempts = bench.check_final(6)
    assert attempts == {k: 3 for k in attempts}  # killed twice each, then completed
    results = dict(bench.query("select json_extract(config,'$.lr'), "
                               "json_extract(result,'$.resumed_from_step') from runs"))
    # the third attempts resumed from the last checkpoint that was fully written
    assert results == {0.006: 10, 0.001: 10, 0.002: 30, 0.003: 30, 0.004: 40, 0.005: 40}
    assert list((tmp_path / "ckpt").glob("*/*.tmp*"))  # orphaned tmp files did no harm


def test_sigkilled_runners_at_eight_points_resume_to_the_clean_result(tmp_path):
    pauses: dict[str, list[str]] = {}
    for k, point, _ in RUNNER_KILLS:
        pauses.setdefault(k, []).append(point)
    bench = Bench(tmp_path, write_matrix(tmp_path, "runnerkills", [0.001, 0.002]), pauses)
    assert drive(bench, RUNNER_KILLS, 3) == 8
    bench.check_final(3)
    errors = [e for (e,) in bench.query("select error from runs")]
    assert errors == [None, None, None]
    # each SIGKILL of both left a 'running' run whose job is a zombie (nothing reaps orphans
    # here); the next runner saw it dead and took it back
    outputs = "".join(p.read_text() for p in tmp_path.glob("runner*.out"))
    # (a job whose runner died usually records itself interrupted, but the SIGTERM can land
    # inside its own database write; then it is reaped the same way: never fewer reaps)
    both = sum(v == "both" for *_, v in RUNNER_KILLS)
    assert both <= outputs.count("had no live process") <= len(RUNNER_KILLS)


def test_disk_full_and_vanishing_data_fail_their_runs_with_the_reason(tmp_path):
    data = tmp_path / "titles.csv"
    data.write_text(TITLES)
    matrix = write_matrix(tmp_path, "resources", [0.001, 0.002, 0.003, 0.004], extra=f"data: {data}\n")
    bench = Bench(tmp_path, matrix, {key(0.003): ["after_eval:2"]},
                  enospc={key(0.001): 2}, dbfull={key(0.002): 3})
    runner = bench.start("--checkpoints")
    bench.wait_marker(f"{key(0.003)}@after_eval:2", runner)
    data.unlink()  # vanishes while run 0.003 trains; 0.004 has not started
    bench.release(f"{key(0.003)}@after_eval:2")
    assert runner.wait(180) == 1, bench.output(runner)  # runs failed: exit status 1
    bench.check(5)
    runs = {key(lr): (status, error) for lr, status, error in bench.query(
        "select json_extract(config,'$.lr'), status, error from runs")}
    assert runs[key(BASE_LR)] == ("completed", None)
    assert runs[key(0.003)] == ("completed", None)  # had its data already
    assert runs[key(0.001)][0] == "failed" and "No space left on device" in runs[key(0.001)][1]
    assert runs[key(0.002)][0] == "failed" and "database or disk is full" in runs[key(0.002)][1]
    assert runs[key(0.004)][0] == "failed" and f"data file '{data}' does not exist" in runs[key(0.004)][1]
    steps = lambda lr: [s for (s,) in bench.query(  # noqa: E731
        "select step from evals e join runs r on r.id=e.run_id where json_extract(r.config,'$.lr')=? "
        "order by step", lr)]
    assert steps(0.001) == [10] and steps(0.002) == [10, 20]  # what was committed stays
    ckpt = [json.loads(p.read_text()) for p in (tmp_path / "ckpt").glob("*/fake-checkpoint.json")]
    assert sorted(c["done"] for c in ckpt if c["config"]["lr"] == 0.001) == [1]  # the old one intact
    # the next invocation cannot fingerprint the data: one line, exit 2, nothing changed
    before = bench.query("select id, status, attempt from runs")
    again = subprocess.run([sys.executable, "-m", "ablate", "run", str(matrix), "--db",
                            f"sqlite:///{bench.db}"], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 2 and "does not exist" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert bench.query("select id, status, attempt from runs") == before


def test_data_edited_mid_matrix_fails_the_runs_not_yet_started_then_replans(tmp_path):
    data = tmp_path / "titles.csv"
    data.write_text(TITLES)
    matrix = write_matrix(tmp_path, "edited", [0.001, 0.002], extra=f"data: {data}\n")
    bench = Bench(tmp_path, matrix, {key(BASE_LR): ["after_eval:1"]})
    runner = bench.start()
    bench.wait_marker(f"{key(BASE_LR)}@after_eval:1", runner)
    data.write_text(TITLES + "world\n")  # edited while the baseline trains
    bench.release(f"{key(BASE_LR)}@after_eval:1")
    assert runner.wait(180) == 1, bench.output(runner)
    runs = {key(lr): (status, error) for lr, status, error in bench.query(
        "select json_extract(config,'$.lr'), status, error from runs")}
    assert runs[key(BASE_LR)] == ("completed", None)  # it had read its data already
    for lr in (0.001, 0.002):  # never trained on data other than their identity says
        assert runs[key(lr)][0] == "failed" and "changed since this matrix was planned" in runs[key(lr)][1]
        assert bench.query("select count(*) from evals e join runs r on r.id = e.run_id "
                           "where json_extract(r.config,'$.lr') = ?", lr) == [(0,)]
    # planned again, the new content is new identities: three new runs, all trained
    again = bench.start()
    assert again.wait(180) == 0, bench.output(again)
    assert bench.query("select count(*), sum(status = 'completed') from runs r join experiment_runs x "
                       "on x.run_id = r.id") == [(3, 3)]


@pytest.mark.parametrize("url", ["sqlite:////proc/nope/x.db", "sqlite:////proc/x.db", "DIR"])
def test_unwritable_database_is_a_one_line_error(tmp_path, url):
    from typer.testing import CliRunner

    from ablate.cli import app

    matrix = write_matrix(tmp_path, "nodb", [0.001])
    url = f"sqlite:///{tmp_path}" if url == "DIR" else url  # a directory where the file should be
    result = CliRunner().invoke(app, ["run", str(matrix), "--db", url, "--trainer", TRAINER])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "results database" in result.output and "Traceback" not in result.output
    assert not list((tmp_path).glob("logs*")) and not (tmp_path / "ablate-logs").exists()


def test_load_four_runners_and_a_report_reader_share_one_database(tmp_path):
    """16 runs (a factorial of four two-level toggles), four `ablate run` processes, and a
    thread building the report in a loop the whole time."""
    from ablate.results.report import build_report

    toggles = ", ".join(f"{{name: t{i}, patch: {{{field}}}}}" for i, field in enumerate(
        ["dropout: 0.0", "weight_decay: 0.01", "grad_clip: 0.5", "lr: 0.003"]))
    matrix = tmp_path / "load.yaml"
    matrix.write_text("name: load\ndesign: factorial\nbase: {overrides: {epochs: 2, evals_per_epoch: 4}}\n"
                      f"execution: {{devices: cpu}}\ntoggles: [{toggles}]\n")
    bench = Bench(tmp_path, matrix)
    bench.env["FAKE_SLEEP_S"] = "0.01"
    url = f"sqlite:///{bench.db}"
    t0 = time.perf_counter()
    runners = [bench.start() for _ in range(4)]
    reports, errors, stop = [], [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                if bench.db.exists() and bench.query(  # once a runner has registered the matrix
                        "select count(*) from sqlite_master where name='experiment_runs'")[0][0] and \
                        bench.query("select count(*) from experiment_runs")[0][0]:
                    reports.append(build_report(url, "load"))
            except Exception as e:  # noqa: BLE001 - every failure is the finding
                errors.append(repr(e))
            time.sleep(0.05)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        codes = [r.wait(180) for r in runners]
    finally:
        stop.set()
        reader.join()
    wall = time.perf_counter() - t0
    outs = [bench.output(r) for r in runners]
    assert codes == [0, 0, 0, 0], outs
    assert not any("locked" in o for o in outs + errors), outs + errors
    assert not errors, errors
    assert reports
    bench.check(16)
    assert bench.query("select count(*), sum(status='completed'), max(attempt) from runs") == [(16, 16, 1)]
    evals = bench.query("select count(*) from evals")[0][0]
    assert evals == 16 * 8
    logs = [p.name for p in (tmp_path / "logs" / "load").glob("*/*.log")]
    assert len(logs) == 16  # every run started exactly once, by one runner or another
    first, last = bench.query("select min(julianday(created_at)), max(julianday(created_at)) from evals")[0]
    active = (last - first) * 86400
    print(f"\nLOAD: {evals} evals committed in {wall:.1f}s wall = {evals / wall:.1f} evals/s "
          f"(first to last eval: {active:.1f}s = {evals / active:.1f} evals/s); "
          f"{len(reports)} reports built meanwhile")


def test_a_sigkilled_runner_leaves_its_live_job_interrupted_within_seconds_ten_times(tmp_path):
    """The job hears of its runner's death (SIGTERM, perhaps more than once) while it trains:
    it must record its run interrupted every time, never leave it 'running' for a reaper."""
    bench = Bench(tmp_path, write_matrix(tmp_path, "orphan", [0.001], evals=400))
    bench.env["FAKE_SLEEP_S"] = "0.05"
    for trial in range(10):
        runner = bench.start(*["--no-warm-workers"] * (trial % 2))
        deadline, live = time.monotonic() + 60, []
        while not live:  # a job that lives and has evaluated
            assert runner.poll() is None and time.monotonic() < deadline, bench.output(runner)
            time.sleep(0.05)
            try:
                live = bench.query("select distinct r.id, r.pid from runs r join evals e on "
                                   "e.run_id = r.id and e.attempt = r.attempt where r.status = 'running'")
            except sqlite3.OperationalError:  # no tables yet
                pass
        (run_id, pid), = live
        kill(runner.pid)  # the job's parent-death signal: SIGTERM
        for _ in range(trial % 3):  # told again, as a stop_all or a second signal would
            time.sleep(0.001 * trial)
            os.kill(pid, signal.SIGTERM)
        runner.wait(120)
        deadline = time.monotonic() + 120  # hang guards: each ends as soon as it holds
        while bench.query("select status from runs where id = ?", run_id) != [("interrupted",)]:
            assert time.monotonic() < deadline, (trial, bench.query("select status, error from runs"))
            time.sleep(0.05)
        wait_dead(pid)
        bench.check(2)


def test_two_runners_rerunning_all_seconds_apart_train_each_run_once(tmp_path):
    """The second `--rerun all` starts while the first has retrained the baseline and holds the
    next run: it joins that rerun (trains the one run left) instead of retraining the baseline."""
    matrix = write_matrix(tmp_path, "rerun", [0.003, 0.012])
    first = Bench(tmp_path, matrix).start(resume=False)
    assert first.wait(120) == 0
    bench = Bench(tmp_path, matrix, pauses={key(0.003): ["start"]})
    a = bench.start("--rerun", "all", resume=False)
    bench.wait_marker(f"{key(0.003)}@start", a)
    b = bench.start("--rerun", "all", resume=False)
    assert b.wait(120) == 0, bench.output(b)
    bench.release(f"{key(0.003)}@start")
    assert a.wait(120) == 0, bench.output(a)
    assert bench.query("select lr_key, attempt from (select json_extract(config, '$.lr') as lr_key, "
                       "attempt from runs) order by lr_key") == [(0.003, 2), (0.006, 2), (0.012, 2)]
    again = bench.start("--rerun", "all", resume=False)  # that rerun is over: this one is new
    assert again.wait(120) == 0
    assert bench.query("select min(attempt), max(attempt) from runs") == [(3, 3)]


def test_a_full_disk_under_the_runner_stops_its_jobs_and_leaves_no_run_running(tmp_path, monkeypatch):
    """The runner's own write fails (its claim of the third run: the disk is full) while one job
    trains: it stops that job, which records itself interrupted, and says so in one line."""
    from sqlalchemy import event

    from ablate.execution import runner
    from ablate.execution.executors import LocalExecutor, Slot
    from ablate.execution.matrix import load_matrix
    from ablate.storage.database import StoreError
    from ablate.storage.store import Store

    bench = Bench(tmp_path, write_matrix(tmp_path, "full", [0.001, 0.002]),
                  pauses={key(0.001): ["report:2"]})  # holds its job until released (never)
    monkeypatch.setattr(os, "environ", bench.env)
    matrix = load_matrix(bench.matrix)
    with Store(f"sqlite:///{bench.db}") as store:
        ids = runner.register(store, matrix, runner.plan(matrix))
        full = threading.Event()

        @event.listens_for(store._engine, "before_cursor_execute")
        def _disk_full(conn, cursor, statement, *args) -> None:
            if full.is_set() and statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
                raise sqlite3.OperationalError("database or disk is full")

        starts: list = []

        def on_event(name: str, details: dict) -> None:
            if name == "start":
                starts.append(details["job"])
                if len(starts) == 2:  # both slots busy: the next claim, when one ends, fails
                    full.set()

        executor = LocalExecutor([Slot("cpu", None, 1), Slot("cpu", None, 1)], tmp_path / "logs",
                                 warm_workers=False)
        with pytest.raises(StoreError) as raised:
            runner.run(store, ids, executor, trainer=TRAINER, on_event=on_event)
    message = str(raised.value)
    assert "database or disk is full" in message and "stopped its jobs" in message and "\n" not in message
    statuses = dict(bench.query("select json_extract(config, '$.lr'), status from runs"))
    assert statuses == {0.006: "completed", 0.001: "interrupted", 0.002: "queued"}, statuses
    assert "running" not in statuses.values()


@pytest.mark.parametrize("victim", ["runner", "fork server"])
def test_forked_runs_share_one_server_and_stop_when_the_runner_or_the_server_dies(tmp_path, victim):
    """On CPU slots every run, the first too, is forked from one fork server (it imported the
    trainer once). A forked run trains in a process of its own, and when its runner is SIGKILLed
    (the server's parent-death signal, then the run's) or its server is, it records itself
    interrupted; a runner whose server died goes on with the runs left, and a resume ends with
    every run's clean numbers."""
    bench = Bench(tmp_path, write_matrix(tmp_path, "forks", [0.001, 0.002, 0.003]),
                  pauses={key(0.002): ["start"]})
    runner = bench.start()
    pid = bench.wait_marker(f"{key(0.002)}@start", runner)
    server = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])  # its parent
    said = {p.name: p.read_text().splitlines()[0] for p in (tmp_path / "logs").rglob("run*-attempt1.log")}
    assert all(f"forked from fork server pid {server}," in said[f"run{i}-attempt1.log"] for i in (1, 2, 3)), said
    assert server != runner.pid and pid not in (server, runner.pid)
    kill(runner.pid if victim == "runner" else server)
    if victim == "runner":
        runner.wait(60)
    else:  # the runner sees its job end and trains the last run without the server
        assert runner.wait(120) == 1, bench.output(runner)
        assert bench.query("select status from runs where config like '%0.003%'") == [("completed",)]
    deadline = time.monotonic() + 120
    while bench.query("select status from runs where config like '%0.002%'") != [("interrupted",)]:
        assert time.monotonic() < deadline, bench.query("select status, error from runs")
        time.sleep(0.05)
    wait_dead(pid)
    wait_dead(server)
    bench.snapshot()
    bench.release(f"{key(0.002)}@start")
    assert bench.start().wait(120) == 0
    bench.check_final(4)


def test_a_gpu_slot_hands_its_next_run_to_a_spare_and_never_forks(tmp_path):
    """A GPU slot's runs are never forked (a trainer's import may have touched CUDA, which a
    forked process cannot use): each later run goes to a spare job process that imported the
    trainer itself. The fake trainer needs no GPU, so a slot named by index stands in for one."""
    matrix = write_matrix(tmp_path, "spares", [0.001, 0.002])
    matrix.write_text(matrix.read_text().replace("devices: cpu", "devices: [0]"))
    bench = Bench(tmp_path, matrix)
    assert bench.start().wait(120) == 0
    said = sorted(p.read_text().splitlines()[0] for p in (tmp_path / "logs").rglob("run*-attempt1.log"))
    assert sum("before this run arrived" in line for line in said) == 2 and not any("forked" in s for s in said)
    bench.check_final(3)
