"""Your own training script as an ablate trainer: `train(config, on_eval, options)`, the entry
point every job calls for a matrix with `trainer:` (`custom.CUSTOM_TRAINER`).

* `trainer: {command: "python train.py --lr {lr} --seed {seed}"}` runs the command in the
  matrix's directory, in a process group of its own. Each stdout line that starts with `{` is an
  evaluation, a JSON object with an integer `step` and numbers (`ablate.report_eval` prints one);
  other lines, and stderr, go to the run's log. A non-zero exit, a malformed line, a run past
  `timeout` seconds (wall time from its start, however much it prints) or no evaluation fails
  the run with one line saying which; Ctrl-C or SIGTERM stops the whole group and the run is
  interrupted. The run ends when the trainer's process ends: a child it forked that still holds
  stdout is stopped with the rest of its group. (A job killed outright cannot stop it: the
  trainer then dies of a broken pipe at its next line of output. No preexec_fn to tie it to the
  job: forking with one is unsafe while the job's heartbeat thread runs.)
* `trainer: {entry: module:function}` imports the module from the matrix's directory (or the
  Python path) and calls `function(config, report)` in the job's process: `config` is the
  parameters and the seed, `report(step, **metrics)` records one evaluation.

Either way the last evaluation must carry the matrix's metric: that is what the report ranks.
At most `trainer.max_evals` evaluations are stored; later ones are checked but not stored, but
for the last of a run that completes.
"""

from __future__ import annotations

import collections
import importlib
import json
import math
import numbers
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..training.config import ExecOptions
from .custom import DEFAULT_MAX_EVALS, ParamsConfig, command_words

STOP_GRACE_S = 5.0  # SIGTERM, then this long before SIGKILL
POLL_S = 0.1  # how often the deadline and the trainer's process are looked at while it is quiet
DRAIN_S = 0.5  # after the trainer's process ended: its last lines arrive within this


class TrainerError(RuntimeError):
    """Your trainer did not give a usable run; the message says how."""


class Evaluations:
    """Each evaluation checked (an integer step that increases, finite numbers) and passed on,
    the first `limit` of them; past it, only the last is, once the run completes (`finish`)."""

    def __init__(self, metric: str, on_eval: Callable[[dict], None], how: str = "command",
                 limit: int = DEFAULT_MAX_EVALS):
        self.metric, self.on_eval, self.how, self.limit = metric, on_eval, how, limit
        self.last: dict[str, Any] | None = None
        self.count = 0

    def accept(self, metrics: Any, where: str) -> None:
        if not isinstance(metrics, dict):
            raise TrainerError(f"{where}: expected a JSON object, got {metrics!r}"[:300])
        step = metrics.get("step")
        if not isinstance(step, numbers.Integral) or isinstance(step, bool) or step < 0:
            raise TrainerError(f"{where}: expected an integer 'step' >= 0, got {step!r}")
        if self.last is not None and step <= self.last["step"]:
            raise TrainerError(f"{where}: step {step} after step {self.last['step']}; steps must increase")
        values: dict[str, Any] = {"step": int(step)}
        for key, value in metrics.items():
            if key == "step":
                continue
            number = _finite(value)
            if number is None:
                raise TrainerError(f"{where}: {key!r} is {repr(value)[:60]}; expected a finite number")
            values[str(key)] = number
        self.last, self.count = values, self.count + 1
        if self.count <= self.limit:
            self.on_eval(dict(values))
        elif self.count == self.limit + 1:
            print(f"ablate: more than {self.limit} evaluations (trainer.max_evals): later ones are not "
                  f"stored, but for the last", file=sys.stderr, flush=True)

    def finish(self) -> None:
        """The run completed: its last evaluation, stored if it was past the limit, must carry
        the metric."""
        if self.last is None:
            raise TrainerError("no evaluation reported; " + (
                f'print JSON lines such as {{"step": 100, "{self.metric}": 2.31}} (or call ablate.report_eval)'
                if self.how == "command" else f"call report(100, {self.metric}=2.31), the function's second argument"))
        if self.metric not in self.last:
            keys = ", ".join(k for k in self.last if k != "step") or "none"
            raise TrainerError(f"the last evaluation (step {self.last['step']}) has no {self.metric!r}, the "
                               f"matrix's metric (it has: {keys})")
        if self.count > self.limit:
            self.on_eval(dict(self.last))


