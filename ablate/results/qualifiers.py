"""What limits a verdict beyond its interval: seeds that are not data, and a metric too coarse
for δ.

Seeds that are not data are lost ones (failed, diverged, timed out, interrupted) and ones still
to run (queued, running). They differ in what they do to a verdict. A seed still to run is
simply not data yet: the report reads the seeds it has and says "2 of 4 seeds so far". A lost seed is data about the
configuration: a learning rate that diverges on half its seeds has survivors that look good, so
judging it on them is the worst possible bias. A configuration that lost seeds its control
completed is therefore never better or negligible and never ★ (its verdict is `stats.FAILS`)
until those seeds are rerun and complete.

A metric printed with two decimals moves in steps of 0.01: a δ of 0.01 is one step of rounding,
so where δ spans fewer than `stats.MIN_STEPS` steps no verdict is decided (`stats.COARSE`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..execution.provenance import machine
from ..execution.seeds import VerdictPlan
from .frames import per_frame
from .lines import baseline_name
from .stats import COARSE, FAILS, MIN_STEPS, resolution, ties

LOST = ("failed", "interrupted")
PENDING = ("queued", "running")


@dataclass(frozen=True)
class Seeds:
    """What became of the seeds a configuration was given."""

    given: int = 0
    lost: tuple = ()  # seeds lost that the control did not lose (completed, or still to run)
    pending: int = 0  # seeds still queued or running: not data yet ("2 of 4 seeds so far")


def _statuses(per_run: pd.DataFrame, name: str | None) -> dict:
    return _status_index(per_run).get(name, {})


@per_frame
def _status_index(per_run: pd.DataFrame) -> dict:
    """{configuration: {seed: status}}, once per frame."""
    index: dict = {}
    for name, seed, status in zip(per_run["name"], per_run["seed"], per_run["status"]):
        index.setdefault(name, {})[seed] = status
    return index


def seeds_of(per_run: pd.DataFrame, treated: str, controls: list[str | None]) -> Seeds:
    """The treated configuration's seeds, and those it lost that every control did not lose on the
    same seed (a seed the control also lost is dropped from the pair without bias); a control
    without that seed at all does not excuse the loss."""
    mine = _statuses(per_run, treated)
    others = [_statuses(per_run, c) for c in controls if c is not None and c != treated]
    lost = tuple(sorted(s for s, status in mine.items() if status in LOST
                        and not (others and all(o.get(s) in LOST for o in others))))
    return Seeds(len(mine), lost, sum(status in PENDING for status in mine.values()))


def comparison_seeds(per_run: pd.DataFrame, configs: list[str | None], control: str | None) -> Seeds:
    """A comparison's seeds: its treated configuration's (the first of `configs`) against
    `control`; without one (a factorial contrast, which involves every configuration) those of
    the configuration that lost the most seeds that the others did not."""
    names = [c for c in configs if c is not None]
    if not names:
        return Seeds()
    if control is not None:
        return seeds_of(per_run, names[0], [control])
    return max((seeds_of(per_run, n, [c for c in names if c != n]) for n in names),
               key=lambda s: (len(s.lost), s.pending))


def lost_note(per_run: pd.DataFrame, names: list[str]) -> str:
    """One note for every configuration that lost seeds: which, how, and what its verdict is."""
    if not names:
        return ""
    parts = []
    for name in names:
        rows = per_run[per_run["name"] == name]
        lost = rows[rows["status"].isin(LOST)].sort_values("seed")
        error = str(lost["error"].dropna().iloc[0]) if lost["error"].notna().any() else "no error recorded"
        error = error.removeprefix("TrainerError: ")
        parts.append(f"{name}: seed(s) {', '.join(str(s) for s in lost['seed'])} of {len(rows)} "
                     f"{'/'.join(dict.fromkeys(lost['status']))} ({error[:80]}{'…' * (len(error) > 80)})")
    return (f"Lost seeds — {'; '.join(parts)}. A configuration is judged on every seed it was given: one "
            f"that lost seeds its control completed \"fails\": never judged on the survivors, which "
            f"flatter it, and never ★, until its lost seeds are rerun and complete "
            f"(`ablate run MATRIX --rerun failed`).")


def qualify(per_run: pd.DataFrame, effects: pd.DataFrame, ranking: pd.DataFrame, plan: VerdictPlan,
             metric: str, printed: bool = True) -> tuple[str, tuple[str, ...]]:
    """What limits the verdicts, said where they are read: a metric on a grid (its step, and no
    decided verdict where δ spans fewer than MIN_STEPS of them, turning `effects` verdicts to
    COARSE in place) and the configurations that lost seeds. Returns (a line, first notes).
    Only a `printed` metric (your own trainer's, read from its output) is looked at for a grid:
    Mainrun's are computed in floating point."""
    done = per_run[(per_run["status"] == "completed") & per_run["y"].notna()]
    step, line = resolution(done["y"]) if printed else None, ""
    if step is not None:
        steps = plan.min_effect / step
        line = f"Resolution: {metric} moves in steps of {step:g} (every value lies on that grid); δ = " \
               f"{plan.min_effect:g} is {steps:.3g} step(s)"
        if steps < MIN_STEPS - 1e-9:
            coarse = effects["verdict"].isin(["better", "worse", "negligible", "inconclusive"])
            effects.loc[coarse, "verdict"] = COARSE
            effects.loc[coarse, "seeds_needed"] = None
            line += f", under {MIN_STEPS}: rounding alone can move a difference by δ, so no verdict is decided " \
                    f"({COARSE}); choose δ of at least {MIN_STEPS * step:g}."
        else:
            line += ": differences smaller than a step are invisible."
    lost = ranking.loc[ranking["seeds_lost"].fillna(0) > 0, "name"].tolist()
    for configs in effects.loc[effects["verdict"] == FAILS, "configs"]:
        lost += [c for c in configs if c and (per_run.loc[per_run["name"] == c, "status"].isin(LOST)).any()][:1]
    return line, (lost_note(per_run, list(dict.fromkeys(lost))), environments_note(per_run))


def environments_note(per_run: pd.DataFrame) -> str:
    """Completed runs from more than one environment (databases merged from several machines,
    or a cluster of unlike nodes): which, and the configurations paired with a same-seed
    baseline run of another, whose effects then hold the machines' difference too."""
    if "res.environment" not in per_run:
        return ""
    done = per_run[per_run["status"] == "completed"]
    machines = [machine(e) if isinstance(e, dict) else None for e in done["res.environment"]]
    counts = pd.Series([m for m in machines if m], dtype=object).value_counts()
    if len(counts) < 2:
        return ""
    base = baseline_name(per_run)
    of_base = {seed: m for name, seed, m in zip(done["name"], done["seed"], machines) if name == base}
    across = sorted({name for name, seed, m in zip(done["name"], done["seed"], machines)
                     if name != base and m and of_base.get(seed) not in (None, m)})
    listed = "; ".join(f"{m} ({n} run{'s' if n > 1 else ''})" for m, n in counts.items())
    said = (f"{', '.join(across)} {'is' if len(across) == 1 else 'are'} paired with a baseline run of another, "
            f"so {'its effect holds' if len(across) == 1 else 'their effects hold'} the machines' difference too"
            if across else "every configuration is paired with baseline runs of its own environment")
    return f"Runs from {len(counts)} environments: {listed}. {said}."


def identical_seeds(per_run: pd.DataFrame) -> set[str]:
    """Configurations whose completed seeds (two or more) gave one value, within rounding
    (`stats.ties`: 1e-9 of the value): the seed never reached the trainer (or changes nothing
    but the order of a sum), so their spread says nothing about noise."""
    done = per_run.loc[((per_run["status"] == "completed") & per_run["y"].notna()).to_numpy(), ["name", "seed", "y"]]
    several = done.groupby("name")["seed"].transform("nunique") >= 2  # one seed says nothing either way
    return {name for name, group in done[several].groupby("name") if ties(group["y"])}


def value_scale(done: pd.DataFrame) -> float:
    """The size of the metric's values, against which a spread is rounding (stats.ties)."""
    values = done["y"].abs()
    return float(values.median()) if len(values) else 0.0
