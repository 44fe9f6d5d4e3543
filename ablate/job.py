"""One run in its own process: `python -m ablate.job --db URL --run-id N --attempt A`, or
`python -m ablate.job --serve`: a warm worker that imports the trainer first and then takes its
one job from stdin (it still runs exactly one run, then exits).

The job reads its config from the database, calls the training entry point, and commits each
evaluation the moment the trainer reports it; a crash here cannot take down the runner or the
other jobs. It knows nothing of GPT internals: the trainer is any `module:function` with the
signature `train(config: dict, on_eval, options) -> dict`.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable

from .config import ExecOptions, TrainConfig
from .datasource import DataError, fingerprint
from .store import Store

DEFAULT_TRAINER = "ablate.train:train"
HEARTBEAT_S = 10.0
EXIT_FAILED = 3  # the job recorded the failure itself


def load_trainer(spec: str) -> Callable[..., dict[str, Any]]:
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func)


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the runner dies, so no orphan keeps a run 'running'."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _interrupt(signum: int, _frame: Any) -> None:
    """SIGTERM (Ctrl-C in the runner, or the runner's death) unwinds like Ctrl-C, so the job
    records itself as interrupted."""
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def _heartbeat(store: Store, run_id: int, attempt: int, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        if not store.heartbeat(run_id, attempt):
            os.kill(os.getpid(), signal.SIGTERM)  # a newer attempt owns the run: stop


def check_data_unchanged(config: dict, run_hash: str) -> None:
    """A run's identity holds its data's fingerprint as planned; a data file edited since then
    would put other data under that identity, so the run fails instead of training."""
    cfg = TrainConfig.from_dict(config)
    if cfg.identity_hash(fingerprint(cfg.data)) != run_hash:
        raise DataError(f"data file {cfg.data!r} changed since this matrix was planned (its "
                        f"content hash differs); run `ablate run` again to plan it anew")


def run_job(db: str, run_id: int, attempt: int, trainer: str, options: dict) -> int:
    store = Store(db)
    run = store.run(run_id)
    if run is None or run.attempt != attempt:
        return EXIT_FAILED
    opts = ExecOptions(**options)
    store.set_pid(run_id, os.getpid(), opts.device)
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(store, run_id, attempt, stop), daemon=True).start()

    def on_eval(metrics: dict) -> None:
        metrics = dict(metrics)
        steps = metrics.pop("step_metrics", [])
        store.record_eval(run_id, attempt, metrics, steps)
        sys.stdout.write(json.dumps({"step": metrics["step"], "val_loss": metrics["val_loss"]}) + "\n")
        sys.stdout.flush()

    try:
        check_data_unchanged(run.config, run.hash)
        result = load_trainer(trainer)(run.config, on_eval, opts)
    except BaseException as e:  # noqa: BLE001 - every failure is recorded, then re-signalled
        stop.set()
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        store.fail(run_id, attempt, f"{type(e).__name__}: {e}", tb, status=status)
        return EXIT_FAILED
    stop.set()
    store.finish(run_id, attempt, result)
    return 0


def serve(trainer: str) -> int:
    """A warm job: import the trainer (and run its optional `warm_up()`) first, then wait for
    one job on stdin — a JSON line with db, run_id, attempt, options and log — and run it with
    its output in that log. EOF instead of a job: not needed after all, exit quietly. A trainer
    that fails to import fails again inside run_job, where the failure is recorded."""
    module = trainer.partition(":")[0]
    try:
        warm_up = getattr(importlib.import_module(module), "warm_up", None)
        if warm_up is not None:
            warm_up()
    except Exception:  # noqa: BLE001 - reported with the run, by run_job
        pass
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
    return run_job(spec["db"], spec["run_id"], spec["attempt"], trainer, spec["options"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ablate.job")
    parser.add_argument("--db")
    parser.add_argument("--run-id", type=int)
    parser.add_argument("--attempt", type=int)
    parser.add_argument("--trainer", default=DEFAULT_TRAINER)
    parser.add_argument("--options", default="{}", help="ExecOptions as JSON")
    parser.add_argument("--serve", action="store_true",
                        help="import the trainer, then read the job from stdin (warm workers)")
    args = parser.parse_args(argv)
    if not args.serve and None in (args.db, args.run_id, args.attempt):
        parser.error("--db, --run-id and --attempt are required (or --serve)")
    _die_with_parent()
    signal.signal(signal.SIGTERM, _interrupt)
    if args.serve:
        return serve(args.trainer)
    return run_job(args.db, args.run_id, args.attempt, args.trainer, json.loads(args.options))


if __name__ == "__main__":
    sys.exit(main())
