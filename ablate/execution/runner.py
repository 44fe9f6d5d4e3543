"""`ablate run`: a matrix becomes queued runs in the database, and free executor slots claim
them one at a time until none is left.

Identity is the hash of the fully resolved config with the data replaced by its fingerprint;
a completed run with the same hash is never trained twice, in this matrix or any other.
Claiming is atomic in the store, so any number of runners can share one matrix. A job that
dies without a word is found here: by its exit status while this runner lives, by its dead pid
or stale heartbeat at the next `ablate run`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..storage.database import StoreError, masked
from ..storage.store import Store
from ..training.config import DEFAULT_TRAINER
from ..training.datasource import check_titles, fingerprint
from ..training.params import CUSTOM_TRAINER
from ..training.transcript import output_name
from .executors import Executor
from .job import Ended, Job
from .seeds import VerdictPlan, verdict_plan
from .matrix import Matrix, PlannedRun

STALE_AFTER_S = 180.0  # a heartbeat older than this means the job is gone (jobs beat every 10 s)
POLL_S = 0.5
RERUN_STATUSES = {"failed": {"failed", "interrupted"}, "all": {"completed", "failed", "interrupted"}}


class RunnerError(ValueError):
    """Runner options that cannot be honoured; the message says which."""


def check_rerun(rerun: str | None, resume: bool) -> None:
    """--rerun and --resume as the runner can honour them, checked before anything is planned."""
    if rerun not in (None, *RERUN_STATUSES):
        raise RunnerError(f"--rerun {rerun!r}: expected {' or '.join(map(repr, RERUN_STATUSES))}")
    if rerun == "all" and resume:
        raise RunnerError("--rerun all retrains from scratch; --resume continues from checkpoints: pick one")


def fail_fast_runs(fail_fast: int | None, keep_going: bool) -> int:
    """How many first runs failing alike stop the matrix: --fail-fast (at least 1), else 2; 0
    (never) with --keep-going, which may not come with a --fail-fast."""
    if fail_fast is not None and keep_going:
        raise RunnerError(f"--fail-fast {fail_fast} stops after the first failures, --keep-going never stops: pick one")
    if fail_fast is not None and fail_fast < 1:
        raise RunnerError(f"--fail-fast {fail_fast}: expected a number of runs, at least 1 (or --keep-going)")
    return 0 if keep_going else 2 if fail_fast is None else fail_fast


def process_alive(pid: int | None) -> bool:
    """Whether a process with this id exists on this host (signal 0 checks, sends nothing)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    # A zombie answers signal 0 but is dead: a job orphaned by a killed runner stays one for
    # good where PID 1 does not reap (containers without an init), and its run would look alive.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):  # no procfs (macOS), or the process just went away
        return Path(f"/proc/{pid}").exists() or not Path("/proc/self").exists()


@lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the ablate source (+ '-dirty' when modified), else the package version."""
    from .. import __version__

    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return __version__
    return f"{commit}{'-dirty' if dirty else ''}"


@dataclass(frozen=True)
class PlanRow:
    position: int
    planned: PlannedRun
    hash: str
    fingerprint: str  # of its data or inputs, part of `hash`


def plan(matrix: Matrix, data_override: str | None = None) -> list[PlanRow]:
    """The matrix's runs with their identity hashes (the data read once per distinct source,
    and checked then: bad data fails here, before any run starts). Your own trainer's runs
    share one content hash of their inputs, and have no data to override."""
    if matrix.custom:
        if data_override is not None:
            raise RunnerError("--data is for Mainrun's trainer; your own trainer reads what its "
                              "params and inputs say")
        inputs = matrix.base.fingerprint()
        return [PlanRow(i, p, p.config.identity_hash(inputs), inputs) for i, p in enumerate(matrix.expand())]
    fingerprints: dict[str, str] = {}
    batch: dict[str, int] = {}  # the most tokens one batch of a run on that data needs
    rows = []
    for i, p in enumerate(matrix.expand(data_override)):
        if p.config.data not in fingerprints:
            fingerprints[p.config.data] = fingerprint(p.config.data)
        batch[p.config.data] = max(batch.get(p.config.data, 0), p.config.batch_size * p.config.block_size + 1)
        data = fingerprints[p.config.data]
        rows.append(PlanRow(i, p, p.config.identity_hash(data), data))
    for source, tokens in batch.items():
        check_titles(source, tokens)
    return rows


def entry_point(matrix: Matrix, trainer: str | None) -> str:
    """The function each job calls: --trainer, else the matrix's own trainer's adapter, else
    Mainrun's. A matrix that names its trainer takes no --trainer."""
    if matrix.custom and trainer is not None:
        raise RunnerError(f"--trainer {trainer!r}: the matrix names its own trainer (trainer: in {matrix.path})")
    return trainer or (CUSTOM_TRAINER if matrix.custom else DEFAULT_TRAINER)


