"""What RESULTS.md says first, generated: each experiment's verdicts in one line, and whether a
proxy's effects hold when the proxy grows.

Nothing here is typed by hand: a verdict word is the report's, a judgement across scale is a rule
on the two intervals (below), so the headline cannot say more than the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from ..execution.safe_yaml import YAMLProblem, read_mapping
from ..storage.schema import Experiment, ExperimentRun, Run
from ..storage.store import open_store
from .render import _fmt
from .report import Report

SIZE_FIELDS = ("d_model", "n_layer", "n_head")  # what a larger proxy changes, and nothing else
OWN_TRAINER = "own trainer"
VERDICT_ORDER = ("better", "worse", "negligible", "inconclusive", "fails", "seeds identical", "no spread",
                 "coarser than δ", "noise unknown")


@dataclass(frozen=True)
class Base:
    """An experiment's starting point: the preset its matrix names and its baseline's config."""

    preset: str  # the matrix's `base.preset`; OWN_TRAINER for a matrix with its own trainer
    config: dict

    def size(self) -> str:
        """Mainrun's proxy size, or your own trainer's baseline parameters."""
        c = self.config
        if not c:
            return "no baseline run"
        if "trainer" in c:
            return ", ".join(f"{k} {v}" for k, v in c.items() if k not in ("trainer", "seed"))
        return f"d{c.get('d_model')}, {c.get('n_layer')} layers, {c.get('num_titles'):,} titles"


def bases(db: str | Path | None, experiments: list[str]) -> dict[str, Base]:
    """Each experiment's Base, from its stored matrix text and its baseline run."""
    with open_store(db, read_only=True) as store:
        texts = dict(store.query(select(Experiment.name, Experiment.yaml_text)))
        baselines = dict(store.query(
            select(Experiment.name, Run.config)
            .join(ExperimentRun, ExperimentRun.experiment_id == Experiment.id)
            .join(Run, Run.id == ExperimentRun.run_id).where(ExperimentRun.name == "baseline")))
    return {name: Base(_preset(texts.get(name)), baselines.get(name) or {}) for name in experiments}


def _preset(yaml_text: str | None) -> str:
    try:
        raw = read_mapping(yaml_text or "")
    except YAMLProblem:
        return "mainrun"
    if raw.get("trainer") is not None:
        return OWN_TRAINER
    base = raw.get("base") or {}
    return str(base.get("preset", "mainrun")) if isinstance(base, dict) else "mainrun"


def verdict_line(report: Report, base: Base) -> str:
    """`experiment` (its base and size, seeds): better: a, b; worse: c; … ."""
    effects = report.effects[report.effects["estimate"].notna()] if len(report.effects) else report.effects
    if not len(effects):
        return f"- **{report.experiment}** ({base.preset}, {base.size()}): no effect measured yet."
    seeds = sorted(report.seeds)
    parts = []
    for verdict in VERDICT_ORDER:
        rows = effects[effects["verdict"] == verdict]
        if not len(rows):
            continue
        names = []
        for r in rows.itertuples():
            needed = "" if verdict != "inconclusive" or r.seeds_needed is None or \
                (isinstance(r.seeds_needed, float) and math.isnan(r.seeds_needed)) else f" ~{r.seeds_needed:.0f} seeds"
            names.append(f"{r.effect} ({_fmt(r.estimate, signed=True)}, n={r.n}{needed})")
        label = {"inconclusive": f"inconclusive after {max(rows['n'])} seeds (the budget)",
                 "noise unknown": "no verdict, one seed each (no spread to test against)",
                 "seeds identical": "no verdict, every seed gave the same value (the seed does not reach "
                                    "the trainer)",
                 "fails": "fails, seeds lost that the control completed (never judged on the survivors)",
                 "no spread": "no verdict, the same difference on every seed (a zero-width interval)",
                 "coarser than δ": "no verdict, the metric's steps are coarser than δ"}.get(verdict, verdict)
        parts.append(f"{label}: " + ", ".join(names))
    untrained = report.ranking[report.ranking["rank"].isna()] if "rank" in report.ranking else report.ranking[:0]
    if len(untrained):
        parts.append(f"not trained yet: {len(untrained)} run(s) ("
                     + ", ".join(f"{n} {s}" for s, n in untrained["status"].value_counts().items()) + ")")
    what = "removing each item from the stack" if report.design == "leave-one-out" else \
        "each item alone against the baseline" if report.design == "one-at-a-time" else report.design
    seeds_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}–{seeds[-1]} ({len(seeds)})"
    return (f"- **{report.experiment}** — {what}; base {base.preset}, {base.size()}, {seeds_text}, "
            f"δ = {report.min_effect:g}. " + "; ".join(parts) + ".")


