"""Statistics for the report: Student t intervals, and verdicts read off them.

Pure functions over numbers (numpy, no pandas, no scipy): the report decides what is compared
with what, this module only says how sure a difference is. p-values are one-sided.

One interval per comparison, and the verdict is where it lies against a smallest effect of
interest δ (min_effect), for an effect = treated − baseline, paired by seed:
  better        the interval lies wholly below −δ
  worse         wholly above +δ
  negligible    wholly inside ±δ (two one-sided tests, TOST)
  inconclusive  none of these: it straddles ±δ; more seeds needed (about how many: `seeds_needed`)
and "noise unknown" with a single seed, "no spread" where the paired differences were one nonzero
value (a zero-width interval would look certain; differences all zero, a configuration that
reproduced its control on every seed, are negligible). So a verdict is monotone in δ and the printed
interval says it all. Each interval has two-sided level 1 − 2α/K over the K looks its seed plan
allows (seeds until decided may stop at any seed count from min to max), and 1 − 2α/(m·K) when
the plan's family is the experiment's m comparisons (Bonferroni): the procedure gives a wrong
label with probability at most 2α = 5 % per comparison (or for the whole experiment). Holm's
step-down decides more, but has no informative intervals to show: the number printed and the
word beside it would tell two stories.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
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
    """A mean (of values or of paired differences) with its spread; sd is nan where n < 2."""

    mean: float
    n: int
    sd: float = math.nan
    paired: bool = False


def summarize(values: Iterable[float], paired: bool = False) -> Estimate:
    """Mean and sd (n − 1) of the values; n = 1: the mean only."""
    v = np.asarray(list(values), dtype=float)
    if len(v) < 2:
        return Estimate(float(v.mean()) if len(v) else math.nan, len(v), paired=paired)
    return Estimate(float(v.mean()), len(v), float(v.std(ddof=1)), paired)


def difference(treated: dict, control: dict) -> Estimate | None:
    """treated − control, each {seed: y}, paired on the seeds both have (never across seeds: a
    seed fixes the validation text, the initialisation and the batch order); None without a
    shared seed."""
    shared = [s for s in treated if s in control]
    if not shared:
        return None
    return summarize((treated[s] - control[s] for s in shared), paired=True)


# ----------------------------------------------------------------------------- verdicts

ALPHA = 0.025  # per side: every interval of an experiment covers its truth with probability ≥ 95 %
POWER = 0.8  # seeds needed: the seed count that decides with this probability
MAX_SEEDS_ESTIMATE = 10_000
SEEDS_IDENTICAL = "seeds identical"  # no verdict: every seed of a configuration gave one value
NO_SPREAD = "no spread"  # no verdict: the paired differences did not vary, so the interval has no width
FAILS = "fails"  # no verdict on the survivors: seeds the control completed were lost (failed, diverged)
COARSE = "coarser than δ"  # no verdict: the metric moves in steps too large for δ
RELATIVE_TIE = 1e-9  # values closer than this, relative to their size, are one value (summation order)
MIN_STEPS = 2  # δ must span this many steps of a metric on a grid


def ties(values: Iterable[float], scale: float | None = None) -> bool:
    """Whether values differ by no more than rounding does: a spread of at most RELATIVE_TIE of
    their size (or of `scale`). Two seeds of a trainer that ignores its seed, summed in another
    order, differ by 1e-12: that is no noise to test against."""
    v = np.asarray(list(values), dtype=float)
    if not len(v):
        return True
    size = max(float(np.abs(v).max()), abs(scale or 0.0))
    return float(v.max() - v.min()) <= RELATIVE_TIE * size


def resolution(values: Iterable[float]) -> float | None:
    """The step of the grid every value lies on (0.01 for a metric printed with two decimals),
    tried from 1 down to 1e-6; None with fewer than three distinct values (a grid by chance) or
    none found."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if len(np.unique(v)) < 3:
        return None
    for digits in range(0, 7):
        scaled = v * 10.0 ** digits
        if np.all(np.abs(scaled - np.round(scaled)) <= 1e-6):  # in steps: far above float error
            return 10.0 ** -digits
    return None


def normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@dataclass(frozen=True)
class Level:
    """The simultaneous level of an experiment's intervals: α per side shared by its m
    comparisons and the K looks its seed plan allows (Bonferroni); `first` is the plan's first
    round, so a seed count past the plan is K larger (`at`)."""

    comparisons: int = 1
    looks: int = 1
    first: int = 2
    alpha: float = ALPHA

    @property
    def per_side(self) -> float:
        return self.alpha / (max(self.comparisons, 1) * self.looks)

    @property
    def each(self) -> float:
        """Each interval's own two-sided coverage."""
        return 1 - 2 * self.per_side

    def at(self, n: int) -> "Level":
        """The level a look at n seeds has: a seed plan extended to n seeds has more looks."""
        return self if self.looks == 1 else replace(self, looks=max(self.looks, n - self.first + 1))

    def half_width(self, sd: float, n: int) -> float:
        return t_quantile(1 - self.per_side, n - 1) * sd / math.sqrt(n) if n >= 2 else math.nan

    def describe(self) -> str:
        """'95% per comparison, simultaneous over its 10 looks (each 99.5%)': one phrase for every
        output that shows an interval."""
        whole = f"{100 * (1 - 2 * self.alpha):.3g}%"
        looks = f"{self.looks} looks"
        if self.comparisons > 1:
            over = f"{self.comparisons} comparisons" + (f" × {looks}" if self.looks > 1 else "")
            return f"{whole} simultaneous over {over} (each {_percent(self.each)})"
        if self.looks > 1:
            return f"{whole} per comparison, simultaneous over its {looks} (each {_percent(self.each)})"
        return f"{whole} per comparison"


