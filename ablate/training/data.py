"""Titles → tokenizer → token ids, exactly as MAINRUN.md §2-4, cached on disk.

The cache key is everything that affects the ids (data fingerprint, num_titles, split seed, val_frac,
vocab_size, pre-tokenizer), so the second run of a matrix with the same data settings does no
dataset or tokenizer work at all. Cache entries are written to a temporary directory and
renamed into place, so concurrent jobs never see a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from .config import HUB_DATASET, TrainConfig
from .datasource import DataError, fingerprint, local_format, local_path

EOS = "<eos>"
SPECIAL_TOKENS = ["<pad>", EOS, "<unk>"]
CACHE_FORMAT = 4  # 2, 3: URL_PATTERN fixes (url_split ids changed); 4: round-trip check

# GPT-2's pre-tokenization regex with a URL alternative in front: one Split keeps a whole URL
# as a single pre-token. (The report's literal code — Split on a *string* pattern, followed by
# ByteLevel's own regex — would match the pattern literally and then cut URLs apart anyway.)
_GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# The optional leading space matters: without it " ?\p{L}+" matches " https" first (leftmost
# match wins) and a URL after a space — every URL not at the start of a title — is cut apart.
# The case-insensitive flag is scoped to the URL: a bare leading (?i) would apply to the whole
# alternation and make GPT-2's contractions match "'T", "'S", ... unlike ByteLevel.
URL_PATTERN = r"(?i: ?https?://\S+)"


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    train_ids: torch.Tensor  # int64, the whole train split
    val_ids: torch.Tensor  # int64, the whole validation split
    train_title_lengths: torch.Tensor  # tokens per train title (incl. its <eos>), for augmentation
    val_chars: int  # characters of the validation text: Mainrun's loss denominator
    val_text_sha256: str
    tokenizer_roundtrip: bool  # decoding the validation ids gives the validation text back
    fingerprint: str  # data identity: hub id, or the local file's content hash
    vocab_size: int  # the tokenizer's actual size (what the model is built with)
    cache_hit: bool
    seconds: float

    @property
    def info(self) -> dict:
        return {"data_fingerprint": self.fingerprint, "train_tokens": len(self.train_ids),
                "val_tokens": len(self.val_ids), "val_chars": self.val_chars,
                "val_text_sha256": self.val_text_sha256,
                "tokenizer_roundtrip": self.tokenizer_roundtrip, "tokenizer_vocab": self.vocab_size,
                "data_cache_hit": self.cache_hit, "data_seconds": round(self.seconds, 3)}


def default_cache_dir() -> Path:
    return Path(os.environ.get("ABLATE_CACHE", Path.home() / ".cache" / "ablate"))


def load_titles(cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """MAINRUN.md §2: shuffle(seed), first num_titles, strip, split train/val (the split seed
    follows `seed` unless `split_seed` fixes it)."""
    import datasets  # heavy import: only paid on a cache miss

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    loader = local_format(cfg.data)
    try:
        if loader:
            ds = datasets.load_dataset(loader, data_files=local_path(cfg.data), split="train")
        else:
            ds = datasets.load_dataset(cfg.data, split="train")
    except Exception as e:  # the datasets library raises many kinds; all mean "cannot load"
        hint = (" The hub is unreachable from offline machines: pass --data PATH to a local "
                "csv/parquet/jsonl file with a 'title' column." if cfg.data == HUB_DATASET else "")
        raise DataError(f"could not load data {cfg.data!r}: {type(e).__name__}: {e}.{hint}") from e
    if "title" not in ds.column_names:
        raise DataError(f"data {cfg.data!r} has no 'title' column (columns: "
                        f"{', '.join(ds.column_names)})")
    ds = ds.shuffle(seed=cfg.data_seed)
    raw = ds.select(range(min(cfg.num_titles, len(ds))))["title"]
    if any(t is None for t in raw):
        raise DataError(f"data {cfg.data!r}: {sum(t is None for t in raw)} of the selected "
                        f"titles are empty (null); clean the file first")
    titles = [t.strip() for t in raw]
    n_train = int(cfg.num_titles * (1 - cfg.val_frac))
    return titles[:n_train], titles[n_train:]


def build_tokenizer(cfg: TrainConfig) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    if cfg.pretokenizer == "url_split":
        pattern = Regex(f"{URL_PATTERN}|{_GPT2_PATTERN}")
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(pattern, behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    if cfg.tokenizer_lowercase:
        tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def round_trips(tokenizer: Tokenizer, val_ids: torch.Tensor, val_text: str) -> bool:
    """Does decoding the ids give the text back? The only difference allowed is ByteLevel's
    prefix-space convention: one space in front of each title (titles are stripped, so a space
    right after <eos> or at the very start can only come from it). A lossy tokenizer — one
    that lowercases, or drops characters — fails."""
    decoded = tokenizer.decode(val_ids.tolist(), skip_special_tokens=False)
    return decoded.removeprefix(" ").replace(EOS + " ", EOS) == val_text


def _encode(tokenizer: Tokenizer, titles: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids of `"<eos>".join(titles) + "<eos>"`. <eos> is a special token, so the text splits
    around it and encoding title by title (in parallel) gives the same ids as one call."""
    encodings = tokenizer.encode_batch([t + EOS for t in titles])
    lengths = torch.tensor([len(e.ids) for e in encodings], dtype=torch.long)
    ids = torch.tensor([i for e in encodings for i in e.ids], dtype=torch.long)
    return ids, lengths