def register(store: Store, matrix: Matrix, rows: list[PlanRow], keep: list[PlanRow] = ()) -> list[int]:
    """Create the experiment and its queued runs (idempotent); returns run ids in matrix order.
    Runs of `keep` stay linked to the experiment if they are already."""
    _record_extension(store, matrix, rows)
    exp_id = store.upsert_experiment(matrix.name, matrix.description or "", matrix.text,
                                     matrix.reference, matrix.design, verdict_plan(matrix.text).to_dict())
    return store.add_runs(exp_id, [
        {"hash": r.hash, "fingerprint": r.fingerprint, "name": r.planned.name, "config": r.planned.config.to_dict(),
         "toggles": list(r.planned.toggles), "seed": r.planned.seed, "position": r.position}
        for r in rows], keep=[r.hash for r in keep])


def _record_extension(store: Store, matrix: Matrix, rows: list[PlanRow]) -> None:
    """A matrix whose seed plan is not the one its experiment stored (seeds added after the data):
    the seeds whose runs all completed before are a count at which a verdict may have been read,
    so it is kept as a look taken and the report counts it. Its stored plan and the matrix's
    alone would miss a middle one: 3 seeds, read, extended to 6, read, extended to 12 is three looks."""
    exp = store.experiment(matrix.name)
    stored = VerdictPlan.from_dict(exp.plan) if exp is not None else None
    if stored is None or stored.seeds == verdict_plan(matrix.text).seeds:
        return
    done = {h for h, run in store.runs_by_hash(r.hash for r in rows).items() if run.status == "completed"}
    complete = 0
    for seed in matrix.seeds:
        if not all(r.hash in done for r in rows if r.planned.seed == seed):
            break
        complete += 1
    if 0 < complete < len(matrix.seeds):
        store.record_look(matrix.name, complete)


def count_completed(store: Store, rows: list[PlanRow]) -> int:
    """How many of the planned runs are completed already (in this matrix or any other)."""
    return sum(run.status == "completed" for run in store.runs_by_hash(r.hash for r in rows).values())


def _statuses(store: Store, run_ids: list[int]) -> list[str]:
    return [store.run(i).status for i in dict.fromkeys(run_ids)]


def summary(store: Store, run_ids: list[int]) -> str:
    """The runs' statuses counted: '7 completed, 1 failed'."""
    statuses = _statuses(store, run_ids)
    return ", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses)))


def any_failed(store: Store, run_ids: list[int]) -> bool:
    """Whether a run of the matrix is failed or interrupted (`ablate run` then exits with 1;
    a run another runner is still training is not a failure)."""
    return any(status in ("failed", "interrupted") for status in _statuses(store, run_ids))


@dataclass
class Outcome:
    trained: list[int]  # run ids this runner started
    already_done: int  # runs completed before this invocation
    interrupted: bool = False
    stopped_by: str | None = None  # the error the first runs all failed with: the rest was not started


Progress = Callable[[str, dict], None]  # (event, details): "start", "end", "tick"


