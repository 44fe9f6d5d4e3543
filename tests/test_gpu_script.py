"""benchmarks/gpu.py cannot rot between GPU leases: its dry run (CPU, tiny sizes) runs every
stage here, is killed in the middle of its answer, and continues when run again."""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

from .conftest import HN_CSV, REPO

STAGES = ("env", "tests", "speed", "cost", "compile", "packing", "answer")


def completed(db) -> dict[str, tuple]:
    """name -> (attempt, finished_at) of the completed runs in a snapshot."""
    if not db.exists():
        return {}
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        try:
            rows = conn.execute("SELECT name, attempt, finished_at FROM runs "
                                "WHERE status = 'completed'").fetchall()
        except sqlite3.DatabaseError:  # mid-replace: the next poll sees it
            return {}
    return {name: (attempt, finished) for name, attempt, finished in rows}


def test_dry_run_killed_mid_answer_keeps_its_stages_and_continues(hn_csv, tmp_path):
    out, work, data = tmp_path / "out", tmp_path / "work", tmp_path / "data"
    data.mkdir()  # the script's --data folder, holding the test titles under the shared file's name
    opener = gzip.open if HN_CSV.suffix == ".gz" else open
    with opener(HN_CSV, "rb") as src:
        (data / "hacker_news.csv").write_bytes(src.read())
    cmd = [sys.executable, "benchmarks/gpu.py", str(out), "--dry-run", "--data",
           str(data), "--work", str(work)]
    env = {**os.environ, "ABLATE_BENCH_DATA": str(data)}
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 900  # a hang guard only: the stages' own boxes bound each one
    while not completed(out / "results.db") and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, "the dry run ended before its answer had a completed run:\n" + \
        first.stdout.read()
    first.send_signal(signal.SIGKILL)  # no clean-up of any kind
    first.wait()
    before = completed(out / "results.db")
    assert before
    for stage in STAGES[:-1]:  # every stage before the answer kept its file
        assert json.loads((out / f"{stage}.json").read_text())["status"] == "ok", stage
    with closing(sqlite3.connect(out / "results.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    summary = json.loads((out / "stages.json").read_text())
    assert all("skipped" in summary[s] for s in STAGES[:-1])  # finished stages are not redone
    assert summary["answer"]["status"] == "ok"
    answer = json.loads((out / "answer.json").read_text())
    assert {r["status"] for r in answer["runs"]} == {"completed"}
    after = completed(out / "results.db")
    assert set(after) == {r["name"] for r in answer["runs"]} and len(after) == 3
    for name, trained in before.items():  # a run finished before the kill is never retrained
        assert after[name] == trained
    packing = json.loads((out / "packing.json").read_text())
    assert all(s["completed"] == packing["runs_per_setting"] for s in packing["settings"].values())
    cost = json.loads((out / "cost.json").read_text())  # timed exclusively: verdicts, no reason
    assert cost["completed"] == cost["planned"] == 4 and [e["effect"] for e in cost["effects"]] == ["sdpa"]
    assert cost["effects"][0]["speed_verdict"] and cost["effects"][0]["memory_verdict"]
    assert not cost["effects"][0]["speed_reason"] and (out / "cost.db").is_file()
    tests = json.loads((out / "tests.json").read_text())
    assert tests["returncode"] == 0 and tests["skipped"] + tests["passed"] == len(tests["tests"]) > 0


def load_benchmark(name: str = "gpu"):
    """benchmarks/<name>.py as a module (gpu.py by default)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_row_the_gpu_run_times_is_a_switch_of_the_benchmark():
    """The dry run times two rows of each stage; the rows only a GPU lease times are names
    benchmarks/run.py must accept, checked here rather than on the lease."""
    gpu, bench = load_benchmark(), load_benchmark("run")
    rows = {*gpu.SPEED_ROWS, *gpu.COMPILE_ROWS}
    assert len(rows) == 8 and rows <= set(bench.SWITCHES)


def test_a_stage_past_its_box_is_recorded_timed_out_and_the_rest_still_run(tmp_path, monkeypatch):
    """The driver's bookkeeping with the stage processes replaced (no clock involved): a stage
    killed at its deadline before writing its file is 'timed out' in its own file and in
    stages.json, the later stages still run, and every kill deadline leaves the stage its
    import allowance but never passes the budget's end (plus the grace to record itself)."""
    gpu = load_benchmark()
    out = tmp_path / "out"
    kills: dict[str, float] = {}

    def stage_process(cmd, deadline, env=None):
        stage = cmd[cmd.index("--stage") + 1]
        kills[stage] = deadline
        if stage == "tests":  # killed: it never wrote its file
            return {"command": "", "returncode": -9, "timed_out": True, "tail": "still importing"}
        (out / f"{stage}.json").write_text(json.dumps({"status": "ok"}))
        return {"command": "", "returncode": 0, "timed_out": False, "tail": ""}

    monkeypatch.setattr(gpu, "_run", stage_process)
    budget, start = 500.0, time.time()
    args = argparse.Namespace(out=out, stages=["env", "tests", "speed"], budget=budget, dry_run=True,
                              redo=False, data=tmp_path, work=tmp_path, jobs_per_device=None)
    assert gpu.drive(args) == 1
    ended = time.time()  # the driver's own clock read lies between start and ended
    summary = json.loads((out / "stages.json").read_text())
    assert summary["tests"]["status"] == "timed out" and summary["speed"]["status"] == "ok"
    assert json.loads((out / "tests.json").read_text())["status"] == "timed out"
    assert kills["env"] - start >= gpu.IMPORT_LIMIT_S + gpu.DRY_BOX_S["env"]  # imports do not eat the box
    assert all(k <= ended + budget + gpu.GRACE_S for k in kills.values())  # nor pass the budget

    kills.clear()
    args.budget = 100.0  # a second call, shorter than tests' box plus its imports
    assert gpu.drive(args) == 1  # redoes only what did not finish: tests, still killed
    ended = time.time()
    assert set(kills) == {"tests"} and "skipped" in json.loads((out / "stages.json").read_text())["env"]
    assert kills["tests"] - gpu.GRACE_S <= ended + 100  # the budget's end holds, not the box's
