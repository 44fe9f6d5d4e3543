"""Where jobs run. An executor has slots, starts a job in a free slot, and reports jobs that
ended; the runner owns everything else (claiming, the database, progress, failure rules), so
the local executor and the Ray executor are interchangeable.

`ExecutorChoice` is which executor a command asked for, with its options, checked before anything
is planned; `make_executor` builds it for a matrix. A new executor is a class with the
`Executor` methods (its jobs run `attempt.run_attempt`), a kind in KINDS and a branch in each.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..extras import installed
from . import job as job_process
from .fork_server import ForkedJob, ForkServer
from .job import Ended, Job
from .workspace import open_log

if TYPE_CHECKING:
    from .matrix import Execution

KINDS = ("local", "ray")


class Executor(Protocol):
    def describe(self) -> str: ...
    def free_slots(self) -> int: ...
    def start(self, job: Job, another_waits: bool = True) -> None: ...
    def poll(self) -> list[Ended]: ...
    def wait(self, timeout: float) -> None: ...  # until a job may have ended, at most timeout
    def stop_all(self) -> list[Job]: ...
    def close(self) -> None: ...


class ExecutorError(RuntimeError):
    """The executor cannot be used as asked; the message says what to do."""


@dataclass(frozen=True)
class ExecutorChoice:
    """The executor a command asked for and its options (None: not given, the matrix's or the
    executor's default applies). Checked when made: an unknown kind, an option of the other
    executor, Ray not installed are ExecutorErrors before anything is planned or written."""

    kind: str = "local"
    address: str | None = None  # Ray: auto | HOST:PORT | ray://HOST:PORT; None starts a private one
    gpus_per_run: float | None = None  # Ray
    cpus_per_run: float | None = None  # Ray
    jobs_per_device: int | None = None  # local: overrides the matrix's execution.jobs_per_device
    warm_workers: bool | None = None  # local: overrides the matrix's execution.warm_workers

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ExecutorError(f"--executor {self.kind!r}: expected {' or '.join(map(repr, KINDS))}")
        if self.jobs_per_device is not None and self.jobs_per_device < 1:
            raise ExecutorError(f"--jobs-per-device {self.jobs_per_device}: expected 1 or more")
        if self.kind == "local" and (self.address, self.gpus_per_run, self.cpus_per_run) != (None, None, None):
            raise ExecutorError("--address, --gpus-per-run and --cpus-per-run need --executor ray")
        if self.kind == "ray":
            if self.warm_workers is not None:
                raise ExecutorError("--warm-workers/--no-warm-workers apply to the local executor "
                                    "(Ray keeps its own workers)")
            from .ray_executor import RayUnavailable, import_ray

            try:
                import_ray()
            except RayUnavailable as e:
                raise ExecutorError(str(e)) from e


def check_timing(choice: ExecutorChoice, execution: Execution) -> None:
    """A matrix timed exclusively (one run per device at a time) runs so: not packed by
    --jobs-per-device, not on Ray (whose placement ablate does not control). Checked before
    anything is written."""
    if execution.timing == "exclusive" and (choice.kind != "local" or (choice.jobs_per_device or 1) > 1):
        raise ExecutorError("the matrix's execution.timing is 'exclusive' (one run per device at a time): "
                            + ("run it with the local executor" if choice.kind != "local"
                               else f"--jobs-per-device {choice.jobs_per_device} contradicts it"))


def make_executor(choice: ExecutorChoice, execution: Execution, log_dir: Path) -> Executor:
    """The chosen executor, set up for a matrix whose `execution` section gives the local
    executor's devices, jobs per device and warm workers (the command line overrides them)."""
    check_timing(choice, execution)
    exclusive = execution.timing == "exclusive"
    if choice.kind == "local":
        slots = detect_slots(execution.devices, choice.jobs_per_device or execution.jobs_per_device)
        warm = execution.warm_workers if choice.warm_workers is None else choice.warm_workers
        # exclusive on a CPU: no spare importing torch on the cores a timed run uses
        return LocalExecutor(slots, log_dir, warm_workers=warm and not (exclusive and slots[0].device == "cpu"),
                             exclusive=exclusive)
    from .ray_executor import RayExecutor, RayUnavailable

    try:
        return RayExecutor(address=choice.address, gpus_per_run=choice.gpus_per_run,
                           cpus_per_run=choice.cpus_per_run, log_dir=log_dir)
    except RayUnavailable as e:
        raise ExecutorError(str(e)) from e


@dataclass
class Slot:
    device: str  # "cpu" or "cuda"
    visible: str | None  # CUDA_VISIBLE_DEVICES for this slot
    threads: int | None = None
    process: subprocess.Popen | ForkedJob | None = None
    job: Job | None = None
    log: object | None = field(default=None, repr=False)
    spare: subprocess.Popen | None = field(default=None, repr=False)  # warm, waiting for a job
    spare_trainer: str | None = None  # the trainer the spare imported
    pidfd: int | None = None  # the running process's, readable once it exits (Linux)


# Runs at a time when a matrix does not say. A GPU: 4, measured on an H200 (BENCHMARKS.md §8:
# 8 full-size runs took 96 s one at a time, 56 s two, 48 s four, 49 s eight); packing hides each
# run's start-up and evaluations. A CPU: 1 run on all cores (the 27M model's matmuls use them).
DEFAULT_JOBS_PER_DEVICE = {"cuda": 4, "cpu": 1}


def detect_slots(devices: str | list[int], jobs_per_device: int | None) -> list[Slot]:
    """One slot per visible GPU times jobs_per_device; CPU slots when there is no GPU."""
    gpus: list[int] = []
    if devices != "cpu":
        if isinstance(devices, list):
            gpus = devices
        elif installed("torch") and _gpu_driver():  # no torch (your own trainer), or no driver: CPU slots
            import torch

            gpus = list(range(torch.cuda.device_count()))
    if gpus:
        jobs = jobs_per_device or DEFAULT_JOBS_PER_DEVICE["cuda"]
        return [Slot("cuda", str(g)) for g in gpus for _ in range(jobs)]
    jobs = jobs_per_device or DEFAULT_JOBS_PER_DEVICE["cpu"]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    return [Slot("cpu", None, threads) for _ in range(jobs)]


def _gpu_driver() -> bool:
    """Whether a GPU driver is loaded (Linux: NVIDIA's or ROCm's device files), so that counting
    GPUs is worth importing torch in the runner: without one torch counts 0, after seconds."""
    if not sys.platform.startswith("linux"):
        return True  # no cheap test elsewhere: ask torch
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd"))


class LocalExecutor:
    """Each job is a process of its own; its output goes to a log file.

    Cold (no warm workers, or a GPU slot's first run), a job is a fresh `python -m
    ablate.execution.job`. With warm workers (the default), CPU slots share one fork server,
    started with the first run, that imports the trainer once and forks every run from it
    (fork_server.py: no import is paid twice, not even by the first runs of two slots); a GPU
    slot keeps one spare job process that imports the trainer while the slot trains and takes
    its next run. Still one process per run, so isolation and the failure rules are unchanged
    (see BENCHMARKS.md for what each costs)."""

    def __init__(self, slots: list[Slot], log_dir: Path, warm_workers: bool = True, exclusive: bool = False):
        self.slots = slots
        self.log_dir = log_dir
        self.warm_workers = warm_workers
        self.exclusive = exclusive
        self.server: ForkServer | None = None  # CPU slots' warm processes

    def describe(self) -> str:
        return f"{len(self.slots)} {self.slots[0].device} slot(s)"

    def free_slots(self) -> int:
        return sum(s.process is None for s in self.slots)

    def start(self, job: Job, another_waits: bool = True) -> None:
        """Start `job` in a free slot (a CPU slot: forked from the fork server; a GPU slot: in
        its spare, if one waits), and a GPU slot's spare for its next run only if another run
        waits for one."""
        slot = next(s for s in self.slots if s.process is None)
        sharing = sum(s.device == slot.device and s.visible == slot.visible for s in self.slots)
        options = {**job.options, "device": slot.device, "runs_sharing_device": sharing,
                   "timed_exclusively": self.exclusive}
        if slot.threads:
            options["threads"] = slot.threads
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / job.log_name
        slot.log = open_log(log_path)
        if self.warm_workers and slot.device == "cpu":
            self._serve(slot, job.trainer)
        slot.process = (self._forked(job, options, log_path) or self._from_spare(slot, job, options, log_path)
                        or subprocess.Popen(
            [sys.executable, "-m", job_process.__name__, "--run-id", str(job.run_id),
             "--attempt", str(job.attempt), "--trainer", job.trainer,
             "--options", json.dumps(options)],
            stdout=slot.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,  # Ctrl-C reaches the runner only
            env={**self._env(slot), job_process.DB_VARIABLE: job.db_url}, start_new_session=True))
        slot.job = job
        if self.warm_workers and another_waits and slot.device != "cpu":
            self._warm(slot, job.trainer)

    def _serve(self, slot: Slot, trainer: str) -> None:
        """The CPU slots' fork server, started once (again only if it died)."""
        if self.server is None or self.server.gone or self.server.trainer != trainer:
            if self.server is not None:
                self.server.close()
            self.server = ForkServer(trainer, self._env(slot))

    def _warm(self, slot: Slot, trainer: str) -> None:
        """Get a GPU slot's next run's process ready: a spare of its own."""
        slot.spare = subprocess.Popen(
            [sys.executable, "-m", job_process.__name__, "--serve", "--trainer", trainer],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=self._env(slot), start_new_session=True, text=True)
        slot.spare_trainer = trainer

    def _forked(self, job: Job, options: dict, log_path: Path) -> ForkedJob | None:
        if self.server is None or self.server.trainer != job.trainer:
            return None
        return self.server.start(_spec(job, options, log_path))

    def _from_spare(self, slot: Slot, job: Job, options: dict, log_path: Path) -> subprocess.Popen | None:
        spare, slot.spare = slot.spare, None
        if spare is not None and (slot.spare_trainer != job.trainer
                                  or not self._hand_over(spare, _spec(job, options, log_path))):
            _discard(spare)
            spare = None
        return spare

    @staticmethod
    def _env(slot: Slot) -> dict:
        env = dict(os.environ)
        if slot.visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot.visible
        if slot.threads:
            # Spinning OpenMP workers of two CPU jobs (two runners, or jobs_per_device > 1)
            # starve each other: measured 40x slower per run; passive waiting costs ~5% alone.
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return env

    @staticmethod
    def _hand_over(spare: subprocess.Popen, spec: dict) -> bool:
        """Give a spare its job through its stdin; False if it died meanwhile."""
        if spare.poll() is not None:
            return False
        try:
            spare.stdin.write(json.dumps(spec) + "\n")
            spare.stdin.close()
        except OSError:  # BrokenPipeError: it died just now
            return False
        return True

    def wait(self, timeout: float) -> None:
        """Sleep until a job may have ended (a process's pidfd or its fork server's output is
        readable), or `timeout` passes: the next run starts as soon as a slot frees."""
        fds = []
        for slot in self.slots:
            if isinstance(slot.process, ForkedJob):
                fds.append(slot.process.server.process.stdout.fileno())
            elif slot.process is not None:
                if slot.pidfd is None and hasattr(os, "pidfd_open"):
                    try:
                        slot.pidfd = os.pidfd_open(slot.process.pid)
                    except OSError:  # reaped already, or no pidfd here (Linux < 5.3): the timeout
                        pass
                if slot.pidfd is not None:
                    fds.append(slot.pidfd)
        if fds:
            select.select(fds, [], [], timeout)
        else:
            time.sleep(timeout)

    def poll(self) -> list[Ended]:
        ended = []
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is not None:
                ended.append(self._release(slot))
        return ended

    def stop_all(self, grace_s: float = 10.0) -> list[Job]:
        """SIGTERM every job (it records itself interrupted), SIGKILL what outlives the grace."""
        self.close()
        running = [s for s in self.slots if s.process is not None]
        for slot in running:
            slot.process.send_signal(signal.SIGTERM)
        for slot in running:
            try:
                slot.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                slot.process.kill()
                slot.process.wait()
        return [self._release(s).job for s in running]

    def close(self) -> None:
        """Dismiss the spares and the fork server (each also exits by itself when the runner's
        end closes its stdin, or with the runner through its parent-death signal)."""
        if self.server is not None:
            self.server.close()
        for slot in self.slots:
            if slot.spare is not None:
                _discard(slot.spare)
                slot.spare = None

    def _release(self, slot: Slot) -> Ended:
        ended = Ended(slot.job, slot.process.returncode, slot.log.name if slot.log else None)
        if slot.log:
            slot.log.close()
        if slot.pidfd is not None:
            os.close(slot.pidfd)
        slot.process = slot.job = slot.log = slot.pidfd = None
        return ended


def _spec(job: Job, options: dict, log_path: Path) -> dict:
    """A job as a warm process takes it (on its stdin: the database URL never in argv)."""
    return {"db": job.db_url, "run_id": job.run_id, "attempt": job.attempt, "options": options,
            "log": str(log_path)}


def _discard(spare: subprocess.Popen) -> None:
    try:
        spare.stdin.close()
    except OSError:
        pass
    spare.kill()
    spare.wait()
