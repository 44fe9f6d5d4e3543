"""The results database: every run of every ablation matrix and every evaluation it made.

The store knows nothing about models or training. It keeps configs as JSON dicts, eval
metrics as rows, and the life cycle of each run (queued → running → completed / failed /
interrupted). It is written for many worker processes sharing one database:

* every public method is one short transaction, committed before it returns, so an eval is
  durable the moment it is recorded;
* on SQLite every connection runs in WAL mode with a 30 s busy timeout, and every write
  transaction starts with ``BEGIN IMMEDIATE``: a writer takes the write lock up front instead
  of upgrading a read lock, which is what deadlocks two processes into "database is locked";
  a short retry with backoff remains as a last resort;
* claiming a run is atomic (``BEGIN IMMEDIATE`` on SQLite, ``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL), so parallel workers never train the same run twice;
* a job may only write the terminal fields of the attempt it owns, and ``reap_stale`` turns
  runs whose worker died into ``interrupted`` ones that the next claim picks up again;
* the schema carries a version; a database from another version is refused untouched.

Methods return ORM objects detached from their session (``expire_on_commit=False``): read
their attributes freely, but treat them as read-only snapshots; changing them changes nothing.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

SCHEMA_VERSION = 1

STATUSES = ("queued", "running", "completed", "failed", "interrupted")
CLAIMABLE = ("queued", "interrupted")
TRACEBACK_LIMIT = 4000

EVAL_COLUMNS = (
    "epoch", "val_loss", "val_loss_full", "eval_coverage", "train_loss", "lr", "grad_norm",
    "tokens_seen", "elapsed_s", "tokens_per_s",
)
STEP_COLUMNS = ("train_loss", "lr", "grad_norm")
RESULT_COLUMNS = (
    "final_val_loss", "best_val_loss", "best_step", "param_count", "wall_time_s",
    "tokens_per_s", "steps", "max_steps", "truncated", "device",
)

_SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout=30000",  # first, so switching to WAL waits for other connections
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
_WRITE_TRIES = 5


class StoreError(RuntimeError):
    """A results database that cannot be used as asked, with a message for the user."""


def default_url() -> str:
    """$ABLATE_DB, else results.db in the current directory."""
    return os.environ.get("ABLATE_DB") or "sqlite:///results.db"


def resolve_url(db: str | Path | None) -> str:
    """A URL as given, a bare path as a SQLite URL, None as $ABLATE_DB or ./results.db."""
    if db is None or str(db) == "":
        return default_url()
    text = str(db)
    return text if "://" in text else f"sqlite:///{Path(text).expanduser().absolute()}"


def process_alive(pid: int | None) -> bool:
    """Whether a process with this id exists on this host (signal 0 checks, sends nothing)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    # A zombie answers signal 0 but is dead: a job orphaned by a killed runner stays one for
    # good where PID 1 does not reap (containers without an init), and its run would look alive.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):  # no procfs (macOS), or the process just went away
        return Path(f"/proc/{pid}").exists() or not Path("/proc/self").exists()


def _now() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timestamps stored in UTC and read back timezone-aware on every backend.

    SQLite keeps no zone, so values are converted to UTC before storing and tagged UTC when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


# --------------------------------------------------------------------------------- schema


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Experiment(Base):
    __tablename__ = "experiments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    yaml_text: Mapped[str | None] = mapped_column(Text)
    reference: Mapped[float | None] = mapped_column(Float)
    design: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Run(Base):
    """One training run, identified by the hash of its config; shared by every matrix naming it."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    config: Mapped[dict] = mapped_column(JSON)
    toggles: Mapped[list] = mapped_column(JSON)
    seed: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    host: Mapped[str | None] = mapped_column(String(255))
    device: Mapped[str | None] = mapped_column(String(64))
    pid: Mapped[int | None] = mapped_column(Integer)
    code_version: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    final_val_loss: Mapped[float | None] = mapped_column(Float)
    best_val_loss: Mapped[float | None] = mapped_column(Float)
    best_step: Mapped[int | None] = mapped_column(Integer)
    param_count: Mapped[int | None] = mapped_column(BigInteger)
    wall_time_s: Mapped[float | None] = mapped_column(Float)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    steps: Mapped[int | None] = mapped_column(Integer)
    max_steps: Mapped[int | None] = mapped_column(Integer)
    truncated: Mapped[bool | None] = mapped_column(Boolean)
    result: Mapped[dict | None] = mapped_column(JSON)


class ExperimentRun(Base):
    """A run's place in one matrix: its name and toggles there, and its position."""

    __tablename__ = "experiment_runs"
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True, index=True)
    name: Mapped[str] = mapped_column(String(255))
    toggles: Mapped[list] = mapped_column(JSON)
    position: Mapped[int] = mapped_column(Integer)