def run(store: Store, run_ids: list[int], executor: Executor, *, trainer: str = DEFAULT_TRAINER,
        options: dict | None = None, rerun: str | None = None, checkpoint_root: Path | None = None,
        run_root: Path | None = None, fail_fast: int = 0, on_event: Progress | None = None) -> Outcome:
    """Train every run of `run_ids` that is not completed, in free executor slots. With a
    `checkpoint_root`, each run checkpoints under root/<hash> (options `resume` decides whether
    an interrupted run continues from there); with a `run_root`, each attempt gets its own
    directory there (your own trainer's {run_dir}). When the first `fail_fast` runs to end all
    failed with one error, no more are started: the matrix would fail the same way N times.
    Exact under concurrency: while the runs ended so far all failed alike and fewer than
    `fail_fast` have ended, no new run starts until the running ones end, so the count that
    decides never depends on timing; runs already in flight when it stops run to their end."""
    notify = on_event or (lambda event, details: None)
    host, pid = socket.gethostname(), os.getpid()
    for reaped in store.reap_stale(host=host, stale_after_s=STALE_AFTER_S, pid_alive=process_alive):
        notify("reaped", {"run_id": reaped})
    if rerun:
        store.requeue(run_ids, RERUN_STATUSES[rerun])
    to_train = {i for i in run_ids if store.run(i).status != "completed"}
    already_done = len(run_ids) - len(to_train)
    tried: set[int] = set()  # never retry a run within one invocation (an OOM would loop)
    active: dict[int, Job] = {}
    outcome = Outcome([], already_done)
    first_errors: list[str | None] = []  # how the first runs of this invocation ended
    with _ctrl_c() as stopped:
        try:
            while not stopped.is_set():
                while (executor.free_slots() > 0 and not stopped.is_set() and outcome.stopped_by is None
                       and not _deciding(first_errors, fail_fast, active)):
                    claimed = store.claim([i for i in run_ids if i not in tried], host=host, pid=pid,
                                          code_version=code_version())
                    if claimed is None:
                        break
                    job_options = dict(options or {})
                    if checkpoint_root is not None:
                        job_options["checkpoint_dir"] = str(checkpoint_root / claimed.hash)
                    if run_root is not None:
                        job_options["run_dir"] = str(run_root / f"run{claimed.id}-attempt{claimed.attempt}")
                        job_options["output"] = str(run_root.parent / output_name(claimed.id, claimed.attempt))
                    job = Job(claimed.id, claimed.attempt, claimed.name, store.url, trainer, job_options)
                    tried.add(claimed.id)
                    executor.start(job, another_waits=bool(to_train - tried))
                    active[claimed.id] = job
                    outcome.trained.append(claimed.id)
                    notify("start", {"job": job})
                if not active:
                    return outcome  # nothing claimable and nothing running: done
                if not stopped.is_set():
                    executor.wait(POLL_S)
                for ended in executor.poll():
                    active.pop(ended.job.run_id, None)
                    _settle(store, ended)
                    done = store.run(ended.job.run_id)
                    notify("end", {"job": ended.job, "run": done})
                    if len(first_errors) < fail_fast:
                        first_errors.append(_error_kind(done.error) if done.status == "failed" else None)
                        if len(first_errors) == fail_fast and None not in first_errors and len(set(first_errors)) == 1:
                            outcome.stopped_by = done.error
                notify("tick", {"active": list(active.values())})
        except StoreError as e:  # the database refuses the runner's own writes: disk full, gone
            raise StoreError(_abandon(store, executor, e)) from None
    for job in executor.stop_all():
        store.fail(job.run_id, job.attempt, "interrupted by the user (Ctrl-C)",
                   status="interrupted")
    outcome.interrupted = True
    return outcome


def _deciding(first_errors: list[str | None], fail_fast: int, active: dict) -> bool:
    """Fail-fast is deciding: every run ended so far failed alike, fewer than `fail_fast` have
    ended, and others are still running (their ends decide; with none running, one more starts)."""
    return (bool(active) and 0 < len(first_errors) < fail_fast
            and None not in first_errors and len(set(first_errors)) == 1)


