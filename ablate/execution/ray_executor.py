"""Runs on a Ray cluster: `ablate run matrix.yaml --executor ray [--address auto]`.

`RayExecutor` has the Executor interface of `executors` (free_slots / start / poll /
stop_all), so the runner's claiming, identity, resume and failure rules are the same as with
the local executor. Each claimed run becomes one Ray task asking for `num_gpus` and `num_cpus`;
the number of slots is what the cluster's total resources allow.

Where results go:

* Each worker runs the same attempt as a local job (`attempt.run_attempt`) with a
  `MailboxSink`: every message of a run (its worker's host and pid, each evaluation, the final
  result or the exception) goes to a mailbox actor pinned to the driver's node, and the driver
  replays them on the run's sink as they arrive (in `poll`, every half second): its log, and
  with SQLite (`--db results.db`, the default: workers on other machines cannot write the
  driver's file) the store. A worker waits until the mailbox holds an evaluation before
  training on, so an evaluation made before a worker dies is never lost.
* A server database (`postgresql+psycopg://...`): workers write evaluations, the result or the
  failure straight into it (a `StoreSink`, as local jobs do); the driver only logs them.

The driver keeps every claimed run's heartbeat fresh while its task lives and owns the run
under its own host and pid: Ray ends a driver's tasks when the driver dies, so the next
`ablate run` reaps the driver's runs exactly as it reaps a dead local runner's.

A run whose worker or node dies is not retried by Ray (`max_retries=0`: a retry would be a
second attempt outside the runner's attempt numbering): it is marked `interrupted`, keeps the
evaluations committed so far, and the next `ablate run` trains it again as a new attempt.

Data: when the trainer's module has `prepare_data(config, options)` (and optionally
`data_key(config)`), the driver prepares the data once per distinct key, puts it in Ray's
object store once, and the trainer gets it as `data=`; the executor knows nothing else of it.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from traceback import format_exc
from typing import Any, Callable

from sqlalchemy.engine import make_url

from ..storage.schema import plain
from ..storage.store import Store
from ..training.config import ExecOptions
from .attempt import HEARTBEAT_S, Fanout, LogSink, Sink, StoreSink, check_data_unchanged, run_attempt
from .job import EXIT_FAILED, Ended, Job

INSTALL_HINT = "the Ray executor needs Ray: pip install 'ablate[ray]'"
RESOURCES_REFRESH_S = 5.0
LOST = -9  # Ended.returncode of a run whose worker died (reported like SIGKILL)


class RayUnavailable(RuntimeError):
    """Ray cannot be used as asked (not installed, not reachable, too small); the message says
    what to do. `executors` turns it into an ExecutorError."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable(INSTALL_HINT) from e
    return ray


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


# ---------------------------------------------------------------------- worker side


class Mailbox:
    """An actor on the driver's node: workers put messages in, the driver drains them."""

    def __init__(self) -> None:
        self.messages: list[tuple] = []

    def put(self, message: tuple) -> None:
        self.messages.append(message)

    def drain(self) -> list[tuple]:
        out, self.messages = self.messages, []
        return out


class MailboxSink:
    """An attempt's sink inside a Ray worker: each call travels to the driver's mailbox (and the
    driver replays it on its own sink, `_drain`). A call returns once the mailbox holds it, so an
    evaluation made before a worker dies is never lost with it."""

    def __init__(self, send: Callable[[str, Any], None]):
        self.send = send

    def evaluated(self, metrics: dict, step_metrics: list[dict]) -> None:
        self.send("evaluated", (plain(metrics), plain(step_metrics)))

    def finished(self, result: dict) -> None:
        self.send("finished", (plain(result),))

    def failed(self, error: str, traceback: str, status: str) -> None:
        self.send("failed", (error, traceback, status))


