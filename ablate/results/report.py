"""The ablation report: which configurations win, by how much, and whether it matters.

Everything here reads the results database only (through `frames`); it knows nothing of the
model. `build_report` loads, `make_report` computes (pure: DataFrames in, a `Report` out), and
`render.render` prints it; `stats` does the arithmetic of intervals and tests.

Definitions, all on the ranking metric `y` (the last evaluation's val_loss, or val_loss_full):

* a configuration is every completed run sharing a name (the same config across seeds);
* a difference between two configurations is always paired by seed: the mean of the per-seed
  differences on the seeds both completed, with a one-sample Student t interval; never across
  seeds, whose validation texts may differ;
* a configuration that lost seeds its control completed (failed, diverged, timed out) is judged
  on all of them, not on the survivors: its comparison "fails" and it is never best
  (`qualifiers`); seeds still to run are not data yet;
* a factorial main effect is mean(y | on) - mean(y | off); a two-way interaction of two-level
  factors A, B with x = +1 (on) / -1 (off) is mean(y | x_A*x_B = +1) - mean(y | x_A*x_B = -1),
  i.e. half the difference between A's effect with B on and with B off. With several seeds
  both are computed within each seed and the per-seed values give the interval;
* each effect gets one interval, simultaneous over the report's comparisons and its seed plan's
  looks (`stats.Level`), and its verdict is read off it against the smallest effect of interest
  min_effect (δ): better, worse, negligible or inconclusive (`stats.decide`). One seed, seeds
  that gave one value within rounding (the seed never reached the trainer), a zero-width
  interval, or your own metric on a grid coarser than δ: no verdict;
* the ranking orders configurations by that same paired difference to the baseline (Δbase, on
  the seeds each shares with it), so it cannot contradict the verdicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ..execution.designs import LEAVE_OUT, aliasing_note, short_name
from ..execution.seeds import VerdictPlan, own_metric
from ..storage.schema import EVAL_COLUMNS
from ..storage.store import open_store
from ..training.catalog import CATALOG
from ..training.config import suggest
from . import frames
from .cost import STEADY, attach, cost_effects, cost_lines, steady_seconds_per_token
from .lines import (COVERAGE_TOLERANCE, baseline_name, coverage_gap, coverage_reason, fairness, interval_line,
                    looks_taken, metric_line, mismatches, settled_plan, split_line)
from .notes import report_notes
from .qualifiers import comparison_seeds, identical_seeds, qualify, seeds_of, value_scale
from .stats import (FAILS, NO_SPREAD, SEEDS_IDENTICAL, Estimate, Level, Verdict, decide, difference,
                    read_interval, summarize)

METRICS = {"mainrun": "val_loss", "full": "val_loss_full"}


# ------------------------------------------------------------------------------- model


@dataclass
class Report:
    experiment: str
    design: str
    metric: str  # "mainrun" (val_loss) or "full" (val_loss_full); your own trainer's: its name
    reference: float | None  # None: your own trainer's, which has none
    seeds: list
    lines: list[str]  # one-liners above the ranking: which comparison is fair, which metric
    ranking: pd.DataFrame  # ranked configurations, then one row per run that did not complete
    effects: pd.DataFrame
    effects_title: str
    notes: list[str] = field(default_factory=list)
    min_effect: float = math.nan  # δ of the verdicts, nats per character
    cost_min_effect: float = 0.05  # the speed and memory verdicts' relative δ
    looks: int = 1  # seed counts at which a verdict may be read (seeds: {min, max})
    level: Level = field(default_factory=Level)  # the one level of every interval shown
    after_data: list[str] = field(default_factory=list)  # settings chosen after the data, said so
    looks_taken: list[int] = field(default_factory=list)  # seed counts the verdicts were read at
    budget: int | None = None  # the most seeds the plan gives a configuration
    reference_fair: bool = False  # Mainrun's data at full scale: Δref means something
    goal: str = "minimize"  # your own trainer's metric may be one to maximize
    mainrun: bool = True  # Mainrun's trainer: its reference, eval coverage and rules apply
    values: dict = field(default_factory=dict)  # {configuration: {seed: y}}: pairs across experiments

    @property
    def ranked_by(self) -> str:
        return METRICS[self.metric] if self.mainrun else self.metric

    @property
    def column(self) -> str:
        """The load_evals() column of the ranking metric."""
        return eval_column(self.ranked_by)


def eval_column(metric: str) -> str:
    """Where load_evals() puts a metric: its own column, else `extra.<name>`."""
    return metric if metric in EVAL_COLUMNS else f"extra.{metric}"


@dataclass(frozen=True)
class _Factor:
    name: str
    labels: tuple[str, ...]  # labels of its on-levels
    allowed: bool


def build_report(db: Any = None, experiment: str | None = None, metric: str | None = None,
                 min_effect: float | None = None, family: str | None = None) -> Report:
    """Load the experiment (the only one when None) and compute its report from its runs and, of
    their evaluations, the few per run it uses (`load_evals(summary_of=)`) and the throughputs."""
    with open_store(db, read_only=True) as store:
        exp = frames.pick_experiment(store, experiment)
        runs = frames.load_runs(store, exp["experiment"])
        evals = frames.load_evals(store, exp["experiment"], summary_of=ranked_columns(exp, metric))
        speed = frames.load_speed(store, exp["experiment"])
    return make_report(exp, runs, evals, metric, min_effect, family, speed)


def ranked_columns(exp: pd.Series, metric: str | None) -> list[str]:
    """The load_evals columns a report may rank by: Mainrun's full-set loss or your own metrics, and `metric`."""
    own, plan = own_metric(exp.get("yaml_text")), exp.get("plan") if isinstance(exp.get("plan"), dict) else {}
    names = [own[0], *(plan.get("also") or {})] if own is not None else ["val_loss_full"]
    return list(dict.fromkeys(eval_column(n) for n in [*names, *([metric] if metric and metric not in METRICS else [])]))


