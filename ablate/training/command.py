"""Your own training script as an ablate trainer: `train(config, on_eval, options)`, the entry
point every job calls for a matrix with `trainer:` (`params.CUSTOM_TRAINER`).

* `trainer: {command: "{python} train.py {args} --seed={seed} --out_dir={run_dir}"}` runs the
  command (placeholders: `params`) in the matrix's directory, in a process group of its own,
  with ABLATE_SEED and ABLATE_RUN_DIR in its environment. Its stdout lines are read by `output`:
  JSON lines, or the lines `metric.pattern` matches, are evaluations; other lines, and stderr, go
  to the run's log. A non-zero exit, a malformed line, a run past `timeout` seconds (wall time
  from its start, however much it prints), no evaluation or a pattern that never matched fails
  the run with one line saying which; Ctrl-C or SIGTERM stops the whole group and the run is
  interrupted. The run ends when the trainer's process ends: a child it forked that still holds
  stdout is stopped with the rest of its group. (A job killed outright cannot stop it: the
  trainer then dies of a broken pipe at its next line of output. No preexec_fn to tie it to the
  job: forking with one is unsafe while the job's heartbeat thread runs.)
* `trainer: {entry: module:function}` imports the module from the matrix's directory (or the
  Python path), seeds `random`, numpy and torch with the run's seed, and calls
  `function(config, report)` in the job's process: `config` is the parameters and the seed,
  `report(step, **metrics)` records one evaluation. Past `timeout` it is stopped by an
  exception its `except Exception` cannot catch; one that catches even that is ended with its
  job a grace period later, and a run that returns late is failed anyway: "timed out" each time.

Either way an evaluation must carry the matrix's metric: its last value is what the report ranks.
At most `trainer.max_evals` evaluations are stored; later ones are checked but not stored, but
for the last of a run that completes.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import os
import queue
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .config import ExecOptions
from .output import Evaluations, OutputReader, PatternTimeout, TrainerError
from .transcript import Transcript
from .params import ParamsConfig

STOP_GRACE_S = 5.0  # SIGTERM, then this long before SIGKILL
POLL_S = 0.1  # how often the deadline and the trainer's process are looked at while it is quiet
DRAIN_S = 0.5  # after the trainer's process ended: its last lines arrive within this


def train(config: dict, on_eval: Callable[[dict], None], options: ExecOptions | None, data: Any = None) -> dict:
    """Run your trainer once on `config` (a stored ParamsConfig); returns the run's result."""
    run = ParamsConfig.from_dict(config)
    evals = Evaluations(run.metric, on_eval, run.kind, run.max_evals)
    started = time.monotonic()
    if run.kind == "command":
        options = options or ExecOptions()
        run_dir = _run_dir(options)
        try:
            returned = _command(run, evals, run_dir, options.output)
        finally:
            if options.run_dir is None:  # our own temporary one: gone unless the command left files in it
                with contextlib.suppress(OSError):
                    os.rmdir(run_dir)
    else:
        returned = _entry(run, evals)
    evals.finish()
    assert evals.last is not None
    return {"wall_time_s": time.monotonic() - started, **returned, "steps": evals.last["step"]}


