"""Redraw the pictures of the docs pages, so they show what ablate draws now:

    python docs/screenshots.py        # from the repository root; needs Chromium (apt-get install chromium)

docs/html-report.png is `ablate report -e report-cpu --format html` in headless Chromium at a
1,280 px window; docs/effects-plot.png is report-cpu's effects plot (`ablate plot --effects`),
both from the shipped results.db. docs/live-view.png is `ablate serve` in the middle of a small
matrix of a script that prints a loss every 0.3 s (three configurations, one that fails, three
seeds, in a temporary folder), taken once 4 of its 9 runs are done.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ablate.results.html import render_html
from ablate.results.plot import plot_effects
from ablate.results.report import build_report

ROOT = Path(__file__).resolve().parent.parent
DB, EXPERIMENT = ROOT / "results.db", "report-cpu"


def main() -> int:
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if browser is None:
        print("no Chromium on PATH (apt-get install chromium)", file=sys.stderr)
        return 1
    plot_effects(build_report(DB, EXPERIMENT), ROOT / "docs" / "effects-plot.png")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(render_html(DB, [EXPERIMENT]), encoding="utf-8")
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1280,1400", f"--screenshot={ROOT / 'docs' / 'html-report.png'}",
                        page.as_uri()], check=True, capture_output=True, timeout=120)
    live_view(browser, ROOT / "docs" / "live-view.png")
    print("wrote docs/html-report.png, docs/effects-plot.png and docs/live-view.png")
    return 0


SCRIPT = """\
import argparse, sys, time
ap = argparse.ArgumentParser()
ap.add_argument("--seed", type=int); ap.add_argument("--lr", type=float); ap.add_argument("--fail", type=int)
a = ap.parse_args()
for step in range(1, 21):
    time.sleep(0.3)
    if a.fail and step == 6:
        sys.exit("diverged: loss is nan at step 6")
    print(f"step {step} loss {2 / (1 + a.lr * step) + 0.004 * a.seed + 0.01 * a.lr * a.seed:.5f}", flush=True)
"""
MATRIX = """\
name: lr-sweep
trainer: {command: 'python train.py --seed {seed} --lr {lr} --fail {fail}'}
metric: {name: loss, pattern: 'step (?P<step>\\d+) loss (?P<loss>[\\d.]+)'}
params: {lr: 0.1, fail: 0}
min_effect: 0.01
seeds: [1, 2, 3]
design: one-at-a-time
toggles:
  - {name: lr_0.2, patch: {lr: 0.2}}
  - {name: lr_0.4_unstable, patch: {lr: 0.4, fail: 1}}
"""


def live_view(browser: str, out: Path) -> None:
    """The live view while a matrix runs: started, then shot once 4 of its 9 runs ended."""
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        work = Path(tmp)
        (work / "train.py").write_text(SCRIPT)
        (work / "m.yaml").write_text(MATRIX)
        db = work / "results.db"
        run = subprocess.Popen([sys.executable, "-m", "ablate", "run", "m.yaml", "--db", str(db)], cwd=work,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        serve = subprocess.Popen([sys.executable, "-m", "ablate", "serve", "--db", str(db), "--port", str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while _ended(db) < 4:
                if run.poll() is not None:
                    raise RuntimeError("the matrix ended before the picture")
                time.sleep(0.2)
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--window-size=1280,1500", "--virtual-time-budget=4000", f"--screenshot={out}",
                            f"http://127.0.0.1:{port}/experiment/lr-sweep"], check=True, capture_output=True,
                           timeout=120)
        finally:
            for proc in (run, serve):
                proc.terminate()
                proc.wait(timeout=60)


def _ended(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT count(*) FROM runs WHERE status IN ('completed', 'failed')").fetchone()[0]
    except sqlite3.Error:  # not there yet
        return 0


if __name__ == "__main__":
    sys.exit(main())