def make_report(exp: pd.Series, runs: pd.DataFrame, evals: pd.DataFrame,
                metric: str | None = None, min_effect: float | None = None, family: str | None = None,
                speed: pd.DataFrame | None = None) -> Report:
    """One experiment's report from its list_experiments() row, runs and evals (δ: the matrix's);
    `speed`: the evaluations' throughputs when `evals` holds only some of them."""
    steady = steady_seconds_per_token(evals if speed is None else speed)
    own = own_metric(exp.get("yaml_text"))
    if metric is not None and metric not in METRICS and own is None:
        raise frames.ResultsError(f"--metric {metric!r}: expected one of {', '.join(METRICS)}{suggest(metric, METRICS)}")
    if min_effect is not None and not min_effect > 0:
        raise ValueError(f"min_effect {min_effect!r}: expected a positive number (nats per character)")
    secondary = metric if own is not None and metric not in (None, own[0]) else None
    plan, after_data = settled_plan(exp, min_effect, family, secondary)
    if secondary is not None:  # a secondary metric of your own trainer, with its own goal and δ
        if secondary not in plan.also:
            raise frames.ResultsError(f"--metric {metric!r}: {exp['experiment']!r} ranks by its own metric {own[0]!r} "
                             + (f"and declares {', '.join(map(repr, plan.also))} (metric.also)" if plan.also
                                else "and declares no other (metric.also in its matrix)"))
        own = (metric, plan.also[metric]["goal"])
    if own is not None:
        return _own_report(exp, runs, evals, own, plan, after_data, steady)
    design, reference, factors, alias = _design(exp, runs)
    coverage = _coverage(runs, evals)
    done = coverage[(runs["status"] == "completed").to_numpy()] if len(runs) else coverage
    spread = float(done.max() - done.min()) if done.notna().any() else 0.0
    mixed = spread > COVERAGE_TOLERANCE
    chosen = metric or ("full" if mixed else "mainrun")
    per_run = _per_run(runs, evals, chosen, coverage, steady)
    effects, title, level = _effects(design, per_run, factors, plan)
    effects = attach(effects, cost_effects(per_run, _effects_on(design, factors, plan), plan.cost_min_effect))
    ranking = _ranking(per_run, factors, reference, chosen, level)
    if design != "cumulative":  # a cumulative design's steps read in their order
        effects = effects.sort_values("estimate", kind="stable", na_position="last", ignore_index=True)
    incomparable = ranking.loc[ranking["error"].fillna("").str.startswith("not like-for-like"), "name"]
    effects.loc[effects["effect"].isin(set(incomparable)), "verdict"] = "not like-for-like"
    seeds = sorted(per_run["seed"].dropna().unique().tolist())
    fair_line, reference_fair = fairness(per_run, reference)
    resolution_line, first = qualify(per_run, effects, ranking, plan, METRICS[chosen], printed=False)
    lines = [fair_line, metric_line(chosen, mixed, done), resolution_line, split_line(per_run),
             interval_line(seeds, level, plan), *cost_lines(effects, per_run, plan.cost_min_effect), *after_data]
    return Report(exp["experiment"], design, chosen, reference, seeds, [line for line in lines if line],
                  ranking, effects, title, report_notes(ranking, effects, alias, seeds, plan, level,
                                                        looks_taken(exp), identical_seeds(per_run), first=first),
                  min_effect=plan.min_effect, looks=level.looks, level=level, after_data=after_data,
                  looks_taken=looks_taken(exp), budget=plan.budget, reference_fair=reference_fair,
                  cost_min_effect=plan.cost_min_effect, values=_all_values(per_run))


