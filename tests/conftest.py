"""Shared fixtures: the shared HN CSV, a per-session tokenizer cache, tiny configs."""

from __future__ import annotations

import os
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
