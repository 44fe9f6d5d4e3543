"""Shared fixtures: the shared HN CSV, a per-session tokenizer cache, tiny configs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HN_CSV = Path(os.environ.get("ABLATE_TEST_DATA", REPO.parent / "shared" / "data" / "hacker_news.csv"))
HN_BIG = HN_CSV.parent / "hn_stories_2016_2020.csv"

# Small enough for a 2-core CPU: ~100 steps per epoch of a 1-layer d32 model.
TINY = dict(data=str(HN_CSV), num_titles=2000, vocab_size=500, d_model=32, n_layer=1, n_head=2,
            block_size=32, batch_size=8, epochs=1, evals_per_epoch=2)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tests never read or write the user's tokenizer cache or results.db."""
    os.environ["ABLATE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["ABLATE_DB"] = "sqlite:///" + str(tmp_path_factory.mktemp("db") / "results.db")


@pytest.fixture(scope="session")
def hn_csv() -> str:
    if not HN_CSV.is_file():
        pytest.skip(f"shared data not found at {HN_CSV} (set ABLATE_TEST_DATA)")
    return str(HN_CSV)


# ------------------------------------------------------------------ the smoke matrix, run once

SMOKE_MATRIX = REPO / "experiments" / "smoke.yaml"


@dataclass(frozen=True)
class SmokeRun:
    """`ablate run experiments/smoke.yaml` done once per session: where its results are and
    what the command printed. os.PathLike, so it can stand in for the database path."""

    db: Path  # the SQLite file
    url: str  # --db as passed
    cwd: Path  # where the command ran (a tmp dir)
    log_dir: Path
    cmd: list  # the exact command line, to run it again
    stdout: str
    stderr: str
    returncode: int
    wall_s: float

    def __fspath__(self) -> str:
        return str(self.db)


@pytest.fixture(scope="session")
def smoke_db(hn_csv, tmp_path_factory) -> SmokeRun:
    """Run the smoke matrix once (about 90 s on 2 cores) into a fresh SQLite file."""
    cwd = tmp_path_factory.mktemp("smoke")
    db = cwd / "smoke.db"
    url = f"sqlite:///{db}"
    cmd = [sys.executable, "-m", "ablate", "run", str(SMOKE_MATRIX), "--data", hn_csv,
           "--db", url, "--log-dir", str(cwd / "logs")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        pytest.fail(f"smoke run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return SmokeRun(db, url, cwd, cwd / "logs", cmd, proc.stdout, proc.stderr, proc.returncode, wall)
