"""RESULTS.md's first sections: the verdicts in a line per experiment, and the proxy at two sizes."""

from __future__ import annotations

import math
from types import SimpleNamespace as NS

import pandas as pd
import pytest

from ablate.results.summary import Base, across_scale, scale_pairs, scale_table, verdict_line

SMALL = {"d_model": 64, "n_layer": 2, "n_head": 4, "num_titles": 6000, "lr": 1e-4, "seed": 1337}
LARGE = {**SMALL, "d_model": 96, "n_layer": 3}


def effect(name, estimate, lo, hi, verdict, n=3, needed=None):
    return dict(effect=name, estimate=estimate, ci_lo=lo, ci_hi=hi, verdict=verdict, n=n, seeds_needed=needed)


def report(name, effects, design="one-at-a-time", seeds=(1337, 1338, 1339), statuses=()):
    ranking = pd.DataFrame({"rank": [math.nan] * len(statuses), "status": list(statuses)})
    return NS(experiment=name, design=design, seeds=list(seeds), min_effect=0.005,
              effects=pd.DataFrame(effects), ranking=ranking)


@pytest.mark.parametrize("small, large, says", [
    ((0.05, 0.04, 0.06), (-0.03, -0.04, -0.02), "changes sign with scale"),
    ((0.05, 0.04, 0.06), (0.20, 0.18, 0.22), "changes size with scale (×4)"),
    ((0.05, 0.04, 0.06), (0.055, 0.045, 0.065), "holds across scale (intervals overlap)"),
    ((0.002, -0.01, 0.014), (-0.003, -0.012, 0.006), "holds across scale (intervals overlap)"),  # straddles 0
    ((0.05, 0.04, 0.06), (0.05, math.nan, math.nan), "no interval at one size"),
])
def test_across_scale_reads_the_two_intervals(small, large, says):
    a = NS(estimate=small[0], ci_lo=small[1], ci_hi=small[2], verdict="worse")
    b = NS(estimate=large[0], ci_lo=large[1], ci_hi=large[2], verdict="worse")
    assert across_scale(a, b) == says


def test_a_changed_verdict_is_said():
    a = NS(estimate=0.003, ci_lo=0.001, ci_hi=0.004, verdict="negligible")
    b = NS(estimate=0.03, ci_lo=0.02, ci_hi=0.04, verdict="worse")
    assert across_scale(a, b) == "changes size with scale (×10); verdict negligible → worse"


def test_pairs_are_one_design_and_base_differing_only_in_size():
    small, large = report("s", []), report("l", [])
    other_lr, stack = report("o", []), report("k", [], design="leave-one-out")
    found = {"s": Base("report-current", SMALL), "l": Base("report-current", LARGE),
             "o": Base("report-current", {**LARGE, "lr": 1e-3}), "k": Base("report-current", LARGE),
             "m": Base("mainrun", SMALL)}
    mainrun = report("m", [])
    assert scale_pairs([large, small, other_lr, stack, mainrun], found) == [(small, large)]


def test_the_scale_table_takes_the_largest_effects_at_the_larger_size():
    found = {"s": Base("report-current", SMALL), "l": Base("report-current", LARGE)}
    small = report("s", [effect("a", 0.01, 0.0, 0.02, "inconclusive"), effect("b", -0.2, -0.3, -0.1, "better"),
                         effect("c", 0.3, 0.2, 0.4, "worse")])
    large = report("l", [effect("a", 0.5, 0.4, 0.6, "worse"), effect("b", 0.1, 0.05, 0.15, "worse"),
                         effect("c", 0.3, 0.25, 0.35, "worse"), effect("d", 0.9, 0.8, 1.0, "worse")])
    table = scale_table(small, large, found, top=2)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| a", "| c"]  # d is not measured at both sizes
    assert "changes size with scale" in rows[0] and "holds across scale" in rows[1]
    assert "d64, 2 layers, 6,000 titles" in table and "d96, 3 layers" in table


def test_the_verdict_line_groups_by_verdict_with_seeds_needed():
    r = report("x", [effect("a", -0.2, -0.3, -0.1, "better"), effect("b", 0.003, -0.01, 0.02, "inconclusive",
                                                                       n=6, needed=14),
                     effect("c", 0.0001, -0.001, 0.001, "negligible")])
    line = verdict_line(r, Base("report-current", LARGE))
    assert line.startswith("- **x** — each item alone against the baseline; base report-current, d96, 3 layers")
    assert ("better: a (-0.2000, n=3); negligible: c (+0.0001, n=3); inconclusive after 6 seeds (the budget): "
            "b (+0.0030, n=6 ~14 seeds).") in line


def test_the_verdict_line_says_why_there_is_no_verdict():
    r = report("gpu", [effect("a", -0.5, math.nan, math.nan, "noise unknown", n=1)], seeds=(1337,),
               statuses=("queued", "queued", "interrupted"))
    line = verdict_line(r, Base("mainrun", LARGE))
    assert "seed 1337," in line and "no verdict, one seed each (no spread to test against): a (-0.5000, n=1)" in line
    assert line.endswith("not trained yet: 3 run(s) (2 queued, 1 interrupted).")
