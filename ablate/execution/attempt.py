"""One attempt at a run, the same wherever it trains: call the trainer with the run's config,
hand each evaluation to a sink the moment it exists, and sort the end into completed, failed or
interrupted.

The local executor's job process and the Ray executor's task both call `run_attempt`; they
differ only in their sink, which hears three things: `evaluated`, `finished`, `failed`.

* `StoreSink` commits them to the results database (a local job; a Ray worker writing straight
  into PostgreSQL; the Ray driver replaying its mailbox), and can keep the run's heartbeat;
* `LogSink` writes a line for each to the run's log;
* `Fanout` passes each to several sinks in turn;
* `ray_executor.MailboxSink` carries them from a Ray worker to its driver.

The trainer is any `module:function` with the signature `train(config: dict, on_eval, options)
-> dict` (and `data=` where the executor prepared the data): the attempt knows nothing else of it.
A trainer that also takes `on_step` is told of each optimizer step's end, `on_step(step)`, for
the progress a person watches between evaluations; it costs an attribute write.
"""

from __future__ import annotations

import importlib
import inspect
import json
import threading
import time
from traceback import format_exc
from typing import TYPE_CHECKING, Any, Callable, Protocol, TextIO

from ..training.config import ExecOptions, TrainConfig
from ..training.datasource import DataError, fingerprint
from ..training.params import ParamsConfig, is_custom
from .provenance import environment
from .resources import PeakMemory

if TYPE_CHECKING:
    from ..storage.store import Store

HEARTBEAT_S = 10.0  # how often a running attempt tells the database it is alive
PROGRESS_S = 1.0  # how often, at most, it records the optimizer step it reached


class Sink(Protocol):
    def evaluated(self, metrics: dict, step_metrics: list[dict]) -> None: ...
    def finished(self, result: dict) -> None: ...
    def failed(self, error: str, traceback: str, status: str) -> None: ...


def run_attempt(trainer: str, config: dict, options: ExecOptions, sink: Sink, *,
                run_hash: str | None = None, data: Any = None,
                on_step: Callable[[int], None] | None = None) -> str:
    """Train `config` once and tell `sink` everything; returns the status it reported.

    Every failure goes to the sink: a trainer that does not import, a data file changed since
    planning (checked against `run_hash` where given, i.e. where the file is read), the trainer
    raising (failed), Ctrl-C or SIGTERM (KeyboardInterrupt: interrupted). Only the sink's own
    errors escape (a database that cannot take the failure): the caller's runner sorts those out.
    """
    def on_eval(metrics: dict) -> None:
        metrics = dict(metrics)
        sink.evaluated(metrics, list(metrics.pop("step_metrics", [])))

    try:
        train = load_trainer(trainer)
        if run_hash is not None:
            check_data_unchanged(config, run_hash)
        extra: dict[str, Any] = {} if data is None else {"data": data}
        if on_step is not None and "on_step" in inspect.signature(train).parameters:
            extra["on_step"] = on_step
        memory = PeakMemory()
        command = is_custom(config) and bool(config["trainer"].get("command"))
        trained = train(config, on_eval, options, **extra)
        result = {**memory.read(command), **trained,  # a trainer's own measure of its peak wins
                  "environment": environment(config),
                  **_timing(options or ExecOptions())}
    except BaseException as e:  # noqa: BLE001 - every failure is recorded
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        sink.failed(f"{type(e).__name__}: {e}", format_exc(), status)
        return status
    sink.finished(result)
    return "completed"


def _timing(options: ExecOptions) -> dict[str, Any]:
    """How the run was timed, for the report to judge whether two runs' timings compare."""
    return {"runs_sharing_device": options.runs_sharing_device, "timed_exclusively": options.timed_exclusively}


def load_trainer(spec: str) -> Callable[..., dict[str, Any]]:
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func)