def _own_report(exp: pd.Series, runs: pd.DataFrame, evals: pd.DataFrame, own: tuple[str, str],
                plan: VerdictPlan, after_data: list[str], steady: pd.Series) -> Report:
    """The report of your own trainer's experiment: ranked by its metric in its direction, with
    none of Mainrun's reference, eval coverage or rules."""
    (name, goal), nothing = own, pd.Series(np.nan, index=runs.index, dtype=float)
    design, _, factors, alias = _design(exp, runs)
    per_run = _per_run(runs, evals, name, nothing, steady, goal)
    effects, title, level = _effects(design, per_run, factors, plan, goal)
    effects = attach(effects, cost_effects(per_run, _effects_on(design, factors, plan), plan.cost_min_effect))
    ranking = _ranking(per_run, factors, math.nan, name, level, goal)
    if design != "cumulative":
        effects = effects.sort_values("estimate", ascending=goal == "minimize", kind="stable",
                                      na_position="last", ignore_index=True)
    seeds = sorted(per_run["seed"].dropna().unique().tolist())
    resolution_line, first = qualify(per_run, effects, ranking, plan, name)
    better = "lower" if goal == "minimize" else "higher"
    title = title.replace("loss", name).replace("negative = lower", f"negative = {better}")
    if goal == "maximize":
        title = title.replace("negative = better", "positive = better").replace("positive = X helps", "negative = X helps")
    others = [f"{m} ({'higher' if d['goal'] == 'maximize' else 'lower'} is better, δ = {d['min_effect']:g})"
              for m, d in plan.also.items() if m != name]
    also = f" Also measured: {', '.join(others)}; `ablate report --metric NAME` judges one." if others else ""
    return Report(exp["experiment"], design, name, None, seeds, [f"Metric: {name}, its last value; "
                  f"{better} is better.{also}", *filter(None, [resolution_line, interval_line(seeds, level, plan)]),
                  *cost_lines(effects, per_run, plan.cost_min_effect),
                  *after_data], ranking, effects, title,
                  report_notes(ranking, effects, alias, seeds, plan, level, looks_taken(exp),
                               identical_seeds(per_run), unit=f" in {name}", first=first),
                  min_effect=plan.min_effect, looks=level.looks, level=level, after_data=after_data,
                  looks_taken=looks_taken(exp), budget=plan.budget, goal=goal, mainrun=False,
                  cost_min_effect=plan.cost_min_effect, values=_all_values(per_run))


def _design(exp: pd.Series, runs: pd.DataFrame) -> tuple[str, float, list[_Factor], str]:
    """Design, reference and factors as the database holds them (the matrix file is not read
    again: it may have changed since, or never have been stored)."""
    design = exp.get("design") or "list"
    factors = _factors(runs)
    alias = aliasing_note(len(factors)) if design == "fractional" else ""
    return design, frames.reference_of(exp), factors, alias


