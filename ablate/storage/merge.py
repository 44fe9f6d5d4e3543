"""Merging another results database into this one: runs trained elsewhere (a GPU machine, a
colleague's laptop) join the answer, and nothing else gets in.

Runs are matched by identity (their hash), never by id. A run missing here is copied with its
current attempt's evaluations and step metrics; a run completed there but not here (queued,
failed, interrupted) is completed here by a new attempt holding the other database's results;
a run completed in both is kept once, and when the two disagree the disagreement is reported
and this database's results are kept. Experiments are matched by name *and* by the matrix that
defines them, and gain the other database's runs.

Everything is checked before anything is written: each run's identity recomputed from its
config (`Checks.run`), its shape (a JSON object for a config, a known status, a hexadecimal
hash, JSON that parses), every link's ends, and that a same-named experiment here is the same
matrix. What fails is refused one line each, and the merge with it, unless the user asks to
leave it out. Everything happens in one transaction: a merge that fails, is refused or is
interrupted leaves this database as it was. The other database is never written: a SQLite file
is read through a temporary copy, which is where an older schema gets migrated.
"""

from __future__ import annotations

import math
import re
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import Float, Integer, select
from sqlalchemy.orm import Session

from .database import StoreError, _sqlite_path, resolve_url, temporary_copy
from .schema import (MAX_DESCRIPTION_CHARS, MAX_ERROR_CHARS, MAX_MATRIX_CHARS, MAX_NAME_CHARS, MAX_STEP,
                     MAX_TRACEBACK_CHARS, STATUSES, Eval, Experiment, ExperimentRun, Run, StepMetric, bounded, plain_name)
from .signing import signature_problem
from .store import Store

RUN_FIELDS = ("status", "started_at", "finished_at", "heartbeat_at", "host", "device", "pid",
              "code_version", "error", "traceback", "final_val_loss", "best_val_loss",
              "best_step", "param_count", "wall_time_s", "tokens_per_s", "steps", "max_steps",
              "truncated", "result")
EVAL_FIELDS = ("step", "epoch", "val_loss", "val_loss_full", "eval_coverage", "train_loss", "lr",
               "grad_norm", "tokens_seen", "elapsed_s", "tokens_per_s", "extra", "created_at")
STEP_FIELDS = ("step", "train_loss", "lr", "grad_norm")
HASH = re.compile(r"[0-9a-f]{16,64}")
JSON_COLUMNS = (  # (table, whose row it is: a run or an experiment, that one's id column, its JSON columns)
    ("runs", "run", "id", ("config", "toggles", "result")),
    ("evals", "run", "run_id", ("extra",)),
    ("experiment_runs", "run", "run_id", ("toggles",)),
    ("experiments", "experiment", "id", ("plan", "looks_taken")),
)
DATE_COLUMNS = (
    ("runs", "run", "id", ("created_at", "started_at", "finished_at", "heartbeat_at", "requeued_at")),
    ("evals", "run", "run_id", ("created_at",)),
    ("experiments", "experiment", "id", ("created_at", "updated_at")),
)
STEP_LIKE = {"step", "best_step", "steps", "max_steps", "current_step"}  # at most MAX_STEP


@dataclass
class MergeReport:
    source: str
    experiments_added: list[str] = field(default_factory=list)
    runs_added: int = 0  # identities new here
    runs_completed: int = 0  # here but not completed; completed by the other database's attempt
    runs_kept: int = 0  # completed in both with the same results
    evals_added: int = 0
    conflicts: list[str] = field(default_factory=list)  # completed in both, results differ
    skipped: list[str] = field(default_factory=list)  # refused items left out (skip_invalid)

    def summary(self) -> str:
        added = ", ".join(self.experiments_added) or "none"
        skipped = f"; {len(self.skipped)} refused item(s) left out" if self.skipped else ""
        return (f"merged {self.source}: {self.runs_added} new run(s), {self.runs_completed} "
                f"completed here now, {self.runs_kept} already here with the same results, "
                f"{self.evals_added} evaluation(s) copied; new experiments: {added}; "
                f"{len(self.conflicts)} conflict(s){skipped}")