def check_data_unchanged(config: dict, run_hash: str) -> None:
    """A run's identity holds its data's fingerprint as planned; a data file edited since then
    would put other data under that identity, so the run fails instead of training. Your own
    trainer's inputs likewise."""
    if is_custom(config):
        own = ParamsConfig.from_dict(config)
        if own.identity_hash(own.fingerprint()) != run_hash:
            raise DataError(f"inputs {', '.join(own.inputs)} changed since this matrix was planned (their "
                            f"content hash differs); run `ablate run` again to plan it anew")
        return
    cfg = TrainConfig.from_dict(config)
    if cfg.identity_hash(fingerprint(cfg.data)) != run_hash:
        raise DataError(f"data file {cfg.data!r} changed since this matrix was planned (its "
                        f"content hash differs); run `ablate run` again to plan it anew")


class StoreSink:
    """An attempt's evaluations and outcome, committed to the store as they come. The store
    writes an outcome only while `attempt` is the run's current one."""

    def __init__(self, store: Store, run_id: int, attempt: int):
        self.store, self.run_id, self.attempt = store, run_id, attempt
        self._ending = threading.Event()
        self._step: int | None = None  # the last optimizer step the trainer finished

    def stepped(self, step: int) -> None:
        """A trainer's `on_step`: the heartbeat thread writes it, so a call per step is free."""
        self._step = step

    def evaluated(self, metrics: dict, step_metrics: list[dict]) -> None:
        self.store.record_eval(self.run_id, self.attempt, metrics, step_metrics)

    def finished(self, result: dict) -> None:
        self._ending.set()
        self.store.finish(self.run_id, self.attempt, result)

    def failed(self, error: str, traceback: str, status: str) -> None:
        self._ending.set()
        self.store.fail(self.run_id, self.attempt, error, traceback, status=status)

    def keep_alive(self, on_lost: Callable[[], None], every_s: float = HEARTBEAT_S,
                   progress_s: float = PROGRESS_S) -> None:
        """Beat the run's heartbeat from a thread until the outcome is being recorded (every
        `every_s`, and every `progress_s` while the step moves), and call `on_lost` when the run
        stops being this attempt's (taken over, or reaped as stale). The outcome itself ends the
        run's 'running': that is not a loss, hence the check after."""
        def beat() -> None:
            written, last = None, time.monotonic()
            while not self._ending.wait(min(every_s, progress_s)):
                step = self._step
                if step == written and time.monotonic() - last < every_s:
                    continue
                written, last = step, time.monotonic()
                if not self.store.heartbeat(self.run_id, self.attempt, step) and not self._ending.is_set():
                    on_lost()

        threading.Thread(target=beat, daemon=True).start()


class LogSink:
    """A line per call in a run's log: the step and val_loss of each evaluation (your own
    trainer's: all it reported), the traceback and status of a failure, the final loss of a
    completed run (your own trainer's: its result)."""

    def __init__(self, log: TextIO):
        self.log = log

    def line(self, text: str) -> None:
        if not self.log.closed:  # a late message after the executor closed the log
            self.log.write(text + "\n")
            self.log.flush()

    def evaluated(self, metrics: dict, step_metrics: list[dict]) -> None:
        mainrun = "val_loss" in metrics  # your own trainer's metrics are whatever it reported
        self.line(json.dumps({"step": metrics["step"], "val_loss": metrics["val_loss"]} if mainrun else metrics))

    def finished(self, result: dict) -> None:
        self.line(f"completed: final_val_loss {result['final_val_loss']}" if "final_val_loss" in result
                  else f"completed: {json.dumps(result)}")

    def failed(self, error: str, traceback: str, status: str) -> None:
        self.line(f"{traceback}{status}: {error}")


class Fanout:
    """Each call to every sink in turn (a log before the database: if the database write fails,
    the log still says what happened)."""

    def __init__(self, *sinks: Sink):
        self.sinks = sinks

    def evaluated(self, metrics: dict, step_metrics: list[dict]) -> None:
        for sink in self.sinks:
            sink.evaluated(metrics, step_metrics)

    def finished(self, result: dict) -> None:
        for sink in self.sinks:
            sink.finished(result)

    def failed(self, error: str, traceback: str, status: str) -> None:
        for sink in self.sinks:
            sink.failed(error, traceback, status)
