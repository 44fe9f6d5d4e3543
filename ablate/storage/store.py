"""The results database: every run of every ablation matrix and every evaluation it made.

The store knows nothing about models or training. It keeps configs as JSON dicts, eval
metrics as rows, and the life cycle of each run (queued → running → completed / failed /
interrupted). It is written for many worker processes sharing one database:

* every public method is one short transaction (`database.Database`: write transactions take
  the lock up front and retry), committed before it returns, so an eval is durable the moment
  it is recorded;
* claiming a run is atomic (``BEGIN IMMEDIATE`` on SQLite, ``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL), so parallel workers never train the same run twice;
* a job may only write the terminal fields of the attempt it owns, and ``reap_stale`` turns
  runs whose worker died into ``interrupted`` ones that the next claim picks up again;
* the tables are `schema.py`'s; opening a database checks (and migrates) its schema version.

Methods return ORM objects detached from their session (``expire_on_commit=False``): read
their attributes freely, but treat them as read-only snapshots; changing them changes nothing.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .database import Database, StoreError, resolve_url
from .schema import (EVAL_COLUMNS, MAX_DESCRIPTION_CHARS, MAX_ERROR_CHARS, MAX_STEP, MAX_TRACEBACK_CHARS,
                     RESULT_COLUMNS, STATUSES, STEP_COLUMNS, Eval, Experiment, ExperimentRun, Meta, Run, StepMetric,
                     bounded, plain)
from .signing import SIGNATURE, signature

CLAIMABLE = ("queued", "interrupted")


@dataclass(frozen=True)
class MatrixEntry:
    """A run as one experiment sees it: its name, toggles and position in that matrix."""

    position: int
    name: str
    toggles: list
    run: Run


def _split(values: dict, columns: Iterable[str]) -> tuple[dict, dict | None]:
    """Known keys to column values, the rest to a JSON dict (None when empty)."""
    columns = set(columns)
    known = {k: plain(v) for k, v in values.items() if k in columns}
    extra = {k: v for k, v in values.items() if k not in columns}
    return known, (plain(extra) or None)


def _now() -> datetime:
    return datetime.now(timezone.utc)



class Store(Database):
    """The results database's transactions: experiments, the run life cycle, and reads."""

    signing_key: str | None = None  # signs each completed run's results (`signing`)

    @staticmethod
    def _owned(session: Session, run_id: int, attempt: int) -> Run | None:
        """The run, locked, if `attempt` is still its current attempt; else None."""
        run = session.scalars(select(Run).where(Run.id == run_id).with_for_update()).first()
        return run if run is not None and run.attempt == attempt else None

    # --------------------------------------------------------------- experiments

    def upsert_experiment(
        self, name: str, description: str | None, yaml_text: str | None, reference: float | None, design: str | None,
        plan: dict | None = None,
    ) -> int:
        """Create the experiment or refresh its description/yaml/reference/design; its `plan` is
        kept from the first time one is given, marked `after_data` when the experiment already had
        completed runs then (a database older than plans). Returns its id."""

        def _upsert(session: Session) -> int:
            exp = session.scalars(select(Experiment).where(Experiment.name == name)).first()
            now = _now()
            if exp is None:
                exp = Experiment(name=name, created_at=now)
                session.add(exp)
            exp.description, exp.yaml_text, exp.design = bounded(description, MAX_DESCRIPTION_CHARS), yaml_text, design
            exp.reference = None if reference is None else float(reference)
            if exp.plan is None and plan is not None:  # kept from the first time; marked if data came first
                exp.plan = {**plan, "after_data": True} if exp.id is not None and session.scalar(
                    select(ExperimentRun.run_id).join(Run, Run.id == ExperimentRun.run_id)
                    .where(ExperimentRun.experiment_id == exp.id, Run.status == "completed").limit(1)) else plan
            exp.updated_at = now
            session.flush()
            return exp.id

        return self._write(_upsert, retry_conflicts=True)

    def record_look(self, experiment: str, seeds: int) -> None:
        """Seeds-until-decided read the verdicts at `seeds` seeds: kept once, in order."""
        def _record(session: Session) -> None:
            exp = session.scalars(select(Experiment).where(Experiment.name == experiment).with_for_update()).first()
            if exp is not None and seeds not in (exp.looks_taken or []):
                exp.looks_taken = [*(exp.looks_taken or []), seeds]

        self._write(_record, retry_conflicts=True)

    def add_runs(self, experiment_id: int, planned: list[dict], keep: Iterable[str] = ()) -> list[int]:
        """Link the planned runs to the experiment, inserting queued runs for unseen hashes.

        Each dict has hash, name, config, toggles, seed, position (and the fingerprint its hash
        holds). A run whose hash exists is reused whatever its status (completed work is shared
        across matrices), its config refreshed to the plan's: what lies outside the identity
        (where its data or workdir is, its timeout) is what the matrix says now; its link to this
        experiment is created or updated, and links to runs no longer planned are removed, but
        for runs whose hash is in `keep` (a later round of seeds-until-decided). Idempotent.
        Returns the run ids in `planned` order.
        """

        def _add(session: Session) -> list[int]:
            if session.get(Experiment, experiment_id) is None:
                raise StoreError(f"no experiment with id {experiment_id} in {self.where}")
            ids = []
            for item in planned:
                run = session.scalars(select(Run).where(Run.hash == item["hash"])).first()
                if run is None:
                    run = Run(
                        hash=item["hash"], name=item["name"], config=plain(item["config"]),
                        toggles=list(item["toggles"]), seed=item.get("seed"), status="queued",
                        attempt=0, created_at=_now(),
                    )
                    session.add(run)
                    session.flush()
                run.config, run.fingerprint = plain(item["config"]), run.fingerprint or item.get("fingerprint")
                link = session.get(ExperimentRun, (experiment_id, run.id))
                if link is None:
                    link = ExperimentRun(experiment_id=experiment_id, run_id=run.id)
                    session.add(link)
                link.name, link.toggles, link.position = item["name"], list(item["toggles"]), item["position"]
                ids.append(run.id)
            # The experiment is what its matrix says now: runs the file no longer plans are
            # unlinked (they stay in `runs`, shared, with their results) so reports never mix them in.
            kept = ids + list(session.scalars(select(Run.id).where(Run.hash.in_(set(keep))))) if keep else ids
            session.execute(delete(ExperimentRun).where(
                ExperimentRun.experiment_id == experiment_id, ExperimentRun.run_id.not_in(kept)))
            return ids

        return self._write(_add, retry_conflicts=True)

    # ---------------------------------------------------------------- run life cycle

    def requeue(self, run_ids: Iterable[int], statuses: set[str]) -> int:
        """Queue again, as one rerun, the runs whose status is in `statuses`; returns how many.

        Two runners started with `--rerun all` a few seconds apart must train each run once, so
        a rerun joins the one still open on these runs rather than starting another: while some
        run the newest rerun queued (its `requeued_at`) is not yet finished (queued, running or
        interrupted), the runs it queued are left alone and only those it did not cover join it,
        under its stamp. A rerun killed midway is thereby continued, not restarted; once every
        run it queued has finished, the next rerun is a new one.

        'running' is never requeued, live owner or not: call reap_stale first, which turns runs
        of dead workers into 'interrupted' ones (which claim takes anyway).
        """
        unknown = set(statuses) - set(STATUSES)
        if unknown:
            raise ValueError(f"unknown run status {sorted(unknown)}; known: {STATUSES}")
        targets = set(statuses) - {"running", "queued"}
        run_ids = list(run_ids)
        if not targets or not run_ids:
            return 0

        def _requeue(session: Session) -> int:
            rows = session.execute(  # row locks serialise concurrent reruns on PostgreSQL
                select(Run.id, Run.status, Run.requeued_at).where(Run.id.in_(run_ids))
                .order_by(Run.id).with_for_update()
            ).all()
            newest = max((r.requeued_at for r in rows if r.requeued_at is not None), default=None)
            open_rerun = newest is not None and any(
                r.requeued_at == newest and r.status in ("queued", "running", "interrupted") for r in rows)
            stamp = newest if open_rerun else _now()
            chosen = [r.id for r in rows
                      if r.status in targets and not (open_rerun and r.requeued_at == newest)]
            if chosen:
                session.execute(update(Run).where(Run.id.in_(chosen))
                                .values(status="queued", requeued_at=stamp))
            return len(chosen)

        return self._write(_requeue)

    def claim(self, run_ids: list[int], *, host: str, pid: int, code_version: str) -> Run | None:
        """Atomically take the first queued or interrupted run in `run_ids` order; None if none.

        The run becomes 'running' with attempt + 1, fresh timestamps and owner, and the results
        of any earlier attempt cleared. On SQLite the BEGIN IMMEDIATE transaction makes the
        select+update atomic; on PostgreSQL each candidate is locked FOR UPDATE SKIP LOCKED and
        re-checked, so a row another worker is claiming is skipped rather than waited for.
        """
        order: dict[int, int] = {}
        for i, run_id in enumerate(run_ids):
            order.setdefault(run_id, i)

        def _claim(session: Session) -> Run | None:
            candidates = session.scalars(
                select(Run.id).where(Run.id.in_(list(order)), Run.status.in_(CLAIMABLE))
            ).all()
            for run_id in sorted(candidates, key=order.__getitem__):
                run = session.scalars(
                    select(Run)
                    .where(Run.id == run_id, Run.status.in_(CLAIMABLE))
                    .with_for_update(skip_locked=True)  # compiles to nothing on SQLite
                ).first()
                if run is None:
                    continue
                now = _now()
                run.status, run.attempt = "running", run.attempt + 1
                run.started_at = run.heartbeat_at = now
                run.host, run.pid, run.code_version = host, pid, code_version
                run.finished_at = run.error = run.traceback = run.result = run.current_step = None
                for column in RESULT_COLUMNS:
                    setattr(run, column, None)
                return run
            return None

        return self._write(_claim) if order else None

    def set_pid(self, run_id: int, pid: int, device: str | None) -> None:
        """Record the process that actually trains the run (it may differ from the claimer)."""
        self._write(
            lambda s: s.execute(update(Run).where(Run.id == run_id).values(pid=pid, device=device))
        )

    def heartbeat(self, run_id: int, attempt: int, step: int | None = None) -> bool:
        """Mark the run alive, and record the optimizer step it reached where given. False if
        the attempt is no longer current or not running."""
        values = {"heartbeat_at": _now(), **({} if step is None else {"current_step": step})}

        def _beat(session: Session) -> bool:
            result = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.attempt == attempt, Run.status == "running")
                .values(**values)
            )
            return result.rowcount > 0

        return self._write(_beat)

    def record_eval(self, run_id: int, attempt: int, metrics: dict, step_metrics: Iterable[dict] = ()) -> bool:
        """Store one evaluation, the per-step metrics since the last one, and a heartbeat.

        `metrics` needs 'step'; keys in EVAL_COLUMNS go to columns, all others into `extra`.
        Each step-metric dict needs 'step'; only STEP_COLUMNS are kept. Rows that exist already
        are left alone, so re-recording is harmless. Returns whether the eval row was new.
        """
        step = int(metrics["step"])
        if not 0 <= step <= MAX_STEP:
            raise StoreError(f"an evaluation at step {step}: expected a step from 0 to {MAX_STEP:,} "
                             f"(2**53 - 1, the largest every reader holds exactly)")
        known, extra = _split({k: v for k, v in metrics.items() if k != "step"}, EVAL_COLUMNS)
        step_rows = [dict(m) for m in step_metrics]

        def _record(session: Session) -> bool:
            exists = session.scalar(
                select(Eval.id).where(Eval.run_id == run_id, Eval.attempt == attempt, Eval.step == step)
            )
            if exists is None:
                session.add(Eval(run_id=run_id, attempt=attempt, step=step, extra=extra, created_at=_now(), **known))
            if step_rows:
                wanted = [int(m["step"]) for m in step_rows]
                have = set(
                    session.scalars(
                        select(StepMetric.step).where(
                            StepMetric.run_id == run_id, StepMetric.attempt == attempt, StepMetric.step.in_(wanted)
                        )
                    )
                )
                for row_step, row in zip(wanted, step_rows):
                    if row_step not in have:
                        have.add(row_step)
                        values = {k: plain(row.get(k)) for k in STEP_COLUMNS}
                        session.add(StepMetric(run_id=run_id, attempt=attempt, step=row_step, **values))
            session.execute(
                update(Run)
                .where(Run.id == run_id, Run.attempt == attempt, Run.status == "running")
                .values(heartbeat_at=_now())
            )
            return exists is None

        return self._write(_record)

    def finish(self, run_id: int, attempt: int, result: dict) -> bool:
        """Mark the attempt completed with its results; keys outside RESULT_COLUMNS go to `result`.

        Returns False (and changes nothing) if `attempt` is no longer the run's current attempt.
        """
        known, extra = _split(result, RESULT_COLUMNS)

        def _finish(session: Session) -> bool:
            run = self._owned(session, run_id, attempt)
            if run is None:
                return False
            for column, value in known.items():
                setattr(run, column, bool(value) if column == "truncated" and value is not None else value)
            run.result = extra
            run.status, run.finished_at, run.error, run.traceback = "completed", _now(), None, None
            if self.signing_key:
                evals = session.scalars(select(Eval).where(Eval.run_id == run_id, Eval.attempt == attempt)
                                        .order_by(Eval.step)).all()
                run.result = {**(extra or {}), SIGNATURE: signature(self.signing_key, run, list(evals))}
            return True

        return self._write(_finish)

    def fail(self, run_id: int, attempt: int, error: str, traceback: str = "", status: str = "failed") -> bool:
        """Mark the attempt failed (or interrupted), keeping the tail of its traceback.

        Returns False (and changes nothing) if `attempt` is no longer the run's current attempt.
        """
        if status not in ("failed", "interrupted"):
            raise ValueError(f"fail() sets 'failed' or 'interrupted', not {status!r}")

        def _fail(session: Session) -> bool:
            run = self._owned(session, run_id, attempt)
            if run is None:
                return False
            run.status, run.finished_at = status, _now()
            run.error = bounded(" ".join(error.split()), MAX_ERROR_CHARS)  # one line
            run.traceback = traceback[-MAX_TRACEBACK_CHARS:] if traceback else None
            return True

        return self._write(_fail)

    def reap_stale(self, *, host: str, stale_after_s: float, pid_alive: Callable[[int | None], bool]) -> list[int]:
        """Mark 'running' runs whose worker is gone as 'interrupted'; returns their ids.

        Gone means: no heartbeat for stale_after_s seconds (any host), or, on this host, a
        process id that no longer exists. The error field says which.
        """

        def _reap(session: Session) -> list[int]:
            now = _now()
            cutoff = now - timedelta(seconds=stale_after_s)
            reaped = []
            for run in session.scalars(select(Run).where(Run.status == "running").order_by(Run.id)):
                last = run.heartbeat_at or run.started_at
                if last is None or last < cutoff:
                    seen = last.isoformat(timespec="seconds") if last else "never"
                    why = f"no heartbeat for over {stale_after_s:g}s (last {seen}, host {run.host}, pid {run.pid})"
                elif run.host == host and not pid_alive(run.pid):
                    why = f"worker process {run.pid} on {host} is gone"
                else:
                    continue
                run.status, run.finished_at, run.error = "interrupted", now, why
                reaped.append(run.id)
            return reaped

        return self._write(_reap)

    def identity(self) -> str:
        """A random id this database keeps for good (made on first asking): two databases, even
        one at a path where another was deleted, never share it, so files named after it (run
        logs, run directories) never mix their runs."""
        def _identity(session: Session) -> str:
            found = session.get(Meta, "database_id")
            if found is None:
                found = Meta(key="database_id", value=uuid.uuid4().hex)
                session.add(found)
            return found.value

        found = self._read(lambda session: session.get(Meta, "database_id"))
        return found.value if found is not None else self._write(_identity, retry_conflicts=True)

    # ------------------------------------------------------------------------ reads

    def experiment(self, name: str) -> Experiment | None:
        return self._read(lambda s: s.scalars(select(Experiment).where(Experiment.name == name)).first())

    def run(self, run_id: int) -> Run | None:
        return self._read(lambda s: s.get(Run, run_id))

    def query(self, statement: Any) -> list:
        """Rows of any SELECT, in one read transaction (for the results API and reports)."""
        return self._read(lambda session: session.execute(statement).all())

    def runs_by_hash(self, hashes: Iterable[str]) -> dict[str, Run]:
        """Runs already known under these identities, from any experiment."""
        wanted = list(hashes)
        return self._read(lambda s: {r.hash: r for r in s.scalars(select(Run).where(Run.hash.in_(wanted)))})

    def completed_runs(self) -> list[Run]:
        return self._read(lambda s: list(s.scalars(select(Run).where(Run.status == "completed"))))

    def runs_for(self, experiment_id: int) -> list[MatrixEntry]:
        """The experiment's runs in matrix order, each with its current status and results."""

        def _runs(session: Session) -> list[MatrixEntry]:
            rows = session.execute(
                select(ExperimentRun, Run)
                .join(Run, Run.id == ExperimentRun.run_id)
                .where(ExperimentRun.experiment_id == experiment_id)
                .order_by(ExperimentRun.position, ExperimentRun.run_id)
            ).all()
            return [MatrixEntry(link.position, link.name, link.toggles, run) for link, run in rows]

        return self._read(_runs)

    def evals(self, run_id: int, attempt: int | None = None) -> list[Eval]:
        """The evals of one attempt in step order; by default the run's current attempt."""
        return self._read(lambda s: self._rows(s, Eval, run_id, attempt))

    def step_metrics(self, run_id: int, attempt: int | None = None) -> list[StepMetric]:
        """The per-step metrics of one attempt in step order; by default the current attempt."""
        return self._read(lambda s: self._rows(s, StepMetric, run_id, attempt))

    @staticmethod
    def _rows(session: Session, model: type[Eval] | type[StepMetric], run_id: int, attempt: int | None) -> list:
        if attempt is None:
            attempt = session.scalar(select(Run.attempt).where(Run.id == run_id))
        query = select(model).where(model.run_id == run_id, model.attempt == attempt).order_by(model.step)
        return list(session.scalars(query))


@contextmanager
def open_store(db: str | Path | Store | None = None, *, create: bool = False,
               read_only: bool = False) -> Iterator[Store]:
    """The store behind `db` (a SQLAlchemy URL, a .db path, or None for `default_url()`), closed
    again after; an open Store is used as it is and left open. Only with `create` is a missing
    database created: commands that only read never leave an empty file behind, and with
    `read_only` (SQLite) never change the file they read."""
    if isinstance(db, Store):
        yield db
        return
    with Store(resolve_url(db), create=create, read_only=read_only) as store:
        yield store