class MergeRefused(StoreError):
    """Items the other database holds that cannot be taken, one line each; nothing was merged."""

    def __init__(self, source: str, lines: list[str]):
        self.lines = lines
        super().__init__(f"merge of {source} refused, nothing written: {len(lines)} item(s) refused "
                         f"(--skip-invalid merges the rest)")


@dataclass
class Checks:
    """What a merge verifies beyond the rows' shape, given by the layer that knows what runs and
    matrices are (`execution.identity`): why a config is not the run its hash names (None: it
    is), whether two stored matrix texts define one experiment, and why a link's run is not the
    configuration its experiment's matrix gives that name."""

    run: Callable[[dict, str, str | None], str | None]
    same_matrix: Callable[[str | None, str | None], bool]
    link: Callable[[str | None, str, list, dict], str | None]  # why a run is not what its matrix calls that name
    renames: dict[str, str] = field(default_factory=dict)  # their experiment name -> the name here
    skip_invalid: bool = False  # leave refused items out instead of refusing the merge
    signing_key: str | None = None  # --require-signed: completed runs must carry a signature under it


@dataclass
class _SourceRun:
    run: Run
    evals: list[Eval]
    steps: list[StepMetric]


@dataclass
class _Incoming:
    experiments: list[Experiment]
    links: list[ExperimentRun]
    runs: list[_SourceRun]
    malformed: dict[tuple[str, int], str]  # ("run" or "experiment", its id) -> which JSON value does not parse


def merge(target: Store, source: str | Path, checks: Checks) -> MergeReport:
    """Merge the database at `source` (a .db path or URL) into `target`, in one transaction,
    taking only what passes `checks`: anything else refuses the merge (MergeRefused) unless
    `checks.skip_invalid` leaves it out."""
    url = resolve_url(source)
    if url == target.url:
        raise StoreError(f"cannot merge {target.where} into itself")
    shown = str(source) if _sqlite_path(url) else None
    with _readable_copy(url) as copy_url, Store(copy_url, create=False, shown_as=shown) as other:
        malformed = _malformed(other.file) if other.file is not None else {}
        incoming = _Incoming(*other._read(_read_all), malformed)
        report = MergeReport(source=other.where)
        target._write(lambda session: _merge(session, incoming, report, checks))
    return report


@contextmanager
def _readable_copy(url: str) -> Iterator[str]:
    """A SQLite source as a temporary consistent copy (migrating an older schema on open, or
    setting aside malformed JSON, then changes nothing in the file itself); other URLs as they
    are (PostgreSQL checks JSON itself)."""
    path = _sqlite_path(url)
    if path is None:
        yield url
        return
    if not path.is_file():
        raise StoreError(f"no results database at {path}")
    folder, copy = temporary_copy(path)
    with folder:
        yield f"sqlite:///{copy}"


def _malformed(copy: Path) -> dict[tuple[str, int], str]:
    """The runs and experiments whose JSON (a run's config, toggles, result, an evaluation's
    extra, a link's toggles, an experiment's plan) does not parse, or whose timestamps are no
    dates, in the temporary copy; there they are set to null (a date: 1970) so the rest can be read."""
    found: dict[tuple[str, int], str] = {}
    with closing(sqlite3.connect(copy)) as conn:
        for table, owner, key, columns in JSON_COLUMNS:
            for column in columns:
                bad = f"{column} IS NOT NULL AND NOT json_valid({column})"
                for (owner_id,) in conn.execute(f"SELECT {key} FROM {table} WHERE {bad}"):
                    found.setdefault((owner, owner_id), f"{table}.{column} is not valid JSON")
                conn.execute(f"UPDATE {table} SET {column} = 'null' WHERE {bad}")
        for table, owner, key, columns in DATE_COLUMNS:
            for column in columns:
                bad = f"{column} IS NOT NULL AND julianday({column}) IS NULL"
                for owner_id, value in conn.execute(f"SELECT {key}, {column} FROM {table} WHERE {bad}"):
                    found.setdefault((owner, owner_id), f"{table}.{column} {_shown(value)} is not a date")
                conn.execute(f"UPDATE {table} SET {column} = '1970-01-01 00:00:00' WHERE {bad}")  # refused anyway
        conn.commit()
    return found


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


