"""Verdicts that decide: better / worse / negligible / inconclusive against min_effect.

The committed results' verdicts are recomputed here independently (scipy's t distribution and a
hand-written Holm, from the SQL tables), and seeds-until-decided is simulated: its error rates
at the least favourable truths stay at their nominal level, the naive procedure's do not.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sp

from ablate.execution.seeds import verdict_settings
from ablate.results.render import _fmt
from ablate.results.stats import ALPHA, DECIDING, critical_t, decide, verdict_statistics

from .conftest import REPO

DELTA = 0.005


# ------------------------------------------------------------------ the committed results


@pytest.fixture(scope="module")
def committed_db(tmp_path_factory):
    copy = tmp_path_factory.mktemp("verdicts") / "results.db"
    shutil.copy(REPO / "results.db", copy)
    return copy


def report_json(db, experiment: str, *extra: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "ablate", "report", "--db", str(db), "-e", experiment,
                          "--format", "json", *extra], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout)


def final_losses(db, experiment: str) -> dict[str, dict[int, float]]:
    """{configuration: {seed: final val_loss_full}} straight from the tables."""
    rows = sqlite3.connect(db).execute(
        "SELECT er.name, r.seed, json_extract(r.result, '$.final_val_loss_full') FROM experiments e "
        "JOIN experiment_runs er ON er.experiment_id = e.id JOIN runs r ON r.id = er.run_id "
        "WHERE e.name = ? AND r.status = 'completed'", (experiment,)).fetchall()
    losses: dict[str, dict[int, float]] = {}
    for name, seed, y in rows:
        losses.setdefault(name, {})[seed] = y
    return losses


def holm_by_hand(p: list[float]) -> list[float]:
    order = sorted(range(len(p)), key=p.__getitem__)
    adjusted, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def expected_verdicts(diffs: dict[str, list[float]], delta: float,
                      looks: int = 1) -> dict[str, tuple[str, float, float]]:
    """{effect: (verdict, lo, hi)} by the definitions, with scipy's t distribution: each test at
    0.025 / looks (Bonferroni over the looks of seeds until decided), its interval at that level."""
    level = 0.025 / looks
    chosen = {}
    for label, d in diffs.items():
        d = np.array(d)
        mean, se, df = d.mean(), d.std(ddof=1) / math.sqrt(len(d)), len(d) - 1

        def t(x):  # a zero spread decides without a test unless exactly on the boundary
            return x / se if se > 0 else (math.copysign(math.inf, x) if x else 0.0)
        better, worse = -t(mean + delta), t(mean - delta)
        negligible = min(t(mean + delta), -t(mean - delta))
        tests = {"better": better, "worse": worse, "negligible": negligible}
        name = max(tests, key=tests.get)
        half = sp.t.ppf(1 - level, df) * se
        chosen[label] = (name, float(sp.t.sf(tests[name], df)), mean - half, mean + half)
    adjusted = dict(zip(chosen, holm_by_hand([c[1] for c in chosen.values()])))
    return {label: (name if adjusted[label] < level else "inconclusive", lo, hi)
            for label, (name, _, lo, hi) in chosen.items()}


@pytest.mark.parametrize("experiment, pairs", [
    ("report-cpu", lambda names: {n: (n, "baseline") for n in names if n != "baseline"}),
    ("report-cpu-stack", lambda names: {"−" + n.removeprefix("all-minus-"): (n, "all")
                                        for n in names if n.startswith("all-minus-")}),
])
def test_committed_verdicts_follow_from_the_definitions(committed_db, experiment, pairs):
    losses = final_losses(committed_db, experiment)
    diffs = {label: [losses[t][s] - losses[c][s] for s in sorted(losses[t])]
             for label, (t, c) in pairs(losses).items()}
    looks = verdict_settings((REPO / "experiments" / f"{experiment}.yaml").read_text())[1]
    expected = expected_verdicts(diffs, DELTA, looks)
    report = report_json(committed_db, experiment)
    assert report["metric"] == "full"  # the tables' val_loss_full is what the report ranks by
    got = {e["effect"]: e for e in report["effects"]}
    assert set(got) == set(expected)
    for label, (verdict, lo, hi) in expected.items():
        assert got[label]["verdict"] == verdict, label
        assert (got[label]["ci_lo"], got[label]["ci_hi"]) == pytest.approx((lo, hi), abs=1e-9)
        if verdict == "inconclusive":
            assert got[label]["seeds_needed"] > 3
    # the ranking's paired Δbase interval (the per-configuration one is mostly split variance)
    base = "baseline"
    for row in (r for r in report["ranking"] if r["name"] in losses and r["name"] != base
                and set(losses[r["name"]]) <= set(losses[base])):  # seeds a stack added pair with `all`
        d = np.array([losses[row["name"]][s] - losses[base][s] for s in sorted(losses[row["name"]])])
        half = sp.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        assert (row["d_base_lo"], row["d_base_hi"]) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-9)
    texts = len(losses["baseline"])  # the baseline's seeds, one text each
    assert any(line.startswith(f"Split: each seed drew its own validation text ({texts} texts)") for line in report["lines"])
    if experiment == "report-cpu":  # the three, measured
        assert [got[n]["verdict"] for n in ("mixed_precision", "onecycle_fix", "swiglu")] == \
            ["negligible", "better", "inconclusive"]
        assert 12 <= got["swiglu"]["seeds_needed"] <= 20
        assert "beyond noise" not in json.dumps(report) and "within noise" not in json.dumps(report)


def test_min_effect_option_changes_the_verdicts(committed_db):
    narrow = {e["effect"]: e["verdict"] for e in report_json(committed_db, "report-cpu",
                                                               "--min-effect", "0.0005")["effects"]}
    assert narrow["weight_decay_001"] == "worse" and narrow["mixed_precision"] == "negligible"  # 0.005: negligible


def test_tiny_numbers_never_print_as_zero(committed_db):
    assert _fmt(-2e-5, signed=True) == "-2.0e-05" and _fmt(0.0, signed=True) == "+0.0000"
    assert _fmt(-0.5182, signed=True) == "-0.5182"
    out = subprocess.run([sys.executable, "-m", "ablate", "report", "--db", str(committed_db), "-e",
                          "report-cpu-stack", "--format", "markdown"], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert "-0.0000" not in out and "−0.0000" not in out
    assert "| −grouped_weight_decay | 3 | 2.4145 | -1.9e-05±1.2e-06 |" in out


# -------------------------------------------------------------------------------- decide


def test_decide_for_a_family_of_one_is_the_critical_t_rule():
    rng = np.random.default_rng(7)
    for _ in range(300):
        n, looks = int(rng.integers(2, 13)), int(rng.integers(1, 11))
        mean, sd = rng.normal(0, 0.01), abs(rng.normal(0, 0.005)) + 1e-6
        (v,) = decide([(mean, sd, n)], DELTA, looks=looks)
        row = verdict_statistics(mean, sd, n, DELTA)
        k = int(np.argmax(row))
        decided = row[k] > critical_t(n - 1, ALPHA / looks)
        assert v.label == (DECIDING[k] if decided else "inconclusive")
        if not decided:
            assert v.seeds_needed is None or v.seeds_needed > n


def test_one_seed_is_noise_unknown_and_zero_spread_decides():
    one, flat, edge = decide([(0.1, math.nan, 1), (-1e-8, 0.0, 3), (-DELTA, 0.0, 3)], DELTA)
    assert one.label == "noise unknown" and flat.label == "negligible"
    assert edge.label == "inconclusive" and edge.seeds_needed is None  # exactly on the boundary


# ---------------------------------------------------------------------------- simulation


def sequential_labels(diffs: np.ndarray, first: int, looks: int) -> np.ndarray:
    """Each simulated sequence (a row of paired differences) looked at after `first`, `first` + 1,
    ... seeds, stopping at its first verdict: that verdict, or "inconclusive" at the end.
    `looks` = 1 is the naive procedure (the fixed level at every look)."""
    sims, total = diffs.shape
    labels = np.full(sims, "inconclusive", dtype=object)
    open_ = np.ones(sims, dtype=bool)
    for n in range(first, total + 1):
        part = diffs[:, :n]
        stats = verdict_statistics(part.mean(1), part.std(1, ddof=1), n, DELTA)
        k = stats.argmax(1)
        decided = open_ & (stats[np.arange(sims), k] > critical_t(n - 1, ALPHA / looks))
        labels[decided] = np.array(DECIDING, dtype=object)[k[decided]]
        open_ &= ~decided
    return labels


@pytest.mark.parametrize("sd", [0.001, 0.0035, 0.011])  # measured paired sds: dropout, swiglu, −ema
def test_seeds_until_decided_keeps_its_error_rates_and_the_naive_procedure_does_not(sd):
    """seeds: {min: 3, max: 12}, at the least favourable truths: a false "better" when the true
    effect is exactly −δ, a false "worse" at +δ, a false "negligible" at ±δ, each at most α."""
    rng = np.random.default_rng(int(sd * 1e6))
    first, last, sims = 3, 12, 20_000
    looks = last - first + 1
    for truth, wrong in ((-DELTA, ("better", "negligible")), (DELTA, ("worse", "negligible"))):
        diffs = rng.normal(truth, sd, size=(sims, last))
        shipped = sequential_labels(diffs, first, looks)
        naive = sequential_labels(diffs, first, 1)
        for label in wrong:
            assert np.mean(shipped == label) <= ALPHA, (truth, label)
        # the naive procedure (α at every look) fails: ~0.09 false "better"/"worse" at any sd, and
        # as many false "negligible" where the sd lets TOST pass within 12 seeds
        assert np.mean(naive == wrong[0]) > 2 * ALPHA, (truth, "naive")
        if sd < 0.01:
            assert np.mean(naive == "negligible") > 2 * ALPHA, (truth, "naive negligible")
