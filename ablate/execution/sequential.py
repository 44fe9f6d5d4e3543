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

import yaml

from ..storage.store import Store
from . import runner
from .matrix import Matrix, MatrixError, parse_matrix
from .runner import Outcome, PlanRow
from .safe_yaml import read_mapping

WAIT_S = 2.0  # how often a look waits for runs another runner trains
MAX_SEEDS = 12  # `ablate run --until-decided` without --max-seeds

Undecided = Callable[[list[int]], set[str]]  # seeds so far -> configurations still to extend
TrainRound = Callable[[list[int]], Outcome]  # run ids -> what training them did


def until_decided(matrix: Matrix, max_seeds: int | None) -> Matrix:
    """The matrix with `seeds: {min, max}` (`ablate run --until-decided --max-seeds N`): its
    listed seeds, which must follow one another, are the first round. The stored text says so,
    so the report spends α over the same looks."""
    raw = read_mapping(matrix.text)
    listed, first = matrix.seeds[:matrix.first_seeds], matrix.first_seeds
    if listed != list(range(listed[0], listed[0] + first)) or listed[0] != matrix.base.seed:
        raise MatrixError(str(matrix.path), [f"seeds: --until-decided adds seeds after the base seed "
                                             f"{matrix.base.seed}, one by one; list them so (or write "
                                             f"seeds: {{min, max}})"])
    limit = max_seeds or getattr(matrix.spec.seeds, "max", MAX_SEEDS)
    raw["seeds"] = {"min": first, "max": max(limit, first)}
    return parse_matrix(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), matrix.path)


def run_until_decided(store: Store, matrix: Matrix, rows: list[PlanRow], train: TrainRound,
                      undecided: Undecided, on_round: Callable[[int, set[str]], None] = lambda n, names: None,
                      ) -> tuple[Outcome, list[int]]:
    """Train the first round (every configuration, the matrix's first seeds), then one seed more
    at a time for the configurations `undecided` names, until it names none or the seeds run
    out. A plain matrix is one round. Returns what was trained (interrupted: stopped by Ctrl-C)
    and every run id registered. A round with a run that did not complete ends the loop, so no
    look reads an incomplete round (`--rerun failed` continues)."""
    def register(seeds: list[int], names: set[str] | None = None) -> list[int]:
        return runner.register(store, matrix, [r for r in rows if r.planned.seed in seeds and (
            names is None or r.planned.name in names)], keep=rows)  # a replay unlinks no later round

    seeds, first = matrix.seeds, matrix.first_seeds
    ids = register(seeds[:first])
    every, total = list(ids), Outcome([], 0)
    for n in range(first, len(seeds) + 1):
        outcome = train(ids)
        total.trained += outcome.trained
        total.already_done += outcome.already_done
        if outcome.interrupted or not _round_complete(store, ids):
            total.interrupted = outcome.interrupted
            break
        if len(seeds) > first:  # a look: the verdicts of the first n seeds are read
            store.record_look(matrix.name, n)
        if n == len(seeds):
            break
        names = undecided(seeds[:n])
        on_round(n, names)
        if not names:
            break
        ids = register([seeds[n]], names)
        every += ids
    return total, every


def _round_complete(store: Store, ids: list[int]) -> bool:
    """Whether every run of the round completed, once those another runner holds have ended."""
    while any(store.run(i).status == "running" for i in ids):
        time.sleep(WAIT_S)
    return all(store.run(i).status == "completed" for i in ids)