def _merge(session: Session, incoming: _Incoming, report: MergeReport, checks: Checks) -> None:
    """Check everything first, then write: a refused merge has written nothing."""
    unknown = set(checks.renames) - {e.name for e in incoming.experiments}
    if unknown:
        raise StoreError(f"--rename-from: no experiment {', '.join(map(repr, sorted(unknown)))} in {report.source}")
    refused: list[str] = []
    runs = {}  # source run id -> the run, checked
    for source in incoming.runs:
        problem = incoming.malformed.get(("run", source.run.id)) or _run_problem(session, source, checks)
        if problem:
            refused.append(f"run {_shown(source.run.name)} ({_shown(source.run.hash)}): {problem}")
        else:
            runs[source.run.id] = source
    names = {}  # source experiment id -> its name here
    for exp in incoming.experiments:
        name = checks.renames.get(exp.name, exp.name)
        problem = incoming.malformed.get(("experiment", exp.id)) or _experiment_problem(session, exp, name, checks)
        if problem:
            refused.append(f"experiment {_shown(exp.name)}: {problem}")
        else:
            names[exp.id] = name
    configs = {source.run.id: source.run.config for source in incoming.runs}
    matrices = {exp.id: exp.yaml_text for exp in incoming.experiments}
    for link in incoming.links:
        where = f"link of experiment id {link.experiment_id} to run id {link.run_id}"
        if link.run_id not in configs or link.experiment_id not in matrices:
            refused.append(f"{where}: no such {'run' if link.run_id not in configs else 'experiment'} there")
        elif problem := _name_problem(link.name) or (link.run_id in runs and checks.link(
                matrices[link.experiment_id], link.name, link.toggles, configs[link.run_id])):
            refused.append(f"{where}: {problem}")  # a refused run's links go with it, unsaid
    if refused and not checks.skip_invalid:
        raise MergeRefused(report.source, refused)
    report.skipped = refused
    _write_checked(session, incoming, runs, names, report)


def _run_problem(session: Session, source: _SourceRun, checks: Checks) -> str | None:
    """Why this row is not a run this database can take (None: it can)."""
    run = source.run
    if not isinstance(run.hash, str) or not HASH.fullmatch(run.hash):
        return "hash: expected 16 to 64 hexadecimal digits"
    if not isinstance(run.config, dict):
        return f"config: expected a JSON object, got {type(run.config).__name__}"
    if run.status not in STATUSES:
        return f"status {_shown(run.status)}: expected one of {', '.join(STATUSES)}"
    if not isinstance(run.toggles, list):
        return "toggles: expected a JSON list"
    if problem := _name_problem(run.name):
        return problem
    if not all(isinstance(text, (str, type(None))) for text in (run.error, run.traceback)):
        return "error and traceback: expected text"
    if problem := _numbers_problem(source):
        return problem
    if checks.signing_key and run.status == "completed" and (
            problem := signature_problem(checks.signing_key, run, source.evals)):
        return problem
    if "seed" in run.config and run.config["seed"] != run.seed:
        return f"runs.seed {_shown(run.seed)} disagrees with its config's seed {_shown(run.config['seed'])}"
    here = session.scalars(select(Run).where(Run.hash == run.hash)).first()
    if here is not None and here.config == run.config:
        return None  # the config this database itself holds under that identity
    return checks.run(run.config, run.hash, run.fingerprint or (here.fingerprint if here else None))


def _numbers_problem(source: _SourceRun) -> str | None:
    """A number column of the run, its evaluations or step metrics holding what no reader can
    compute with: text, inf, or an integer past what it holds (a step past MAX_STEP)."""
    rows = [("runs", source.run), *(("evals", e) for e in source.evals), *(("step_metrics", m) for m in source.steps)]
    for table, row in rows:
        for column in row.__table__.columns:
            if not isinstance(column.type, (Float, Integer)) or column.primary_key:
                continue
            value = getattr(row, column.name)
            limit = MAX_STEP if column.name in STEP_LIKE else 2**63 - 1
            if value is None or (isinstance(value, float) and math.isfinite(value)) or (
                    isinstance(value, int) and not isinstance(value, bool) and abs(value) <= limit):
                continue
            return f"{table}.{column.name} is {_shown(value)}: expected a finite number" + (
                f" from 0 to {MAX_STEP:,}" if column.name in STEP_LIKE else "")
    return None


