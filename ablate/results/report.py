"""The ablation report: which configurations win, by how much, and whether it matters.

Everything here reads the results database only (through `frames`); it knows nothing of the
model. `build_report` loads, `make_report` computes (pure: DataFrames in, a `Report` out), and
`render.render` prints it; `stats` does the arithmetic of intervals and tests.

Definitions, all on the ranking metric `y` (the last evaluation's val_loss, or val_loss_full):

* a configuration is every completed run sharing a name (the same config across seeds);
* a difference between two configurations is paired by seed when every treated run has a
  control run with the same seed (mean of the per-seed differences, one-sample Student t);
  otherwise it is the difference of means with Welch's t;
* a factorial main effect is mean(y | on) - mean(y | off); a two-way interaction of two-level
  factors A, B with x = +1 (on) / -1 (off) is mean(y | x_A*x_B = +1) - mean(y | x_A*x_B = -1),
  i.e. half the difference between A's effect with B on and with B off. With several seeds
  both are computed within each seed and the per-seed values give the interval;
* each effect gets a verdict against the smallest effect of interest min_effect (δ): better,
  worse, negligible (TOST) or inconclusive, from one-sided t tests at α/looks, Holm-adjusted
  across all effects of the report (`stats.decide`); its interval is the one the verdict reads
  against ±δ (95% with one look). One seed: noise unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..execution.designs import LEAVE_OUT, aliasing_note, short_name
from ..execution.seeds import own_metric, verdict_settings
from ..storage.schema import EVAL_COLUMNS, plain
from ..storage.store import open_store
from ..training.catalog import CATALOG
from ..training.config import HUB_DATASET, TrainConfig
from . import frames
from .notes import report_notes
from .stats import Estimate, decide, difference, summarize

COVERAGE_TOLERANCE = 0.01  # eval coverages further apart than 1 percentage point differ
MAINRUN_DATA_FILE = "hacker_news.csv"  # the offline copy of Mainrun's hub dataset
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
    looks: int = 1  # seed counts at which a verdict may be read (seeds: {min, max})
    reference_fair: bool = False  # Mainrun's data at full scale: Δref means something
    goal: str = "minimize"  # your own trainer's metric may be one to maximize
    mainrun: bool = True  # Mainrun's trainer: its reference, eval coverage and rules apply

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
                 min_effect: float | None = None) -> Report:
    """Load the experiment (the only one when None) and compute its report: three queries."""
    with open_store(db, read_only=True) as store:
        exp = frames.pick_experiment(store, experiment)
        runs = frames.load_runs(store, exp["experiment"])
        evals = frames.load_evals(store, exp["experiment"])
    return make_report(exp, runs, evals, metric, min_effect)


def make_report(exp: pd.Series, runs: pd.DataFrame, evals: pd.DataFrame,
                metric: str | None = None, min_effect: float | None = None) -> Report:
    """One experiment's report from its list_experiments() row, runs and evals (δ: the matrix's)."""
    own = own_metric(exp.get("yaml_text"))
    if own is not None and metric not in (None, own[0]):
        raise ValueError(f"--metric {metric!r} is for Mainrun's trainer; {exp['experiment']!r} ranks by its "
                         f"own metric {own[0]!r} (the matrix's metric:)")
    if metric is not None and metric not in METRICS and own is None:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if min_effect is not None and not min_effect > 0:
        raise ValueError(f"min_effect {min_effect!r}: expected a positive number (nats per character)")
    stored_effect, looks = verdict_settings(exp.get("yaml_text"))
    min_effect = min_effect or stored_effect
    if own is not None:
        return _own_report(exp, runs, evals, own, min_effect, looks)
    design, reference, factors, alias = _design(exp, runs)
    coverage = _coverage(runs, evals)
    done = coverage[(runs["status"] == "completed").to_numpy()] if len(runs) else coverage
    spread = float(done.max() - done.min()) if done.notna().any() else 0.0
    mixed = spread > COVERAGE_TOLERANCE
    chosen = metric or ("full" if mixed else "mainrun")
    per_run = _per_run(runs, evals, chosen, coverage)
    ranking = _ranking(per_run, factors, reference, chosen)
    effects, title = _effects(design, per_run, factors, min_effect, looks)
    if design != "cumulative":  # a cumulative design's steps read in their order
        effects = effects.sort_values("estimate", kind="stable", na_position="last", ignore_index=True)
    incomparable = ranking.loc[ranking["error"].fillna("").str.startswith("not like-for-like"), "name"]
    effects.loc[effects["effect"].isin(set(incomparable)), "verdict"] = "not like-for-like"
    seeds = sorted(per_run["seed"].dropna().unique().tolist())
    fairness, reference_fair = _fairness(per_run, reference)
    lines = [fairness, _metric_line(chosen, mixed, done), _split_line(per_run)]
    return Report(exp["experiment"], design, chosen, reference, seeds, [line for line in lines if line],
                  ranking, effects, title, report_notes(ranking, effects, alias, seeds, min_effect, looks),
                  min_effect=min_effect, looks=looks, reference_fair=reference_fair)


def _own_report(exp: pd.Series, runs: pd.DataFrame, evals: pd.DataFrame, own: tuple[str, str],
                min_effect: float, looks: int) -> Report:
    """The report of your own trainer's experiment: ranked by its metric in its direction, with
    none of Mainrun's reference, eval coverage or rules."""
    (name, goal), nothing = own, pd.Series(np.nan, index=runs.index, dtype=float)
    design, _, factors, alias = _design(exp, runs)
    per_run = _per_run(runs, evals, name, nothing, goal)
    ranking = _ranking(per_run, factors, math.nan, name, goal)
    effects, title = _effects(design, per_run, factors, min_effect, looks, goal)
    if design != "cumulative":
        effects = effects.sort_values("estimate", ascending=goal == "minimize", kind="stable",
                                      na_position="last", ignore_index=True)
    seeds = sorted(per_run["seed"].dropna().unique().tolist())
    better = "lower" if goal == "minimize" else "higher"
    title = title.replace("loss", name).replace("negative = lower", f"negative = {better}")
    if goal == "maximize":
        title = title.replace("negative = better", "positive = better").replace("positive = X helps", "negative = X helps")
    return Report(exp["experiment"], design, name, None, seeds, [f"Metric: {name}, its last evaluation's value; "
                  f"{better} is better."], ranking, effects, title,
                  report_notes(ranking, effects, alias, seeds, min_effect, looks, unit=f" in {name}"),
                  min_effect=min_effect, looks=looks, goal=goal, mainrun=False)


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
    order: list[str] = []
    while len(order) < len(labels):
        waiting = [n for n in labels if n not in order]
        order.append(next((n for n in waiting if before[n] <= set(order)), waiting[0]))
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


