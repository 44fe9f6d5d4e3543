"""One answer across experiments: each optimization a row, each experiment a column, each cell
what that item does there (its verdict on the loss with the estimate and interval, then its
decided speed and memory words), and a last column saying where the experiments disagree.

A cell always reads as what the item does. One-at-a-time measures the item alone against the
experiment's baseline; leave-one-out measures removing it from the stack (`−ema`), so there the
sign and the verdict turn round: removing EMA is "better" exactly when EMA inside the stack is
"worse". A leave-one-out experiment adds the row "whole stack": its full stack against its own
baseline, the verdict read off that interval as every other, so a stack worse than its start is
a cell of this table and not one Δbase among many.

Every word is the reports' own verdicts or a rule on them (below): nothing here is typed by hand.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd

from .frames import spreadsheet_safe
from .render import _capture, _fmt, _interval, _rich_table, cost_cells, markdown_table, render
from .report import Report
from .stats import Level, decide, read_interval, summarize

WHOLE_STACK = "whole stack"
TURNED = {"better": "worse", "worse": "better"}  # removing an item vs having it
DECIDED = ("better", "worse", "negligible")


@dataclass(frozen=True)
class Cell:
    verdict: str
    estimate: float  # the item's effect on the loss (its removal's, sign turned, in leave-one-out)
    lo: float
    hi: float
    n: int
    cost: str  # decided cost words: "1.31× faster (1.22–1.40×); same memory (×1.00, 0.99–1.01)"
    by_seed: dict = field(default_factory=dict, compare=False)  # {seed: the item's effect on it}

    def short(self) -> str:
        return f"{self.verdict} {_fmt(self.estimate, signed=True)}" if _finite(self.estimate) else self.verdict

    def long(self) -> str:
        interval = _interval(self.lo, self.hi)
        return "; ".join(filter(None, [
            f"{self.short()}{f' [{interval}]' if interval else ''} (n={self.n})", self.cost]))


def cells(report: Report) -> dict[str, Cell]:
    """What each item does in one experiment, by item name."""
    out: dict[str, Cell] = {}
    costs = ["; ".join(filter(None, c)) for c in zip(
        cost_cells(report.effects, "speed", True), cost_cells(report.effects, "memory", True))]
    for r, cost in zip(report.effects.itertuples(), costs):
        if r.verdict == "no data":
            continue
        removed = report.design == "leave-one-out" and r.effect.startswith("−")
        sign = -1 if removed else 1
        lo, hi = (-r.ci_hi, -r.ci_lo) if removed else (r.ci_lo, r.ci_hi)
        out[r.effect[1:] if removed else r.effect] = Cell(
            TURNED.get(r.verdict, r.verdict) if removed else r.verdict, sign * r.estimate, lo, hi, int(r.n),
            _turned_cost(cost) if removed else cost, _by_seed(report, r.kind, r.configs, sign))
    stack = _whole_stack(report)
    if stack is not None:
        out[WHOLE_STACK] = stack
    return out


def _by_seed(report: Report, kind: str, configs: object, sign: int) -> dict:
    """{seed: treated − control} of a comparison of two configurations (× sign: a removal read
    as the item); {} for a factorial effect, which averages over many."""
    if kind in ("main", "interaction") or not isinstance(configs, (list, tuple)) or len(configs) != 2:
        return {}
    treated, control = (report.values.get(c, {}) for c in configs)
    return {seed: sign * (treated[seed] - control[seed]) for seed in treated if seed in control}


def _turned_cost(cost: str) -> str:
    """A removal's cost words as the item's: removing it is faster = it is slower. The ratios
    are the removal's, so only the words are kept."""
    swap = {"faster": "slower", "slower": "faster", "less memory": "more memory", "more memory": "less memory"}
    words = [w.split(" (")[0] for w in cost.split("; ") if w] if cost else []
    turned = []
    for w in words:
        key = next((k for k in swap if w.endswith(k)), None)
        turned.append(swap[key] if key else w)
    return "; ".join(turned)