def _percent(coverage: float) -> str:
    """99.964% rather than 100%: enough digits to show how far from 100% it is."""
    digits = max(2, int(-math.floor(math.log10(1 - coverage))) + 1) if coverage < 1 else 2
    return f"{100 * coverage:.{digits}g}%"


def read_interval(lo: float, hi: float, min_effect: float) -> str:
    """The verdict an interval gives against ±δ: exactly what the report prints beside it."""
    if hi < -min_effect:
        return "better"
    if lo > min_effect:
        return "worse"
    if -min_effect < lo and hi < min_effect:
        return "negligible"
    return "inconclusive"


@dataclass(frozen=True)
class Verdict:
    label: str  # better | worse | negligible | inconclusive | noise unknown | no spread
    lo: float = math.nan  # the simultaneous interval the label is read off
    hi: float = math.nan
    p: float = math.nan  # one-sided p of the test the label rests on (or would), × m·K, at most 1
    seeds_needed: int | None = None  # inconclusive: seeds that decide with probability POWER


def decision_power(mean: float, sd: float, n: int, min_effect: float, per_side: float) -> float:
    """The probability that n paired seeds decide a comparison whose true effect and sd are
    `mean` and `sd` (normal approximation of the t tests' power at the critical t of the level)."""
    if n < 2 or not sd > 0:
        return 0.0
    se, crit = sd / math.sqrt(n), t_quantile(1 - per_side, n - 1)
    if abs(mean) > min_effect:
        return normal_cdf((abs(mean) - min_effect) / se - crit)
    return max(0.0, normal_cdf((min_effect - mean) / se - crit) + normal_cdf((min_effect + mean) / se - crit) - 1)


def seeds_needed(mean: float, sd: float, min_effect: float, level: Level, n_now: int) -> int | None:
    """Paired seeds that decide with probability POWER if the truth were the observed mean and sd,
    each seed count read at its own level (a longer plan has more looks); None when no count
    up to MAX_SEEDS_ESTIMATE does (the mean sits on ±δ)."""
    if abs(abs(mean) - min_effect) == 0 or not math.isfinite(sd):
        return None

    def decides(n: int) -> bool:
        return decision_power(mean, sd, n, min_effect, level.at(n).per_side) >= POWER

    # the power grows with n: double until it decides, then halve the gap (a few quantiles, not
    # one per seed count: a mean near ±δ would otherwise cost thousands)
    low, high, last = max(n_now + 1, 2) - 1, max(n_now + 1, 2), MAX_SEEDS_ESTIMATE - 1
    while not decides(high):
        if high >= last:
            return None
        low, high = high, min(2 * high, last)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if decides(middle) else (middle, high)
    return high


def one_sided_p(t: float, df: float) -> float:
    """P(T ≥ t) for Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    half = t_pvalue(abs(t), df) / 2
    return half if t >= 0 else 1.0 - half


def _leaning_p(mean: float, sd: float, n: int, min_effect: float) -> float:
    """The one-sided p of the test the data lean to: better, worse, or TOST's larger p."""
    se = sd / math.sqrt(n)

    def p(x: float) -> float:  # P(T ≥ x / se); a zero spread decides unless exactly on the boundary
        t = x / se if se > 0 else (math.copysign(math.inf, x) if x else 0.0)
        return one_sided_p(t, n - 1)
    if mean < -min_effect:
        return p(-(mean + min_effect))
    if mean > min_effect:
        return p(mean - min_effect)
    return max(p(mean + min_effect), p(min_effect - mean))


def decide(effects: list[tuple[float, float, int]], min_effect: float, level: Level,
           scale: float = 0.0) -> list[Verdict]:
    """One verdict per (mean, sd, n) of paired differences: the label its interval at `level`
    gives against ±δ; fewer than two seeds (or no sd): noise unknown; an sd within rounding of
    the values' `scale` (a zero-width interval): no spread, never a decision, unless every
    difference is zero (the configuration reproduced its control on every seed): negligible."""
    out = []
    for mean, sd, n in effects:
        if not n or n < 2 or not math.isfinite(sd):
            out.append(Verdict("noise unknown"))
            continue
        if sd <= RELATIVE_TIE * max(abs(scale), abs(mean)) and abs(mean) > RELATIVE_TIE * abs(scale):
            out.append(Verdict(NO_SPREAD))  # the same nonzero difference on every seed: no noise to read
            continue
        half = level.half_width(sd, n)
        lo, hi = mean - half, mean + half
        label = read_interval(lo, hi, min_effect)
        p = min(1.0, _leaning_p(mean, sd, n, min_effect) * level.comparisons * level.looks)
        needed = seeds_needed(mean, sd, min_effect, level, n) if label == "inconclusive" else None
        out.append(Verdict(label, lo, hi, p, needed))
    return out