def _per_run(runs: pd.DataFrame, evals: pd.DataFrame, metric: str, coverage: pd.Series,
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
    return frame


def baseline_name(per_run: pd.DataFrame) -> str | None:
    """The in-matrix baseline: the run named 'baseline', else the configuration with no toggles."""
    names = per_run["name"].tolist()
    if "baseline" in names:
        return "baseline"
    plain = per_run.loc[per_run["toggles"] == "", "name"]
    return plain.iloc[0] if len(plain) else None


def _values(per_run: pd.DataFrame, name: str | None) -> dict:
    """{seed: y} of a configuration's completed runs."""
    rows = per_run[(per_run["name"] == name) & (per_run["status"] == "completed") & per_run["y"].notna()]
    return dict(zip(rows["seed"], rows["y"]))


def _mismatches(run: pd.Series, base: pd.Series | None) -> list[str]:
    """Why a run's numbers cannot be compared with the baseline's under any metric."""
    reasons = []
    roundtrip = run.get("roundtrip")
    if roundtrip is not None and not pd.isna(roundtrip) and not bool(roundtrip):
        reasons.append("the tokenizer does not round-trip the text")
    if base is not None and base["run_id"] != run["run_id"] and pd.notna(run["sha"]) \
            and pd.notna(base["sha"]) and run["sha"] != base["sha"]:
        reasons.append("validation text differs from the baseline's")
    return reasons


def _coverage_gap(run: pd.Series, base: pd.Series | None) -> tuple[float, float] | None:
    """(run's, baseline's) eval coverage when they differ by more than the tolerance."""
    if base is None or base["run_id"] == run["run_id"]:
        return None
    if abs(run["coverage"] - base["coverage"]) > COVERAGE_TOLERANCE:  # nan compares False
        return run["coverage"], base["coverage"]
    return None


def _coverage_reason(gaps: list[tuple[float, float]], metric: str) -> str:
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


_INCURABLE = ("does not round-trip", "validation text differs")


def _ranking(per_run: pd.DataFrame, factors: list[_Factor], reference: float, metric: str,
             goal: str = "minimize") -> pd.DataFrame:
    base_name = baseline_name(per_run)
    done = per_run[(per_run["status"] == "completed") & per_run["y"].notna()]
    slim = done[["run_id", "name", "seed", "coverage", "sha", "roundtrip"]]
    base_runs = [r for _, r in slim[slim["name"] == base_name].iterrows()]
    controls = {r["seed"]: r for r in reversed(base_runs)}  # same seed, else the first baseline run
    base_values = _values(per_run, base_name)
    allowed = {label: f.allowed for f in factors for label in f.labels}
    rows = []
    for name, group in done.groupby("name", sort=False):
        est = summarize(group["y"])
        vs_base = difference(dict(zip(group["seed"], group["y"])), base_values)
        mismatch: dict[str, bool] = {}  # reason -> whether it biases `metric`
        gaps = []
        runs = [run for _, run in slim.loc[group.index].iterrows()]
        # checked against the same-seed baseline; a seed without one (a leave-one-out round that
        # paired it with `all`) only where no seed has one, against the first baseline run
        for run in [r for r in runs if r["seed"] in controls] or runs:
            control = controls.get(run["seed"], base_runs[0] if base_runs else None)
            mismatch.update(dict.fromkeys(_mismatches(run, control), True))
            gaps.append(_coverage_gap(run, control))
        if any(gaps):
            mismatch[_coverage_reason([g for g in gaps if g], metric)] = metric == "mainrun"
        breaking = [t for t in frames.split_toggles(group["toggles"].iloc[0]) if not allowed.get(t, True)]
        rows.append({
            "name": name, "toggles": group["toggles"].iloc[0], "n": est.n, "seeds": len(group),
            "final": est.mean, "final_sd": est.sd, "ci_lo": est.lo, "ci_hi": est.hi,
            "best": group["best"].mean(), "best_step": group["best_at"].median(),
            "d_ref": est.mean - reference, "d_ref_pct": (est.mean - reference) / reference * 100,
            **{k: getattr(vs_base, a) if vs_base and name != base_name else math.nan
               for k, a in (("d_base", "mean"), ("d_base_lo", "lo"), ("d_base_hi", "hi"))},
            "wall_time_s": group["wall_time_s"].mean(), "tokens_per_s": group["tokens_per_s"].mean(),
            "status": "completed", "error": None, "seed": None,
            "is_baseline": name == base_name, "breaks_rule": "+".join(breaking),
            "not_like_for_like": "; ".join(mismatch), "fair": not any(mismatch.values()),
        })
    every = pd.DataFrame(rows, columns=_RANKING_COLUMNS[1:-1])
    # A number that no metric can make comparable (a lossy tokenizer, another validation text)
    # is not ranked at all but listed with its reason; a coverage gap only bars "best".
    comparable = ~every["not_like_for_like"].str.contains("|".join(_INCURABLE), regex=True)
    ranked = every[comparable].sort_values("final", ascending=goal == "minimize", kind="stable").reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1, dtype=float))
    eligible = ranked[(ranked["breaks_rule"] == "") & ranked["fair"]]
    ranked["is_best"] = ranked.index == (eligible.index[0] if len(eligible) else -1)
    incomparable = every[~comparable].assign(
        rank=math.nan, is_best=False,
        error=lambda f: "not like-for-like: " + f["not_like_for_like"])
    pending = per_run[per_run["status"] != "completed"]
    unranked = pd.DataFrame({
        "name": pending["name"], "toggles": pending["toggles"], "n": 0, "status": pending["status"],
        "error": pending["error"], "seed": pending["seed"], "is_baseline": pending["name"] == base_name,
        "breaks_rule": "", "not_like_for_like": "", "fair": True, "is_best": False,
    })
    return pd.concat([ranked, incomparable, unranked], ignore_index=True)[_RANKING_COLUMNS]