def cache_key(cfg: TrainConfig, data_fingerprint: str) -> str:
    key = {"format": CACHE_FORMAT, "data": data_fingerprint, "num_titles": cfg.num_titles,
           "seed": cfg.data_seed, "val_frac": cfg.val_frac, "vocab_size": cfg.vocab_size,
           "pretokenizer": cfg.pretokenizer, "tokenizer_lowercase": cfg.tokenizer_lowercase}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def prepare(cfg: TrainConfig, cache_dir: str | Path | None = None) -> PreparedData:
    """Tokenizer and ids for `cfg`, from the cache when present."""
    t0 = time.perf_counter()
    fp = fingerprint(cfg.data)
    entry = Path(cache_dir or default_cache_dir()) / cache_key(cfg, fp)
    if (entry / "meta.json").exists():
        try:
            return _read_entry(entry, fp, t0)
        except Exception:  # a corrupt entry is rebuilt, never trusted
            shutil.rmtree(entry, ignore_errors=True)

    train_titles, val_titles = load_titles(cfg)
    tokenizer = build_tokenizer(cfg)
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, special_tokens=SPECIAL_TOKENS,
                                  show_progress=False)
    tokenizer.train_from_iterator(train_titles + val_titles, trainer)
    train_ids, train_lengths = _encode(tokenizer, train_titles)
    val_ids, _ = _encode(tokenizer, val_titles)
    val_text = EOS.join(val_titles) + EOS
    meta = {"val_chars": len(val_text),
            "val_text_sha256": hashlib.sha256(val_text.encode()).hexdigest(),
            "tokenizer_roundtrip": round_trips(tokenizer, val_ids, val_text),
            "num_train_titles": len(train_titles), "num_val_titles": len(val_titles)}
    _write_entry(entry, tokenizer, train_ids, val_ids, train_lengths, meta)
    return PreparedData(tokenizer, train_ids, val_ids, train_lengths, meta["val_chars"],
                        meta["val_text_sha256"], meta["tokenizer_roundtrip"], fp,
                        tokenizer.get_vocab_size(), False, time.perf_counter() - t0)


def _write_entry(entry: Path, tokenizer, train_ids, val_ids, train_lengths, meta) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=entry.name + ".tmp", dir=entry.parent))
    tokenizer.save(str(tmp / "tokenizer.json"))
    torch.save({"train_ids": train_ids, "val_ids": val_ids, "train_title_lengths": train_lengths},
               tmp / "ids.pt")
    (tmp / "meta.json").write_text(json.dumps(meta))  # written last: marks the entry complete
    try:
        tmp.rename(entry)
    except OSError:  # another job finished the same entry first; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)


def _read_entry(entry: Path, fp: str, t0: float) -> PreparedData:
    meta = json.loads((entry / "meta.json").read_text())
    tokenizer = Tokenizer.from_file(str(entry / "tokenizer.json"))
    tensors = torch.load(entry / "ids.pt", weights_only=True)
    return PreparedData(tokenizer, tensors["train_ids"], tensors["val_ids"],
                        tensors["train_title_lengths"], meta["val_chars"], meta["val_text_sha256"],
                        meta["tokenizer_roundtrip"], fp, tokenizer.get_vocab_size(), True,
                        time.perf_counter() - t0)
