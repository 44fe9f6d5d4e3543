"""Redraw the README's two pictures from the shipped results.db, so they show what ablate draws now:

    python docs/screenshots.py        # from the repository root; needs Chromium (apt-get install chromium)

docs/html-report.png is `ablate report -e report-cpu --format html` in headless Chromium at a
1,280 px window; docs/effects-plot.png is report-cpu's effects plot (`ablate plot --effects`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
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
    print("wrote docs/html-report.png and docs/effects-plot.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