_RANKING_COLUMNS = [
    "rank", "name", "toggles", "n", "seeds", "final", "final_sd", "ci_lo", "ci_hi", "best", "best_step",
    "d_ref", "d_ref_pct", "d_base", "d_base_lo", "d_base_hi", "wall_time_s", "tokens_per_s", "status", "error", "seed",
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


def _effects(design: str, per_run: pd.DataFrame, factors: list[_Factor], min_effect: float,
             looks: int, goal: str = "minimize") -> tuple[pd.DataFrame, str]:
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
    sign = 1 if goal == "minimize" else -1  # the verdicts call lower better: a maximized metric, negated
    verdicts = [v if sign == 1 else replace(v, lo=-v.hi, hi=-v.lo) for v in decide(
        [(sign * est.mean, est.sd if est.paired else math.nan, est.n) if est else (math.nan,) * 3
         for _, _, est, _, _ in rows], min_effect, looks=looks)]
    effects = pd.DataFrame([
        {"effect": label, "kind": kind, "n": est.n if est else 0, "paired": bool(est and est.paired),
         "loss": loss, "estimate": est.mean if est else math.nan, "sd": est.sd if est else math.nan,
         "ci_lo": v.lo, "ci_hi": v.hi, "p": v.p, "p_holm": v.p_adjusted,
         "verdict": "no data" if not est or math.isnan(est.mean) else v.label if est.paired or est.n < 2 else "unpaired",
         "seeds_needed": v.seeds_needed, "configs": configs}
        for (label, kind, est, loss, configs), v in zip(rows, verdicts)
    ], columns=["effect", "kind", "n", "paired", "loss", "estimate", "sd", "ci_lo", "ci_hi", "p", "p_holm",
                "verdict", "seeds_needed", "configs"])
    return effects, _TITLES.get(design, _TITLES["list"])


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


# -------------------------------------------------------------------------------- lines


def _fairness(per_run: pd.DataFrame, reference: float) -> tuple[str, bool]:
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


def _metric_line(metric: str, mixed: bool, coverage: pd.Series) -> str:
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


def _split_line(per_run: pd.DataFrame) -> str:
    """Whether the seeds shared one validation text: what a per-configuration interval means."""
    base = per_run[(per_run["name"] == baseline_name(per_run)) & (per_run["status"] == "completed")]
    texts = base["sha"].dropna().nunique()
    if base["seed"].nunique() < 2 or not texts:
        return ""
    return ("Split: fixed — every seed validated on one text; seeds vary initialisation, dropout and batch "
            "order." if texts == 1 else f"Split: each seed drew its own validation text ({texts} texts), so "
            f"a configuration's spread over seeds is mostly split variance; compare paired Δbase.")
