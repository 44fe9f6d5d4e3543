"""Merging another results database into this one: runs trained elsewhere (a GPU machine, a
colleague's laptop) join the answer.

Runs are matched by identity (their hash), never by id. A run missing here is copied with its
current attempt's evaluations and step metrics; a run completed there but not here (queued,
failed, interrupted) is completed here by a new attempt holding the other database's results;
a run completed in both is kept once, and when the two disagree the disagreement is reported
and this database's results are kept. Experiments are matched by name and gain the other
database's runs in their matrix. Everything happens in one transaction: a merge that fails or is
interrupted leaves this database as it was. The other database is never written: a SQLite file
is read through a temporary copy, which is where an older schema gets migrated.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from .database import StoreError, _sqlite_path, resolve_url, temporary_copy
from .schema import Eval, Experiment, ExperimentRun, Run, StepMetric
from .store import Store

RUN_FIELDS = ("status", "started_at", "finished_at", "heartbeat_at", "host", "device", "pid",
              "code_version", "error", "traceback", "final_val_loss", "best_val_loss",
              "best_step", "param_count", "wall_time_s", "tokens_per_s", "steps", "max_steps",
              "truncated", "result")
EVAL_FIELDS = ("step", "epoch", "val_loss", "val_loss_full", "eval_coverage", "train_loss", "lr",
               "grad_norm", "tokens_seen", "elapsed_s", "tokens_per_s", "extra", "created_at")
STEP_FIELDS = ("step", "train_loss", "lr", "grad_norm")


@dataclass
class MergeReport:
    source: str
    experiments_added: list[str] = field(default_factory=list)
    runs_added: int = 0  # identities new here
    runs_completed: int = 0  # here but not completed; completed by the other database's attempt
    runs_kept: int = 0  # completed in both with the same results
    evals_added: int = 0
    conflicts: list[str] = field(default_factory=list)  # completed in both, results differ

    def summary(self) -> str:
        added = ", ".join(self.experiments_added) or "none"
        return (f"merged {self.source}: {self.runs_added} new run(s), {self.runs_completed} "
                f"completed here now, {self.runs_kept} already here with the same results, "
                f"{self.evals_added} evaluation(s) copied; new experiments: {added}; "
                f"{len(self.conflicts)} conflict(s)")


@dataclass
class _SourceRun:
    run: Run
    evals: list[Eval]
    steps: list[StepMetric]


def merge(target: Store, source: str | Path) -> MergeReport:
    """Merge the database at `source` (a .db path or URL) into `target`, in one transaction."""
    url = resolve_url(source)
    if url == target.url:
        raise StoreError(f"cannot merge {target.where} into itself")
    shown = str(source) if _sqlite_path(url) else None
    with _readable_copy(url) as copy_url, Store(copy_url, create=False, shown_as=shown) as other:
        experiments, links, runs = other._read(_read_all)
        report = MergeReport(source=other.where)
        target._write(lambda session: _merge(session, experiments, links, runs, report))
    return report


@contextmanager
def _readable_copy(url: str) -> Iterator[str]:
    """A SQLite source as a temporary consistent copy (migrating an older schema on open then
    changes nothing in the file itself); other URLs as they are."""
    path = _sqlite_path(url)
    if path is None:
        yield url
        return
    if not path.is_file():
        raise StoreError(f"no results database at {path}")
    folder, copy = temporary_copy(path)
    with folder:
        yield f"sqlite:///{copy}"


def _read_all(session: Session) -> tuple[list[Experiment], list[ExperimentRun], list[_SourceRun]]:
    runs = []
    for run in session.scalars(select(Run).order_by(Run.id)):
        evals = list(session.scalars(select(Eval).where(
            Eval.run_id == run.id, Eval.attempt == run.attempt).order_by(Eval.step)))
        steps = list(session.scalars(select(StepMetric).where(
            StepMetric.run_id == run.id, StepMetric.attempt == run.attempt).order_by(StepMetric.step)))
        runs.append(_SourceRun(run, evals, steps))
    experiments = list(session.scalars(select(Experiment).order_by(Experiment.id)))
    links = list(session.scalars(select(ExperimentRun)))
    return experiments, links, runs


def _merge(session: Session, experiments: list[Experiment], links: list[ExperimentRun],
           runs: list[_SourceRun], report: MergeReport) -> None:
    run_ids = {}  # source run id -> target run id
    for source in runs:
        target_id = _merge_run(session, source, report)
        if target_id is not None:
            run_ids[source.run.id] = target_id
    exp_ids = {}
    for exp in experiments:
        here = session.scalars(select(Experiment).where(Experiment.name == exp.name)).first()
        if here is None:
            here = Experiment(**{c: getattr(exp, c) for c in (
                "name", "description", "yaml_text", "reference", "design", "created_at",
                "updated_at")})
            session.add(here)
            session.flush()
            report.experiments_added.append(exp.name)
        exp_ids[exp.id] = here.id
    for link in links:
        run_id = run_ids.get(link.run_id)
        if run_id is None or session.get(ExperimentRun, (exp_ids[link.experiment_id], run_id)):
            continue
        session.add(ExperimentRun(experiment_id=exp_ids[link.experiment_id], run_id=run_id,
                                  name=link.name, toggles=link.toggles, position=link.position))


def _merge_run(session: Session, source: _SourceRun, report: MergeReport) -> int | None:
    """The target id of this identity after merging it (None: not linked anywhere here)."""
    theirs = source.run
    here = session.scalars(select(Run).where(Run.hash == theirs.hash)).first()
    if here is None:
        here = Run(hash=theirs.hash, name=theirs.name, config=theirs.config,
                   toggles=theirs.toggles, seed=theirs.seed, created_at=theirs.created_at,
                   attempt=theirs.attempt, **{c: getattr(theirs, c) for c in RUN_FIELDS})
        if here.status == "running":  # nobody trains it into this database
            here.status, here.error = "interrupted", "was running in the merged database"
        session.add(here)
        session.flush()
        report.runs_added += 1
        _copy_attempt(session, here.id, here.attempt, source, report)
        return here.id
    if theirs.status != "completed":
        return here.id
    if here.status == "completed":
        if (here.final_val_loss, here.steps) == (theirs.final_val_loss, theirs.steps):
            report.runs_kept += 1
        else:
            report.conflicts.append(
                f"{here.name} ({here.hash}): final val_loss {here.final_val_loss} here after "
                f"{here.steps} steps, {theirs.final_val_loss} there after {theirs.steps}; "
                f"kept this database's")
        return here.id
    if here.status == "running":
        report.conflicts.append(f"{here.name} ({here.hash}): running here now; its result "
                                f"there was not merged (merge again once it has ended)")
        return here.id
    here.attempt += 1  # a new attempt holds the other database's results
    for column in RUN_FIELDS:
        setattr(here, column, getattr(theirs, column))
    report.runs_completed += 1
    _copy_attempt(session, here.id, here.attempt, source, report)
    return here.id


def _copy_attempt(session: Session, run_id: int, attempt: int, source: _SourceRun,
                  report: MergeReport) -> None:
    for e in source.evals:
        session.add(Eval(run_id=run_id, attempt=attempt, **{c: getattr(e, c) for c in EVAL_FIELDS}))
    for m in source.steps:
        session.add(StepMetric(run_id=run_id, attempt=attempt,
                               **{c: getattr(m, c) for c in STEP_FIELDS}))
    report.evals_added += len(source.evals)
