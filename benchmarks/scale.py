#!/usr/bin/env python
"""How the readers grow with the data: `ablate report`, the HTML page and the live view on
synthetic databases of a given number of runs and evaluations per run.

    python benchmarks/scale.py [--sizes 10x10,10x1000,1000x10,1000x1000,10000x10] [--others 0]
                               [--html-limit 120] [--json out.json] [--baseline OLD_CHECKOUT] [--seeds 2]

Each size RUNSxEVALS is one experiment of a command trainer's matrix (two seeds, or --seeds,
RUNS/seeds configurations, each a toggle of one param; the experiment's name is a param too, so no two
experiments share a run), registered by ablate's own planner, so its
experiment row, plan and run identities are real; then every run is marked completed and given
EVALS evaluations of its metric (a decreasing curve, a seed- and configuration-dependent offset)
by bulk SQL, which takes seconds where training them would take hours. `--others K` adds K
copies of a 100-run × 100-evaluation experiment to the same database, to show that reading one
experiment does not grow with the rest of the database.

Measured per size, each in a fresh process (imports included), wall time and peak resident
memory of the process: `ablate report -e NAME -f json`, `ablate report -e NAME -f html` (cut at
--html-limit seconds, and said so), the live view's first load (`live.progress` from evaluation
0 and `live.report_view`) and one update after one new evaluation (`live.progress` since the
last id, then the report rebuilt, as the server does when the version moves).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEEDS = (1, 2)  # --seeds 1: as many configurations as runs


def matrix_text(name: str, configs: int, seeds: tuple = SEEDS) -> str:
    toggles = "".join(f"  - {{name: c{i}, patch: {{x: {i}}}}}\n" for i in range(1, configs))
    return textwrap.dedent(f"""\
        name: {name}
        trainer: {{command: 'echo loss {{x}} {{experiment}}'}}
        metric: {{name: loss, pattern: 'loss (?P<loss>[0-9.]+)'}}
        params: {{x: 0, experiment: {name}}}
        min_effect: 0.01
        seeds: [{", ".join(map(str, seeds))}]
        design: one-at-a-time
        max_runs: 10000
        toggles:
        """) + toggles


def build(db: Path, name: str, runs: int, evals: int, work: Path, seeds: tuple = SEEDS) -> None:
    """Register the matrix through ablate, then complete its runs with `evals` evaluations each."""
    from ablate.execution import runner
    from ablate.execution.matrix import load_matrix
    from ablate.storage.store import open_store

    path = work / f"{name}.yaml"
    path.write_text(matrix_text(name, max(1, runs // len(seeds)), seeds))
    matrix = load_matrix(path)
    with open_store(f"sqlite:///{db}", create=True) as store:
        runner.register(store, matrix, runner.plan(matrix))
    now = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    with sqlite3.connect(db) as conn:
        ids = conn.execute("SELECT r.id, r.seed, er.position FROM runs r JOIN experiment_runs er ON er.run_id = r.id "
                           "JOIN experiments e ON e.id = er.experiment_id WHERE e.name = ?", (name,)).fetchall()
        conn.execute(f"UPDATE runs SET status = 'completed', attempt = 1, started_at = ?, finished_at = ?, "
                     f"wall_time_s = 2.0, steps = ? WHERE id IN ({','.join(str(i) for i, _, _ in ids)})",
                     (now, now, evals))

        def rows():
            for run_id, seed, position in ids:
                offset = 0.001 * seed + 0.002 * (position % 7)
                for step in range(1, evals + 1):
                    yield run_id, 1, step, json.dumps({"loss": 1.0 + 1.0 / step + offset}), now

        conn.executemany("INSERT INTO evals (run_id, attempt, step, extra, created_at) VALUES (?, ?, ?, ?, ?)", rows())


def measure(code: str, timeout: float, ablate: Path | None = None) -> dict:
    """Wall seconds and peak resident MB of `python -c code` (its imports included), with the
    ablate of the `ablate` checkout where given (a baseline measured in the same run)."""
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ablate)} if ablate else None
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ablate or REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = t0 + timeout
    while proc.poll() is None and time.perf_counter() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        return {"seconds": None, "cut_at_s": timeout}
    out, err = proc.communicate()
    if proc.returncode != 0:
        return {"seconds": None, "error": err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"}
    result = json.loads(out.strip().splitlines()[-1])
    return {"seconds": round(result.get("seconds", time.perf_counter() - t0), 3),
            "peak_mb": round(result["peak_kb"] / 1024), **{k: v for k, v in result.items() if k not in ("seconds", "peak_kb")}}


# The process's own peak: VmHWM, its memory's high-water mark since exec. Not getrusage's
# ru_maxrss, which Linux carries across exec from the parent that forked it: measured that way,
# every reader of a database this process had just built "peaked" at this process's ~1 GB.
PEAK = ("import json, re, resource; from pathlib import Path; status = Path('/proc/self/status'); "
        "peak = int(re.search(r'VmHWM:\\s+(\\d+)', status.read_text()).group(1)) if status.exists() "
        "else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss")


def cli(db: Path, name: str, fmt: str, out: Path | None) -> str:
    argv = ["report", "--db", str(db), "-e", name, "-f", fmt] + (["--out", str(out), "--force"] if out else [])
    return textwrap.dedent(f"""\
        import io, time, contextlib; t0 = time.perf_counter()
        from ablate.cli import app
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
            try:
                app({argv!r})
            except SystemExit as e:
                assert not e.code, e.code
        seconds = time.perf_counter() - t0
        {PEAK}
        print(json.dumps({{"seconds": seconds, "peak_kb": peak}}))""")


def live_code(db: Path, name: str) -> str:
    return textwrap.dedent(f"""\
        import sqlite3, time, json as j; t0 = time.perf_counter()
        from ablate.results import live
        first = live.progress({str(db)!r}, {name!r}); live.report_view({str(db)!r}, {name!r})
        loaded = time.perf_counter() - t0
        run = first["runs"][0]["run_id"]
        with sqlite3.connect({str(db)!r}) as c:  # one new evaluation, as a running trainer adds it
            c.execute("INSERT INTO evals (run_id, attempt, step, extra, created_at) VALUES (?, 1, 1000000, ?, '2026-01-01')",
                      (run, j.dumps({{"loss": 1.0}})))
        t1 = time.perf_counter()
        new = live.progress({str(db)!r}, {name!r}, since=first["last_id"])
        polled = time.perf_counter() - t1
        live.report_view({str(db)!r}, {name!r})
        updated = time.perf_counter() - t1
        {PEAK}
        print(j.dumps({{"seconds": loaded, "peak_kb": peak, "poll_s": round(polled, 3), "update_s": round(updated, 3),
                        "first_points": len(first["points"]), "new_points": len(new["points"])}}))""")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10x10,10x1000,1000x10,1000x1000,10000x10")
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds per configuration (runs / seeds configurations)")
    ap.add_argument("--others", type=int, default=0, help="100x100 experiments beside the measured one")
    ap.add_argument("--html-limit", type=float, default=120.0, help="seconds before the HTML page is cut")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--baseline", type=Path, help="a checkout of an earlier ablate, measured on the same databases")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for size in args.sizes.split(","):
            runs, evals = (int(x) for x in size.split("x"))
            db, name = work / f"scale-{size}.db", f"scale-{size}"
            t0 = time.perf_counter()
            for k in range(args.others):
                build(db, f"other-{k}", 100, 100, work)
            build(db, name, runs, evals, work, tuple(range(1, args.seeds + 1)))
            row = {"runs": runs, "configurations": runs // args.seeds, "evals_per_run": evals, "others": args.others, "build_s": round(time.perf_counter() - t0, 1),
                   "db_mb": round(os.path.getsize(db) / 2**20, 1)}
            for label, tree in (("", None), ("baseline_", args.baseline)) if args.baseline else (("", None),):
                row[label + "report_json"] = measure(cli(db, name, "json", None), 600, tree)
                row[label + "report_html"] = measure(cli(db, name, "html", work / "page.html"), args.html_limit, tree)
                if not label:  # the live view: new
                    row["live"] = measure(live_code(db, name), 600)
            results.append(row)
            print(json.dumps(row), flush=True)
            db.unlink()
    if args.json:
        args.json.write_text(json.dumps({"machine": os.uname().nodename, "cpus": os.cpu_count(),
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
