"""What a run cost, measured per run (issue 32, part 1): time per step and throughput after the
warm-up step for the built-in trainer, the peak resident memory of the process that trained for
every trainer (a command trainer: its command's), per run even in a process that ran others."""

from __future__ import annotations

import json
import mmap
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ablate.execution.attempt import run_attempt
from ablate.training import train as T
from ablate.training.config import ExecOptions, TrainConfig
from ablate.training.train import train

from .conftest import TINY

MIB = 2**20


class Recorder:
    """A sink that keeps what the attempt reports."""

    def __init__(self):
        self.result, self.error = None, None

    def evaluated(self, metrics, step_metrics):
        pass

    def finished(self, result):
        self.result = result

    def failed(self, error, traceback, status):
        self.error = f"{status}: {error}\n{traceback}"


def touched(mb: int) -> mmap.mmap:
    """`mb` MiB of new resident pages: a fresh anonymous mapping, one byte written per page (a
    bytearray may reuse pages the process's heap already holds, and raise no peak at all)."""
    block = mmap.mmap(-1, mb * MIB)
    block[::4096] = b"x" * (mb * MIB // 4096)
    return block


def small_trainer(config, on_eval, options):
    """An entry point that holds 20 MiB above what its process held when it started (read here:
    the process may have given memory back between the test's reading and the attempt's start)."""
    resident_at_start = status_kib("VmRSS") * 1024
    held = touched(20)
    on_eval({"step": 1, "val_loss": 1.0})
    return {"final_val_loss": 1.0, "steps": 1, "held": len(held), "resident_at_start": resident_at_start}


def test_the_built_in_trainer_reports_its_speed_after_the_warm_up_step(hn_csv):
    result = train(TrainConfig(**{**TINY, "data": hn_csv}), options=ExecOptions(max_steps=6, step_metrics=False))
    tokens_per_step = TINY["batch_size"] * TINY["block_size"]
    assert result["warmup_s"] > 0 and result["step_time_s"] > 0
    assert result["train_tokens_per_s"] == pytest.approx(tokens_per_step / result["step_time_s"])
    assert result["train_time_s"] == pytest.approx(result["warmup_s"] + 5 * result["step_time_s"])
    assert "peak_cuda_allocated_bytes" not in result  # a CPU run


def status_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE).group(1))


def test_an_attempt_measures_its_own_peak_not_what_its_process_held_before():
    before = touched(300)  # an earlier run in this process peaked 300 MiB higher
    before.close()
    high_water = status_kib("VmHWM") * 1024
    assert high_water > status_kib("VmRSS") * 1024 + 250 * MIB
    sink = Recorder()
    status = run_attempt("tests.test_cost:small_trainer", {"lr": 1.0}, ExecOptions(), sink)
    assert status == "completed", sink.error
    assert sink.result["peak_rss_of"] == "the run's process"
    peak = sink.result["peak_rss_bytes"]
    assert sink.result["resident_at_start"] + 15 * MIB < peak < high_water - 200 * MIB  # reset at its start


def test_the_built_in_trainers_peak_is_its_trainings_not_its_data_preparations(hn_csv, monkeypatch):
    """A run that missed the data cache trained a tokenizer first; its peak must not count that,
    or the first run of an experiment seems to need more memory than its twins."""
    real, spike = T.prepare, {}

    def costly_prepare(cfg, cache_dir=None):
        touched(300).close()  # what training a tokenizer may hold for a while
        spike["high_water"] = status_kib("VmHWM") * 1024
        return real(cfg, cache_dir)
    monkeypatch.setattr(T, "prepare", costly_prepare)
    sink = Recorder()
    status = run_attempt("ablate.training.train:train", {**TINY, "data": hn_csv},
                         ExecOptions(max_steps=3, step_metrics=False), sink)
    assert status == "completed", sink.error
    assert sink.result["peak_rss_of"] == T.TRAINING_PEAK
    assert 0 < sink.result["peak_rss_bytes"] < spike["high_water"] - 200 * MIB


