"""Validation curves as a PNG for reports and PRs (the terminal's sparkline is in `render`).

matplotlib is imported inside `plot_curves` (Agg backend, no display needed), so importing this
module costs nothing until a plot is drawn.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..extras import require
from ..storage.store import open_store
from ..training.config import suggest
from . import frames, outfile, palette
from .render import verdict_text
from .report import build_report
from .stats import FAILS

TOP = 5  # configurations plotted besides the baseline when none are named
MAX_DRAWN = 60  # effects in an effects plot


def plot_curves(db: Any, experiment: str | None, runs: list[str] | None = None, out: str | Path = "curves.png",
                metric: str | None = None, delta: bool = False, force: bool = False,
                loaded: tuple[Any, Any] | None = None) -> Path:
    """Plot a metric (a key of report.METRICS, or your own trainer's; default: the one `ablate
    report` ranks by) against step
    for the named configurations (default: the baseline and the five configurations with the
    lowest final value), averaged over seeds with a min-max band (`seed_band`). Mainrun's
    reference is drawn only where the report calls comparing with it fair. `delta`: each
    configuration's difference from the same-seed baseline instead, which separates curves
    that lie on top of each other. `loaded`: the experiment's report and its runs' last values
    (`load_evals(summary_of=[report.column])`) where the caller has them (the HTML page draws two
    plots of one report). Only the drawn configurations' evaluations are read, at most
    frames.CURVE_POINTS of each run."""
    path = outfile.checked(out, (".png", ".svg", ".pdf"), force=force)
    require("plots", "drawing plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open_store(db, read_only=True) as store:
        exp = frames.pick_experiment(store, experiment)
        report = loaded[0] if loaded else build_report(store, exp["experiment"], metric)
        metric = report.column
        finals = _valued(loaded[1] if loaded else frames.load_evals(store, exp["experiment"], summary_of=[metric]),
                         metric)
        if finals.empty:
            raise frames.ResultsError(f"experiment {exp['experiment']!r} has no evaluations of {metric} yet")
        names = runs or _default_names(finals, metric, report.goal)
        unknown = sorted(set(names) - set(finals["name"]))
        if unknown:
            raise frames.ResultsError(f"no evaluations for {', '.join(unknown)} in {exp['experiment']!r}"
                                      f"{suggest(unknown[0], finals['name'].unique())}; "
                                      f"known: {', '.join(dict.fromkeys(finals['name']))}")
        drawn = [*names, *(["baseline"] if delta else [])]
        evals = _valued(frames.load_evals(store, exp["experiment"], runs=drawn, curve_of=metric), metric)
    colours = palette.configuration_colours([*report.ranking["name"], *finals["name"]])
    if delta:
        evals = minus_baseline(evals, metric)
        names = [n for n in names if n != "baseline"]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name in names:
        curve = seed_band(evals[evals["name"] == name], metric)
        seeds = evals.loc[evals["name"] == name, "run_id"].nunique()
        ax.plot(curve.index, curve["mean"], label=name + (f" (mean of {seeds} seeds; band: min–max)" if seeds > 1 else ""),
                color=colours[name], linewidth=2.2 if name == "baseline" else 1.4,
                linestyle="--" if name == "baseline" else "-")
        if seeds > 1:  # no legend entry of its own: one per configuration
            ax.fill_between(curve.index, curve["min"], curve["max"], color=colours[name], alpha=0.15)
    reference = frames.reference_of(exp)
    low, high = ax.get_ylim()
    if delta:
        ax.axhline(0, color="grey", linestyle="--", label="baseline (same seed)")
    elif not report.mainrun:  # your own trainer's metric has no reference
        pass
    elif not report.reference_fair:
        ax.annotate(f"Mainrun reference {reference:g} not drawn: not comparable at this data/scale",
                    xy=(0.99, 0.99), xycoords="axes fraction", ha="right", va="top", fontsize="small", color="grey")
    elif low <= reference <= high:
        ax.axhline(reference, color="grey", linestyle=":", label=f"Mainrun reference {reference:g}")
    else:  # drawing it would flatten every curve: say where it is instead
        where = "below" if reference < low else "above"
        ax.annotate(f"Mainrun reference {reference:g}: {where} this range", xy=(0.99, 0.99 if where == "above" else 0.01),
                    xycoords="axes fraction", ha="right", va="top" if where == "above" else "bottom",
                    fontsize="small", color="grey")
    what = f"{report.ranked_by} − same-seed baseline" if delta else report.ranked_by
    ax.set(xlabel="optimizer step" if report.mainrun else "step",
           ylabel=f"{what} (nats per character)" if report.mainrun else what,
           title=f"{exp['experiment']}: {what} by step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the curves, never on them
    try:
        outfile.replace(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def _valued(evals: Any, metric: str) -> Any:
    """The evaluations that hold a value of `metric`."""
    return evals.dropna(subset=[metric]) if metric in evals else evals.iloc[:0]


def minus_baseline(evals: Any, metric: str) -> Any:
    """Each non-baseline evaluation minus the same-seed baseline at that step (the baseline's
    curve interpolated where their steps differ); runs without a same-seed baseline dropped."""
    import numpy as np

    base = {seed: g.sort_values("step") for seed, g in evals[evals["name"] == "baseline"].groupby("seed")}
    parts = []
    for (name, seed), g in evals[evals["name"] != "baseline"].groupby(["name", "seed"]):
        if seed in base:
            b = base[seed]
            parts.append(g.assign(**{metric: g[metric].to_numpy(dtype=float) - np.interp(
                g["step"].to_numpy(dtype=float), b["step"].to_numpy(dtype=float),
                b[metric].to_numpy(dtype=float))}))
    if not parts:
        raise frames.ResultsError("no run has a same-seed baseline to subtract")
    import pandas as pd

    return pd.concat(parts)


def seed_band(evals: Any, metric: str) -> Any:
    """Mean, min and max of `metric` over a configuration's runs (seeds), on the steps that every
    run reaches. Seeds can evaluate at different steps (their tokenizers, hence step counts,
    differ), so each run is interpolated linearly onto the union of their evaluation steps;
    averaging raw steps instead would mix seeds in and out and make the curve jump."""
    import numpy as np
    import pandas as pd

    curves = [g.sort_values("step") for _, g in evals.groupby("run_id")]
    first = max(c["step"].iloc[0] for c in curves)
    last = min(c["step"].iloc[-1] for c in curves)
    grid = np.unique(np.concatenate([c["step"].to_numpy() for c in curves]))
    grid = grid[(grid >= first) & (grid <= last)]
    values = np.stack([np.interp(grid, c["step"].to_numpy(dtype=float), c[metric].to_numpy(dtype=float))
                       for c in curves])
    return pd.DataFrame({"mean": values.mean(0), "min": values.min(0), "max": values.max(0)}, index=grid)


def _default_names(evals: Any, metric: str, goal: str = "minimize") -> list[str]:
    """The baseline plus the TOP configurations by mean final value of `metric`, best first."""
    final = evals.sort_values("step").groupby("run_id").tail(1).groupby("name")[metric].mean()
    final = final.sort_values(ascending=goal == "minimize")
    top = [n for n in final.index if n != "baseline"][:TOP]
    return (["baseline"] if "baseline" in final.index else []) + top


def effect_rows(report: Any) -> Any:
    """The effects the plot draws, one row each, sorted by estimate (the best on top: most
    negative, or most positive for a metric to maximize): the report's effect rows with an
    estimate, and their marks; of more than MAX_DRAWN, the MAX_DRAWN farthest from zero (a plot
    of thousands of rows is unreadable and takes minutes to draw; the table has them all)."""
    effects = report.effects.dropna(subset=["estimate"])
    if len(effects) > MAX_DRAWN:
        effects = effects.loc[effects["estimate"].abs().sort_values(ascending=False, kind="stable").index[:MAX_DRAWN]]
    effects = effects.sort_values("estimate", ascending=report.goal == "maximize")
    flags = report.ranking.drop_duplicates("name").set_index("name")
    marks = []
    for effect in effects.itertuples():
        row = flags.loc[effect.effect] if effect.effect in flags.index else None
        marks.append(" ".join(m for m, on in (("✗ breaks rule", row is not None and bool(row["breaks_rule"])),
                                              ("≠ not like-for-like", row is not None and bool(row["not_like_for_like"])),
                                              (f"† {verdict_text(effect)}", effect.verdict == FAILS))
                              if on))
    return effects.assign(marks=marks).reset_index(drop=True)


def interval_caption(report: Any) -> str:
    """The intervals a plot draws, in the report's own words (and δ if chosen after the data)."""
    level = getattr(report, "level", None)
    text = level.describe() if level is not None else "no interval"
    return text + (", δ chosen after the data" if any("after the data" in a for a in getattr(report, "after_data", [])) else "")


def plot_effects(report: Any, out: str | Path = "effects.png", force: bool = False) -> Path:
    """Each effect's estimate with its interval at the report's level, one row each (PNG or SVG by
    the suffix of `out`), coloured by its verdict as its table row is (palette.py), with the report's ±min_effect band shaded; where the large effects
    would squeeze the small ones onto one point, a second panel shows ±3δ."""
    path = outfile.checked(out, (".png", ".svg"), force=force)
    require("plots", "drawing plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = effect_rows(report)
    if rows.empty:
        raise frames.ResultsError(f"experiment {report.experiment!r} has no estimated effect yet")
    min_effect = getattr(report, "min_effect", float("nan"))
    stack = report.design == "leave-one-out"
    reach = max(abs(x) for x in (*rows["estimate"], *rows["ci_lo"].dropna(), *rows["ci_hi"].dropna()))
    zoomed = min_effect == min_effect and reach > 6 * min_effect  # not nan, and the band would be a sliver
    fig, axes = plt.subplots(1, 2 if zoomed else 1, sharey=True, squeeze=False,
                             figsize=(11 if zoomed else 8.5, 1.2 + 0.32 * len(rows)),
                             gridspec_kw={"width_ratios": [3, 2] if zoomed else [1]}, layout="constrained")
    for k, ax in enumerate(axes[0]):
        if min_effect == min_effect:
            ax.axvspan(-min_effect, min_effect, color="#95a5a6", alpha=0.2,
                       label=f"±{min_effect:g}: smaller effects do not matter" if k == 0 else None)
        ax.axvline(0, color="#555", linewidth=0.8)
        for i, r in enumerate(rows.itertuples()):
            colour = palette.colour(r.verdict)
            if r.ci_lo == r.ci_lo:  # an interval exists (n > 1)
                ax.plot([r.ci_lo, r.ci_hi], [i, i], color=colour, linewidth=2)
            ax.plot(r.estimate, i, "o", color=colour, markersize=5, gid=f"effect{i}" if k == 0 else None)
        ax.grid(axis="x", alpha=0.3)
    ax = axes[0][0]
    ax.set_yticks(list(range(len(rows))), [f"{r.effect}  {r.marks}".strip() for r in rows.itertuples()],
                  fontsize="small")
    for label, v in zip(ax.get_yticklabels(), rows["verdict"]):
        label.set_color(palette.colour(v))
    for v in dict.fromkeys(rows["verdict"]):
        ax.plot([], [], "o-", color=palette.colour(v), label=v + _IN_STACK.get(v, "") * stack)
    shown = report.effects["estimate"].notna().sum()
    fig.suptitle(f"{report.experiment}: effects with intervals ({interval_caption(report)})"
                 + (f"\nthe {len(rows)} farthest from zero of {shown}; the table lists every one" if shown > len(rows) else "")
                 + ("\neach row is the removal it names: −X better = removing X helps" if stack else ""))
    fig.supxlabel(f"{report.effects_title}" + " (nats per character)" * report.mainrun, fontsize="medium")
    if zoomed:
        axes[0][1].set(xlim=(-3 * min_effect, 3 * min_effect), xticks=[k * min_effect for k in (-3, -1, 1, 3)],
                       title=f"the same, within ±3δ (δ = {min_effect:g})")
    axes[0][-1].legend(*ax.get_legend_handles_labels(), fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
    interval = lambda r: f" [{r.ci_lo:+.4g}, {r.ci_hi:+.4g}]" * (r.ci_lo == r.ci_lo)  # noqa: E731

    def draw(tmp: Path) -> None:
        with matplotlib.rc_context({"svg.fonttype": "none"}):  # SVG labels stay text
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
        if path.suffix == ".svg":  # hovering a point shows its numbers
            _hover(tmp, {f"effect{i}": f"{r.effect}: {r.estimate:+.4g}{interval(r)}, n={r.n}, {verdict_text(r)}"
                         for i, r in enumerate(rows.itertuples())})

    try:
        return outfile.replace(path, draw)
    finally:
        plt.close(fig)


def has_speed(report: Any) -> bool:
    """Whether any effect has a speed ratio with an interval to draw against its loss."""
    e = report.effects
    return "speed_lo" in e and bool((e["speed_lo"].notna() & e["estimate"].notna()).any())


def plot_cost(report: Any, out: str | Path = "cost.png", force: bool = False) -> Path:
    """Quality against cost: each effect one point, its speed-up (control's time per training
    token over its own, log scale) across and its Δloss up, each with its interval, coloured by its loss
    verdict as in its table row; the ±δ band and the ±cost_min_effect band shaded, so the four corners (better and
    faster … worse and slower) read at a glance. Effects without a speed interval are left out."""
    path = outfile.checked(out, (".png", ".svg"), force=force)
    require("plots", "drawing plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = report.effects
    rows = e[e["speed_lo"].notna() & e["estimate"].notna()] if has_speed(report) else e[:0]
    if rows.empty:
        raise frames.ResultsError(f"experiment {report.experiment!r} has no effect with a speed interval")
    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    band = math.log1p(report.cost_min_effect)
    ax.axvspan(math.exp(-band), math.exp(band), color="#95a5a6", alpha=0.2, label=f"speed within ±{math.expm1(band):.0%}")
    ax.axhspan(-report.min_effect, report.min_effect, color="#95a5a6", alpha=0.2, label=f"Δloss within ±{report.min_effect:g}")
    for r in rows.itertuples():
        colour = palette.colour(r.verdict)
        speedup, fast_lo, fast_hi = 1 / r.speed_ratio, 1 / r.speed_hi, 1 / r.speed_lo
        ax.errorbar(speedup, r.estimate, xerr=[[speedup - fast_lo], [fast_hi - speedup]],
                    yerr=None if r.ci_lo != r.ci_lo else [[r.estimate - r.ci_lo], [r.ci_hi - r.estimate]],
                    fmt="o", color=colour, capsize=3)
        ax.annotate(r.effect, (speedup, r.estimate), textcoords="offset points", xytext=(6, 4), fontsize="small")
    ax.set_xscale("log")
    times = matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:.2g}×")  # not 9×10⁻¹
    ax.xaxis.set_major_formatter(times)
    ax.xaxis.set_minor_formatter(times)
    ax.axvline(1, color="#555", linewidth=0.8)
    ax.axhline(0, color="#555", linewidth=0.8)
    for x, y, text, ha, va in ((0.98, 0.02, "faster, lower loss", "right", "bottom"), (0.02, 0.02, "slower, lower loss", "left", "bottom"),
                               (0.98, 0.98, "faster, higher loss", "right", "top"), (0.02, 0.98, "slower, higher loss", "left", "top")):
        ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, fontsize="small", color="#555")
    ax.set(xlabel="speed-up: the control's time per training token / its own (log scale)",
           ylabel=f"{report.effects_title}" + " (nats per character)" * report.mainrun)
    ax.set_title(f"{report.experiment}: loss against speed ({interval_caption(report)})", fontsize="medium")
    ax.legend(fontsize="small", loc="center right")
    try:
        return outfile.replace(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)


# leave-one-out: a row is a removal, and its verdict says what removing the item does
_IN_STACK = {"better": " (removing it helps: it hurts in the stack)",
             "worse": " (removing it hurts: it helps in the stack)"}


def _hover(path: Path, titles: dict[str, str]) -> None:
    """Give the SVG groups of these ids a <title>: the tooltip a browser shows on hover."""
    import html

    text = path.read_text(encoding="utf-8")
    for gid, title in titles.items():
        text = text.replace(f'<g id="{gid}">', f'<g id="{gid}"><title>{html.escape(title)}</title>', 1)
    path.write_text(text, encoding="utf-8")
