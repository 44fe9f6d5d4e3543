"""The sentences above a report's tables: which comparison is fair, which metric ranks, whether
the seeds shared a validation text, what every interval is, and which settings were chosen after
the data; and why a run is not like-for-like with its baseline (its tokenizer, its validation
text, its eval coverage). Each is a function of the runs (or the stored experiment) alone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from ..execution.seeds import VerdictPlan, verdict_plan
from ..storage.schema import plain
from ..training.config import HUB_DATASET, TrainConfig
from .stats import Level

MAINRUN_DATA_FILE = "hacker_news.csv"  # the offline copy of Mainrun's hub dataset
COVERAGE_TOLERANCE = 0.01  # eval coverages further apart than 1 percentage point differ


def baseline_name(per_run: pd.DataFrame) -> str | None:
    """The in-matrix baseline: the run named 'baseline', else the configuration with no toggles."""
    names = per_run["name"].tolist()
    if "baseline" in names:
        return "baseline"
    plain = per_run.loc[per_run["toggles"] == "", "name"]
    return plain.iloc[0] if len(plain) else None


def settled_plan(exp: pd.Series, min_effect: float | None, family: str | None = None,
                 secondary: str | None = None) -> tuple[VerdictPlan, list[str]]:
    """The verdicts' plan as stored when the experiment first ran (else as its matrix text says:
    an older database), and a line for each setting chosen after the data: a plan stored only
    after the data existed, a `min_effect` given now, or a matrix since edited. A seed plan
    changed after the data counts every seed count at which either plan let a verdict be read,
    and every one recorded as read since (`looks_taken`), as a look (3 listed seeds extended to
    6: two looks; then to 12: three), so reading and extending costs level.
    `secondary`: a metric of the matrix's `metric.also`, whose own δ the verdicts use."""
    stored, now = VerdictPlan.from_dict(exp.get("plan")), verdict_plan(exp.get("yaml_text"))
    plan, after = stored or now, []
    if stored is None:
        after.append("Plan not stored with the experiment (a database older than stored plans): δ and the seed "
                     "plan are the matrix's as last run, so they may have been chosen after the data.")
    elif stored.after_data:
        after.append(f"Plan recorded after the data: this experiment had runs before its plan was stored (at a "
                     f"later `ablate run`, from the matrix then: δ = {stored.min_effect:g}, {stored.seeds}), so "
                     f"its verdicts are not pre-registered.")
    if stored is not None and now.min_effect != stored.min_effect:
        after.append(f"The matrix now says min_effect {now.min_effect:g}; the verdicts keep δ = "
                     f"{stored.min_effect:g}, stored when the experiment first ran.")
    if stored is not None and (now.seeds, now.looks, now.family) != (stored.seeds, stored.looks, stored.family):
        counts = stored.counts() | now.counts() | set(looks_taken(exp))  # a middle extension's reads too
        budget = max(stored.budget or 0, now.budget or 0)
        plan = replace(stored, looks=len(counts), budget=budget, first=budget - len(counts) + 1)
        after.append(f"Seed plan changed after the data: planned {stored.seeds} ({stored.family}), the matrix now "
                     f"says {now.seeds} ({now.family}); a verdict may have been read at {len(counts)} seed "
                     f"count(s), so the intervals count {plan.looks} look(s).")
    if stored is not None and secondary in now.also and now.also[secondary] != stored.also.get(secondary):
        if secondary in stored.also:
            after.append(f"The matrix now says {secondary}: {now.also[secondary]}; the verdicts keep "
                         f"{stored.also[secondary]}, stored when the experiment first ran.")
        else:
            after.append(f"{secondary}'s goal and δ = {now.also[secondary]['min_effect']:g} are the matrix's as it is "
                         f"now: they were not stored when the experiment first ran.")
            plan = replace(plan, also={**plan.also, secondary: now.also[secondary]})
    if secondary in plan.also:  # a secondary metric of your own trainer is judged against its own δ
        plan = replace(plan, min_effect=plan.also[secondary]["min_effect"])
    if min_effect is not None and min_effect != plan.min_effect:
        after.append(f"δ = {min_effect:g} chosen after the data (--min-effect); the experiment was planned "
                     f"with δ = {plan.min_effect:g}.")
        plan = replace(plan, min_effect=min_effect)
    if family is not None and family != plan.family:
        after.append(f"Intervals over the {family} chosen after the data; the experiment was planned per {plan.family}.")
        plan = replace(plan, family=family)
    return plan, after


def interval_line(seeds: list, level: Level, plan: VerdictPlan) -> str:
    """What every interval of the report is, said once above its tables (none with one seed)."""
    if len(seeds) < 2:
        return ""
    return (f"Intervals (Δbase and effects): {level.describe()}, paired by seed; each verdict is read off "
            f"its interval against ±{plan.min_effect:g}.")


