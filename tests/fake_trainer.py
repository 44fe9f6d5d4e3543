"""A torch-free, deterministic stand-in for `ablate.training.train:train`, for fault injection.

`train(config, on_eval, options)` emits `epochs * evals_per_epoch` evaluations, FAKE_SLEEP_S
apart (default 0.02 s). Every value is a pure function of the config and the step, so a run
interrupted and resumed any number of times must end with exactly the numbers of a clean run.
Like the real trainer, it checkpoints at each evaluation *before* reporting it (tmp file +
os.replace) when `options.checkpoint_dir` is set, and with `options.resume` restores that
checkpoint and reports the restored evaluations again first.

Faults, chosen per run by environment variables (runs are told apart by `key(config)`):

FAKE_PAUSES   JSON {key: ["point", ...]}. At each named point the process writes a marker file
              FAKE_MARKERS/<key>@<point> (content: its pid) and waits until a file
              <marker>.go appears (the test kills it meanwhile, or releases it). Each marker
              fires once, ever: a resumed attempt runs past points that already fired.
              A run's points fire in the order listed: one fires only once those before it
              have (so "report:1" listed second means the replay of eval 1 in a resumed
              attempt, not the first attempt's eval 1). Points: "start" (before anything); "before_eval:K" (eval K exists, before its
              checkpoint); "ckpt_tmp:K" (tmp written, before os.replace); "report:K" (checkpoint
              in place, before on_eval); "commit:K" (inside the database transaction that
              records eval K, just before COMMIT: the write lock is held); "after_eval:K" (eval
              K committed); "return" (all done, before the result is returned).
FAKE_ENOSPC   JSON {key: K}: the checkpoint write of eval K fails with OSError(ENOSPC), after
              writing part of the tmp file.
FAKE_DBFULL   JSON {key: K}: from eval K on, every INSERT/UPDATE this process sends to the
              database fails with sqlite3's "database or disk is full".
A local data path (csv/parquet/jsonl) in config['data'] must exist when the run starts.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
from pathlib import Path

from ablate.training.datasource import local_format

CHECKPOINT_FILE = "fake-checkpoint.json"


def key(config: dict) -> str:
    """Which run this is, for the fault tables: its lr (tests vary lr across a matrix)."""
    return repr(float(config["lr"]))


def curve(config: dict) -> list[dict]:
    """The run's evaluations: a pure function of the config (seed included) and the step."""
    blob = json.dumps(config, sort_keys=True).encode()
    n = int(config["epochs"]) * int(config["evals_per_epoch"])
    out = []
    for k in range(1, n + 1):
        step = 10 * k
        noise = int.from_bytes(hashlib.sha256(blob + b"@%d" % step).digest()[:4], "big") / 2**32
        val = 5.0 / (1.0 + 0.3 * k) + 0.05 * noise
        out.append({"step": step, "epoch": 1 + (k - 1) // int(config["evals_per_epoch"]),
                    "val_loss": val, "val_loss_full": val + 0.01, "train_loss": val - 0.1,
                    "lr": float(config["lr"]), "tokens_seen": step * 100,
                    # progress.py needs elapsed_s (bug: the contract promises only step, val_loss)
                    "elapsed_s": 0.01 * step, "tokens_per_s": 1e4,
                    "step_metrics": [{"step": step - i, "train_loss": val + i * 0.001, "lr": 0.1,
                                      "grad_norm": 1.0} for i in range(2, -1, -1)]})
    return out


def _table(name: str) -> dict:
    return json.loads(os.environ.get(name) or "{}")


class _Faults:
    def __init__(self, config: dict):
        self.key = key(config)
        self.points = list(_table("FAKE_PAUSES").get(self.key, []))
        self.markers = Path(os.environ.get("FAKE_MARKERS", "."))
        self.enospc = _table("FAKE_ENOSPC").get(self.key)
        self.dbfull = _table("FAKE_DBFULL").get(self.key)
        self.commit_point: str | None = None  # armed while on_eval records eval K
        if any(p.startswith("commit:") for p in self.points) or self.dbfull is not None:
            self._hook_database()

    def pause(self, point: str) -> None:
        pending = [p for p in self.points if not (self.markers / f"{self.key}@{p}").exists()]
        if not pending or pending[0] != point:
            return
        marker = self.markers / f"{self.key}@{point}"
        try:  # O_EXCL: fires once across attempts and processes
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        go, deadline = marker.with_name(marker.name + ".go"), time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def _hook_database(self) -> None:
        import sqlite3

        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        main = threading.main_thread()

        @event.listens_for(Engine, "commit")  # fires before the DBAPI COMMIT
        def _commit(conn) -> None:
            if self.commit_point and threading.current_thread() is main:
                point, self.commit_point = self.commit_point, None
                self.pause(point)

        @event.listens_for(Engine, "before_cursor_execute")
        def _full(conn, cursor, statement, *args) -> None:
            if self.dbfull_on and statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
                raise sqlite3.OperationalError("database or disk is full")

    dbfull_on = False


def _write_checkpoint(path: Path, state: dict, k: int, faults: _Faults) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    data = json.dumps(state).encode()
    with open(tmp, "wb") as f:
        if faults.enospc == k:
            f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    faults.pause(f"ckpt_tmp:{k}")
    os.replace(tmp, path)


def train(config: dict, on_eval=None, options=None) -> dict:
    t0 = time.perf_counter()
    faults = _Faults(config)
    faults.pause("start")
    data = str(config.get("data", ""))
    if local_format(data) and not Path(data).is_file():
        raise FileNotFoundError(f"data file {data!r} does not exist")
    sleep_s = float(os.environ.get("FAKE_SLEEP_S", "0.02"))
    evals = curve(config)
    checkpoint = Path(options.checkpoint_dir) / CHECKPOINT_FILE if options and options.checkpoint_dir else None
    done = 0

    def report(k: int, metrics: dict) -> None:
        if faults.dbfull is not None and k >= faults.dbfull:
            faults.dbfull_on = True
        faults.pause(f"report:{k}")
        faults.commit_point = f"commit:{k}" if f"commit:{k}" in faults.points else None
        if on_eval:
            on_eval(dict(metrics, step_metrics=list(metrics["step_metrics"])))
        faults.commit_point = None
        faults.pause(f"after_eval:{k}")

    if options and options.resume and checkpoint and checkpoint.exists():
        state = json.loads(checkpoint.read_text())
        if state["config"] != config:
            raise ValueError(f"checkpoint {checkpoint} belongs to another configuration")
        done = state["done"]
        for k, metrics in enumerate(state["evals"], 1):  # the restored part, reported again
            report(k, metrics)
    resumed_from = evals[done - 1]["step"] if done else 0
    for k in range(done + 1, len(evals) + 1):
        time.sleep(sleep_s)
        faults.pause(f"before_eval:{k}")
        if checkpoint:
            _write_checkpoint(checkpoint, {"config": config, "done": k, "evals": evals[:k]}, k, faults)
        report(k, evals[k - 1])
    faults.pause("return")
    best = min(evals, key=lambda e: e["val_loss"])
    return {"final_val_loss": evals[-1]["val_loss"], "best_val_loss": best["val_loss"],
            "best_step": best["step"], "steps": evals[-1]["step"], "max_steps": evals[-1]["step"],
            "truncated": False, "param_count": 1, "device": "fake",
            "wall_time_s": time.perf_counter() - t0, "resumed_from_step": resumed_from}
