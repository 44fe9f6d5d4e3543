"""Statistics for the report: Student t intervals and tests, Welch's test and Holm's correction.

Pure functions over numbers (numpy, no pandas, no scipy): the report decides what is compared
with what, this module only says how sure a difference is. Intervals are 95% Student t;
p-values are two-sided.

Verdicts against a smallest effect of interest δ (min_effect), for a comparison's effect
(treated − baseline, paired by seed):
  better        the effect is below −δ: one-sided t test of H0 μ ≥ −δ rejected
  worse         the effect is above +δ: H0 μ ≤ +δ rejected
  negligible    the effect lies inside ±δ: both H0 μ ≤ −δ and H0 μ ≥ +δ rejected (TOST)
  inconclusive  none of these: more seeds needed (and about how many)
and "noise unknown" with a single seed. Each test is one-sided at level α/looks (α = 0.025, so
with one look "better" means the 95% interval lies wholly below −δ, "negligible" that it lies
inside ±δ). Holm's step-down adjusts each comparison's deciding p over the family. When seeds
are added until decided, every possible look (each seed count from min to max) spends an equal
share of α (Bonferroni over looks), so a false verdict stays at or below α however many looks
are taken.
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


# ----------------------------------------------------------------------------- verdicts

ALPHA = 0.025  # one-sided: the verdicts agree with the two-sided 95% interval
DECIDING = ("better", "worse", "negligible")  # in the order of `verdict_statistics`' last axis
MAX_SEEDS_ESTIMATE = 10_000


@dataclass(frozen=True)
class Verdict:
    label: str  # better | worse | negligible | inconclusive | noise unknown
    p: float  # one-sided p of the test the label rests on (or would rest on); nan: none
    p_adjusted: float  # after Holm over the family; compared with `level`
    level: float  # α / looks
    lo: float = math.nan  # the two-sided (1 − 2·level) interval the verdict reads against ±δ
    hi: float = math.nan
    seeds_needed: int | None = None  # inconclusive: seeds that would decide, same mean and sd


def verdict_statistics(mean, sd, n, min_effect: float) -> np.ndarray:
    """t statistics of the three one-sided tests (better, worse, negligible), each oriented so
    that a large value rejects its null; TOST's is the smaller of its two. Vectorised over
    arrays of comparisons. Zero spread: ±inf where the mean is off the boundary, 0 on it."""
    mean, sd, n = (np.asarray(a, dtype=float) for a in np.broadcast_arrays(mean, sd, n))
    se = sd / np.sqrt(n)

    def t(x):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.nan_to_num(x / se, nan=0.0, posinf=np.inf, neginf=-np.inf)

    lower, upper = t(mean + min_effect), t(mean - min_effect)  # against −δ and +δ
    return np.stack([-lower, upper, np.minimum(lower, -upper)], axis=-1)


def critical_t(df, level: float) -> np.ndarray:
    """t_{1−level, df}, elementwise (a handful of distinct df: the quantile is cached)."""
    return np.vectorize(lambda d: t_quantile(1 - level, float(d)), otypes=[float])(df)


def one_sided_p(t: float, df: float) -> float:
    """P(T ≥ t) for Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    half = t_pvalue(abs(t), df) / 2
    return half if t >= 0 else 1.0 - half


def seeds_needed(mean: float, sd: float, min_effect: float, level: float, n_now: int) -> int | None:
    """Paired seeds at which this comparison would be decided at `level` if its mean and sd
    stayed as observed; None when the mean sits on ±δ (no number of seeds decides it)."""
    gap = abs(abs(mean) - min_effect)
    if gap == 0 or not math.isfinite(sd):
        return None
    for n in range(max(n_now + 1, 2), MAX_SEEDS_ESTIMATE):
        if t_quantile(1 - level, n - 1) * sd / math.sqrt(n) < gap:
            return n
    return None


def decide(effects: list[tuple[float, float, int]], min_effect: float, alpha: float = ALPHA,
           looks: int = 1) -> list[Verdict]:
    """One verdict per (mean, sd, n) of paired differences, Holm-adjusted over the family.

    At most one of the three alternatives can be true, so each comparison is tested for the
    one its data lean to (the largest statistic); with a family of one this is exactly
    `statistic > critical_t(n − 1, α/looks)`."""
    level = alpha / looks
    testable = [i for i, (_, sd, n) in enumerate(effects) if n >= 2 and math.isfinite(sd)]
    found: dict[int, tuple[str, float]] = {}
    if testable:
        mean, sd, n = np.array([effects[i] for i in testable], dtype=float).T
        stats = verdict_statistics(mean, sd, n, min_effect)
        for i, row, df in zip(testable, stats, n - 1):
            k = int(np.argmax(row))
            found[i] = DECIDING[k], one_sided_p(float(row[k]), float(df))
    adjusted = holm([found[i][1] if i in found else math.nan for i in range(len(effects))])
    out = []
    for i, (mean, sd, n) in enumerate(effects):
        if i not in found:
            out.append(Verdict("noise unknown", math.nan, math.nan, level))
            continue
        half = t_quantile(1 - level, n - 1) * sd / math.sqrt(n)
        label, p = found[i]
        if adjusted[i] < level:
            out.append(Verdict(label, p, adjusted[i], level, mean - half, mean + half))
        else:
            out.append(Verdict("inconclusive", p, adjusted[i], level, mean - half, mean + half,
                               seeds_needed(mean, sd, min_effect, level, n)))
    return out