def looks_taken(exp: pd.Series) -> list[int]:
    taken = exp.get("looks_taken")
    return [int(n) for n in taken if isinstance(n, int)] if isinstance(taken, list) else []


def fairness(per_run: pd.DataFrame, reference: float) -> tuple[str, bool]:
    """Which comparison is fair, in a line, and whether the reference is: only for Mainrun's
    data at full scale."""
    base = per_run[(per_run["name"] == baseline_name(per_run)) & (per_run["status"] == "completed")]
    if base.empty:
        return (f"Fair comparison: none certain — no completed in-matrix baseline; the reference "
                f"{reference:g} is fair only on Mainrun's data at full scale."), False
    config = {k[4:]: v for k, v in base.iloc[0].items() if k.startswith("cfg.")}
    default = TrainConfig().to_dict()
    scale = [f"{k}={v}" for k, v in config.items() if k not in ("data", "seed") and default.get(k) != plain(v)]
    data = str(config.get("data", HUB_DATASET))
    if data != HUB_DATASET and Path(data).name != MAINRUN_DATA_FILE:
        scale.insert(0, f"data={Path(data).name}")
    if bool(base["truncated"].fillna(False).any()):
        scale.append("truncated")
    if not scale:
        return (f"Fair comparisons: the in-matrix baseline and the reference {reference:g} "
                f"(Mainrun's data at full scale)."), True
    shown = ", ".join(scale[:4]) + (", …" if len(scale) > 4 else "")
    return (f"Fair comparison: the in-matrix baseline, not the reference {reference:g} "
            f"(data/scale differ from Mainrun's: {shown})."), False


def metric_line(metric: str, mixed: bool, coverage: pd.Series) -> str:
    low, high = (f"{coverage.min():.0%}", f"{coverage.max():.0%}") if coverage.notna().any() else ("unknown",) * 2
    span = low if low == high else f"{low}–{high}"
    if metric == "full":
        why = (f"eval coverage ranges {span} across runs, so Mainrun's val_loss scores different "
               f"targets for different runs" if mixed else "chosen with --metric full")
        return f"Metric: val_loss_full (every validation target scored): {why}."
    if mixed:
        return (f"Metric: val_loss (Mainrun's official metric) — but eval coverage ranges {span}; "
                f"runs score different targets, use --metric full to compare like-for-like.")
    same = f"eval coverage {span} for every run" if coverage.notna().any() else "eval coverage not recorded"
    return f"Metric: val_loss (Mainrun's official metric); {same}."


def split_line(per_run: pd.DataFrame) -> str:
    """Whether the seeds shared one validation text: what a per-configuration interval means."""
    done = per_run[per_run["status"] == "completed"]  # every seed a comparison uses
    texts = done["sha"].dropna().nunique()
    if done["seed"].nunique() < 2 or not texts:
        return ""
    return ("Split: fixed — every seed validated on one text; seeds vary initialisation, dropout and batch "
            "order." if texts == 1 else f"Split: each seed drew its own validation text ({texts} texts), so "
            f"a configuration's spread over seeds is mostly split variance; compare paired Δbase.")


def mismatches(run: pd.Series, base: pd.Series | None) -> list[str]:
    """Why a run's numbers cannot be compared with the baseline's under any metric."""
    reasons = []
    roundtrip = run.get("roundtrip")
    if roundtrip is not None and not pd.isna(roundtrip) and not bool(roundtrip):
        reasons.append("the tokenizer does not round-trip the text")
    if base is not None and base["run_id"] != run["run_id"] and pd.notna(run["sha"]) \
            and pd.notna(base["sha"]) and run["sha"] != base["sha"]:
        reasons.append("validation text differs from the baseline's")
    return reasons


def coverage_gap(run: pd.Series, base: pd.Series | None) -> tuple[float, float] | None:
    """(run's, baseline's) eval coverage when they differ by more than the tolerance."""
    if base is None or base["run_id"] == run["run_id"]:
        return None
    if abs(run["coverage"] - base["coverage"]) > COVERAGE_TOLERANCE:  # nan compares False
        return run["coverage"], base["coverage"]
    return None


def coverage_reason(gaps: list[tuple[float, float]], metric: str) -> str:
    """One phrase for all of a configuration's seeds: 'eval coverage 94–98% vs baseline …'."""
    def span(values: list[float]) -> str:
        lo, hi = f"{min(values):.0%}", f"{max(values):.0%}"
        return lo if lo == hi else f"{lo[:-1]}–{hi}"
    text = f"eval coverage {span([g[0] for g in gaps])} vs baseline {span([g[1] for g in gaps])}"
    if len(gaps) > 1:
        text += f" over {len(gaps)} seeds"
    if metric != "mainrun":
        text += " (val_loss_full scores every target, so the ranking still compares)"
    return text
