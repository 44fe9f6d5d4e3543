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
    table = block.split("## What holds and what doesn't", 1)[1]
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
    assert rows["dropout_005"][3].startswith("+0.0020")
    assert rows["dropout_005"][4].startswith("alone: does not hold")
    assert rows["sdpa"][4] == "holds |" and rows["ema"][4] == "does not hold |"
    assert "claimed -0.011: outside the interval" in rows["swiglu"][4]


def test_the_prose_outside_the_markers_holds_no_verdict_table():
    text = (REPO / "RESULTS.md").read_text()
    outside = text.split(document.START)[0] + text.split(document.END)[1]
    block = document.committed_block(REPO / "RESULTS.md")
    assert "| report's claim |" not in outside and "| verdict |" not in outside
    assert "beyond noise" not in block and "within noise" not in block  # retired labels