def _abandon(store: Store, executor: Executor, error: StoreError) -> str:
    """Stop every job after the runner's own write failed, mark each run interrupted where the
    database still takes it (each job also tries, on its SIGTERM), and say which runs it could
    not: they show 'running' until the next `ablate run` finds their processes gone."""
    left = []
    for job in executor.stop_all():
        try:
            run = store.run(job.run_id)
            if run is not None and run.status == "running" and run.attempt == job.attempt:
                store.fail(job.run_id, job.attempt, f"runner stopped: {error}", status="interrupted")
        except StoreError:
            left.append(job.run_id)
    if not left:
        return f"{error}; the runner stopped its jobs and marked their runs interrupted"
    return (f"{error}; the runner stopped its jobs, but run(s) {', '.join(map(str, left))} could not "
            f"be marked: they show 'running' until the next `ablate run` marks them interrupted")


@contextmanager
def _ctrl_c():
    """Ctrl-C (SIGINT) sets an event the loop checks, instead of raising KeyboardInterrupt
    wherever the main thread happens to be: inside a SQLite call the interrupt can be turned
    into a query error and lost, and the matrix would carry on as if nothing happened."""
    stopped = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stopped
        return
    previous = signal.signal(signal.SIGINT, lambda *_: stopped.set())
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGINT, previous)


def _error_kind(error: str | None) -> str:
    """An error without its numbers: runs failing alike (a step, a loss, a seed apart) compare equal."""
    return re.sub(r"\d+(\.\d+)?", "#", error or "")


def _settle(store: Store, ended: Ended) -> None:
    """A job that ended without recording an outcome: killed → interrupted, else failed."""
    run = store.run(ended.job.run_id)
    if run is None or run.status != "running" or run.attempt != ended.job.attempt:
        return
    log_tail = _tail(ended.log_path)
    if ended.returncode < 0:
        name = signal.Signals(-ended.returncode).name
        store.fail(run.id, run.attempt, f"job process killed by {name}", log_tail,
                   status="interrupted")
    else:  # e.g. the job could not record its own failure: the database was full
        reason = _last_error(log_tail)
        store.fail(run.id, run.attempt,
                   f"job process exited with code {ended.returncode} without a result"
                   f"{': ' + reason if reason else ''} (log: {ended.log_path})", log_tail)


def _last_error(log: str) -> str:
    """The last `SomeError: message` line of a log (a traceback's last word), or ''."""
    for line in reversed(log.splitlines()):
        if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b", line):
            return line.strip()[:300]
    return ""


def _tail(path: str | None, limit: int = 4000) -> str:
    if not path:
        return ""
    try:
        return Path(path).read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def estimate_seconds(store: Store, rows: list[PlanRow], matrix: Matrix) -> float | None:
    """Serial time for the runs not yet done, from completed runs that share everything but
    the matrix's toggled fields and the seed. None when no such run exists."""
    varied = {"seed", "data"} | {k for f in matrix.factors for _, patch in f.levels for k in patch}
    key = lambda cfg: tuple(sorted((k, str(v)) for k, v in cfg.items() if k not in varied))  # noqa: E731
    times: dict[tuple, list[float]] = {}
    for run in store.completed_runs():
        if run.wall_time_s:
            times.setdefault(key(run.config), []).append(run.wall_time_s)
    done = {h for h, r in store.runs_by_hash(r.hash for r in rows).items() if r.status == "completed"}
    todo = [r for r in rows if r.hash not in done]
    similar = times.get(key(rows[0].planned.config.to_dict())) if rows else None
    if not todo:
        return 0.0
    return sum(similar) / len(similar) * len(todo) if similar else None


def continue_line(matrix_path: str, db: str | None, checkpoints: bool) -> str:
    """After Ctrl-C, how to go on: the same run again trains only what is left (from each
    interrupted run's last checkpoint, where there are checkpoints)."""
    import shlex

    words = ["ablate", "run", matrix_path, *(["--db", masked(db)] if db else []), *(["--resume"] if checkpoints else [])]
    return f"Interrupted: run again to continue (`{shlex.join(words)}`); completed runs are kept."


def report_command(matrix_path: str, db: str | None) -> str:
    """The command that reads what `ablate run` just wrote: its matrix, and its --db if given
    (a password in it masked: the line is printed)."""
    import shlex

    return shlex.join(["ablate", "report", matrix_path, *(["--db", masked(db)] if db else [])])