def _experiment_problem(session: Session, exp: Experiment, name: str, checks: Checks) -> str | None:
    if problem := _name_problem(name):
        return problem
    if not isinstance(exp.description, (str, type(None))):
        return "description: expected text"
    if not isinstance(exp.plan, (dict, type(None))) or not isinstance(exp.looks_taken, (list, type(None))):
        return "plan and looks_taken: expected a JSON object and a JSON list"
    if len(exp.yaml_text or "") > MAX_MATRIX_CHARS:
        return f"its matrix text has {len(exp.yaml_text):,} characters, over the {MAX_MATRIX_CHARS:,} a matrix may have"
    here = session.scalars(select(Experiment).where(Experiment.name == _name(name))).first()
    if here is not None and not checks.same_matrix(here.yaml_text, exp.yaml_text):
        return (f"another matrix (its base, data, factors or trainer differ) than {_shown(name)} here; "
                f"not mixed in: merge it under another name with --rename-from {exp.name}:NEW")
    return None


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return "name: expected text"
    try:
        plain_name(name)
    except ValueError as e:
        return f"name {_shown(name)}: {e}"
    return None


def _name(name: str) -> str:
    """A checked name as it is kept here: NFC, within its cap."""
    return bounded(plain_name(name), MAX_NAME_CHARS)


def _shown(value: object) -> str:
    """A value from the other database in a message: quoted, one line, short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _write_checked(session: Session, incoming: _Incoming, runs: dict[int, _SourceRun],
                   names: dict[int, str], report: MergeReport) -> None:
    run_ids = {}  # source run id -> target run id
    for source_id, source in runs.items():
        run_ids[source_id] = _merge_run(session, source, report)
    exp_ids = {}
    for exp in incoming.experiments:
        if exp.id not in names:
            continue
        here = session.scalars(select(Experiment).where(Experiment.name == _name(names[exp.id]))).first()
        if here is None:
            here = Experiment(name=_name(names[exp.id]), description=bounded(exp.description, MAX_DESCRIPTION_CHARS),
                              **{c: getattr(exp, c) for c in ("yaml_text", "reference", "design", "plan",
                                                              "looks_taken", "created_at", "updated_at")})
            session.add(here)
            session.flush()
            report.experiments_added.append(here.name)
        exp_ids[exp.id] = here.id
    for link in incoming.links:
        run_id, exp_id = run_ids.get(link.run_id), exp_ids.get(link.experiment_id)
        if run_id is None or exp_id is None or session.get(ExperimentRun, (exp_id, run_id)):
            continue
        session.add(ExperimentRun(experiment_id=exp_id, run_id=run_id, name=_name(link.name),
                                  toggles=link.toggles, position=link.position))


def _merge_run(session: Session, source: _SourceRun, report: MergeReport) -> int:
    """The target id of this identity after merging it."""
    theirs = source.run
    here = session.scalars(select(Run).where(Run.hash == theirs.hash)).first()
    if here is None:
        here = Run(hash=theirs.hash, fingerprint=theirs.fingerprint, name=_name(theirs.name),
                   config=theirs.config, toggles=theirs.toggles, seed=theirs.seed, created_at=theirs.created_at,
                   attempt=theirs.attempt, **_outcome(theirs))
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
    for column, value in _outcome(theirs).items():
        setattr(here, column, value)
    report.runs_completed += 1
    _copy_attempt(session, here.id, here.attempt, source, report)
    return here.id


def _outcome(run: Run) -> dict:
    """A run's RUN_FIELDS, its free text within the caps of text written here."""
    return {**{c: getattr(run, c) for c in RUN_FIELDS}, "error": bounded(run.error, MAX_ERROR_CHARS),
            "traceback": run.traceback[-MAX_TRACEBACK_CHARS:] if run.traceback else run.traceback}


def _copy_attempt(session: Session, run_id: int, attempt: int, source: _SourceRun,
                  report: MergeReport) -> None:
    for e in source.evals:
        session.add(Eval(run_id=run_id, attempt=attempt, **{c: getattr(e, c) for c in EVAL_FIELDS}))
    for m in source.steps:
        session.add(StepMetric(run_id=run_id, attempt=attempt,
                               **{c: getattr(m, c) for c in STEP_FIELDS}))
    report.evals_added += len(source.evals)