def run_task(job: Job, config: dict, data: Any, mailbox: Any, direct: bool) -> str:
    """One run inside a Ray worker: its attempt's messages go to the mailbox and, on a server
    database (`direct`), into the database as well. Only a dead worker says nothing."""
    import ray

    def send(kind: str, payload: Any) -> None:
        ray.get(mailbox.put.remote((job.run_id, job.attempt, kind, payload)))

    send("start", {"host": socket.gethostname(), "pid": os.getpid(),
                   "node": ray.get_runtime_context().get_node_id(),
                   "gpus": [str(g) for g in ray.get_gpu_ids()]})
    options = ExecOptions(**job.options)
    if not direct:
        return run_attempt(job.trainer, config, options, MailboxSink(send), data=data)
    with Store(job.db_url, create=False) as store:
        sink = Fanout(StoreSink(store, job.run_id, job.attempt), MailboxSink(send))
        return run_attempt(job.trainer, config, options, sink, data=data)


# ---------------------------------------------------------------------- driver side


@dataclass
class _Active:
    job: Job
    ref: Any  # the task's ObjectRef
    log: Any  # open log file
    lines: LogSink  # the log, line by line
    sink: Sink  # where the worker's messages are replayed: the log, and the store unless `direct`
    outcome: str | None = None  # completed / failed / interrupted, once reported
    worker: dict | None = None


def unreachable(address: str | None, error: Exception) -> str:
    """Why Ray could not be reached, naming token authentication (on by default in recent Ray)
    when that is what refused the connection."""
    message = f"cannot start or reach Ray at {address or 'a new local instance'}: {error}"
    if re.search(r"auth|token", str(error), re.IGNORECASE):
        message += ("; the cluster uses Ray's token authentication: run with RAY_AUTH_MODE=token and "
                    "the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token (`ray get-auth-token` "
                    "on the head node prints it)")
    return message


