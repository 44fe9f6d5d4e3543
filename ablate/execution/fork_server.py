"""Warm job processes by fork, for CPU slots: one server per local executor imports the trainer
once (and runs its `warm_up()`), then forks a process per run that starts warm. Each run is
still a process of its own, as a fresh `python -m ablate.execution.job` is: its own session,
log, pid, exit status, and a SIGTERM that records it interrupted; none of the seconds a fresh
interpreter spends importing (the built-in trainer: torch and torch._dynamo, ~4.6 CPU-seconds a
run; your own trainer: ablate and SQLAlchemy, ~0.7).

Only where fork is safe: the server never trains, so no OpenMP thread pool exists in it when it
forks, and it serves CPU slots only: a trainer's import may touch CUDA (a module-level
`torch.cuda.is_available()`), which a forked child could not use, so GPU slots keep their warm
spares (executors.py).

The protocol, one line each way per event: the runner writes a job as a JSON line on the
server's stdin ({db, run_id, attempt, options, log}); the server answers `started PID` when it
has forked it and `ended PID CODE` when it reaps it (CODE as Popen's returncode: negative for a
signal). EOF on stdin: the server waits for its processes, reports them and exits. The server
gets SIGTERM when the runner dies and each job when the server dies (PDEATHSIG), so a killed
runner still takes its jobs down, and they record themselves interrupted.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from typing import NoReturn

REAP_S = 0.05  # how often the server looks for ended jobs while waiting for the next one


class ForkServer:
    """The runner's side: a server started for `trainer` with `env` (the slots' environment,
    set before the server loads any library that reads it, e.g. OMP_WAIT_POLICY)."""

    def __init__(self, trainer: str, env: dict):
        self.trainer = trainer
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, "--trainer", trainer],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True)  # Ctrl-C reaches the runner only
        fd = self.process.stdout.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self._pending = b""
        self._unstarted: list[ForkedJob] = []  # sent, in order; the server forks them in order
        self._jobs: dict[int, ForkedJob] = {}  # by pid, until reaped
        self.gone = False  # the server's output ended: it exited

    def start(self, spec: dict) -> ForkedJob | None:
        """Send one job; its process, or None if the server is gone (start a fresh one then)."""
        self.pump()
        if self.gone or self.process.stdin.closed:
            return None
        try:
            self.process.stdin.write(json.dumps(spec).encode() + b"\n")
            self.process.stdin.flush()
        except OSError:  # BrokenPipeError: it died just now
            return None
        job = ForkedJob(self)
        self._unstarted.append(job)
        return job

    def pump(self) -> None:
        """Read what the server has said so far (never blocks)."""
        if self.gone:
            return
        while True:
            try:
                chunk = os.read(self.process.stdout.fileno(), 65536)
            except BlockingIOError:
                return
            if not chunk:
                return self._lost()
            self._pending += chunk
            *lines, self._pending = self._pending.split(b"\n")
            for line in lines:
                self._heard(line.decode().split())

    def _heard(self, words: list[str]) -> None:
        if words[:1] == ["started"] and self._unstarted:
            job = self._unstarted.pop(0)
            job.pid = int(words[1])
            self._jobs[job.pid] = job
            if job.signal is not None:  # stopped before it had a pid
                job.send_signal(job.signal)
        elif words[:1] == ["ended"]:
            job = self._jobs.pop(int(words[1]), None)
            if job is not None:
                job.returncode = int(words[2])

    def _lost(self) -> None:
        """The server exited. Jobs it never forked did not run (1); the ones it forked get
        SIGTERM from its death and end by themselves, no longer reported: each reads as ended by
        SIGTERM once its pid is gone."""
        self.gone = True
        self.process.wait()
        for job in self._unstarted:
            job.returncode = 1
        self._unstarted.clear()

    def close(self) -> None:
        """No more jobs: the server exits once its jobs have ended (at once if none runs)."""
        try:
            self.process.stdin.close()
        except OSError:
            pass
        if not self._jobs and not self._unstarted:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ForkedJob:
    """One forked run as the local executor sees it: the part of `subprocess.Popen` it uses."""

    def __init__(self, server: ForkServer):
        self.server = server
        self.pid: int | None = None  # known once the server has forked it
        self.returncode: int | None = None
        self.signal: int | None = None  # asked for before the pid was known

    def poll(self) -> int | None:
        self.server.pump()
        if self.returncode is None and self.server.gone and self.pid is not None and not _alive(self.pid):
            self.returncode = -signal.SIGTERM  # its server's death stopped it (see _lost)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"run process {self.pid}", timeout)
            time.sleep(REAP_S)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is not None:
            return
        if self.pid is None:
            self.signal = signum  # sent when the server reports it started
            return
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------ the server's side


def serve(trainer: str, signing_key: str | None) -> int:
    """Import the trainer, then fork one process per job line until EOF; report each."""
    from . import job as job_process

    job_process.import_trainer(trainer)
    children: set[int] = set()
    pending, reading = b"", True
    while reading or children:
        if reading and select.select([0], [], [], REAP_S)[0]:
            chunk = os.read(0, 65536)
            reading = bool(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in filter(None, lines):
                pid = os.fork()
                if pid == 0:
                    _run_forked(json.loads(line), trainer, signing_key)
                children.add(pid)
                _say(f"started {pid}")
        while children:
            pid, status = os.waitpid(-1, 0 if not reading else os.WNOHANG)
            if pid == 0:
                break
            children.discard(pid)
            _say(f"ended {pid} {os.waitstatus_to_exitcode(status)}")
    return 0


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # before any fork: a child must not inherit unwritten lines


def _run_forked(spec: dict, trainer: str, signing_key: str | None) -> NoReturn:
    """The forked child: a job process of its own (session, parent-death signal, SIGTERM
    handler, log on stdout and stderr, no stdin), then exactly one run, then exit."""
    from . import job as job_process

    code = 1
    try:
        server = os.getppid()
        os.setsid()
        job_process.die_with_parent()
        if os.getppid() != server:  # the server died before the line above: so does this
            os._exit(1)
        signal.signal(signal.SIGTERM, job_process.interrupt)
        log = os.open(spec["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        devnull = os.open(os.devnull, os.O_RDONLY)
        for fd, to in ((devnull, 0), (log, 1), (log, 2)):
            os.dup2(fd, to)
        os.close(log)
        os.close(devnull)
        print(f"warm worker pid {os.getpid()}: forked from fork server pid {server}, which imported "
              f"{trainer} once", flush=True)
        code = job_process.run_job(spec["db"], spec["run_id"], spec["attempt"], trainer, spec["options"], signing_key)
    except BaseException:  # noqa: BLE001 - as an uncaught exception ends `python -m ...job`
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    from . import job as job_process

    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    parser.add_argument("--trainer", required=True)
    args = parser.parse_args(argv)
    signing_key = job_process.scrub_environment()
    job_process.die_with_parent()
    return serve(args.trainer, signing_key)


if __name__ == "__main__":
    sys.exit(main())
