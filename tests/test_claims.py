"""Claims as data: every catalog entry says what the report claims, and RESULTS.md's "what holds"
table is generated from those claims and the measured verdicts, so it cannot disagree with them."""

from __future__ import annotations

import shutil

import pytest

from ablate.results import document
from ablate.results.report import build_report
from ablate.training.catalog import CATALOG, Claim
from ablate.training.config import ConfigError

from .conftest import REPO


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    copy = tmp_path_factory.mktemp("claims") / "results.db"
    shutil.copy(REPO / "results.db", copy)
    block = document.generated(copy)
    table = block.split("### On the base `mainrun`", 1)[1].split("\n### ", 1)[0]  # report-cpu's base
    rows = {line.split(" | ")[0].removeprefix("| "): line.split(" | ") for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| optimization")}
    return copy, rows


def test_every_catalog_entry_records_its_claim():
    assert all(entry.claim is not None for entry in CATALOG.values())
    assert {n for n, e in CATALOG.items() if e.claim.loss == "same"} == {"sdpa", "mixed_precision",
                                                                         "evals_per_epoch_5"}
    assert CATALOG["swiglu"].claim.size == -0.011
    with pytest.raises(ConfigError, match="expected 'lower' or 'same'"):
        Claim("faster", "not a loss claim")


def test_what_holds_follows_the_verdicts_of_the_tables(committed):
    db, rows = committed
    assert set(rows) == set(CATALOG)
    alone = build_report(db, "report-cpu").effects.set_index("effect")["verdict"]
    stack = build_report(db, "report-cpu-stack").effects.set_index("effect")["verdict"]
    flipped = {"better": "worse", "worse": "better"}
    for name, cells in rows.items():
        measured = alone.get(name, alone.get({"vocab_32k": "vocab_2x", "warmup_cosine": "warmup_cosine_scaled"}
                                             .get(name, name)))
        assert cells[2].split(", ")[1].split(" (as")[0] == measured, name
        inside = stack.get("−" + name, stack.get("−vocab_2x") if name == "vocab_32k" else None)
        if inside is not None:  # the stack column is what X adds: the leave-one-out verdict flipped
            assert cells[3].split(", ")[1].split(" (as")[0] == flipped.get(inside, inside), name
        else:
            assert cells[3] == "not measured"
    # the old hand-written table's sign error: inside the stack, removing dropout lowers the loss
    assert rows["dropout_005"][3].startswith("+0.0020")  # negligible after 4 seeds: it holds nowhere
    # alone it lowers the loss, by less than δ (−0.0011, its interval below zero): the claim's
    # direction holds, its size does not matter
    assert rows["dropout_005"][4].startswith("alone: holds, smaller than δ; in the stack: does not hold")
    assert rows["sdpa"][4] == "holds |" and rows["ema"][4] == "does not hold |"
    assert "claimed -0.011: outside the interval" in rows["swiglu"][4]


def test_the_prose_outside_the_markers_holds_no_verdict_table():
    text = (REPO / "RESULTS.md").read_text()
    outside = text.split(document.START)[0] + text.split(document.END)[1]
    block = document.committed_block(REPO / "RESULTS.md")
    assert "| report's claim |" not in outside and "| verdict |" not in outside
    assert "beyond noise" not in block and "within noise" not in block  # retired labels


def test_a_claim_is_read_from_the_experiment_that_measured_it_on_most_seeds():
    """A one-seed full-scale matrix beside a 3-seed proxy: the proxy's verdict, not 'no data'."""
    from types import SimpleNamespace

    import pandas as pd

    def report(rows):
        columns = ["effect", "n", "estimate", "ci_lo", "ci_hi", "verdict"]
        return SimpleNamespace(design="one-at-a-time", effects=pd.DataFrame(rows, columns=columns))
    nan = float("nan")
    full = report([("swiglu", 1, -0.02, nan, nan, "noise unknown"), ("vocab_32k", 0, nan, nan, nan, "no data")])
    proxy = report([("swiglu", 3, 0.003, -0.0056, 0.0116, "inconclusive"), ("vocab_2x", 3, -0.15, -0.17, -0.14, "better")])
    table = document._claims_table([full, proxy])
    assert "| swiglu | lower loss: helps (the author's one-seed run: −0.011) | +0.0030 [-0.0056…+0.0116], " \
           "inconclusive | not measured | undecided (claimed -0.011: outside the interval) |" in table
    assert "-0.1500 [-0.1700…-0.1400], better (as vocab_2x)" in table
    assert "| sdpa | same loss: same model, 10–20% faster | not measured | not measured | not measured |" in table
