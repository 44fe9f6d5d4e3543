"""Opening a results database for many processes at once, and its transactions.

A `Database` is the engine under the `Store`: it turns `--db` into a URL, checks the file, sets
up SQLite for concurrency, checks and migrates the schema version on open, and runs every
transaction, read or write. The store above it says *what* each transaction does.

* on SQLite every connection runs in WAL mode with a 30 s busy timeout, and every write
  transaction starts with ``BEGIN IMMEDIATE``: a writer takes the write lock up front instead
  of upgrading a read lock, which is what deadlocks two processes into "database is locked";
  a short retry with backoff remains as a last resort;
* an empty database gets the newest schema; an older one is migrated (`migrations`, a copy of
  a SQLite file kept first); a newer one is refused untouched, naming both versions.
"""

from __future__ import annotations

import glob
import os
import random
import re
import shutil
import sqlite3
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .migrations import FIRST_VERSION, MigrationError, added_after, latest_version, stored_version, upgrade
from .schema import Base, Meta, bounded

_SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout=30000",  # first, so switching to WAL waits for other connections
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
_READ_ONLY_PRAGMAS = ("PRAGMA busy_timeout=30000",)  # a reader changes nothing, not even the journal mode
_WRITE_TRIES = 5
NAME_MAX, PATH_MAX = 255, 4096  # bytes of a file name and a path on Linux and macOS
COPY_PREFIX = "ablate-copy-"  # temporary copies of a database: ablate-copy-<pid>-<random>


class StoreError(RuntimeError):
    """A results database that cannot be used as asked, with a message for the user."""


_USERINFO_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@]*:)[^@]*@")  # scheme://user:PASSWORD@ (as SQLAlchemy parses it)
_QUERY_PASSWORD = re.compile(r"([?&;][^=&;#]*pass(?:word)?=)[^&;#]*", re.IGNORECASE)  # ?password=, &sslpassword=