def scale_pairs(reports: list[Report], found: dict[str, Base]) -> list[tuple[Report, Report]]:
    """(smaller, larger): experiments of one design and base whose baselines differ only in the
    model's size, so their shared effects are the same comparisons at two proxy sizes."""
    pairs = []
    for a in reports:
        for b in reports:
            ca, cb = found[a.experiment].config, found[b.experiment].config
            if a is b or a.design != b.design or not ca or not cb or \
                    found[a.experiment].preset != found[b.experiment].preset:
                continue
            differ = {k for k in ca.keys() | cb.keys() if ca.get(k) != cb.get(k)} - {"seed"}
            if differ and differ <= set(SIZE_FIELDS) and _params(ca) < _params(cb):
                pairs.append((a, b))
    return pairs


def _params(config: dict) -> int:
    """The transformer blocks' weights, enough to order two sizes."""
    return 12 * config.get("n_layer", 0) * config.get("d_model", 0) ** 2


def across_scale(small: object, large: object) -> str:
    """One effect at two sizes, judged by its two intervals: a sign both exclude zero from,
    reversed, is a flip; intervals apart, a change of size; overlapping, it holds."""
    if any(math.isnan(x) for x in (small.ci_lo, small.ci_hi, large.ci_lo, large.ci_hi)):
        return "no interval at one size"
    verdicts = "" if small.verdict == large.verdict else f"; verdict {small.verdict} → {large.verdict}"
    if (small.ci_lo > 0 and large.ci_hi < 0) or (small.ci_hi < 0 and large.ci_lo > 0):
        return "changes sign with scale" + verdicts
    if small.ci_hi < large.ci_lo or large.ci_hi < small.ci_lo:
        ratio = abs(large.estimate) / abs(small.estimate) if small.estimate else math.inf
        return f"changes size with scale (×{ratio:.2g})" + verdicts
    return "holds across scale (intervals overlap)" + verdicts


def scale_table(small: Report, large: Report, found: dict[str, Base], top: int = 5) -> str:
    """The `top` effects largest at the larger size, side by side with the smaller size's."""
    shared = set(small.effects["effect"]) & set(large.effects["effect"])
    rows = large.effects[large.effects["effect"].isin(shared) & large.effects["estimate"].notna()]
    rows = rows.reindex(rows["estimate"].abs().sort_values(ascending=False).index).head(top)
    at_small = {r.effect: r for r in small.effects.itertuples()}
    head = (f"**{small.experiment}** ({found[small.experiment].size()}) and **{large.experiment}** "
            f"({found[large.experiment].size()}), same base ({found[large.experiment].preset}) and "
            f"seeds: the {len(rows)} largest effects at the larger size.")
    lines = [head, "", f"| effect | {small.experiment} | {large.experiment} | across scale |",
             "|---|---|---|---|"]
    for r in rows.itertuples():
        s = at_small[r.effect]
        lines.append(f"| {r.effect} | {_cell(s)} | {_cell(r)} | {across_scale(s, r)} |")
    return "\n".join(lines)


def _cell(row: object) -> str:
    interval = "" if math.isnan(row.ci_lo) else f" [{_fmt(row.ci_lo, signed=True)}…{_fmt(row.ci_hi, signed=True)}]"
    return f"{_fmt(row.estimate, signed=True)}{interval}, {row.verdict} (n={row.n})"


# ------------------------------------------------------------------------- the interval levels


