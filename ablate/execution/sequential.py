"""Seeds until decided: a matrix's comparisons get more seeds, round by round, until each has a
verdict or the seed budget is spent.

A round is one more seed for every configuration that a still-undecided comparison involves
(its two sides: the treated configuration and the same-seed control it pairs with). What is
still undecided after n seeds is a function of the runs of the first n seeds only, so the
rounds are the same however often the loop is stopped and started again (Ctrl-C, several
runners, Ray): each replays the looks from the first, registers what they ask for (idempotent:
runs are found by identity) and trains only what is not completed. A look waits for every run
of its round, whichever runner trains it. Which comparisons are undecided is the caller's
question (the report's verdicts), handed in as `undecided`: execution knows no statistics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..storage.store import Store
from ..training.config import MIN_EFFECT
from .safe_yaml import YAMLProblem, read_mapping

WAIT_S = 2.0  # how often a look waits for runs another runner trains


class SeedRange(BaseModel):
    """`seeds: {min: 3, max: 12}`: the first round has `min` seeds (the base seed and those after
    it), and rounds add one seed at a time up to `max`."""

    model_config = ConfigDict(extra="forbid", strict=True)
    min: int = Field(ge=2)  # a paired interval needs two seeds
    max: int

    @model_validator(mode="after")
    def _ordered(self) -> "SeedRange":
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self

    @property
    def looks(self) -> int:
        """Every seed count from min to max is a look at which a verdict may be reported."""
        return self.max - self.min + 1


def verdict_settings(yaml_text: str | None) -> tuple[float, int]:
    """(min_effect, looks) of a stored matrix text: its `min_effect` (else the default) and the
    looks its `seeds: {min, max}` allows (else 1). A text that cannot be read has the defaults."""
    try:
        raw = read_mapping(yaml_text or "")
    except YAMLProblem:
        return MIN_EFFECT, 1
    min_effect, seeds = raw.get("min_effect"), raw.get("seeds")
    try:
        looks = SeedRange.model_validate(seeds).looks if isinstance(seeds, dict) else 1
    except ValueError:
        looks = 1
    usable = isinstance(min_effect, (int, float)) and not isinstance(min_effect, bool) and min_effect > 0
    return (float(min_effect) if usable else MIN_EFFECT), looks


Undecided = Callable[[list[int]], set[str]]  # seeds so far -> configurations still to extend
TrainRound = Callable[[list[int]], Any]  # run ids -> an outcome with `.interrupted`


def run_until_decided(store: Store, seeds: list[int], first: int, register: Callable[[int, set[str] | None], list[int]],
                      train: TrainRound, undecided: Undecided,
                      on_round: Callable[[int, set[str]], None] = lambda n, names: None) -> Any:
    """Train the first `first` seeds of every configuration, then one seed more at a time for
    the configurations `undecided` names, until it names none or `seeds` run out.
    `register(seed, names)` registers those configurations (None: all) at one seed and returns
    their run ids. Returns the last round's outcome (interrupted: stopped by Ctrl-C); a round
    with a run that did not complete ends the loop, so no look reads an incomplete round."""
    ids = [i for seed in seeds[:first] for i in register(seed, None)]
    for n in range(first, len(seeds) + 1):
        outcome = train(ids)
        if outcome.interrupted:
            return outcome
        if not _round_complete(store, ids) or n == len(seeds):
            return outcome  # a failed run: the look waits for `--rerun failed`
        names = undecided(seeds[:n])
        on_round(n, names)
        if not names:
            return outcome
        ids = register(seeds[n], names)
    return outcome


def _round_complete(store: Store, ids: list[int]) -> bool:
    """Whether every run of the round completed, once those another runner holds have ended."""
    while any(store.run(i).status == "running" for i in ids):
        time.sleep(WAIT_S)
    return all(store.run(i).status == "completed" for i in ids)