def worker_env(cpu: bool) -> dict:
    """The runtime_env of ablate's tasks and mailbox: worker processes like a local job's.

    Ray starts workers at niceness 15, so a run shares its CPUs with any other process at a
    thirtieth of their weight (a tiny run measured 226 s instead of 5 s beside two busy
    processes) and its timings depend on whatever else runs there; and on CPU, spinning OpenMP
    workers starve each other as they do for local jobs (`executors.LocalExecutor._env`).
    Task-level env_vars are merged into the job's own runtime_env, never replace it.
    """
    env_vars = {"RAY_worker_niceness": "0"}
    if cpu:
        env_vars["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    return {"env_vars": env_vars}


class RayExecutor:
    """Runs jobs as Ray tasks; see the module docstring for how results travel."""

    def __init__(self, *, log_dir: Path, address: str | None = None, gpus_per_run: float | None = None,
                 cpus_per_run: float | None = None):
        ray = self.ray = import_ray()
        self._started_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {}
            if not (address or "").startswith("ray://"):
                kwargs["log_to_driver"] = False  # worker output stays in Ray's logs
            if address is None:
                kwargs["include_dashboard"] = False
            refused = getattr(ray.exceptions, "AuthenticationError", RuntimeError)  # Ray >= 2.52
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError, refused) as e:
                raise RayUnavailable(unreachable(address, e)) from e
            self._started_ray = True
        totals = ray.cluster_resources()
        if gpus_per_run is None:
            gpus_per_run = 1.0 if totals.get("GPU", 0) >= 1 else 0.0
        if cpus_per_run is None:
            cpus_per_run = 1.0
        if gpus_per_run < 0 or cpus_per_run < 0 or (gpus_per_run > 1 and gpus_per_run % 1):
            raise RayUnavailable(f"--gpus-per-run {gpus_per_run:g} / --cpus-per-run {cpus_per_run:g}: "
                                      "expected non-negative numbers (fractional GPUs below 1 only)")
        self.gpus_per_run, self.cpus_per_run = float(gpus_per_run), float(cpus_per_run)
        self._capacity, self._capacity_at = 0, -math.inf
        if self._slots() == 0:
            raise RayUnavailable(
                f"the Ray cluster has {totals.get('CPU', 0):g} CPUs and {totals.get('GPU', 0):g} GPUs: "
                f"not enough for one run with {self.cpus_per_run:g} CPUs and {self.gpus_per_run:g} GPUs")
        self.log_dir = log_dir
        env = worker_env(cpu=self.gpus_per_run == 0)
        self.mailbox = ray.remote(Mailbox).options(num_cpus=0, runtime_env=env,
                                                   **self._on_driver_node()).remote()
        self.task = ray.remote(run_task).options(
            num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=0, runtime_env=env)
        self.active: dict[int, _Active] = {}  # by run id
        self.reported: dict[tuple[int, int], _Active] = {}  # (run, attempt): messages go here
        self._ended: list[Ended] = []  # jobs that never reached Ray
        self._stores: dict[str, Store] = {}
        self._data: dict[tuple[str, str], Any] = {}  # (trainer, data key) -> ObjectRef
        self._beat_at = time.monotonic()

    # -------------------------------------------------------------- executor protocol

    def describe(self) -> str:
        totals = self.ray.cluster_resources()
        return (f"Ray cluster ({totals.get('CPU', 0):g} CPUs, {totals.get('GPU', 0):g} GPUs): "
                f"{self._slots()} run(s) at a time, each {self.cpus_per_run:g} CPU(s) and "
                f"{self.gpus_per_run:g} GPU(s)")

    def free_slots(self) -> int:
        return max(0, self._slots() - len(self.active))

    def start(self, job: Job, another_waits: bool = True) -> None:
        store = self._store(job.db_url)
        # runs at once on one device: a fraction of a GPU each, or (CPU) every slot at most
        sharing = max(1, math.floor(1 / self.gpus_per_run + 1e-9)) if self.gpus_per_run else self._slots()
        options = {**job.options, "device": "cuda" if self.gpus_per_run > 0 else "cpu", "runs_sharing_device": sharing}
        if self.gpus_per_run == 0 and self.cpus_per_run >= 1:
            options["threads"] = int(self.cpus_per_run)
        job = replace(job, options=options)
        log = self._open_log(job)
        try:
            run = store.run(job.run_id)
            config = run.config
            check_data_unchanged(config, run.hash)  # workers may not even see the file
            data = self._prepared(job, config)
        except Exception as e:  # noqa: BLE001 - the run fails, the matrix goes on
            tb = format_exc()
            log.write(tb)
            log.close()
            store.fail(job.run_id, job.attempt, f"data preparation failed on the driver: "
                       f"{type(e).__name__}: {e}", tb)
            self._ended.append(Ended(job, EXIT_FAILED, log.name))
            return
        direct = not is_sqlite(job.db_url)
        ref = self.task.remote(job, config, data, self.mailbox, direct)
        lines = LogSink(log)
        sink = lines if direct else Fanout(lines, StoreSink(store, job.run_id, job.attempt))
        self.active[job.run_id] = self.reported[(job.run_id, job.attempt)] = _Active(job, ref, log, lines, sink)
        log.write(f"ray task {ref.task_id().hex()} submitted: {self.cpus_per_run:g} CPU(s), "
                  f"{self.gpus_per_run:g} GPU(s), results {'written by the worker' if direct else 'committed by the driver'}\n")
        log.flush()

    def wait(self, timeout: float) -> None:
        """Until a task ends, or `timeout` (evaluations arrive in between, read by `poll`)."""
        refs = [a.ref for a in self.active.values()]
        if refs and not self._ended:
            self.ray.wait(refs, num_returns=1, timeout=timeout)
        elif not self._ended:
            time.sleep(timeout)

    def poll(self) -> list[Ended]:
        ended, self._ended = self._ended, []
        by_ref = {a.ref: a for a in self.active.values()}
        ready = self.ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)[0] if by_ref else []
        self._drain()  # after the wait: every message of a finished task is in the mailbox
        for ref in ready:
            ended.append(self._settle(by_ref[ref]))
        self._heartbeat()
        return ended

    def stop_all(self, grace_s: float = 10.0) -> list[Job]:
        """Interrupt every task (it records itself interrupted), force-cancel what outlives the grace."""
        self._drain()
        running = list(self.active.values())
        for a in running:
            self.ray.cancel(a.ref, force=False)  # KeyboardInterrupt inside the task
        refs = [a.ref for a in running]
        if refs:
            self.ray.wait(refs, num_returns=len(refs), timeout=grace_s)
        self._drain()
        for a in running:
            if a.outcome is None:
                self.ray.cancel(a.ref, force=True)
            a.log.close()
        self.active.clear()
        return [a.job for a in running]

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        if self._started_ray:
            self.ray.shutdown()

    # -------------------------------------------------------------------- internals

    def _slots(self) -> int:
        if time.monotonic() - self._capacity_at > RESOURCES_REFRESH_S:  # nodes come and go
            totals = self.ray.cluster_resources()
            slots = [math.floor(totals.get("CPU", 0) / self.cpus_per_run + 1e-9)] if self.cpus_per_run else []
            if self.gpus_per_run:
                slots.append(math.floor(totals.get("GPU", 0) / self.gpus_per_run + 1e-9))
            self._capacity = min(slots) if slots else max(1, int(totals.get("CPU", 1)))
            self._capacity_at = time.monotonic()
        return self._capacity

    def _on_driver_node(self) -> dict:
        """Pin the mailbox to the driver's node, so it lives and dies with the driver."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        try:
            node = self.ray.get_runtime_context().get_node_id()
        except Exception:  # noqa: BLE001 - Ray Client: no local node; the head node will do
            node = None
        if node:
            return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}
        return {"resources": {"node:__internal_head__": 0.001}}

    def _store(self, url: str) -> Store:
        if url not in self._stores:
            self._stores[url] = Store(url)
        return self._stores[url]

    def _open_log(self, job: Job):
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return (self.log_dir / job.log_name).open("w")

    def _prepared(self, job: Job, config: dict) -> Any:
        """The trainer module's prepare_data(config, options) result, once per data key, in
        Ray's object store; None when the module has no prepare_data."""
        module = importlib.import_module(job.trainer.partition(":")[0])
        prepare = getattr(module, "prepare_data", None)
        if prepare is None:
            return None
        key_of = getattr(module, "data_key", None)
        key = (job.trainer, key_of(config) if key_of else json.dumps(config, sort_keys=True, default=str))
        if key not in self._data:
            self._data[key] = self.ray.put(prepare(config, ExecOptions(**job.options)))
        return self._data[key]

    def _drain(self) -> None:
        """Replay the workers' messages on each run's sink, in the order they were sent."""
        for run_id, attempt, kind, payload in self.ray.get(self.mailbox.drain.remote()):
            a = self.reported.get((run_id, attempt))
            if a is None:
                continue
            if kind == "start":
                a.worker = payload
                a.lines.line(f"running on host {payload['host']} pid {payload['pid']} (ray node "
                             f"{payload['node']}, gpus {','.join(payload['gpus']) or 'none'})")
                continue
            getattr(a.sink, kind)(*payload)  # evaluated / finished / failed
            if kind != "evaluated":
                a.outcome = "completed" if kind == "finished" else payload[2]

    def _settle(self, a: _Active) -> Ended:
        """A finished task: its outcome was reported, or its worker died (→ interrupted), or
        the task itself raised outside the trainer (→ failed)."""
        self.active.pop(a.job.run_id, None)
        returncode = 0 if a.outcome == "completed" else EXIT_FAILED
        if a.outcome is None:
            from ray.exceptions import RayTaskError

            try:
                self.ray.get(a.ref)
                error, tb, status = "the Ray task ended without reporting a result", "", "interrupted"
            except RayTaskError as e:
                error, tb, status = f"the Ray task failed: {type(e.cause).__name__}: {e.cause}", str(e), "failed"
            except Exception as e:  # noqa: BLE001 - worker/node died, task cancelled, object lost
                where = f" on host {a.worker['host']} (pid {a.worker['pid']})" if a.worker else ""
                error, tb, status = f"Ray worker lost{where}: {type(e).__name__}: {str(e)[:500]}", "", "interrupted"
                returncode = LOST
            store = self._store(a.job.db_url)
            run = store.run(a.job.run_id)
            if run is not None and run.status == "running" and run.attempt == a.job.attempt:
                store.fail(a.job.run_id, a.job.attempt, error, tb, status=status)
            a.log.write(f"{status}: {error}\n{tb}")
        a.log.close()
        return Ended(a.job, returncode, a.log.name)

    def _heartbeat(self) -> None:
        """The driver vouches for its live tasks; a run another runner took over is cancelled."""
        if time.monotonic() - self._beat_at < HEARTBEAT_S:
            return
        self._beat_at = time.monotonic()
        for a in list(self.active.values()):
            if a.outcome is None and not self._store(a.job.db_url).heartbeat(a.job.run_id, a.job.attempt):
                self.ray.cancel(a.ref, force=True)
