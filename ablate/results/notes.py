"""The caveats under a report's tables, each said once: configurations that share one (the same
broken rule, mismatch or metric-changing toggle) are named together in one note, and how the
verdicts were reached closes the list."""

from __future__ import annotations

import math

import pandas as pd

from ..execution.designs import short_name
from ..training.catalog import CATALOG
from . import frames
from .stats import ALPHA


def report_notes(ranking: pd.DataFrame, effects: pd.DataFrame, alias: str, seeds: list, min_effect: float,
           looks: int, unit: str = " nats/char") -> list[str]:
    """The caveats under the tables, each said once: configurations that share one (the same
    broken rule, mismatch or metric-changing toggle) are named together in one note."""
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
    notes = [f"{_names(names, 'breaks', 'break')} Mainrun's rules ({rules}): never the best."
             for rules, names in broken.items()]
    notes += [f"{_names(names, 'is', 'are')} not like-for-like: {why}." for why, names in unlike.items()]
    notes += [f"{_names(names, 'looks', 'look')} like a win, but {t} changes the metric: "
              f"{CATALOG[t].changes_metric}." for t, names in wins.items()]
    if alias:
        notes.append(alias)
    family = int(effects["p"].notna().sum())
    if len(seeds) > 1:
        spent = f" ({ALPHA} spent over {looks} looks: seeds until decided)" if looks > 1 else ""
        notes.append(f"Verdicts, smallest effect of interest ±{min_effect:g}{unit}: better/worse = the "
                     f"{100 - 200 * ALPHA / looks:.3g}% interval wholly beyond ∓{min_effect:g}, negligible = "
                     f"inside ±{min_effect:g} (TOST), else inconclusive; one-sided t tests at {ALPHA / looks:.3g}"
                     f"{spent}, p Holm-adjusted across {family} effects; differences paired by seed.")
    else:
        notes.append("One seed per configuration: noise is unknown, so no interval — small differences "
                     "may be noise.")
    return notes


def _names(names: list[str], one: str, several: str) -> str:
    """'a is' / 'a, b and c are': the subject of a note about one or several configurations."""
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{listed} {one if len(names) == 1 else several}"