def _whole_stack(report: Report) -> Cell | None:
    """Leave-one-out: the full stack (every removal's control) against the experiment's baseline."""
    if report.design != "leave-one-out" or not len(report.effects):
        return None
    controls = {c[-1] for c in report.effects["configs"] if isinstance(c, (list, tuple)) and c}
    ranked = report.ranking[report.ranking["rank"].notna() & report.ranking["name"].isin(controls)]
    if len(controls) != 1 or len(ranked) != 1 or not report.ranking["is_baseline"].any():
        return None
    row = ranked.iloc[0]
    lo, hi = float(row["d_base_lo"]), float(row["d_base_hi"])
    verdict = read_interval(lo, hi, report.min_effect) if _finite(lo) and _finite(hi) else "noise unknown"
    baseline = report.ranking.loc[report.ranking["is_baseline"], "name"].iloc[0]
    return Cell(verdict, float(row["d_base"]), lo, hi, int(row["paired"]), "",
                _by_seed(report, "vs baseline", (row["name"], baseline), 1))


def across(reports: list[Report]) -> pd.DataFrame:
    """The table: one row per item (those decided in most experiments first), one column per
    experiment (the Cell, or None where the experiment did not measure the item), and
    `across experiments`, what the decided verdicts say together."""
    by_experiment = {r.experiment: cells(r) for r in reports}
    items = sorted({i for c in by_experiment.values() for i in c},
                   key=lambda i: (i != WHOLE_STACK, -sum(c.get(i) is not None and c[i].verdict in DECIDED
                                                         for c in by_experiment.values()), i))
    rows = []
    for item in items:
        row = {"item": item, **{name: c.get(item) for name, c in by_experiment.items()}}
        row["across experiments"] = agreement({n: c[item] for n, c in by_experiment.items() if item in c})
        rows.append(row)
    return pd.DataFrame(rows, columns=["item", *by_experiment, "across experiments"])


def agreement(found: dict[str, Cell]) -> str:
    """'opposite: better in A; worse in B' where decided verdicts point both ways, 'differs: …'
    where they differ otherwise (better here, negligible there), 'agrees (better in 3)' where
    every decided verdict is the same, '' where fewer than two experiments decided it."""
    decided: dict[str, list[str]] = {}
    for name, cell in found.items():
        if cell.verdict in DECIDED:
            decided.setdefault(cell.verdict, []).append(name)
    if sum(map(len, decided.values())) < 2:
        return ""
    if len(decided) == 1:
        (verdict, names), = decided.items()
        return f"agrees ({verdict} in {len(names)})"
    word = "opposite" if {"better", "worse"} <= set(decided) else "differs"
    return f"{word}: " + "; ".join(f"{v} in {', '.join(decided[v])}" for v in DECIDED if v in decided)


def disagreements(table: pd.DataFrame) -> list[str]:
    """The items whose decided verdicts point both ways, in one line each."""
    return [f"{r['item']}: {r['across experiments'].removeprefix('opposite: ')}"
            for _, r in table.iterrows() if r["across experiments"].startswith("opposite")]


def differences(table: pd.DataFrame, reports: list[Report]) -> list[str]:
    """Where an item's decided verdicts differ between two experiments that share seeds: whether
    the difference between its effects is itself decided. Per shared seed, the item's effect in
    one minus its effect in the other (a seed fixes the data order and the initialisation in
    both), its interval at 95 % per comparison read against the larger of their δ: the effects
    differ (wholly beyond ±δ), are alike (wholly within), or the seeds cannot tell."""
    delta = {r.experiment: r.min_effect for r in reports}
    lines = []
    for _, row in table.iterrows():
        if not row["across experiments"].startswith(("opposite", "differs")):
            continue
        found = [(name, row[name]) for name in table.columns[1:-1]
                 if isinstance(row[name], Cell) and row[name].verdict in DECIDED and row[name].by_seed]
        for i, (a, first) in enumerate(found):
            for b, second in found[i + 1:]:
                if first.verdict == second.verdict:
                    continue
                shared = sorted(set(first.by_seed) & set(second.by_seed))
                if len(shared) < 2:
                    continue
                est = summarize(first.by_seed[s] - second.by_seed[s] for s in shared)
                min_effect = max(delta[a], delta[b])
                v = decide([(est.mean, est.sd, est.n)], min_effect, Level())[0]
                said = {"better": f"the effects differ (beyond ±{min_effect:g})",
                        "worse": f"the effects differ (beyond ±{min_effect:g})",
                        "negligible": f"the effects are alike (within ±{min_effect:g})"}.get(
                    v.label, f"these seeds do not tell whether the effects differ ({v.label})")
                interval = f" [{_interval(v.lo, v.hi)}]" if _finite(v.lo) else ""
                lines.append(f"{row['item']}: its effect in {a} − in {b} = {_fmt(est.mean, signed=True)}{interval} "
                             f"over {est.n} shared seeds (95% per comparison): {said}")
    return lines


