"""Schema migrations: how a results database written by an older ablate becomes this one's.

A database records its schema version in `meta`. Each migration is a small function that takes
a database of one version to the next; `MIGRATIONS` holds them in order, so this ablate writes
version FIRST_VERSION + len(MIGRATIONS). Opening a database (`Store`, `ablate db upgrade`)
applies the missing ones:

* each migration runs in its own write transaction, which also records the version it reaches:
  a migration that fails rolls back and leaves the database at the version before it;
* a SQLite file is copied to `<file>.bak-v<version>` before the first change, inside the first
  migration's transaction, so the copy is exactly the file that was upgraded;
* the version is read again inside each transaction, so processes that open one database
  together migrate it once (the others find it done);
* a database newer than the code is refused by the store, naming both versions.

A new column or table: add it to `schema.py` and append a migration that adds it to existing
databases (both backends: plain DDL, or `conn.dialect.name` where they differ). The tests keep
a database written by schema 1 and require it, migrated, to equal a freshly created one.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import Connection, inspect, select, update
from sqlalchemy.orm import Session

from .schema import Base, Meta

FIRST_VERSION = 1


@dataclass(frozen=True)
class Migration:
    why: str  # one line: what changes and what for
    apply: Callable[[Connection], None]  # runs inside the migration's transaction
    adds: tuple[str, ...] = ()  # "table.column"s it adds: a file older than it lacks them rightly


def add_columns(table: str, columns: tuple[str, ...], why: str) -> Migration:
    """A migration adding nullable columns of schema.py, each typed as its dialect spells it."""
    def apply(conn: Connection) -> None:
        for column in columns:
            sql_type = Base.metadata.tables[table].c[column].type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
    return Migration(why, apply, adds=tuple(f"{table}.{c}" for c in columns))


MIGRATIONS: list[Migration] = [  # MIGRATIONS[i] takes schema FIRST_VERSION + i to the next
    add_columns("runs", ("requeued_at", "current_step"),
                "runs.requeued_at, so runners started with --rerun together train each run once, "
                "and runs.current_step, progress between evaluations"),
    add_columns("experiments", ("plan", "looks_taken"),
                "experiments.plan, the verdicts' δ and seed plan as first run (an edited matrix cannot "
                "change them), and experiments.looks_taken, the looks seeds-until-decided read"),
    add_columns("runs", ("fingerprint",),
                "runs.fingerprint, so a merge can recompute a run's identity from its config"),
]


def added_after(version: int) -> set[str]:
    """The columns ("table.column") a database of schema `version` lacks by design."""
    return {column for m in MIGRATIONS[max(version - FIRST_VERSION, 0):] for column in m.adds}


class MigrationError(RuntimeError):
    """A migration failed; the database is left at the version before it."""


def latest_version() -> int:
    """The schema version this ablate writes and reads."""
    return FIRST_VERSION + len(MIGRATIONS)


def stored_version(conn: Connection) -> int | None:
    """The version a database records; None when it has no meta table or no version in it."""
    if "meta" not in inspect(conn).get_table_names():
        return None
    value = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise MigrationError(f"schema_version {value!r} in its meta table is not a number: "
                             f"not a database this ablate wrote") from None


def backup_path(db_file: Path, version: int) -> Path:
    return db_file.with_name(f"{db_file.name}.bak-v{version}")


def upgrade(write: Callable[[Callable[[Session], Any]], Any], found: int, db_file: Path | None) -> Path | None:
    """Apply every migration after schema `found`, each through `write` (one write transaction);
    returns the copy of `db_file` kept from before the first change (None without a file)."""
    for version in range(found, latest_version()):
        migration = MIGRATIONS[version - FIRST_VERSION]
        copy_from = db_file if version == found else None
        try:
            write(lambda session: _migrate(session.connection(), version, migration, copy_from))
        except Exception as e:
            raise MigrationError(f"migrating schema {version} to {version + 1} ({migration.why}) failed, "
                                 f"so the database stays at schema {version}: {type(e).__name__}: {e}") from e
    return backup_path(db_file, found) if db_file is not None else None


def _migrate(conn: Connection, version: int, migration: Migration, copy_from: Path | None) -> None:
    if conn.dialect.name == "postgresql":  # processes opening it together: one migrates, one waits
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('ablate migrate'))")
    if stored_version(conn) != version:  # another process got here first
        return
    if copy_from is not None:
        _copy_sqlite(copy_from, backup_path(copy_from, version))
    migration.apply(conn)
    conn.execute(update(Meta).where(Meta.key == "schema_version").values(value=str(version + 1)))


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy through SQLite's backup API (it reads the WAL too). Called while this
    process holds the write lock, so no one can change the file between the copy and the
    migration; written beside the target and renamed, so a copy is never half there."""
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(partial)) as dst:
            src.backup(dst)
    except BaseException:  # a failed copy leaves nothing behind
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
