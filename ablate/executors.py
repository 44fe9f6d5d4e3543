"""Where jobs run. An executor has slots, starts a job in a free slot, and reports jobs that
ended; the runner owns everything else (claiming, the database, progress, failure rules), so
the local executor and the Ray executor are interchangeable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from . import job as job_process
from .job import Ended, Job


class Executor(Protocol):
    def free_slots(self) -> int: ...
    def start(self, job: Job) -> None: ...
    def poll(self) -> list[Ended]: ...
    def stop_all(self) -> list[Job]: ...
    def close(self) -> None: ...


@dataclass
class Slot:
    device: str  # "cpu" or "cuda"
    visible: str | None  # CUDA_VISIBLE_DEVICES for this slot
    threads: int | None = None
    process: subprocess.Popen | None = None
    job: Job | None = None
    log: object | None = field(default=None, repr=False)
    spare: subprocess.Popen | None = field(default=None, repr=False)  # warm, waiting for a job
    spare_trainer: str | None = None  # the trainer the spare imported


def detect_slots(devices: str | list[int], jobs_per_device: int) -> list[Slot]:
    """One slot per visible GPU times jobs_per_device; CPU slots when there is no GPU."""
    gpus: list[int] = []
    if devices != "cpu":
        if isinstance(devices, list):
            gpus = devices
        else:
            import torch

            gpus = list(range(torch.cuda.device_count()))
    if gpus:
        return [Slot("cuda", str(g)) for g in gpus for _ in range(jobs_per_device)]
    threads = max(1, (os.cpu_count() or 1) // jobs_per_device)
    return [Slot("cpu", None, threads) for _ in range(jobs_per_device)]


class LocalExecutor:
    """Each job is a `python -m ablate.job` subprocess (`job.py`); its output goes to a log file.

    With warm workers (the default), each slot keeps one spare job process that imports torch
    and the trainer while the slot's current run trains, and hands it the next run: the
    seconds of start-up overlap the previous run. Still one process per run, so isolation and
    the failure rules are unchanged. A spare costs a few CPU-seconds and one idle process per
    slot (see BENCHMARKS.md for when it pays)."""

    def __init__(self, slots: list[Slot], log_dir: Path, warm_workers: bool = True):
        self.slots = slots
        self.log_dir = log_dir
        self.warm_workers = warm_workers

    def free_slots(self) -> int:
        return sum(s.process is None for s in self.slots)

    def start(self, job: Job) -> None:
        slot = next(s for s in self.slots if s.process is None)
        options = {**job.options, "device": slot.device}
        if slot.threads:
            options["threads"] = slot.threads
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / job.log_name
        slot.log = log_path.open("w")
        spare, slot.spare = slot.spare, None
        if spare is not None and (slot.spare_trainer != job.trainer
                                  or not self._hand_over(spare, job, options, log_path)):
            _discard(spare)
            spare = None
        slot.process = spare or subprocess.Popen(
            [sys.executable, "-m", job_process.__name__, "--db", job.db_url, "--run-id", str(job.run_id),
             "--attempt", str(job.attempt), "--trainer", job.trainer,
             "--options", json.dumps(options)],
            stdout=slot.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self._env(slot), start_new_session=True)  # Ctrl-C reaches the runner only
        slot.job = job
        if self.warm_workers:
            slot.spare = subprocess.Popen(
                [sys.executable, "-m", job_process.__name__, "--serve", "--trainer", job.trainer],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=self._env(slot), start_new_session=True, text=True)
            slot.spare_trainer = job.trainer

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
    def _hand_over(spare: subprocess.Popen, job: Job, options: dict, log_path: Path) -> bool:
        """Give a spare its job through its stdin; False if it died meanwhile."""
        if spare.poll() is not None:
            return False
        spec = {"db": job.db_url, "run_id": job.run_id, "attempt": job.attempt,
                "options": options, "log": str(log_path)}
        try:
            spare.stdin.write(json.dumps(spec) + "\n")
            spare.stdin.close()
        except OSError:  # BrokenPipeError: it died just now
            return False
        return True

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
        """Dismiss the spares (a spare also exits by itself when the runner's end closes its
        stdin, or with the runner through its parent-death signal)."""
        for slot in self.slots:
            if slot.spare is not None:
                _discard(slot.spare)
                slot.spare = None

    def _release(self, slot: Slot) -> Ended:
        ended = Ended(slot.job, slot.process.returncode, slot.log.name if slot.log else None)
        if slot.log:
            slot.log.close()
        slot.process = slot.job = slot.log = None
        return ended


def _discard(spare: subprocess.Popen) -> None:
    try:
        spare.stdin.close()
    except OSError:
        pass
    spare.kill()
    spare.wait()
