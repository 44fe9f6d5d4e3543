"""Statistics for the report: Student t intervals and tests, Welch's test and Holm's correction.

Pure functions over numbers (numpy, no pandas, no scipy): the report decides what is compared
with what, this module only says how sure a difference is. Intervals are 95% Student t;
p-values are two-sided. A new test (e.g. equivalence within a margin) belongs here.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by Lentz's continued fraction (no scipy needed)."""
    if x <= 0.0 or x >= 1.0:
        return max(0.0, min(1.0, x))
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(a * math.log(x) + b * math.log1p(-x)
                     - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))) / a
    f, c, d, tiny = 1.0, 1.0, 0.0, 1e-300
    for i in range(300):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-15:
            break
    return front * (f - 1.0)


def t_pvalue(t: float, df: float) -> float:
    """Two-sided p-value of Student's t statistic with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


@functools.lru_cache(maxsize=None)
def t_quantile(q: float, df: float) -> float:
    """The q quantile (q > 0.5) of Student's t, by bisection on t_pvalue."""
    lo, hi = 0.0, 1e6
    for _ in range(64):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_pvalue(mid, df) > 2 * (1 - q) else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Estimate:
    """A mean (of values or of differences) with its spread; nan where n cannot tell."""

    mean: float
    n: int
    sd: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    p: float = math.nan
    paired: bool = False


def _interval(mean: float, se: float, df: float, n: int, sd: float, paired: bool) -> Estimate:
    half = t_quantile(0.975, df) * se
    p = (0.0 if mean else 1.0) if se == 0 else t_pvalue(mean / se, df)
    return Estimate(mean, n, sd, mean - half, mean + half, p, paired)


def summarize(values: Iterable[float], paired: bool = False) -> Estimate:
    """Mean, sd and 95% CI (mean ± t_{0.975,n-1}·sd/√n); p tests mean = 0. n = 1: mean only."""
    v = np.asarray(list(values), dtype=float)
    if len(v) < 2:
        return Estimate(float(v.mean()) if len(v) else math.nan, len(v), paired=paired)
    sd = float(v.std(ddof=1))
    return _interval(float(v.mean()), sd / math.sqrt(len(v)), len(v) - 1, len(v), sd, paired)


def difference(treated: dict, control: dict) -> Estimate | None:
    """treated - control, each {seed: y}: paired by seed when every treated seed has a control."""
    if not treated or not control:
        return None
    if set(treated) <= set(control):
        return summarize((treated[s] - control[s] for s in treated), paired=True)
    a, b = np.array(list(treated.values())), np.array(list(control.values()))
    mean = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Estimate(mean, min(len(a), len(b)))
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se else 1.0
    return _interval(mean, se, df, min(len(a), len(b)), math.nan, False)


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm step-down adjusted p-values; nan entries stay nan and are not counted in the family."""
    p = list(pvalues)
    order = sorted((i for i, v in enumerate(p) if not math.isnan(v)), key=p.__getitem__)
    adjusted, running = [math.nan] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        adjusted[i] = running
    return adjusted
