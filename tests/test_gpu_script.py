"""benchmarks/gpu.py cannot rot between GPU leases: its dry run (CPU, tiny sizes) runs every
stage here, is killed in the middle of its answer, and continues when run again."""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

from .conftest import HN_CSV, REPO

STAGES = ("env", "tests", "speed", "compile", "packing", "answer")


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
    deadline = time.time() + 240
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

    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
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
    tests = json.loads((out / "tests.json").read_text())
    assert tests["returncode"] == 0 and tests["skipped"] + tests["passed"] == len(tests["tests"]) > 0