def what_cells_mean(reports: list[Report]) -> list[str]:
    """One line per experiment: what its column measures."""
    lines = []
    for r in reports:
        what = ("each item removed from the full stack, read as what the item does inside it (signs and "
                "verdicts turned round); 'whole stack' is the stack against its own baseline"
                if r.design == "leave-one-out" else
                "each item alone against the baseline" if r.design == "one-at-a-time" else r.design)
        lines.append(f"{r.experiment}: {what}; {len(r.seeds)} seed(s), δ = {r.min_effect:g}, {r.level.describe()}")
    return lines


def display(table: pd.DataFrame, long: bool) -> pd.DataFrame:
    """The table as text cells: `long` with intervals, n and cost (markdown, HTML), else the
    verdict and estimate alone (a terminal)."""
    shown = table.copy()
    for column in shown.columns[1:-1]:
        shown[column] = [("" if c is None else c.long() if long else c.short()) for c in shown[column]]
    if not long:  # the word; the lines under the table say where
        shown["across experiments"] = shown["across experiments"].str.split(r"[:(]").str[0].str.strip()
    return shown


def records(table: pd.DataFrame) -> list[dict]:
    """One record per (item, experiment) with every number, for JSON and CSV."""
    out = []
    for _, row in table.iterrows():
        for experiment in table.columns[1:-1]:
            c = row[experiment]
            if c is not None:
                out.append({"item": row["item"], "experiment": experiment, "verdict": c.verdict,
                            "estimate": c.estimate, "ci_lo": c.lo, "ci_hi": c.hi, "n": c.n, "cost": c.cost,
                            "across_experiments": row["across experiments"]})
    return out


def markdown(reports: list[Report]) -> str:
    table = across(reports)
    lines = [f"- {line}" for line in what_cells_mean(reports)]
    opposite = disagreements(table)
    if opposite:
        lines.append("- Decided both ways: " + "; ".join(opposite) + ".")
    lines += [f"- Difference: {line}." for line in differences(table, reports)]
    return "\n".join(lines) + "\n\n" + markdown_table(display(table, long=True))


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def render_many(reports: list[Report], format: str = "table", width: int = 100, color: bool = False) -> str:
    """Several experiments: the table across them first, then each experiment's own report
    (csv: the table's records alone; json: the records and each report)."""
    table = across(reports)
    if format == "csv":
        return spreadsheet_safe(pd.DataFrame(records(table))).to_csv(index=False)
    if format == "json":
        return json.dumps({"across": records(table), "differences": differences(table, reports), "experiments": [json.loads(render(r, "json")) for r in reports]},
                          indent=2, default=str)
    if format == "markdown":
        return "\n\n".join([f"## Across {len(reports)} experiments", markdown(reports),
                             *(render(r, "markdown").strip() for r in reports)]) + "\n"
    head: list = [(f"Across {len(reports)} experiments: what each item does in each", "bold"),
                  *what_cells_mean(reports), _rich_table(display(table, long=False)),
                  *((f"decided both ways: {line}", "bold") for line in disagreements(table)),
                  *(f"difference: {line}" for line in differences(table, reports))]
    return _capture(head, width, color) + "".join("\n" + render(r, format, width, color) for r in reports)
