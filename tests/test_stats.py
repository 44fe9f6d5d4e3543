"""The report's statistics against tables and closed forms (scipy is not a dependency)."""

from __future__ import annotations

import math

import pytest

from ablate.results.stats import NO_SPREAD, Level, decide, read_interval, seeds_needed, t_pvalue, t_quantile

# Student t quantiles t_{0.975, df} from standard tables.
T975 = {1: 12.7062, 2: 4.30265, 3: 3.18245, 4: 2.77645, 9: 2.26216}


def test_t_distribution_matches_tables_and_closed_forms():
    for df, t in T975.items():
        assert t_quantile(0.975, df) == pytest.approx(t, abs=1e-4)
    # df 1 and 2 have closed forms: p = 1 - 2/pi*atan(t) and p = 1 - t/sqrt(t^2 + 2)
    assert t_pvalue(1.5, 1) == pytest.approx(1 - 2 / math.pi * math.atan(1.5), abs=1e-10)
    assert t_pvalue(2.0, 2) == pytest.approx(1 - 2 / math.sqrt(6), abs=1e-10)


def test_one_level_per_experiment_is_said_one_way():
    assert Level().describe() == "95% per comparison"
    assert Level(1, 10, 3).describe() == "95% per comparison, simultaneous over its 10 looks (each 99.5%)"
    assert Level(14, 10, 3).describe() == "95% simultaneous over 14 comparisons × 10 looks (each 99.964%)"
    assert Level(1, 10, 3).at(12) == Level(1, 10, 3) and Level(1, 10, 3).at(20).looks == 18  # past the plan
    assert Level(1, 1, 3).at(20).looks == 1  # a fixed seed list is one look at any count


@pytest.mark.parametrize("delta", [0.001, 0.002, 0.004, 0.005, 0.01, 0.02])
def test_a_verdict_is_its_interval_read_against_delta_and_monotone_in_delta(delta):
    effects = [(m, sd, n) for m in (-0.03, -0.006, -0.004, -1e-4, 0.0, 0.003, 0.012)
               for sd in (0.0, 1e-4, 0.002, 0.01) for n in (2, 3, 7)]
    for level in (Level(), Level(1, 10, 3), Level(22, 10, 3)):
        for (mean, sd, n), v in zip(effects, decide(effects, delta, level)):
            if v.label == NO_SPREAD:  # a zero-width interval away from 0 decides nothing
                assert sd == 0 and mean != 0
                continue
            assert v.label == read_interval(v.lo, v.hi, delta)
            wider = decide([(mean, sd, n)], 2 * delta, level)[0].label
            # a larger δ never turns better/worse into the other, nor negligible into anything else
            assert not (v.label == "negligible" and wider != "negligible")
            assert not (v.label in ("better", "worse") and wider not in (v.label, "inconclusive", "negligible"))


def test_seeds_needed_decides_with_the_stated_probability():
    """The figure is the seed count at which the t test at the procedure's level decides with
    probability 0.8 if the truth is the measured mean and sd (scipy's noncentral t checks it)."""
    sp = pytest.importorskip("scipy.stats")
    for mean, sd, level in ((0.0021, 0.0030, Level(1, 10, 3)), (-0.012, 0.008, Level()), (0.009, 0.006, Level(14, 4, 3))):
        n = seeds_needed(mean, sd, 0.005, level, 3)
        def power(k):
            crit = sp.t.ppf(1 - level.at(k).per_side, k - 1)
            if abs(mean) > 0.005:
                return sp.nct.sf(crit, k - 1, (abs(mean) - 0.005) / (sd / math.sqrt(k)))
            lo = sp.nct.sf(crit, k - 1, (0.005 - mean) / (sd / math.sqrt(k)))
            hi = sp.nct.sf(crit, k - 1, (0.005 + mean) / (sd / math.sqrt(k)))
            return lo + hi - 1
        assert power(n) >= 0.75 and power(n - 2) < 0.8, (mean, sd, n, power(n), power(n - 2))
