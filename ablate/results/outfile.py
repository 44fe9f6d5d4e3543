"""A file a reading command writes (`--out`, `--to`): checked before anything is computed, and
written whole or not at all.

`report -f table --out results.db` once replaced the results database with text. So a path is
refused when it is a results database (told by its content: SQLite's header, or a WAL file's,
whatever its name), a symbolic link (writing through it would change the file it points at, a
`.md` name over a `.conf` target), or anything but a plain file; an existing file of another kind
than the command writes (its suffix) is replaced only with `--force`. The text goes to a
temporary file beside the path first and is then renamed over it, which replaces a link rather
than following it, so even a link placed after the check is not written through.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"
WAL_MAGIC = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")  # a SQLite write-ahead log's first bytes
TEXT_KINDS = {"table": (".txt",), "markdown": (".md", ".markdown"), "csv": (".csv",), "json": (".json",)}  # report's


class OutputError(ValueError):
    """A path a command will not write; the message says why and what to do."""


def is_database(path: Path) -> bool:
    """Whether the file's content is a SQLite database or its write-ahead log."""
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError:
        return False
    return head == SQLITE_HEADER or head[:4] in WAL_MAGIC


def checked(path: str | Path, kinds: tuple[str, ...], *, force: bool = False, named: bool = True) -> Path:
    """`path`, if a command that writes `kinds` (suffixes, e.g. ('.csv',)) may write it there.
    `named`: a new file must carry one of the suffixes too (formats told by the name)."""
    path = Path(path)
    shown = repr(str(path))
    if path.is_symlink():
        raise OutputError(f"cannot write {shown}: it is a symbolic link, and ablate writes through none "
                          f"(it would change {str(path.resolve())!r}); give a plain file's path")
    if path.exists() and not path.is_file():
        raise OutputError(f"cannot write {shown}: it exists and is not a plain file")
    if path.exists() and is_database(path):
        raise OutputError(f"cannot write {shown}: it is a results database, which no output ever "
                          f"replaces; choose another file name")
    own_kind = path.suffix.lower() in kinds
    if named and not own_kind:
        raise OutputError(f"cannot write {shown}: expected a {' or '.join(kinds)} file name")
    if path.exists() and not own_kind and not force:
        raise OutputError(f"cannot write {shown}: it exists and is not a {' or '.join(kinds)} file; "
                          f"pass --force to replace it")
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {shown}: directory {str(path.parent)!r} does not exist")
    return path


def replace(path: Path, write: Callable[[Path], None]) -> Path:
    """Call write(temporary path) beside `path`, then rename the result over `path`: readers
    never see half a file, and a link at `path` is replaced, never followed."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:100]}.", suffix=f".partial{path.suffix}")
    os.close(fd)
    temporary = Path(name)
    try:
        write(temporary)
        if path.exists() and not path.is_symlink():  # keep the file's permissions, as writing in place would
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        else:
            os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except OSError as e:
        raise OutputError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_text(path: Path, text: str) -> Path:
    return replace(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