def _finite(value: Any) -> float | None:
    """A reported value as a float, or None unless it is a finite number (JSON's 1e999 too)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def train(config: dict, on_eval: Callable[[dict], None], options: ExecOptions, data: Any = None) -> dict:
    """Run your trainer once on `config` (a stored ParamsConfig); returns the run's result."""
    run = ParamsConfig.from_dict(config)
    evals = Evaluations(run.metric, on_eval, run.kind, run.max_evals)
    started = time.monotonic()
    returned = _command(run, evals) if run.kind == "command" else _entry(run, evals)
    evals.finish()
    assert evals.last is not None
    return {**returned, "wall_time_s": time.monotonic() - started, "steps": evals.last["step"]}


def _command(run: ParamsConfig, evals: Evaluations) -> dict:
    words = command_words(run.spec, run.values())
    try:
        child = subprocess.Popen(words, cwd=run.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, errors="replace", start_new_session=True)
    except OSError as e:
        raise TrainerError(f"cannot start {words[0]!r} in {run.workdir}: {e.strerror or e}") from None
    deadline = None if run.timeout_s is None else time.monotonic() + run.timeout_s
    lines: queue.Queue[str | None] = queue.Queue()
    errors: collections.deque[str] = collections.deque(maxlen=20)
    pumps = [threading.Thread(target=_pump, args=(child.stdout, lines.put), daemon=True),
             threading.Thread(target=_pump, args=(child.stderr, lambda t: _echo(t, errors)), daemon=True)]
    for pump in pumps:
        pump.start()
    try:
        for number, line in enumerate(_lines(lines, deadline, child, run), 1):
            text = line.strip()
            if not text.startswith("{"):
                print(line, end="", flush=True)
                continue
            try:
                metrics = json.loads(text)
            except json.JSONDecodeError as e:
                raise TrainerError(f"stdout line {number} is not valid JSON ({e.msg}): {text[:120]}") from None
            evals.accept(metrics, f"stdout line {number}")
        code = child.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise _timed_out(run) from None
    finally:
        _stop(child)
    for pump in pumps:
        pump.join(timeout=1.0)
    if code != 0:
        last = next((e for e in reversed(errors) if e.strip()), "").strip()
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        raise TrainerError(f"{shlex.join(words[:2])} {how}{': ' + last[:300] if last else ''}")
    return {}


def _pump(stream: Any, put: Callable[[Any], None]) -> None:
    for line in stream:
        put(line)
    put(None)


def _echo(line: str | None, errors: collections.deque) -> None:
    """A line of the trainer's stderr into the run's log (and the last few kept for the error)."""
    if line is not None:
        errors.append(line)
        sys.stderr.write(line)
        sys.stderr.flush()


def _lines(lines: queue.Queue, deadline: float | None, child: subprocess.Popen, run: ParamsConfig) -> Iterator[str]:
    """The trainer's stdout, line by line, until it closes or the trainer's process has ended
    (a child it forked may hold stdout open: that is not the trainer's output). Past the
    deadline it times out, however fast the lines come."""
    while True:
        if deadline is not None and time.monotonic() > deadline:
            raise _timed_out(run)
        ended = child.poll() is not None
        try:
            line = lines.get(timeout=DRAIN_S if ended else POLL_S)
        except queue.Empty:
            if ended:
                return
            continue
        if line is None:
            return
        yield line


def _timed_out(run: ParamsConfig) -> TrainerError:
    return TrainerError(f"timed out after {run.timeout_s:g} s (trainer.timeout); stopped")


def _stop(child: subprocess.Popen) -> None:
    """The trainer's whole process group stopped: SIGTERM, then SIGKILL after a grace period;
    what it left running in its group once it has ended (a forked child), SIGKILL."""
    if child.poll() is None:
        for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, None)):
            try:
                os.killpg(child.pid, sig)
                child.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
    child.wait()
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # nothing left in its group
        pass


def _entry(run: ParamsConfig, evals: Evaluations) -> dict:
    """The function called as a command would run: from the matrix's directory, with it on the
    path (its module's own imports, even late ones, find their neighbours)."""
    module, _, name = run.spec.partition(":")

    def report(step: int, **metrics: float) -> None:
        evals.accept({"step": step, **metrics}, f"report(step={step!r})")

    before = os.getcwd()
    sys.path.insert(0, run.workdir)
    try:
        os.chdir(run.workdir)
        function = getattr(importlib.import_module(module), name)
        with _deadline(run):
            returned = function(run.values(), report)
    finally:
        os.chdir(before)
        sys.path.remove(run.workdir)
    return returned if isinstance(returned, dict) else {}


@contextmanager
def _deadline(run: ParamsConfig) -> Iterator[None]:
    """An entry point past the timeout is stopped by SIGALRM (where signals reach: the main thread)."""
    if run.timeout_s is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(*_: Any) -> None:
        raise _timed_out(run)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, run.timeout_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