ALLOC = """
    import argparse, json
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=int)
    p.add_argument("--seed", type=int)
    a = p.parse_args()
    block = bytearray(a.mb * 2**20)
    block[::4096] = b"x" * len(block[::4096])
    print(json.dumps({"step": 1, "val_loss": 1.0 + a.seed / 100}))
"""


def test_a_command_trainers_peak_is_its_commands_and_tells_200_from_50_mib(tmp_path):
    (tmp_path / "alloc.py").write_text(textwrap.dedent(ALLOC))
    (tmp_path / "m.yaml").write_text(
        "name: mem\ntrainer: {command: '{python} alloc.py --mb {mb} --seed {seed}'}\nparams: {mb: 50}\n"
        "metric: {name: val_loss}\nmin_effect: 0.1\nseeds: [1, 2]\ndesign: one-at-a-time\n"
        "toggles:\n  - name: big\n    patch: {mb: 200}\n")
    env = {k: v for k, v in os.environ.items() if k != "ABLATE_DB"}
    ran = subprocess.run([sys.executable, "-m", "ablate", "run", "m.yaml", "--db", "r.db"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    rows = sqlite3.connect(tmp_path / "r.db").execute("SELECT name, result FROM runs WHERE seed = 1").fetchall()
    peak = {name: json.loads(result)["peak_rss_bytes"] for name, result in rows}
    assert {json.loads(result)["peak_rss_of"] for _, result in rows} == {"the command's largest process"}
    assert peak["baseline"] >= 50 * MIB and peak["big"] >= 200 * MIB
    assert peak["big"] - peak["baseline"] == pytest.approx(150 * MIB, rel=0.2)  # the job's own memory apart
    shown = subprocess.run([sys.executable, "-m", "ablate", "show", "big", "--seed", "1", "--db", "r.db"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=300)
    assert f"cost: peak memory {peak['big'] / MIB:,.0f} MiB resident (the command's largest process)" in \
        " ".join(shown.stdout.split())
    python = ".".join(map(str, sys.version_info[:3]))  # where it ran (issue 37's provenance)
    assert f"environment: Python {python}, " in " ".join(shown.stdout.split())
    exported = subprocess.run([sys.executable, "-m", "ablate", "runs", "--db", "r.db", "-f", "json"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
    assert {r["name"]: r["res.peak_rss_bytes"] for r in json.loads(exported.stdout) if r["seed"] == 1} == peak
    report = subprocess.run([sys.executable, "-m", "ablate", "report", "m.yaml", "--db", "r.db", "-f", "json"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    (effect,) = json.loads(report.stdout)["effects"]
    assert effect["memory_verdict"] == "more memory", effect  # paired by seed: ~4x, far past ±5 %
    assert 3 < effect["memory_lo"] <= effect["memory_ratio"] <= effect["memory_hi"] < 5


def test_the_script_repository_is_recorded_with_its_dirty_state_and_diff(tmp_path):
    """Issue 37's provenance: your trainer's commit, whether it had uncommitted changes, and a
    hash of that diff (two different edits, two different hashes)."""
    from ablate.execution.provenance import environment, script_repo

    assert script_repo(str(tmp_path)) == {}  # not a repository
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "train.py").write_text("lr = 0.1\n")
    subprocess.run([*git, "add", "train.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert script_repo(str(tmp_path)) == {"script_commit": head, "script_dirty": False}
    hashes = set()
    for edit in ("lr = 0.2\n", "lr = 0.3\n"):
        (tmp_path / "train.py").write_text(edit)
        repo = script_repo(str(tmp_path))
        assert repo["script_commit"] == head and repo["script_dirty"] is True
        hashes.add(repo["script_diff_sha256"])
    assert len(hashes) == 2
    env = environment({"trainer": {"workdir": str(tmp_path)}})
    assert env["script_commit"] == head and env["python"] == ".".join(map(str, sys.version_info[:3]))
