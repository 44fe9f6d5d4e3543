"""Fail-fast is exact under concurrency (issue 34): which runs start never depends on which
job happens to end first. An in-process executor ends its jobs one per poll, in an order the
test chooses, so every interleaving the real executors can produce is replayed exactly."""

from __future__ import annotations

import pytest

from ablate.execution import runner
from ablate.execution.job import Ended
from ablate.execution.matrix import parse_matrix
from ablate.storage.store import Store

MATRIX = "name: ff\ndesign: one-at-a-time\nseeds: [1, 2, 3]\ntoggles: [sdpa]\n"  # 6 runs


class ScriptedExecutor:
    """`slots` at a time; each poll ends one running job (the newest when `newest_first`), as a
    failure 'diverged at step <n>' unless its position is in `succeeds`."""

    def __init__(self, store: Store, slots: int, succeeds: set[int] = frozenset(), newest_first=False):
        self.store, self.slots, self.succeeds, self.newest_first = store, slots, succeeds, newest_first
        self.running: list = []
        self.started: list[int] = []

    def describe(self) -> str:
        return f"scripted ({self.slots} slots)"

    def free_slots(self) -> int:
        return self.slots - len(self.running)

    def start(self, job, another_waits=True) -> None:
        self.running.append(job)
        self.started.append(job.run_id)

    def poll(self) -> list[Ended]:
        if not self.running:
            return []
        job = self.running.pop(-1 if self.newest_first else 0)
        if self.started.index(job.run_id) in self.succeeds:
            self.store.finish(job.run_id, job.attempt, {"steps": 1, "final_val_loss": 1.0})
        else:  # the same error, numbers aside: fail-fast compares them equal
            self.store.fail(job.run_id, job.attempt, f"diverged at step {len(self.started) * 7}")
        return [Ended(job, 0)]

    def wait(self, timeout: float) -> None:
        pass

    def stop_all(self) -> list:
        return []

    def close(self) -> None:
        pass


@pytest.fixture
def planned(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "POLL_S", 0.001)
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    matrix = parse_matrix(MATRIX)
    exp = store.upsert_experiment(matrix.name, "", MATRIX, matrix.reference, matrix.design)
    ids = store.add_runs(exp, [
        {"hash": p.config.identity_hash(), "name": p.name, "config": p.config.to_dict(),
         "toggles": list(p.toggles), "seed": p.seed, "position": i} for i, p in enumerate(matrix.expand())])
    yield store, ids
    store.close()


def statuses(store: Store, ids: list[int]) -> list[str]:
    return [store.run(i).status for i in ids]


@pytest.mark.parametrize("newest_first", [False, True])
@pytest.mark.parametrize("slots, started", [
    (1, 2),  # one at a time: the first two, nothing else
    (2, 2),  # the first failure holds the free slot until the second run ends: still exactly two
    (4, 4),  # four were started before anything ended: those in flight finish, nothing more starts
])
def test_runs_that_start_are_the_first_n_plus_those_already_in_flight(planned, slots, started, newest_first):
    store, ids = planned
    executor = ScriptedExecutor(store, slots, newest_first=newest_first)
    outcome = runner.run(store, ids, executor, trainer="unused", fail_fast=2)
    assert outcome.stopped_by is not None and "diverged at step" in outcome.stopped_by
    assert len(executor.started) == started == max(2, slots)
    assert statuses(store, ids).count("failed") == started
    assert statuses(store, ids).count("queued") == len(ids) - started


def test_a_success_among_the_first_runs_lets_every_run_start(planned):
    store, ids = planned
    executor = ScriptedExecutor(store, 2, succeeds={1})
    outcome = runner.run(store, ids, executor, trainer="unused", fail_fast=2)
    assert outcome.stopped_by is None and len(executor.started) == len(ids)
    assert statuses(store, ids).count("completed") == 1 and statuses(store, ids).count("failed") == 5


def test_fail_fast_off_starts_every_run(planned):
    store, ids = planned
    executor = ScriptedExecutor(store, 2)
    assert runner.run(store, ids, executor, trainer="unused", fail_fast=0).stopped_by is None
    assert statuses(store, ids) == ["failed"] * len(ids)
