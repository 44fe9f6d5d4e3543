"""Runs from several environments (issue 37): a database merged from two machines says so under
the report, naming the configurations whose same-seed pairs span them; one machine says nothing."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

from ablate.results.report import build_report

from .test_gpu_script import load_benchmark

HERE = {"python": "3.11.7", "torch": "2.13.0", "cpu": "Intel Xeon", "cpu_count": 2, "os": "Linux",
        "script_commit": "a" * 40, "script_dirty": False}
THERE = {**HERE, "gpu": "NVIDIA H100", "cuda": "12.4", "cpu_count": 16}


def test_a_comparison_across_machines_is_named_under_the_report(tmp_path):
    db = tmp_path / "r.db"
    load_benchmark("scale").build(db, "m", 6, 3, tmp_path)  # baseline, c1, c2 over seeds 1 and 2
    with closing(sqlite3.connect(db)) as conn, conn:
        runs = conn.execute("SELECT r.id, e.name, r.seed FROM runs r JOIN experiment_runs e ON e.run_id = r.id").fetchall()
        for run_id, name, seed in runs:  # c1's seed 2 ran elsewhere; c2's commit differs (identity, not machine)
            env = THERE if (name, seed) == ("c1", 2) else {**HERE, "script_commit": "b" * 40} if name == "c2" else HERE
            conn.execute("UPDATE runs SET result = ? WHERE id = ?", (json.dumps({"environment": env}), run_id))
    url = f"sqlite:///{db}"
    notes = [n for n in build_report(url, "m").notes if "environments" in n]
    assert len(notes) == 1 and "2 environments" in notes[0] and "(5 runs)" in notes[0] and "(1 run)" in notes[0]
    assert "NVIDIA H100" in notes[0] and "c1 is paired with a baseline run of another" in notes[0]
    assert "c2" not in notes[0].split(". ", 1)[1]
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE runs SET result = ?", (json.dumps({"environment": HERE}),))
    assert not [n for n in build_report(url, "m").notes if "environments" in n]
