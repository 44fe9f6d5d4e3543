"""The results database's tables: what is kept about every experiment, run and evaluation.

These classes describe the newest schema; `migrations` brings a database written by an older
ablate to it, and `store` holds every transaction on it. Nothing here knows about models or
training: configs and results are JSON, metrics are columns. A new column or table goes here,
together with the migration that adds it to existing databases.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime, timezone
from typing import Any

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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STATUSES = ("queued", "running", "completed", "failed", "interrupted")
EVAL_COLUMNS = (  # an evaluation's metrics with their own column; the others go to `extra`
    "epoch", "val_loss", "val_loss_full", "eval_coverage", "train_loss", "lr", "grad_norm",
    "tokens_seen", "elapsed_s", "tokens_per_s",
)
STEP_COLUMNS = ("train_loss", "lr", "grad_norm")
RESULT_COLUMNS = (  # a completed attempt's results with their own column; the others go to `result`
    "final_val_loss", "best_val_loss", "best_step", "param_count", "wall_time_s",
    "tokens_per_s", "steps", "max_steps", "truncated", "device",
)


# Caps on free text, in characters: a longer value is cut to the cap, its end a marker saying how
# much was cut (a run's whole error and traceback stay in its log file). Every reading command
# then stays fast whatever a trainer raised or another database held.
MAX_ERROR_CHARS = 2_000  # runs.error: one line
MAX_TRACEBACK_CHARS = 4_000  # runs.traceback: its last characters, where the error is
MAX_NAME_CHARS = 200  # run names (a matrix's own names are shorter: matrix.NAME_PATTERN)
MAX_DESCRIPTION_CHARS = 20_000  # experiments.description
MAX_MATRIX_CHARS = 1_000_000  # experiments.yaml_text: as a matrix file may be (execution.safe_yaml)
MAX_STEP = 2**53 - 1  # the largest step every reader holds exactly (a float, JSON, pandas); SQLite's 2**63 - 1 is not


def bounded(text: str | None, cap: int) -> str | None:
    """`text` cut to at most `cap` characters, a marker at its end when it was cut."""
    if text is None or len(text) <= cap:
        return text
    marker = f" [cut: {len(text):,} characters in all]"
    return text[:cap - len(marker)] + marker


BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"  # reorder text as it is shown


def plain_name(name: str) -> str:
    """A name as it is kept: one line of text without bidirectional controls (which make one
    name look like another), NFC-normalised (so look-alikes are one name); else ValueError."""
    bad = sorted({f"U+{ord(c):04X}" for c in name if c in BIDI_CONTROLS or unicodedata.category(c) == "Cc"})
    if bad:
        raise ValueError(f"a name may not hold control or bidirectional characters ({', '.join(bad)})")
    return unicodedata.normalize("NFC", name)


def plain(value: Any) -> Any:
    """A value as a JSON column holds it: numpy / torch scalars as Python numbers, tuples and
    arrays as lists, dict keys as strings, recursively."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or getattr(value, "ndim", 0) > 0:
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


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

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        """Reading a value that is no date (a hand-edited or merged row) gives None rather than
        failing the whole read: one bad timestamp must not hide every run."""
        parse = super().result_processor(dialect, coltype)
        if parse is None:
            return None

        def tolerant(value: Any) -> datetime | None:
            try:
                return parse(value)
            except (ValueError, TypeError, OverflowError):
                return None
        return tolerant


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
    # What its verdicts rest on (δ, the seed plan, the looks), as it was when it first ran; an
    # edited matrix changes yaml_text, never this.
    plan: Mapped[dict | None] = mapped_column(JSON)
    # The seed counts at which seeds-until-decided read the verdicts, in order.
    looks_taken: Mapped[list | None] = mapped_column(JSON)


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
    # When a --rerun last queued it again: runners started with --rerun together join one rerun.
    requeued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last optimizer step the running attempt reported: progress between evaluations.
    current_step: Mapped[int | None] = mapped_column(Integer)
    # The content hash of its data (or your trainer's inputs) that entered `hash`: with it, a
    # database that receives this run by a merge can recompute its identity from its config.
    fingerprint: Mapped[str | None] = mapped_column(Text)


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
