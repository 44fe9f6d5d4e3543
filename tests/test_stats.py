"""The report's statistics against tables and closed forms (scipy is not a dependency)."""

from __future__ import annotations

import math

import pytest

from ablate.results.stats import holm, t_pvalue, t_quantile

# Student t quantiles t_{0.975, df} from standard tables.
T975 = {1: 12.7062, 2: 4.30265, 3: 3.18245, 4: 2.77645, 9: 2.26216}


def test_t_distribution_matches_tables_and_closed_forms():
    for df, t in T975.items():
        assert t_quantile(0.975, df) == pytest.approx(t, abs=1e-4)
    # df 1 and 2 have closed forms: p = 1 - 2/pi*atan(t) and p = 1 - t/sqrt(t^2 + 2)
    assert t_pvalue(1.5, 1) == pytest.approx(1 - 2 / math.pi * math.atan(1.5), abs=1e-10)
    assert t_pvalue(2.0, 2) == pytest.approx(1 - 2 / math.sqrt(6), abs=1e-10)


def test_holm_adjustment_by_hand():
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1 -> 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06
    adjusted = holm([0.04, 0.01, math.nan, 0.03])
    assert adjusted[:2] == pytest.approx([0.06, 0.03]) and math.isnan(adjusted[2])
    assert adjusted[3] == pytest.approx(0.06)
