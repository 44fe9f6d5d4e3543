"""A look of seeds-until-decided: the report as the runs of the first n seeds have it, and which
configurations its still-inconclusive comparisons involve (those that get the next seed).

Restricting to the first n seeds makes a look a function of those runs alone, so every runner
that replays the looks (after Ctrl-C, or beside another runner) asks for the same next round.
"""

from __future__ import annotations

from typing import Any

from ..storage.store import open_store
from . import frames
from .report import make_report


def undecided(db: Any, experiment: str, seeds: list[int], min_effect: float | None = None) -> set[str]:
    """The configurations of the comparisons still inconclusive with the runs of `seeds`."""
    with open_store(db) as store:
        exp = frames.pick_experiment(store, experiment)
        runs = frames.load_runs(store, experiment)
        evals = frames.load_evals(store, experiment)
    runs = runs[runs["seed"].isin(seeds)]
    effects = make_report(exp, runs, evals[evals["run_id"].isin(runs["run_id"])], min_effect=min_effect).effects
    return set().union(*effects.loc[effects["verdict"] == "inconclusive", "configs"])