def _run_dir(options: ExecOptions) -> str:
    """This run's own directory, fresh for each attempt (`{run_dir}`): the job's, else a new one
    under the system's temporary directory. Always made new: a link placed at its name is
    removed (its target untouched), and a directory already there is refused, never written into."""
    if options.run_dir is None:
        return tempfile.mkdtemp(prefix="ablate-run-")
    path = Path(options.run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    try:
        path.mkdir()
    except FileExistsError:
        raise TrainerError(f"run directory {str(path)!r} is there already: each attempt gets a new one, "
                           f"and ablate writes into no other; remove it") from None
    return options.run_dir


def _command(run: ParamsConfig, evals: Evaluations, run_dir: str, output: str | None = None) -> dict:
    words = run.command(run_dir)
    env = {**os.environ, "ABLATE_SEED": str(run.seed), "ABLATE_RUN_DIR": run_dir}
    print(f"ablate: {shlex.join(words)}  (in {run.workdir}; run_dir {run_dir})", flush=True)
    transcript = _transcript(output)
    try:
        return _watch(run, evals, words, env, transcript)
    finally:
        if transcript is not None:
            transcript.close()


def _transcript(output: str | None) -> Transcript | None:
    """Where the command's output is kept as printed (`transcript`), if the job says where."""
    if output is None:
        return None
    try:
        return Transcript(output)
    except OSError as e:  # a run is not lost for want of its transcript
        print(f"ablate: cannot keep the output at {output}: {e.strerror or e}", file=sys.stderr, flush=True)
        return None


def _watch(run: ParamsConfig, evals: Evaluations, words: list[str], env: dict, transcript: Transcript | None) -> dict:
    """Run the command, reading its evaluations from stdout as they come."""
    started = time.monotonic()
    try:
        child = subprocess.Popen(words, cwd=run.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, errors="replace", start_new_session=True, env=env)
    except OSError as e:
        raise TrainerError(f"cannot start {words[0]!r} in {run.workdir}: {e.strerror or e}") from None
    exited: list[float] = []  # when the command ended, seen the moment it does (its wall time: not ours)
    reaper = threading.Thread(target=lambda: (child.wait(), exited.append(time.monotonic())), daemon=True)
    reaper.start()
    deadline = None if run.timeout_s is None else time.monotonic() + run.timeout_s
    lines: queue.Queue[str | None] = queue.Queue()
    errors: collections.deque[str] = collections.deque(maxlen=20)
    said: collections.deque[str] = collections.deque(maxlen=5)  # stdout's last lines, for a pattern that never matched
    reader = OutputReader(run.pattern)
    keep = transcript.write if transcript is not None else lambda line: None
    pumps = [threading.Thread(target=_pump, args=(child.stdout, lines.put), daemon=True),
             threading.Thread(target=_pump, args=(child.stderr, lambda t: _echo(t, errors, keep)), daemon=True)]
    for pump in pumps:
        pump.start()
    try:
        for number, line in enumerate(_lines(lines, deadline, child, run), 1):
            keep(line)
            try:
                metrics = reader.read(line, number, deadline)
            except PatternTimeout:
                if deadline is not None and time.monotonic() >= deadline:
                    raise _timed_out(run) from None
                raise
            if metrics is None:
                print(line, end="", flush=True)
                said.append(line)
                continue
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
    if run.pattern is not None and evals.last is None:
        raise TrainerError(reader.never_matched(list(said)))
    reaper.join(timeout=1.0)
    return {"wall_time_s": exited[0] - started} if exited else {}


def _pump(stream: Any, put: Callable[[Any], None]) -> None:
    for line in stream:
        put(line)
    put(None)


def _echo(line: str | None, errors: collections.deque, keep: Callable[[str], None]) -> None:
    """A line of the trainer's stderr into the run's log and its transcript (and the last few
    kept for the error)."""
    if line is not None:
        keep(line)
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
    path (its module's own imports, even late ones, find their neighbours). One that returns
    after its timeout, having caught the stop, is failed all the same."""
    module, _, name = run.spec.partition(":")

    def report(step: int, **metrics: float) -> None:
        evals.accept({"step": step, **metrics}, f"report(step={step!r})")

    before = os.getcwd()
    sys.path.insert(0, run.workdir)
    try:
        os.chdir(run.workdir)
        function = getattr(importlib.import_module(module), name)
        seed_everything(run.seed)
        started = time.monotonic()
        try:
            with _deadline(run):
                returned = function(run.values(), report)
        except Expired:
            raise _timed_out(run) from None
        if run.timeout_s is not None and time.monotonic() - started > run.timeout_s:
            raise _timed_out(run)
    finally:
        os.chdir(before)
        sys.path.remove(run.workdir)
    return returned if isinstance(returned, dict) else {}


def seed_everything(seed: int) -> None:
    """An entry point's random state fixed by the run's seed: Python's, numpy's and torch's (where
    installed), so its seeds differ as a command's `{seed}` does."""
    random.seed(seed)
    try:
        import numpy
        numpy.random.seed(seed % 2**32)
    except ImportError:
        pass
    try:
        import torch
        torch.manual_seed(seed)
    except ImportError:
        pass


class Expired(BaseException):
    """An entry point's timeout, raised inside it: a BaseException, so the `except Exception`
    of a trainer's loop does not swallow it (a KeyboardInterrupt is one for the same reason)."""


EXIT_TIMED_OUT = 124  # the job's exit status when an entry point outlived its timeout and its grace


@contextmanager
def _deadline(run: ParamsConfig) -> Iterator[None]:
    """An entry point past the timeout is stopped by SIGALRM (where signals reach: the main
    thread), raising Expired in it. One that catches even that and runs on is ended by a
    watchdog thread STOP_GRACE_S later: the reason goes to the log and the job exits with
    EXIT_TIMED_OUT, which the runner records as the run's failure."""
    if run.timeout_s is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(*_: Any) -> None:
        raise Expired()

    def abandon() -> None:
        sys.stderr.write(f"TrainerError: {_timed_out(run)}; the entry point ran on after it was told to "
                         f"stop, so its job was ended {STOP_GRACE_S:g} s later\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(EXIT_TIMED_OUT)

    watchdog = threading.Timer(run.timeout_s + STOP_GRACE_S, abandon)
    watchdog.daemon = True
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, run.timeout_s)
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
