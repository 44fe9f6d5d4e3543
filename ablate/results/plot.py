"""Validation curves as a PNG for reports and PRs (the terminal's sparkline is in `render`).

matplotlib is imported inside `plot_curves` (Agg backend, no display needed), so importing this
module costs nothing until a plot is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..storage.store import open_store
from ..training.config import suggest
from . import frames
from .report import METRICS, build_report

TOP = 5  # configurations plotted besides the baseline when none are named


def plot_curves(db: Any, experiment: str | None, runs: list[str] | None = None, out: str | Path = "curves.png",
                metric: str | None = None) -> Path:
    """Plot a metric (a key of METRICS; default: the one `ablate report` ranks by) against step
    for the named configurations (default: the baseline and the five configurations with the
    lowest final value), averaged over seeds with a min-max band (`seed_band`). Mainrun's
    reference is drawn only where the report calls comparing with it fair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open_store(db) as store:
        exp = frames.pick_experiment(store, experiment)
        report = build_report(store, exp["experiment"], metric)
        evals = frames.load_evals(store, exp["experiment"])
    metric = METRICS[report.metric]
    evals = evals.dropna(subset=[metric])
    if evals.empty:
        raise frames.ResultsError(f"experiment {exp['experiment']!r} has no evaluations of {metric} yet")
    names = runs or _default_names(evals, metric)
    unknown = sorted(set(names) - set(evals["name"]))
    if unknown:
        raise frames.ResultsError(f"no evaluations for {', '.join(unknown)} in {exp['experiment']!r}"
                                  f"{suggest(unknown[0], evals['name'].unique())}; "
                                  f"known: {', '.join(dict.fromkeys(evals['name']))}")
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name in names:
        curve = seed_band(evals[evals["name"] == name], metric)
        seeds = evals.loc[evals["name"] == name, "run_id"].nunique()
        line, = ax.plot(curve.index, curve["mean"], label=name + (f" (mean of {seeds} seeds)" if seeds > 1 else ""),
                        linewidth=2.2 if name == "baseline" else 1.4, linestyle="--" if name == "baseline" else "-")
        if seeds > 1:
            ax.fill_between(curve.index, curve["min"], curve["max"], color=line.get_color(), alpha=0.15,
                            label=f"{name}: min–max over its seeds")
    reference = frames.reference_of(exp)
    low, high = ax.get_ylim()
    if not report.reference_fair:
        ax.annotate(f"Mainrun reference {reference:g} not drawn: not comparable at this data/scale",
                    xy=(0.99, 0.99), xycoords="axes fraction", ha="right", va="top", fontsize="small", color="grey")
    elif low <= reference <= high:
        ax.axhline(reference, color="grey", linestyle=":", label=f"Mainrun reference {reference:g}")
    else:  # drawing it would flatten every curve: say where it is instead
        where = "below" if reference < low else "above"
        ax.annotate(f"Mainrun reference {reference:g}: {where} this range", xy=(0.99, 0.99 if where == "above" else 0.01),
                    xycoords="axes fraction", ha="right", va="top" if where == "above" else "bottom",
                    fontsize="small", color="grey")
    ax.set(xlabel="optimizer step", ylabel=f"{metric} (nats per character)",
           title=f"{exp['experiment']}: {metric} by step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    path = Path(out)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


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


def _default_names(evals: Any, metric: str) -> list[str]:
    """The baseline plus the TOP configurations by mean final value of `metric`."""
    final = evals.sort_values("step").groupby("run_id").tail(1).groupby("name")[metric].mean().sort_values()
    top = [n for n in final.index if n != "baseline"][:TOP]
    return (["baseline"] if "baseline" in final.index else []) + top
