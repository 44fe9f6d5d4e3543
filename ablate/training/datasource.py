"""Where the titles come from and what identifies them, without importing torch.

A run's identity includes its data's fingerprint, so the runner reads it for every matrix it
plans. Keeping this module free of torch and tokenizers lets `ablate run` and `ablate plan`
start in a fraction of a second; the heavy data work stays in `data.py`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

LOCAL_FORMATS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "json", ".json": "json"}


class DataError(RuntimeError):
    """The data cannot be loaded; the message names the source and what to do."""


def local_format(path: str | Path) -> str | None:
    """The `datasets` loader for a local data file, by its suffix in any case; None for a name
    that may be a hub dataset id."""
    return LOCAL_FORMATS.get(Path(path).suffix.lower())


def fingerprint(source: str) -> str:
    """Identity of the data: a local file by its content, a hub dataset by its id."""
    path = Path(source)
    if local_format(path) or path.exists():
        if not path.is_file():
            raise DataError(f"data file {source!r} does not exist; pass --data PATH to a local "
                            f"csv/parquet/jsonl file with a 'title' column")
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return f"sha256:{digest.hexdigest()}"
    return f"hub:{source}"
