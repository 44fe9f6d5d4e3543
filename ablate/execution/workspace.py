"""Where `ablate run` writes beside its database: each job's log and each attempt's run
directory, under `<--log-dir>/<matrix>/<database label>/`.

The label is the database's name and a hash of its identity (a random id it keeps, and its URL
without a password): run ids restart in every database, and without it a matrix run into
`a.db` and then into `b.db` wrote b's run 1 over a's log and handed it a's `{run_dir}`, where a
resuming script found another experiment's checkpoint. Nothing here follows a link placed
beforehand: the directories must be directories (a link or a file in the way is a one-line
error, before any run is claimed), a log file's name that holds a link gets a new file, and a
run directory is always made new. Every log directory holds a marker file (`params.OUTPUT_MARKER`)
so that `inputs: ["."]` leaves it out, whatever `--log-dir` calls it.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import IO

from ..storage.database import masked
from ..storage.store import Store
from ..training.params import OUTPUT_MARKER


class WorkspaceError(ValueError):
    """A log directory ablate cannot write safely; the message says why."""


def check_log_dir(log_dir: str | Path) -> None:
    """--log-dir can be a directory: it is one, or the first of its parents that exists is
    (checked before anything is planned, so a file there costs one line, not a run)."""
    path = Path(log_dir).absolute()
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                raise WorkspaceError(f"--log-dir {str(log_dir)!r}: {str(existing)!r} is a file, not a directory")
            return


def database_label(store: Store) -> str:
    """`<the database's name>-<8 hex digits>`, e.g. `results-3fa2b1c0`: one per database."""
    name = Path(store.file).stem if store.file else (store.url.rsplit("/", 1)[-1].split("?")[0] or "db")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:40].strip("._") or "db"
    digest = hashlib.sha256(f"{store.identity()} {masked(store.url)}".encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def prepare(log_dir: str | Path, matrix_name: str, label: str) -> Path:
    """Make `<log_dir>/<matrix_name>/<label>/runs` (each part a real directory, never a link)
    and the marker in `log_dir`; the directory the jobs' logs go to. A file or a link in the
    way: WorkspaceError, before any run is claimed."""
    root = Path(log_dir).absolute()
    check_log_dir(root)
    folder = root
    try:
        root.mkdir(parents=True, exist_ok=True)
        for part in (matrix_name, label, "runs"):
            folder = folder / part
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                raise WorkspaceError(f"{str(folder)!r} is {'a symbolic link' if folder.is_symlink() else 'a file'}, "
                                  f"where ablate keeps its logs; remove it or choose another --log-dir")
            folder.mkdir(exist_ok=True)
        (root / OUTPUT_MARKER).touch()
    except OSError as e:
        raise WorkspaceError(f"cannot write logs under --log-dir {str(log_dir)!r}: {e.strerror or e}") from None
    return folder.parent


def open_log(path: Path) -> IO[str]:
    """A job's log, opened for writing without following a link at its name (a link placed
    there beforehand is removed: the log is a new file, its target untouched)."""
    if path.is_symlink():
        path.unlink()
    return open(path, "w", opener=lambda name, flags: os.open(name, flags | getattr(os, "O_NOFOLLOW", 0), 0o644))