def _factors(runs: pd.DataFrame) -> list[_Factor]:
    """The matrix's factors, from its runs' toggles: a run stores the labels of its on-levels in
    declaration order, and a field factor's level is labelled `field=value` (no toggle name has
    an '='). Declaration order is what the runs that hold several factors agree on (every
    design but one-at-a-time and list has a run with all of them); otherwise matrix order."""
    labels: dict[str, list[str]] = {}  # factor name -> on-level labels, in matrix order
    before: dict[str, set[str]] = {}  # factor name -> factors some run lists ahead of it
    for toggles in runs.sort_values("position", kind="stable")["toggles"] if len(runs) else []:
        names = []
        for label in frames.split_toggles(toggles):
            name = label.split("=", 1)[0]
            labels.setdefault(name, [])
            if label not in labels[name]:
                labels[name].append(label)
            before.setdefault(name, set()).update(names)
            names.append(name)
    order, placed, waiting = [], set(), list(labels)  # each after the toggles listed before it
    while waiting:
        pick = next((n for n in waiting if before[n] <= placed), waiting[0])
        waiting.remove(pick)
        order.append(pick)
        placed.add(pick)
    return [_Factor(n, tuple(labels[n]), CATALOG[n].allowed if n in CATALOG else True) for n in order]


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series(np.nan, index=frame.index, dtype=object)


def _by_run(runs: pd.DataFrame, values: pd.Series) -> pd.Series:
    """`values` (indexed by run id) aligned to the runs, as floats."""
    return pd.to_numeric(runs["run_id"].map(values), errors="coerce").astype(float)


def _last_evals(evals: pd.DataFrame) -> pd.DataFrame:
    return evals.sort_values("step").groupby("run_id").tail(1).set_index("run_id")


def _coverage(runs: pd.DataFrame, evals: pd.DataFrame) -> pd.Series:
    """Each run's eval coverage: the stored result, else its last evaluation's."""
    last = _last_evals(evals)["eval_coverage"]
    stored = pd.to_numeric(_column(runs, "res.eval_coverage"), errors="coerce")
    return stored.astype(float).fillna(_by_run(runs, last)) if len(runs) else stored