class Eval(Base):
    """One evaluation of one attempt; the (run_id, attempt, step) key also indexes run_id."""

    __tablename__ = "evals"
    __table_args__ = (UniqueConstraint("run_id", "attempt", "step", name="uq_evals_run_attempt_step"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_loss_full: Mapped[float | None] = mapped_column(Float)
    eval_coverage: Mapped[float | None] = mapped_column(Float)
    train_loss: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
    grad_norm: Mapped[float | None] = mapped_column(Float)
    tokens_seen: Mapped[int | None] = mapped_column(BigInteger)
    elapsed_s: Mapped[float | None] = mapped_column(Float)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    extra: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StepMetric(Base):
    __tablename__ = "step_metrics"
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_loss: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
    grad_norm: Mapped[float | None] = mapped_column(Float)


@dataclass(frozen=True)
class MatrixEntry:
    """A run as one experiment sees it: its name, toggles and position in that matrix."""

    position: int
    name: str
    toggles: list
    run: Run


# ------------------------------------------------------------------------------ helpers


def _plain(value: Any) -> Any:
    """Numpy / torch scalars to Python numbers, recursively, so they fit columns and JSON."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _split(values: dict, columns: Iterable[str]) -> tuple[dict, dict | None]:
    """Known keys to column values, the rest to a JSON dict (None when empty)."""
    columns = set(columns)
    known = {k: _plain(v) for k, v in values.items() if k in columns}
    extra = {k: v for k, v in values.items() if k not in columns}
    return known, (_plain(extra) or None)


def _is_locked(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "database is locked" in text or "database table is locked" in text


def _sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other backends and in-memory databases."""
    parsed = make_url(url)
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).absolute()


def _check_path(path: Path, create: bool) -> None:
    if not create:
        if not path.is_file():
            raise StoreError(f"no results database at {path}")
        return
    if not path.parent.is_dir():
        raise StoreError(f"cannot create results database {path}: directory {path.parent} does not exist")
    # WAL needs its -wal/-shm files next to the database, so the directory must be writable too.
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise StoreError(f"cannot write results database {path}: permission denied")


def _setup_sqlite(engine: Engine) -> None:
    """WAL + busy timeout on every connection; BEGIN IMMEDIATE for write transactions.

    pysqlite's own transaction handling is turned off (isolation_level=None) so that the
    BEGIN emitted in the "begin" event is the only one: the SQLAlchemy recipe for SQLite.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        write = conn.get_execution_options().get("ablate_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# -------------------------------------------------------------------------------- store


class Store:
    """A connection to the results database. Cheap to keep; call close() to release files."""

    def __init__(self, url: str | None = None, *, create: bool = True):
        """Open (and with create=True initialise) the database; refuse other schema versions.

        create=False is for read-only commands: a missing SQLite file is an error, not created.
        """
        self.url = url or default_url()
        path = _sqlite_path(self.url)
        self.where = str(path) if path else make_url(self.url).render_as_string(hide_password=True)
        if path is not None:
            _check_path(path, create)
        self._engine = create_engine(self.url)
        if self._engine.dialect.name == "sqlite":
            _setup_sqlite(self._engine)
        self._reader = sessionmaker(self._engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self._engine.execution_options(ablate_write=True), expire_on_commit=False
        )
        try:
            self._open(create)
        except OperationalError as exc:
            self.close()
            raise StoreError(f"cannot open results database {self.where}: {exc.orig}") from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- plumbing

    def _open(self, create: bool) -> None:
        """Check the schema version with a read only; write only to initialise an empty DB."""
        version = self._version()
        if version is None:
            if not create:
                raise StoreError(f"{self.where} is empty: no ablate results recorded there yet")
            self._write(self._create_schema)
            version = self._version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.where} was written by a newer ablate (schema {version}, this one reads "
                f"{SCHEMA_VERSION}); upgrade ablate"
            )
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"{self.where} has schema {version}, older than this ablate's {SCHEMA_VERSION}, "
                "and no migration exists yet; use a new database or the ablate that wrote it"
            )

    def _version(self) -> int | None:
        """The stored schema version; None for an empty database."""
        with self._engine.connect() as conn:
            tables = inspect(conn).get_table_names()
            if "meta" not in tables:
                if tables:
                    raise StoreError(
                        f"{self.where} is not an ablate results database (tables: {', '.join(sorted(tables))})"
                    )
                return None
            value = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
        if value is None:
            raise StoreError(f"{self.where} has a meta table but no schema_version")
        return int(value)

    @staticmethod
    def _create_schema(session: Session) -> None:
        conn = session.connection()
        if conn.dialect.name == "postgresql":  # runners starting together: one creates, one waits
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('ablate create schema'))")
        if "meta" in inspect(conn).get_table_names():  # another process got here first
            return
        Base.metadata.create_all(conn)
        session.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))

    def _read(self, fn: Callable[[Session], Any]) -> Any:
        with self._reader() as session, session.begin():
            return fn(session)

    def _write(self, fn: Callable[[Session], Any], *, retry_conflicts: bool = False) -> Any:
        """Run fn in one write transaction and commit it; retry if the database stays locked.

        retry_conflicts also retries unique-key races between processes inserting the same row
        (PostgreSQL; on SQLite BEGIN IMMEDIATE already serialises them): the retry sees the row.
        """
        delay, tries = 0.05, 0
        while True:
            tries += 1
            try:
                with self._writer() as session, session.begin():
                    return fn(session)
            except OperationalError as exc:
                if not _is_locked(exc):
                    raise
                if tries == _WRITE_TRIES:
                    raise StoreError(f"{self.where} stayed locked through {tries} tries: {exc.orig}") from exc
            except IntegrityError:
                if not retry_conflicts or tries == _WRITE_TRIES:
                    raise
            time.sleep(delay * (1 + random.random()))
            delay *= 2

    @staticmethod
    def _owned(session: Session, run_id: int, attempt: int) -> Run | None:
        """The run, locked, if `attempt` is still its current attempt; else None."""
        run = session.scalars(select(Run).where(Run.id == run_id).with_for_update()).first()
        return run if run is not None and run.attempt == attempt else None

    # --------------------------------------------------------------- experiments

    def upsert_experiment(
        self, name: str, description: str | None, yaml_text: str | None, reference: float | None, design: str | None
    ) -> int:
        """Create the experiment or refresh its description/yaml/reference/design. Returns its id."""

        def _upsert(session: Session) -> int:
            exp = session.scalars(select(Experiment).where(Experiment.name == name)).first()
            now = _now()
            if exp is None:
                exp = Experiment(name=name, created_at=now)
                session.add(exp)
            exp.description, exp.yaml_text, exp.design = description, yaml_text, design
            exp.reference = None if reference is None else float(reference)
            exp.updated_at = now
            session.flush()
            return exp.id

        return self._write(_upsert, retry_conflicts=True)

    def add_runs(self, experiment_id: int, planned: list[dict]) -> list[int]:
        """Link the planned runs to the experiment, inserting queued runs for unseen hashes.

        Each dict has hash, name, config, toggles, seed, position. A run whose hash exists is
        reused whatever its status (completed work is shared across matrices); its link to this
        experiment is created or updated, and links to runs no longer planned are removed.
        Idempotent. Returns the run ids in `planned` order.
        """

        def _add(session: Session) -> list[int]:
            if session.get(Experiment, experiment_id) is None:
                raise StoreError(f"no experiment with id {experiment_id} in {self.where}")
            ids = []
            for item in planned:
                run = session.scalars(select(Run).where(Run.hash == item["hash"])).first()
                if run is None:
                    run = Run(
                        hash=item["hash"], name=item["name"], config=_plain(item["config"]),
                        toggles=list(item["toggles"]), seed=item.get("seed"), status="queued",
                        attempt=0, created_at=_now(),
                    )
                    session.add(run)
                    session.flush()
                link = session.get(ExperimentRun, (experiment_id, run.id))
                if link is None:
                    link = ExperimentRun(experiment_id=experiment_id, run_id=run.id)
                    session.add(link)
                link.name, link.toggles, link.position = item["name"], list(item["toggles"]), item["position"]
                ids.append(run.id)
            # The experiment is what its matrix says now: runs the file no longer plans are
            # unlinked (they stay in `runs`, shared, with their results) so reports never mix them in.
            session.execute(delete(ExperimentRun).where(
                ExperimentRun.experiment_id == experiment_id, ExperimentRun.run_id.not_in(ids)))
            return ids

        return self._write(_add, retry_conflicts=True)

    # ---------------------------------------------------------------- run life cycle

    def requeue(self, run_ids: Iterable[int], statuses: set[str]) -> int:
        """Queue again the runs whose status is in `statuses`. Returns how many changed.

        'running' is never requeued, live owner or not: call reap_stale first, which turns runs
        of dead workers into 'interrupted' ones (which claim takes anyway).
        """
        unknown = set(statuses) - set(STATUSES)
        if unknown:
            raise ValueError(f"unknown run status {sorted(unknown)}; known: {STATUSES}")
        targets = sorted(set(statuses) - {"running", "queued"})
        run_ids = list(run_ids)
        if not targets or not run_ids:
            return 0

        def _requeue(session: Session) -> int:
            result = session.execute(
                update(Run).where(Run.id.in_(run_ids), Run.status.in_(targets)).values(status="queued")
            )
            return result.rowcount

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
                run.finished_at = run.error = run.traceback = run.result = None
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

    def heartbeat(self, run_id: int, attempt: int) -> bool:
        """Mark the run alive. False if the attempt is no longer current or not running."""

        def _beat(session: Session) -> bool:
            result = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.attempt == attempt, Run.status == "running")
                .values(heartbeat_at=_now())
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
                        values = {k: _plain(row.get(k)) for k in STEP_COLUMNS}
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
            run.status, run.finished_at, run.error = status, _now(), error
            run.traceback = traceback[-TRACEBACK_LIMIT:] if traceback else None
            return True

        return self._write(_fail)

    def reap_stale(
        self, *, host: str, stale_after_s: float, pid_alive: Callable[[int], bool] = process_alive
    ) -> list[int]:
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
