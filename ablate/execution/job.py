"""One run in its own process: `python -m ablate.execution.job --run-id N --attempt A` with the
database's URL in its environment (`ABLATE_JOB_DB`; never in argv, where `ps` shows a password
to every user), or `python -m ablate.execution.job --serve`: a warm worker that imports the
trainer first and then takes its one job, URL included, from stdin (it still runs exactly one
run, then exits). Either way the URL is taken out of the environment before the trainer runs,
so a trainer's own processes never inherit it.

The job reads its config from the database and runs one attempt (`attempt.run_attempt`), each
evaluation committed the moment the trainer reports it and a line of it written to the job's
log (its stdout); a crash here cannot take down the runner or the other jobs. `Job` is what the
runner hands an executor, `Ended` what an executor reports back, whether or not it runs jobs as
these processes.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from ..storage.signing import KEY_VARIABLE
from ..storage.store import Store
from ..training.config import DEFAULT_TRAINER, ExecOptions
from .attempt import Fanout, LogSink, StoreSink, run_attempt

EXIT_FAILED = 3  # the job recorded the failure itself
DB_VARIABLE = "ABLATE_JOB_DB"  # the results database's URL, handed to a job process


@dataclass(frozen=True)
class Job:
    run_id: int
    attempt: int
    name: str
    db_url: str
    trainer: str
    options: dict  # ExecOptions fields; the executor fills in device and threads

    @property
    def log_name(self) -> str:
        """The file name of this attempt's log, under the executor's log directory."""
        return f"run{self.run_id}-attempt{self.attempt}.log"


@dataclass(frozen=True)
class Ended:
    job: Job
    returncode: int  # 0 completed, EXIT_FAILED recorded its own failure, < 0 killed by that signal
    log_path: str | None = None


def die_with_parent() -> None:
    """Linux: get SIGTERM when the runner dies, so no orphan keeps a run 'running'."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def interrupt(signum: int, _frame: Any) -> None:
    """SIGTERM (Ctrl-C in the runner, or the runner's death) unwinds like Ctrl-C, so the job
    records itself as interrupted. Once only: the job can be told twice (the runner's death and
    its stop), and a second interrupt landing inside the failure handler would leave the run
    'running'; every later SIGTERM is ignored while the first one is recorded."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def run_job(db: str, run_id: int, attempt: int, trainer: str, options: dict, signing_key: str | None = None) -> int:
    store = Store(db)
    store.signing_key = signing_key
    run = store.run(run_id)
    if run is None or run.attempt != attempt:
        return EXIT_FAILED
    opts = ExecOptions(**options)
    store.set_pid(run_id, os.getpid(), opts.device)
    record = StoreSink(store, run_id, attempt)
    record.keep_alive(on_lost=lambda: os.kill(os.getpid(), signal.SIGTERM))  # a newer attempt owns it: stop
    status = run_attempt(trainer, run.config, opts, Fanout(LogSink(sys.stdout), record), run_hash=run.hash,
                         on_step=record.stepped)
    return 0 if status == "completed" else EXIT_FAILED


def import_trainer(trainer: str) -> None:
    """Import the trainer's module and run its optional `warm_up()`, before a run arrives. A
    trainer that fails to import fails again inside run_job, where the failure is recorded."""
    try:
        warm_up = getattr(importlib.import_module(trainer.partition(":")[0]), "warm_up", None)
        if warm_up is not None:
            warm_up()
    except Exception:  # noqa: BLE001 - reported with the run, by run_job
        pass


def scrub_environment() -> str | None:
    """Take the database URL's and signing key's variables out of this process's environment,
    so a trainer's processes inherit neither; returns the key."""
    os.environ.pop("ABLATE_DB", None)
    return os.environ.pop(KEY_VARIABLE, None)


def serve(trainer: str, signing_key: str | None = None) -> int:
    """A warm job: import the trainer (and run its optional `warm_up()`) first, then wait for
    one job on stdin — a JSON line with db, run_id, attempt, options and log — and run it with
    its output in that log. EOF instead of a job: not needed after all, exit quietly."""
    import_trainer(trainer)
    ready = time.monotonic()
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    spec = json.loads(line)
    log = os.open(spec["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    print(f"warm worker pid {os.getpid()}: {trainer} imported {time.monotonic() - ready:.1f} s "
          f"before this run arrived", flush=True)
    return run_job(spec["db"], spec["run_id"], spec["attempt"], trainer, spec["options"], signing_key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ablate.execution.job")
    signing_key = scrub_environment()  # the trainer's processes get no database URL or key
    parser.add_argument("--db", default=os.environ.pop(DB_VARIABLE, None),
                        help=f"the results database (default: ${DB_VARIABLE}; a password in argv is visible to all)")
    parser.add_argument("--run-id", type=int)
    parser.add_argument("--attempt", type=int)
    parser.add_argument("--trainer", default=DEFAULT_TRAINER)
    parser.add_argument("--options", default="{}", help="ExecOptions as JSON")
    parser.add_argument("--serve", action="store_true",
                        help="import the trainer, then read the job from stdin (warm workers)")
    args = parser.parse_args(argv)
    if not args.serve and None in (args.db, args.run_id, args.attempt):
        parser.error("--db, --run-id and --attempt are required (or --serve)")
    die_with_parent()
    signal.signal(signal.SIGTERM, interrupt)
    if args.serve:
        return serve(args.trainer, signing_key)
    return run_job(args.db, args.run_id, args.attempt, args.trainer, json.loads(args.options), signing_key)


if __name__ == "__main__":
    sys.exit(main())
