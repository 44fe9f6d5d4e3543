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

from ablate.execution.seeds import verdict_plan
from ablate.results.render import _fmt
from ablate.results.stats import ALPHA, Level, decide, read_interval, t_quantile

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


def expected_verdicts(diffs: dict[str, list[float]], delta: float,
                      looks: int = 1) -> dict[str, tuple[str, float, float]]:
    """{effect: (verdict, lo, hi)} by the definitions, with scipy's t distribution: each
    comparison's interval at 95 % shared over the looks of seeds until decided (Bonferroni), and
    its verdict where that interval lies against ±δ."""
    level = 0.025 / looks
    out = {}
    for label, d in diffs.items():
        d = np.array(d)
        half = sp.t.ppf(1 - level, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        lo, hi = d.mean() - half, d.mean() + half
        out[label] = ("better" if hi < -delta else "worse" if lo > delta else
                      "negligible" if -delta < lo and hi < delta else "inconclusive", lo, hi)
    return out


@pytest.mark.parametrize("experiment, pairs", [
    ("report-cpu", lambda names: {n: (n, "baseline") for n in names if n != "baseline"}),
    ("report-cpu-stack", lambda names: {"−" + n.removeprefix("all-minus-"): (n, "all")
                                        for n in names if n.startswith("all-minus-")}),
])
def test_committed_verdicts_follow_from_the_definitions(committed_db, experiment, pairs):
    losses = final_losses(committed_db, experiment)
    diffs = {label: [losses[t][s] - losses[c][s] for s in sorted(losses[t]) if s in losses[c]]
             for label, (t, c) in pairs(losses).items()}
    looks = verdict_plan((REPO / "experiments" / f"{experiment}.yaml").read_text()).looks
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
    # the ranking's Δbase: paired on the seeds a row shares with the baseline, at the same level
    base = "baseline"
    for row in (r for r in report["ranking"] if r["name"] in losses and r["name"] != base):
        shared = sorted(set(losses[row["name"]]) & set(losses[base]))
        d = np.array([losses[row["name"]][s] - losses[base][s] for s in shared])
        half = sp.t.ppf(1 - 0.025 / looks, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        assert row["paired"] == len(d)
        assert (row["d_base_lo"], row["d_base_hi"]) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-9)
    texts = len({s for runs in losses.values() for s in runs})  # every seed a comparison uses, one text each
    assert any(line.startswith(f"Split: each seed drew its own validation text ({texts} texts)") for line in report["lines"])
    if experiment == "report-cpu":  # the three, measured
        assert [got[n]["verdict"] for n in ("mixed_precision", "onecycle_fix", "swiglu")] == \
            ["negligible", "better", "inconclusive"]
        assert 18 <= got["swiglu"]["seeds_needed"] <= 40
        assert "beyond noise" not in json.dumps(report) and "within noise" not in json.dumps(report)


def test_min_effect_option_changes_the_verdicts(committed_db):
    narrow = {e["effect"]: e["verdict"] for e in report_json(committed_db, "report-cpu",
                                                               "--min-effect", "0.0005")["effects"]}
    assert narrow["weight_decay_001"] == "worse" and narrow["mixed_precision"] == "negligible"  # 0.005: negligible
    # the README's example: at 0.004 two items of the stack no longer lie inside ±δ
    stack = {d: {e["effect"]: e["verdict"] for e in report_json(committed_db, "report-cpu-stack", "--min-effect", d)["effects"]}
             for d in ("0.004", "0.005")}
    assert [e for e in stack["0.005"] if stack["0.004"][e] != stack["0.005"][e]] == ["−rmsnorm", "−betas_095"]
    assert stack["0.004"]["−rmsnorm"] == "inconclusive" and stack["0.005"]["−rmsnorm"] == "negligible"


def test_tiny_numbers_never_print_as_zero(committed_db):
    assert _fmt(-2e-5, signed=True) == "-2.0e-05" and _fmt(0.0, signed=True) == "+0.0000"
    assert _fmt(-0.5182, signed=True) == "-0.5182"
    out = subprocess.run([sys.executable, "-m", "ablate", "report", "--db", str(committed_db), "-e",
                          "report-cpu-stack", "--format", "markdown"], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert "-0.0000" not in out and "−0.0000" not in out
    assert "| −grouped_weight_decay | 3 | 2.4145 | -1.9e-05±1.2e-06 |" in out


# -------------------------------------------------------------------------------- decide


def test_each_interval_is_the_t_interval_at_its_level_and_the_verdict_is_read_off_it():
    rng = np.random.default_rng(7)
    for _ in range(300):
        n, looks, m = int(rng.integers(2, 13)), int(rng.integers(1, 11)), int(rng.integers(1, 4))
        mean, sd = rng.normal(0, 0.01), abs(rng.normal(0, 0.005)) + 1e-6
        (v,) = decide([(mean, sd, n)], DELTA, Level(m, looks, 3))
        half = sp.t.ppf(1 - ALPHA / (m * looks), n - 1) * sd / math.sqrt(n)
        assert (v.lo, v.hi) == pytest.approx((mean - half, mean + half), rel=1e-7)
        assert v.label == read_interval(v.lo, v.hi, DELTA)
        if v.label == "inconclusive":
            assert v.seeds_needed is None or v.seeds_needed > n


def test_one_seed_is_noise_unknown_and_a_zero_width_interval_decides_only_an_exact_tie():
    one, flat, same, edge, tiny = decide([(0.1, math.nan, 1), (-1e-8, 0.0, 3), (0.0, 0.0, 3), (-DELTA, 0.0, 3),
                                          (0.01, 1e-12, 2)], DELTA, Level(), scale=1.8)
    assert one.label == "noise unknown" and flat.label == "no spread" and edge.label == "no spread"
    assert tiny.label == "no spread"  # seeds 1e-12 apart: rounding, not noise, never "worse"
    assert same.label == "negligible"  # reproduced its control on every seed


# ---------------------------------------------------------------------------- simulation


def sequential_labels(diffs: np.ndarray, first: int, looks: int) -> np.ndarray:
    """Each simulated sequence (a row of paired differences) looked at after `first`, `first` + 1,
    ... seeds, stopping at its first verdict: the label its interval (at 0.025 / looks per side)
    gives, or "inconclusive" at the end. `looks` = 1 is the naive procedure (the fixed level at
    every look)."""
    sims, total = diffs.shape
    labels = np.full(sims, "inconclusive", dtype=object)
    open_ = np.ones(sims, dtype=bool)
    for n in range(first, total + 1):
        part = diffs[:, :n]
        half = t_quantile(1 - ALPHA / looks, n - 1) * part.std(1, ddof=1) / math.sqrt(n)
        lo, hi = part.mean(1) - half, part.mean(1) + half
        read = np.where(hi < -DELTA, "better", np.where(lo > DELTA, "worse", np.where(
            (lo > -DELTA) & (hi < DELTA), "negligible", "inconclusive"))).astype(object)
        decided = open_ & (read != "inconclusive")
        labels[decided] = read[decided]
        open_ &= ~decided
    return labels


@pytest.mark.parametrize("sd", [0.001, 0.0035, 0.011])  # measured paired sds: dropout, swiglu, −ema
def test_seeds_until_decided_keeps_its_combined_error_rate_and_the_naive_procedure_does_not(sd):
    """seeds: {min: 3, max: 12}, at the least favourable truths (the effect exactly −δ or +δ),
    where every decided label is wrong: the combined wrong-label rate stays at most 5 % (the
    interval's 95 %); the naive procedure's (95 % at every look) does not."""
    rng = np.random.default_rng(int(sd * 1e6))
    first, last, sims = 3, 12, 20_000
    looks = last - first + 1
    for truth in (-DELTA, DELTA):
        diffs = rng.normal(truth, sd, size=(sims, last))
        shipped = sequential_labels(diffs, first, looks)
        naive = sequential_labels(diffs, first, 1)
        rate = np.mean(shipped != "inconclusive")
        assert rate <= 2 * ALPHA and 0.014 <= rate <= 0.028, (truth, rate)  # the README's 1.5–2.7 %
        assert np.mean(naive != "inconclusive") > 0.11, (truth, "naive")  # the README's 11–19 %


def test_one_look_keeps_its_combined_error_rate_at_five_percent():
    """A fixed seed count: the combined wrong-label rate at a boundary truth is the interval's
    miss rate, 5 % (within the simulation's error)."""
    rng = np.random.default_rng(11)
    for n in (3, 6):
        diffs = rng.normal(DELTA, 0.003, size=(40_000, n))
        rate = np.mean(sequential_labels(diffs, n, 1) != "inconclusive")
        assert 0.045 <= rate <= 2 * ALPHA + 0.004, (n, rate)  # the README's 4.8–5.0 %
