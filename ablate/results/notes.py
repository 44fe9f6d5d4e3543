"""The caveats under a report's tables, each said once: configurations that share one (the same
broken rule, mismatch or metric-changing toggle) are named together in one note, and how the
verdicts were reached closes the list."""

from __future__ import annotations

import math

import pandas as pd

from ..execution.designs import short_name
from ..training.catalog import CATALOG
from ..execution.seeds import VerdictPlan
from . import frames
from .stats import NO_SPREAD, POWER, SEEDS_IDENTICAL, Level


def report_notes(ranking: pd.DataFrame, effects: pd.DataFrame, alias: str, seeds: list, plan: VerdictPlan,
                 level: Level, looks_taken: list[int], identical: set[str], unit: str = " nats/char",
                 first: tuple[str, ...] = ()) -> list[str]:
    """The caveats under the tables, each said once: configurations that share one (the same
    broken rule, mismatch or metric-changing toggle) are named together in one note. `first`:
    notes that qualify a verdict (lost seeds, the metric's resolution), said before the others."""
    broken: dict[str, list[str]] = {}
    unlike: dict[str, list[str]] = {}
    wins: dict[str, list[str]] = {}
    ranked = ranking[ranking["rank"].notna()]
    for row in ranked.itertuples():
        if row.breaks_rule:
            rules = {CATALOG[t].breaks_rule for t in frames.split_toggles(row.breaks_rule) if t in CATALOG}
            broken.setdefault("; ".join(sorted(rules)) or "not allowed", []).append(short_name(row.name))
        if row.not_like_for_like:
            unlike.setdefault(row.not_like_for_like, []).append(short_name(row.name))
        delta = row.d_base if not math.isnan(row.d_base) else row.d_ref
        for t in frames.split_toggles(row.toggles):
            if t in CATALOG and CATALOG[t].changes_metric and delta < 0:
                wins.setdefault(t, []).append(f"{short_name(row.name)} ({delta:+.4f})")
    notes = [note for note in first if note]
    notes += [f"{_names(names, 'breaks', 'break')} Mainrun's rules ({rules}): never the best."
              for rules, names in broken.items()]
    notes += [f"{_names(names, 'is', 'are')} not like-for-like: {why}." for why, names in unlike.items()]
    notes += [f"{_names(names, 'looks', 'look')} like a win, but {t} changes the metric: "
              f"{CATALOG[t].changes_metric}." for t, names in wins.items()]
    if identical:
        notes.append(f"{_names(sorted(map(short_name, identical)), 'gave', 'gave')} the same value on every "
                     f"seed, within rounding (a spread under 1e-9 of the value): the seed does not reach the "
                     f"trainer (or changes nothing but the order of a sum), so the noise is unknown and "
                     f"comparisons with them get no verdict ({SEEDS_IDENTICAL}).")
    if (effects["verdict"] == NO_SPREAD).any() if len(effects) else False:
        notes.append(f"{_names(effects.loc[effects['verdict'] == NO_SPREAD, 'effect'].tolist(), 'differs', 'differ')} "
                     f"from its control by the same amount on every seed: a zero-width interval would look "
                     f"certain, so it gets no verdict ({NO_SPREAD}).")
    counts = ranked.drop_duplicates("name").set_index("name")["n"]
    if counts.nunique() > 1 and ranked["d_base"].notna().any():
        notes.append(unpaired_note(counts))
    if alias:
        notes.append(alias)
    if len(seeds) > 1:
        notes.append(verdict_rule(plan, level, looks_taken, unit))
    else:
        notes.append("One seed per configuration: noise is unknown, so no interval — small differences "
                     "may be noise.")
    return notes


def unpaired_note(counts: pd.Series) -> str:
    """Where configurations have different seed counts, `final` (a mean over each one's own seeds)
    need not follow the rank, which is by Δbase on the seeds each shares with the baseline."""
    base = f"baseline {counts['baseline']:.0f}, " if "baseline" in counts else ""
    others = counts.drop("baseline", errors="ignore")
    spread = f"{others.min():.0f}" if others.min() == others.max() else f"{others.min():.0f}–{others.max():.0f}"
    return (f"final and best are each configuration's mean over all its own seeds ({base}"
            f"{'the others ' * bool(base)}{spread}); the rank is by Δbase, paired by seed, so it need not follow final.")


def verdict_rule(plan: VerdictPlan, level: Level, looks_taken: list[int], unit: str = " nats/char") -> str:
    """How every verdict was read, in one sentence: the interval's level and the rule against ±δ."""
    d = f"{plan.min_effect:g}"
    looks = ""
    if level.looks > 1:
        taken = f"; looks taken at {_counts(looks_taken)} seeds" if looks_taken else ""
        looks = f" (seeds until decided, {plan.seeds}: a verdict may be read at any of {level.looks} seed counts{taken})"
    return (f"Intervals: {level.describe()}{looks}, paired by seed. Verdicts read off them against the smallest "
            f"effect of interest ±{d}{unit}: better/worse = wholly beyond ∓{d}, negligible = wholly inside "
            f"±{d}, else inconclusive (~seeds: the count that decides with {POWER:.0%} probability if the "
            f"effect and its sd are as measured).")


def _counts(values: list[int]) -> str:
    """3, 4, …, 12 for a run of consecutive counts; else listed."""
    if len(values) > 3 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}, {values[1]}, …, {values[-1]}"
    return ", ".join(map(str, values))


def _names(names: list[str], one: str, several: str) -> str:
    """'a is' / 'a, b and c are': the subject of a note about one or several configurations."""
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{listed} {one if len(names) == 1 else several}"