def masked(text: str) -> str:
    """A database URL (or any text holding one) as it may be printed, logged or stored: every
    password in it, in the user-info or in the query, shown as ***."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***@", str(text)))


def secrets_of(url: str) -> list[str]:
    """The passwords a URL holds (to scrub them from a driver's messages, whatever their form)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return []
    found = [parsed.password] + [v for k, v in parsed.query.items() if "pass" in k.lower()]
    flat = [x for v in found if v for x in ([v] if isinstance(v, str) else v)]
    return [str(x) for x in flat if str(x)]


def scrubbed(text: str, url: str) -> str:
    """`text` (an error message) with the URL's passwords masked, wherever they appear in it."""
    text = masked(text)
    for secret in secrets_of(url):
        text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return text


def default_url(fallback: str | None = None) -> str:
    """$ABLATE_DB (a URL or a path, as --db), else `fallback` (a matrix's `db:`), else results.db
    in the current directory."""
    if os.environ.get("ABLATE_DB"):
        try:
            return resolve_url(os.environ["ABLATE_DB"])
        except StoreError as e:
            raise StoreError(f"$ABLATE_DB: {e}") from None
    return resolve_url(fallback) if fallback else "sqlite:///results.db"


def resolve_url(db: str | Path | None) -> str:
    """A URL as given, a bare path as a SQLite URL, None as $ABLATE_DB or ./results.db. Blank
    text and an in-memory database are refused: the jobs are other processes, each would see
    an empty database of its own, and nothing would be kept."""
    if db is None or str(db) == "":
        return default_url()
    text = str(db)
    if not text.strip():
        raise StoreError(f"{text!r} names no results database; expected a .db path or a URL")
    url = text if "://" in text else f"sqlite:///{Path(text).expanduser().absolute()}"
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise StoreError(scrubbed(f"{bounded(text, 200)!r} is not a database URL: {e}", text)) from None
    if parsed.get_backend_name() == "sqlite" and (parsed.database in (None, "", ":memory:")
                                                   or "mode=memory" in url or Path(text).name == ":memory:"):
        raise StoreError(f"{text!r} is an in-memory database: the runs' jobs could not share it and "
                         f"nothing would be kept; expected a .db path or a server URL")
    _sqlite_path(url)  # a path the filesystem can hold
    return url


def _is_locked(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "database is locked" in text or "database table is locked" in text


def _sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other backends and in-memory databases."""
    parsed = make_url(url)
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    path = Path(db).absolute()
    if any(len(os.fsencode(part)) > NAME_MAX for part in path.parts) or len(os.fsencode(str(path))) > PATH_MAX:
        raise StoreError(f"{bounded(str(path), 200)}: a name longer than a file system allows "
                         f"({NAME_MAX} bytes a name, {PATH_MAX} a path)")
    return path


def is_missing(db: str | Path | None) -> bool:
    """Is `db` a SQLite file that does not exist yet? Reading it would find nothing; commands that
    only read (plan) then say so rather than create it."""
    path = _sqlite_path(resolve_url(db))
    return path is not None and not path.exists()


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


def _read_only_uri(path: Path) -> str:
    """SQLite's read-only open of a file (`mode=ro`), `immutable` where that would have to
    create files: in a directory that is not writable (a read-only filesystem or checkout), and
    for a WAL database no writer has open (no -wal file: a reader would leave -wal and -shm
    behind). A rollback-journal file, or a WAL file being written, is read in plain `mode=ro`."""
    with path.open("rb") as f:
        wal = f.read(20)[18:19] == b"\x02"  # the header's file format version: 2 is WAL
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    immutable = not writable or (wal and not path.with_name(path.name + "-wal").exists())
    return f"file:{quote(str(path))}?mode=ro{'&immutable=1' if immutable else ''}"


def _setup_sqlite(engine: Engine, read_only: bool = False) -> None:
    """WAL + busy timeout on every connection; BEGIN IMMEDIATE for write transactions.

    pysqlite's own transaction handling is turned off (isolation_level=None) so that the
    BEGIN emitted in the "begin" event is the only one: the SQLAlchemy recipe for SQLite.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in _READ_ONLY_PRAGMAS if read_only else _SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        write = conn.get_execution_options().get("ablate_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def temporary_copy(path: Path) -> tuple[tempfile.TemporaryDirectory, Path]:
    """A consistent copy of a SQLite file (WAL included, through the backup API), never the
    file itself, in a temporary directory the caller cleans up (it is gone already if copying
    fails). Copies a killed process left behind are removed first: they can be as large as
    the database."""
    _remove_abandoned_copies()
    folder = tempfile.TemporaryDirectory(prefix=f"{COPY_PREFIX}{os.getpid()}-")
    copy = Path(folder.name) / path.name
    try:
        with closing(sqlite3.connect(_read_only_uri(path), uri=True)) as src, \
                closing(sqlite3.connect(copy)) as dst:
            src.backup(dst)
    except sqlite3.DatabaseError as e:
        folder.cleanup()
        raise StoreError(f"cannot read {path} as a results database: {e}") from None
    except BaseException:
        folder.cleanup()
        raise
    return folder, copy


def _remove_abandoned_copies() -> None:
    """Temporary copies whose process is gone (SIGKILLed mid-merge or mid-read)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{COPY_PREFIX}*"):
        pid = folder.name[len(COPY_PREFIX):].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# ------------------------------------------------------------------------------ database


class Database:
    """A connection to the results database. Cheap to keep; call close() to release files."""

    def __init__(self, url: str | None = None, *, create: bool = True, read_only: bool = False,
                 shown_as: str | None = None):
        """Open (and with create=True initialise) the database; migrate an older schema, refuse a
        newer one. create=False is for commands that only read: a missing SQLite file is an
        error; read_only also opens a SQLite file read-only, so reading changes nothing in it.
        `shown_as` names it in messages (a temporary copy by the file it copies)."""
        self.url = url or default_url()
        self.file = _sqlite_path(self.url)
        self.where = shown_as or (str(self.file) if self.file else masked(self.url))
        self.version = latest_version()  # once open: older databases are migrated to it
        self.upgraded: tuple[int, int] | None = None  # (from, to) when opening migrated the schema
        self.backup: Path | None = None  # the copy of the file kept before migrating it
        self.read_only = read_only and self.file is not None
        self._read_path = self.file  # what a read-only open reads: the file, or an upgraded copy of it
        self._copy_dir: tempfile.TemporaryDirectory | None = None
        if self.file is not None:
            _check_path(self.file, create and not self.read_only)
        self._connect()
        try:
            self._open_retrying(create)
        except DBAPIError as exc:  # not a database, cannot connect, locked for longer than the timeout
            self.close()
            reason = " ".join(str(exc.orig).split())  # one line: drivers add hints on their own lines
            raise StoreError(scrubbed(f"cannot open results database {self.where}: {reason}", self.url)) from None
        except MigrationError as e:
            self.close()
            raise StoreError(f"{self.where}: {e}") from None
        except BaseException:
            self.close()
            raise

    @property
    def shown_url(self) -> str:
        """The URL as it may be printed: its passwords masked."""
        return masked(self.url)

    def close(self) -> None:
        self._engine.dispose()
        if self._copy_dir is not None:
            self._copy_dir.cleanup()
            self._copy_dir = None

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- plumbing

    def _connect(self) -> None:
        """The engine and its reading and writing sessions (again after a read-only open had the
        file migrated: an `immutable` open may not see the change)."""
        try:
            self._engine = create_engine(f"sqlite:///{_read_only_uri(self._read_path)}&uri=true"
                                         if self.read_only else self.url)
        except ImportError as e:  # the URL's driver: PostgreSQL's is an extra
            raise StoreError(f"cannot open results database {self.where}: its driver is not installed "
                             f"({e}); for PostgreSQL: pip install 'ablate[postgres]' and a "
                             f"postgresql+psycopg:// URL") from None
        except ArgumentError as e:
            raise StoreError(scrubbed(f"cannot open results database {self.where}: {e}", self.url)) from None
        if self._engine.dialect.name == "sqlite":
            _setup_sqlite(self._engine, self.read_only)
        self._reader = sessionmaker(self._engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self._engine.execution_options(ablate_write=True), expire_on_commit=False
        )

    def _open_retrying(self, create: bool) -> None:
        """`_open`, again after a short wait when SQLite answers "locked" at once rather than
        waiting out its busy timeout (two processes creating one file, switching it to WAL
        together). Opening is idempotent: it re-reads the version each time."""
        delay = 0.05
        for tries in range(1, _WRITE_TRIES + 1):
            started = time.monotonic()
            try:
                return self._open(create)
            except OperationalError as exc:
                waited_out = time.monotonic() - started > 1.0  # a lock held that long: say so now
                if not _is_locked(exc) or waited_out or tries == _WRITE_TRIES:
                    raise
                self._engine.dispose()
                time.sleep(delay * (1 + random.random()))
                delay *= 2

    def _open(self, create: bool) -> None:
        """Read the schema version; write only to initialise an empty database or to migrate."""
        version, latest = self._version(), latest_version()
        if version is None:
            if not create:
                raise StoreError(f"{self.where} is empty: no ablate results recorded there yet")
            self._write(self._create_schema)
            version = self._version()
        if version > latest:
            raise StoreError(
                f"{self.where} was written by a newer ablate (schema {version}, this one reads "
                f"{latest}); upgrade ablate"
            )
        if version < FIRST_VERSION:
            raise StoreError(f"{self.where} has schema {version}: no migration leads from it to this "
                             f"ablate's {latest}; use a new database or the ablate that wrote it")
        self._check_columns(missing_by_design=added_after(version))  # before a migration writes
        if version < latest and self.read_only:
            self._read_an_upgraded_copy()
            version = self._version()
        if version < latest:
            try:
                self.backup = upgrade(self._write, version, self.file)
            except MigrationError as e:
                raise StoreError(f"{self.where}: {e}") from e
            self.upgraded = (version, latest)
        self._check_columns()
        if self.file is not None and not self.read_only:
            self._remove_abandoned_backups()

    def _remove_abandoned_backups(self) -> None:
        """`.bak-vN.partial` copies a killed upgrade left beside the file. The schema is the
        newest now, so no upgrade is writing one (they are written before the version moves)."""
        for partial in self.file.parent.glob(f"{glob.escape(self.file.name)}.bak-v*.partial"):
            partial.unlink(missing_ok=True)

    def _read_an_upgraded_copy(self) -> None:
        """An older file opened to read: read a migrated temporary copy of it (WAL included), so
        that reading writes nothing and the file stays readable by the ablate that wrote it
        (`ablate db upgrade`, or any command that writes, migrates the file itself)."""
        self._copy_dir, copy = temporary_copy(self.file)
        Database(f"sqlite:///{copy}", create=False).close()
        self._engine.dispose()
        self._read_path = copy
        self._connect()

    def _check_columns(self, missing_by_design: set[str] = frozenset()) -> None:
        """Every table and column this ablate uses is there: a damaged or hand-made file that
        claims a schema it does not have is refused before anything is written into it."""
        with self._engine.connect() as conn:
            found = inspect(conn)
            tables = set(found.get_table_names())
            present = {t.name: {c["name"] for c in found.get_columns(t.name)} if t.name in tables else set()
                       for t in Base.metadata.sorted_tables}
        missing = [f"{t.name}.{c.name}" for t in Base.metadata.sorted_tables for c in t.columns
                   if c.name not in present[t.name] and f"{t.name}.{c.name}" not in missing_by_design]
        if missing:
            raise StoreError(f"{self.where} claims schema {self.version} but lacks {', '.join(missing[:5])}"
                             f"{' …' if len(missing) > 5 else ''}: not a database this ablate can use")

    def _version(self) -> int | None:
        """The stored schema version; None for an empty database."""
        with self._engine.connect() as conn:
            tables = inspect(conn).get_table_names()
            if tables and "meta" not in tables:
                raise StoreError(
                    f"{self.where} is not an ablate results database (tables: {', '.join(sorted(tables))})"
                )
            version = stored_version(conn)
        if version is None and tables:
            raise StoreError(f"{self.where} has a meta table but no schema_version")
        return version

    @staticmethod
    def _create_schema(session: Session) -> None:
        conn = session.connection()
        if conn.dialect.name == "postgresql":  # runners starting together: one creates, one waits
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('ablate create schema'))")
        if "meta" in inspect(conn).get_table_names():  # another process got here first
            return
        Base.metadata.create_all(conn)
        session.add(Meta(key="schema_version", value=str(latest_version())))

    def _read(self, fn: Callable[[Session], Any]) -> Any:
        try:
            with self._reader() as session, session.begin():
                return fn(session)
        except DBAPIError as exc:  # locked past the busy timeout, the file gone or damaged, the disk gone
            raise StoreError(scrubbed(f"{self.where}: {exc.orig}", self.url)) from exc

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
                if not _is_locked(exc):  # e.g. the disk full: a one-line error, not a traceback
                    raise StoreError(scrubbed(f"{self.where}: {exc.orig}", self.url)) from exc
                if tries == _WRITE_TRIES:
                    raise StoreError(scrubbed(f"{self.where} stayed locked through {tries} tries: {exc.orig}",
                                              self.url)) from exc
            except IntegrityError:
                if not retry_conflicts or tries == _WRITE_TRIES:
                    raise
            time.sleep(delay * (1 + random.random()))
            delay *= 2