def _per_run(runs: pd.DataFrame, evals: pd.DataFrame, metric: str, coverage: pd.Series, steady: pd.Series,
             goal: str | None = None) -> pd.DataFrame:
    """One row per run with the metric's final value `y`, its best and the fairness inputs.
    With a `goal`, `metric` is your own trainer's, read from the evaluations."""
    frame = runs.copy()
    frame["coverage"] = coverage
    frame["sha"] = _column(runs, "res.val_text_sha256")
    frame["roundtrip"] = _column(runs, "res.tokenizer_roundtrip")
    if metric == "mainrun" and goal is None:
        frame["y"], frame["best"], frame["best_at"] = runs["final_val_loss"], runs["best_val_loss"], runs["best_step"]
    else:
        column = "val_loss_full" if goal is None else eval_column(metric)
        scored = evals.dropna(subset=[column]) if column in evals else evals.assign(**{column: 0.0}).iloc[:0]
        grouped = scored.groupby("run_id")[column]
        best = scored.loc[grouped.idxmax() if goal == "maximize" else grouped.idxmin()].set_index("run_id")
        last = _last_evals(scored)[column]
        stored = pd.to_numeric(_column(runs, "res.final_val_loss_full" if goal is None else "-"), errors="coerce")
        frame["y"] = stored.astype(float).fillna(_by_run(runs, last))
        frame["best"] = _by_run(runs, best[column])
        frame["best_at"] = _by_run(runs, best["step"])
    for column in ("y", "best", "best_at", "wall_time_s", "tokens_per_s"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame[STEADY] = runs["run_id"].map(steady).astype(float)
    return frame


def _values(per_run: pd.DataFrame, name: str | None) -> dict:
    """{seed: y} of a configuration's completed runs."""
    return dict(_value_index(per_run).get(name, {}))


@frames.per_frame
def _value_index(per_run: pd.DataFrame) -> dict:
    done = per_run[(per_run["status"] == "completed") & per_run["y"].notna()]
    index: dict = {}
    for name, seed, y in zip(done["name"], done["seed"], done["y"]):
        index.setdefault(name, {})[seed] = y
    return index


def _all_values(per_run: pd.DataFrame) -> dict:
    return {name: _values(per_run, name) for name in per_run["name"].unique()}


_INCURABLE = ("does not round-trip", "validation text differs")


def _ranking(per_run: pd.DataFrame, factors: list[_Factor], reference: float, metric: str,
             level: Level, goal: str = "minimize") -> pd.DataFrame:
    """Configurations ordered by Δbase: the mean paired difference to the baseline on the seeds
    each shares with it (the verdicts' own comparison); its interval at the report's level."""
    base_name = baseline_name(per_run)
    done = per_run.loc[((per_run["status"] == "completed") & per_run["y"].notna()).to_numpy(), _RANKED_BY]
    members: dict[str, list[dict]] = {}  # each configuration's runs as dicts: a frame per group is slow
    for record in done[["run_id", "name", "seed", "y", "toggles", "coverage", "sha", "roundtrip"]].to_dict("records"):
        members.setdefault(record["name"], []).append(record)
    by_name = done[["best", "best_at", "wall_time_s", "tokens_per_s"]].astype(float).groupby(done["name"], sort=False)
    means, best_steps = by_name.mean().to_dict("index"), by_name["best_at"].median().to_dict()
    base_runs = members.get(base_name, [])
    controls = {r["seed"]: r for r in reversed(base_runs)}  # same seed, else the first baseline run
    base_values = _values(per_run, base_name)
    allowed = {label: f.allowed for f in factors for label in f.labels}
    identical = identical_seeds(per_run)
    rows = []
    for name, runs in members.items():
        est = summarize(r["y"] for r in runs)
        vs_base = difference({r["seed"]: r["y"] for r in runs}, base_values)
        if name == base_name:
            vs_base = Estimate(0.0, len(runs), paired=True)
        half = math.nan if vs_base is None or {name, base_name} & identical else level.half_width(vs_base.sd, vs_base.n)
        mismatch: dict[str, bool] = {}  # reason -> whether it biases `metric`
        gaps = []
        # checked against the same-seed baseline; a seed without one (a leave-one-out round that
        # paired it with `all`) only where no seed has one, against the first baseline run
        for run in [r for r in runs if r["seed"] in controls] or runs:
            control = controls.get(run["seed"], base_runs[0] if base_runs else None)
            mismatch.update(dict.fromkeys(mismatches(run, control), True))
            gaps.append(coverage_gap(run, control))
        if any(gaps):
            mismatch[coverage_reason([g for g in gaps if g], metric)] = metric == "mainrun"
        breaking = [t for t in frames.split_toggles(runs[0]["toggles"]) if not allowed.get(t, True)]
        given = seeds_of(per_run, name, [] if name == base_name else [base_name])
        rows.append({
            "name": name, "toggles": runs[0]["toggles"], "n": est.n, "seeds": len(runs),
            "paired": vs_base.n if vs_base else 0, "final": est.mean, "final_sd": est.sd,
            "best": means[name]["best"], "best_step": best_steps[name],
            "d_ref": est.mean - reference, "d_ref_pct": (est.mean - reference) / reference * 100,
            "d_base": vs_base.mean if vs_base else math.nan,
            "d_base_lo": vs_base.mean - half if vs_base else math.nan,
            "d_base_hi": vs_base.mean + half if vs_base else math.nan,
            "wall_time_s": means[name]["wall_time_s"], "tokens_per_s": means[name]["tokens_per_s"],
            "seeds_lost": len(given.lost), "seeds_pending": given.pending,
            "status": "completed", "error": None, "seed": None,
            "is_baseline": name == base_name, "breaks_rule": "+".join(breaking),
            "not_like_for_like": "; ".join(mismatch), "fair": not any(mismatch.values()),
        })
    every = pd.DataFrame(rows, columns=_RANKING_COLUMNS[1:-1])
    # A number that no metric can make comparable (a lossy tokenizer, another validation text)
    # is not ranked at all but listed with its reason; a coverage gap only bars "best".
    comparable = ~every["not_like_for_like"].str.contains("|".join(_INCURABLE), regex=True)
    # configurations that lost seeds after every other (their survivors flatter them), then rows
    # without a shared seed, by their own mean
    sign = 1 if goal == "minimize" else -1
    order = every[comparable].assign(_lost=every["seeds_lost"] > 0, _unpaired=every["d_base"].isna(),
                                     _d=sign * every["d_base"], _y=sign * every["final"])
    ranked = order.sort_values(["_lost", "_unpaired", "_d", "_y"], kind="stable").drop(
        columns=["_lost", "_unpaired", "_d", "_y"]).reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1, dtype=float))
    eligible = ranked[(ranked["breaks_rule"] == "") & (ranked["not_like_for_like"] == "")
                      & (ranked["seeds_lost"] == 0)]  # ★ as docs/results.md defines it
    ranked["is_best"] = ranked.index == (eligible.index[0] if len(eligible) else -1)
    incomparable = every[~comparable].assign(
        rank=math.nan, is_best=False,
        error=lambda f: "not like-for-like: " + f["not_like_for_like"])
    pending = per_run[per_run["status"] != "completed"]
    unranked = pd.DataFrame({
        "name": pending["name"], "toggles": pending["toggles"], "n": 0, "seeds_lost": 0, "seeds_pending": 0,
        "status": pending["status"],
        "error": pending["error"], "seed": pending["seed"], "is_baseline": pending["name"] == base_name,
        "breaks_rule": "", "not_like_for_like": "", "fair": True, "is_best": False,
    })
    return pd.concat([ranked, incomparable, unranked], ignore_index=True)[_RANKING_COLUMNS]


