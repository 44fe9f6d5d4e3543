"""Where the titles come from and what identifies them, without importing torch.

A run's identity includes its data's fingerprint, so the runner reads it for every matrix it
plans. Keeping this module free of torch and tokenizers lets `ablate run` and `ablate plan`
start in a fraction of a second; the heavy data work stays in `data.py`.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

LOCAL_FORMATS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "json", ".json": "json"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")  # the `datasets` loaders read these as they are

# Data that ships inside the package (see builtin/SOURCE.md), named `builtin:NAME` wherever a
# data path is accepted, so a bare clone can train and test with no file beside it.
BUILTIN_PREFIX = "builtin:"
BUILTIN = {"hacker_news": "hacker_news.csv.gz"}
BUILTIN_HN = BUILTIN_PREFIX + "hacker_news"


class DataError(RuntimeError):
    """The data cannot be loaded; the message names the source and what to do."""


def local_format(path: str | Path) -> str | None:
    """The `datasets` loader for a local data file, by its suffix in any case (a compressed
    file by the suffix before its compression's); None for a name that may be a hub dataset id."""
    name = str(path)
    if name.startswith(BUILTIN_PREFIX):
        name = BUILTIN.get(name.removeprefix(BUILTIN_PREFIX), "")
    suffixes = [s.lower() for s in Path(name).suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes.pop()
    return LOCAL_FORMATS.get(suffixes[-1]) if suffixes else None


def local_path(source: str | Path) -> str:
    """The file behind a data setting: `builtin:NAME` is a file of the package, anything else
    is itself."""
    text = str(source)
    if not text.startswith(BUILTIN_PREFIX):
        return text
    name = text.removeprefix(BUILTIN_PREFIX)
    if name not in BUILTIN:
        raise DataError(f"data {text!r}: no such built-in data; expected one of "
                        + ", ".join(BUILTIN_PREFIX + n for n in BUILTIN))
    return str(resources.files(__package__) / "builtin" / BUILTIN[name])


def looks_local(source: str) -> bool:
    """A path, not a hub dataset id: a data-file suffix, or a name no hub id has (absolute,
    ./ ../ ~), or something there on disk."""
    return bool(local_format(source)) or source.startswith(("/", ".", "~")) or Path(source).exists()


def fingerprint(source: str) -> str:
    """Identity of the data: a local file by its content, a hub dataset by its id."""
    path = Path(local_path(source)).expanduser()
    if looks_local(source):
        if not path.is_file():
            raise DataError(f"data file {source!r} does not exist; pass --data PATH to a local "
                            f"csv/parquet/jsonl file with a 'title' column")
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return f"sha256:{digest.hexdigest()}"
    return f"hub:{source}"


def check_titles(source: str, tokens_per_batch: int) -> None:
    """A local data file, read once before any run starts, so that bad data fails the command
    and not every run in turn: readable as its format, a `title` column of text, and enough
    text for one batch (a title gives at most one token per character, plus its <eos>)."""
    import pandas as pd

    kind = local_format(source)
    if kind is None:
        return  # a hub dataset: loaded by the job
    read = {"csv": pd.read_csv, "parquet": pd.read_parquet,
            "json": lambda p: pd.read_json(p, lines=".jsonl" in [x.lower() for x in Path(p).suffixes])}[kind]
    try:
        frame = read(Path(local_path(source)).expanduser())  # builtin:NAME is a file of the package
    except (ValueError, OSError, ImportError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise DataError(f"data file {source!r} cannot be read as {kind}: {' '.join(str(e).split())[:300]}") from None
    if "title" not in frame.columns:
        raise DataError(f"data file {source!r} has no 'title' column (columns: "
                        f"{', '.join(map(str, frame.columns)) or 'none'})")
    titles = frame["title"].dropna()
    not_text = titles[[not isinstance(t, str) for t in titles]]
    if len(not_text):
        raise DataError(f"data file {source!r}: {len(not_text)} titles are not text (e.g. {not_text.iloc[0]}, "
                        f"a {type(not_text.iloc[0]).__name__}); "
                        f"the 'title' column must hold text")
    chars = int(titles.str.strip().str.len().sum()) + len(titles)
    if chars < tokens_per_batch:
        raise DataError(f"data file {source!r}: {len(titles)} titles, {chars} characters: too little text "
                        f"for one batch of {tokens_per_batch} tokens (batch_size x block_size + 1)")