def family_table(reports: list[Report], whole: dict[str, Report]) -> str:
    """Each experiment's interval level and what it decides, beside what intervals simultaneous
    over the whole experiment (`family: experiment`, the reports in `whole`) would decide and
    the seeds the comparisons they leave undecided would take."""
    lines = ["| experiment | intervals | decided | with `family: experiment` | its undecided would take |",
             "|---|---|---|---|---|"]
    for report in (r for r in reports if len(r.seeds) > 1):
        strict = whole[report.experiment].effects.set_index("effect")
        decided = report.effects[report.effects["verdict"].isin(DECIDING)]
        lost = [r for r in decided.itertuples() if strict.loc[r.effect, "verdict"] not in DECIDING]
        cost = ", ".join(f"{r.effect} {_needed(strict.loc[r.effect, 'seeds_needed'])}" for r in lost) or "—"
        lines.append(f"| {report.experiment} | {report.level.describe()} | {len(decided)} of {len(report.effects)} | "
                     f"{len(decided) - len(lost)} ({whole[report.experiment].level.describe()}) | {cost} |")
    return "\n".join(lines)


DECIDING = ("better", "worse", "negligible")


def _needed(value: object) -> str:
    return "no count decides" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"~{value:.0f} seeds"


def changes_since(before: dict, reports: list[Report]) -> str:
    """What the report says now against a snapshot of what an earlier procedure said (the file
    `results-md --since` reads): each verdict that changed and why, configurations that crossed
    the baseline in the ranking, and changed seed estimates."""
    lines = [f"Against `{before.get('commit', '?')}` ({before.get('procedure', 'an earlier procedure')}):", ""]
    for report in reports:
        old = (before.get("experiments") or {}).get(report.experiment)
        if not isinstance(old, dict):
            continue
        changed, said = [], []
        for r in report.effects.itertuples():
            was = (old.get("effects") or {}).get(r.effect) or {}
            if was.get("verdict") not in (None, r.verdict):
                changed.append(f"{r.effect}: {was['verdict']} → {r.verdict}, {_why(r, report)}")
            elif r.verdict == "inconclusive" and was.get("seeds_needed") != _int(r.seeds_needed):
                said.append(f"{r.effect}: still inconclusive; seeds it would take {_needed(was.get('seeds_needed'))} → "
                            f"{_needed(r.seeds_needed)} (now: {POWER_TEXT})")
        said += _crossed(old.get("ranking") or [], report)
        lines.append(f"- **{report.experiment}**: " + "; ".join(changed or ["no verdict changed"]) +
                     "".join(f"; {x}" for x in said) + ".")
    return "\n".join(lines)


POWER_TEXT = "80 % probability to decide at the procedure's own level"


def _int(value: object) -> int | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def _why(row: object, report: Report) -> str:
    if row.verdict in ("seeds identical", "noise unknown", "no data", "not like-for-like"):
        return row.verdict
    d = report.min_effect
    where = ("wholly below −δ" if row.ci_hi < -d else "wholly above +δ" if row.ci_lo > d else
             "wholly inside ±δ" if -d < row.ci_lo and row.ci_hi < d else "across ±δ")
    return f"its interval [{_fmt(row.ci_lo, signed=True)}…{_fmt(row.ci_hi, signed=True)}] lies {where} (δ = {d:g})"


def _crossed(old_order: list[str], report: Report) -> list[str]:
    """Configurations on the other side of the baseline than before, with their paired Δbase."""
    ranked = report.ranking[report.ranking["rank"].notna()].set_index("name")
    base = next((n for n in ranked.index if ranked.loc[n, "is_baseline"]), None)
    if base is None or base not in old_order:
        return []
    out = []
    for name in ranked.index:
        if name == base or name not in old_order:
            continue
        above_now = ranked.index.get_loc(name) < ranked.index.get_loc(base)
        if above_now != (old_order.index(name) < old_order.index(base)):
            row = ranked.loc[name]
            out.append(f"{name} now ranks {'above' if above_now else 'below'} the baseline (Δbase "
                       f"{_fmt(row['d_base'], signed=True)}, paired over {row['paired']:.0f} seeds; it was ranked by "
                       f"its own mean over {row['n']:.0f} seeds)")
    return out