_RANKED_BY = ["run_id", "name", "seed", "toggles", "y", "best", "best_at", "wall_time_s", "tokens_per_s",
              "coverage", "sha", "roundtrip"]  # what the ranking reads of each run: grouping the wide frame is slow
_RANKING_COLUMNS = [
    "rank", "name", "toggles", "n", "seeds", "paired", "final", "final_sd", "best", "best_step",
    "d_ref", "d_ref_pct", "d_base", "d_base_lo", "d_base_hi", "wall_time_s", "tokens_per_s", "seeds_lost",
    "seeds_pending", "status", "error", "seed",
    "is_baseline", "breaks_rule", "not_like_for_like", "fair", "is_best",
]


# ------------------------------------------------------------------------------ effects

_TITLES = {
    "one-at-a-time": "Effect of each toggle: loss − baseline loss (negative = better)",
    "list": "Each run against the baseline: loss − baseline loss (negative = better)",
    "leave-one-out": "What removing each toggle costs: loss(all − X) − loss(all) (positive = X helps)",
    "factorial": "Main effects: mean loss with X on − with X off; interactions A×B: mean(loss | "
                 "x_A·x_B = +1) − mean(loss | x_A·x_B = −1), x = ±1 for on/off (negative = lower loss)",
    "fractional": "Main effects: mean loss with X on − with X off (negative = better)",
    "cumulative": "Adding toggles in order: loss after each step and the step's Δ (negative = better)",
}


def _effects(design: str, per_run: pd.DataFrame, factors: list[_Factor], plan: VerdictPlan,
             goal: str = "minimize", exact: bool = False) -> tuple[pd.DataFrame, str, Level]:
    """The design's comparisons, each with its interval at the level simultaneous over all of
    them (and the plan's looks) and the verdict read off it. `exact` (a cost): a value measured
    alike on every seed is a deterministic measurement, not a seed that never reached the
    trainer, so a difference without spread is read as it is."""
    done = per_run[(per_run["status"] == "completed") & per_run["y"].notna()]
    names = list(dict.fromkeys(per_run.sort_values("position", kind="stable")["name"]))
    base = baseline_name(per_run)
    if design in ("factorial", "fractional"):
        rows = _factorial_effects(done, factors, interactions=design == "factorial")
    elif design == "leave-one-out":
        rows = [_compare(per_run, short_name(n), "cost", n, "all")
                for n in names if n.startswith(LEAVE_OUT)]
    elif design == "cumulative":
        rows = [_compare(per_run, "+" + "+".join(_added(per_run, prev, cur)), "step", cur, prev)
                for prev, cur in zip(names, names[1:])]
    else:
        rows = [_compare(per_run, n, "vs baseline", n, base) for n in names if base and n != base]
    level = Level(len(rows) if plan.family == "experiment" else 1, plan.looks, plan.first)
    min_effect = plan.min_effect
    sign = 1 if goal == "minimize" else -1  # the verdicts call lower better: a maximized metric, negated
    verdicts = [v if sign == 1 else replace(v, lo=-v.hi, hi=-v.lo) for v in decide(
        [(sign * est.mean, est.sd, est.n) if est else (math.nan, math.nan, 0)
         for _, _, est, _, _ in rows], min_effect, level, scale=value_scale(done))]
    if exact:
        verdicts = [Verdict(read_interval(e.mean, e.mean, min_effect), e.mean, e.mean) if v.label == NO_SPREAD else v
                    for v, (_, _, e, _, _) in zip(verdicts, rows)]
    identical = set() if exact else identical_seeds(per_run)
    seeds = [comparison_seeds(per_run, configs, None if kind in ("main", "interaction") else configs[1])
             for _, kind, _, _, configs in rows]
    effects = pd.DataFrame([
        {"effect": label, "kind": kind, "n": est.n if est else 0, "loss": loss,
         "estimate": est.mean if est else math.nan, "sd": est.sd if est else math.nan,
         "ci_lo": v.lo, "ci_hi": v.hi, "p": v.p,
         "verdict": "no data" if not est or math.isnan(est.mean) else FAILS if given.lost else
         SEEDS_IDENTICAL if identical & set(configs) else v.label,
         "seeds_needed": v.seeds_needed, "seeds_given": given.given, "seeds_lost": len(given.lost),
         "seeds_pending": given.pending, "configs": configs}
        for (label, kind, est, loss, configs), v, given in zip(rows, verdicts, seeds)
    ], columns=["effect", "kind", "n", "loss", "estimate", "sd", "ci_lo", "ci_hi", "p", "verdict",
                "seeds_needed", "seeds_given", "seeds_lost", "seeds_pending", "configs"])
    undecidable = effects["verdict"].isin(["no data", SEEDS_IDENTICAL, NO_SPREAD])
    effects.loc[undecidable, ["ci_lo", "ci_hi", "p"]] = math.nan
    effects.loc[undecidable | (effects["verdict"] == FAILS), "seeds_needed"] = None
    return effects, _TITLES.get(design, _TITLES["list"]), level


def _effects_on(design: str, factors: list[_Factor], plan: VerdictPlan):
    """The design's comparisons of another per-run value `y` (a cost's log) against its own δ."""
    return lambda frame, delta: _effects(design, frame, factors, replace(plan, min_effect=delta), exact=True)[0]


def _compare(per_run: pd.DataFrame, label: str, kind: str, treated: str, control: str | None) -> tuple:
    """(label, kind, treated − control by seed, the treated configuration's mean loss, both names)."""
    values = _values(per_run, treated)
    loss = float(np.mean(list(values.values()))) if values else math.nan
    return label, kind, difference(values, _values(per_run, control)), loss, [treated, control]


def _added(per_run: pd.DataFrame, prev: str, cur: str) -> list[str]:
    """The toggles configuration `cur` has on top of `prev`."""
    toggles = per_run.drop_duplicates("name").set_index("name")["toggles"]
    before = set(frames.split_toggles(toggles[prev]))
    return [t for t in frames.split_toggles(toggles[cur]) if t not in before]


def _factorial_effects(done: pd.DataFrame, factors: list[_Factor], interactions: bool) -> list:
    """Main effects per on-level and, for full factorials, two-way interactions of two-level factors."""
    labels = done["toggles"].map(lambda t: set(frames.split_toggles(t)))
    on = {label: labels.map(lambda s, label=label: label in s) for f in factors for label in f.labels}
    off = {f.name: labels.map(lambda s, f=f: not s & set(f.labels)) for f in factors}
    every = list(done["name"].unique())  # a contrast involves every design row
    rows = [(label if len(f.labels) == 1 else f"{f.name}: {label}", "main",
             _per_seed_contrast(done, on[label], off[f.name]), math.nan, every)
            for f in factors for label in f.labels]
    if interactions:
        two_level = [f for f in factors if len(f.labels) == 1]
        for i, a in enumerate(two_level):
            for b in two_level[i + 1:]:
                same = on[a.labels[0]] == on[b.labels[0]]
                rows.append((f"{a.name}×{b.name}", "interaction", _per_seed_contrast(done, same, ~same), math.nan,
                             every))
    return rows


def _per_seed_contrast(done: pd.DataFrame, plus: pd.Series, minus: pd.Series) -> Estimate | None:
    """mean(y | plus) − mean(y | minus) within each seed; the seeds' values give the interval."""
    contrasts = []
    for _, group in done.groupby("seed", dropna=False):
        a, b = group["y"][plus[group.index]], group["y"][minus[group.index]]
        if len(a) and len(b):
            contrasts.append(a.mean() - b.mean())
    return summarize(contrasts, paired=True) if contrasts else None

