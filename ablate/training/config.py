"""The one typed training config. Its defaults ARE Mainrun's baseline (MAINRUN.md).

Every switch the optimization report proposes is a field here; a named optimization is a
small patch of these fields (see `catalog.py`). `TrainConfig` is a run's scientific identity:
it is what gets hashed and stored. How a run is executed (device, compile, truncation,
checkpoints) lives in `ExecOptions` and never changes the identity.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import typing
from dataclasses import dataclass
from typing import Any, Literal

HUB_DATASET = "julien040/hacker-news-posts"
MAINRUN_VAL_LOSS = 1.754  # Mainrun's baseline result: the reference a matrix's Δref is measured against
MIN_EFFECT = 0.005  # nats/char: the smallest effect a verdict calls better or worse (docs/results.md: why)
COST_MIN_EFFECT = 0.05  # the smallest relative change in time per token or peak memory that matters (5 %)

Attention = Literal["manual", "sdpa"]
MLPKind = Literal["gelu", "swiglu"]
NormKind = Literal["layernorm", "rmsnorm"]
OptimizerKind = Literal["sgd", "adamw"]
DecayMode = Literal["all", "grouped"]
Schedule = Literal["cosine", "onecycle", "warmup_cosine"]
Precision = Literal["off", "bf16", "fp16"]
PreTokenizer = Literal["bytelevel", "url_split"]


class ConfigError(ValueError):
    """A config value or key that cannot be used; the message says which and why."""


_HINTS: dict[str, Any] = {}  # filled below, once TrainConfig exists


@dataclass(frozen=True)
class TrainConfig:
    # --- data (MAINRUN.md §2-4) ---
    data: str = HUB_DATASET  # hub dataset id, or a local csv/parquet/jsonl file with `title`
    num_titles: int = 100_000
    val_frac: float = 0.10
    seed: int = 1337  # initialisation, dropout, batch order; and the split unless split_seed is set
    split_seed: int | None = None  # draws the titles and the train/validation split; None: `seed`
    vocab_size: int = 16_000
    pretokenizer: PreTokenizer = "bytelevel"  # url_split: the report's Split(URL) + ByteLevel
    tokenizer_lowercase: bool = False  # a lossy normalizer: changes what the metric scores
    # --- model (§6) ---
    block_size: int = 128
    batch_size: int = 64
    n_layer: int = 6
    n_head: int = 8
    d_model: int = 512
    dropout: float = 0.1
    attention: Attention = "manual"
    mlp: MLPKind = "gelu"
    norm: NormKind = "layernorm"
    # --- optimization (§7-8) ---
    optimizer: OptimizerKind = "sgd"
    lr: float = 6e-3
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW only
    weight_decay: float = 0.0
    weight_decay_mode: DecayMode = "all"  # grouped: no decay for 1-D params (biases, norms)
    grad_clip: float = 1.0
    grad_accum_steps: int = 1  # micro-batches of batch_size per optimizer step
    schedule: Schedule = "cosine"
    max_lr: float = 1e-3  # peak lr of onecycle and warmup_cosine
    onecycle_pct_start: float = 0.3
    onecycle_div_factor: float = 25.0
    onecycle_final_div_factor: float = 1e4
    onecycle_cycle_momentum: bool = True
    warmup_steps: int = 500  # warmup_cosine only
    min_lr: float = 1e-5  # warmup_cosine only
    precision: Precision = "off"
    tf32: bool = False  # CUDA: fp32 matmuls on TF32 tensor cores (faster; 10-bit mantissa)
    ema_decay: float = 0.0  # 0 disables EMA; evaluation then sees the raw weights
    token_mask_prob: float = 0.0  # augmentation: breaks Mainrun's rules
    sequence_augment_prob: float = 0.0  # augmentation: breaks Mainrun's rules
    # --- schedule of the run ---
    epochs: int = 7
    evals_per_epoch: int = 3

    def __post_init__(self) -> None:
        for name, hint in _HINTS.items():  # canonical numbers: 1 and 1.0 hash the same
            value = getattr(self, name)
            try:
                if hint is float and isinstance(value, int) and not isinstance(value, bool):
                    object.__setattr__(self, name, float(value))
                if typing.get_origin(hint) is tuple and isinstance(value, (list, tuple)):
                    object.__setattr__(self, name, tuple(
                        float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value))
            except OverflowError:
                raise ConfigError(f"{name}: {value!r} is too large for a float") from None
        errors = _unbounded(self) or _type_errors(self)
        if errors:
            raise ConfigError("; ".join(errors))
        checks = [
            (self.num_titles >= 2, "num_titles must be >= 2"),
            (0.0 < self.val_frac < 1.0, "val_frac must be in (0, 1)"),
            (self.vocab_size >= 259, "vocab_size must be >= 259 (256 bytes + 3 specials)"),
            (min(self.block_size, self.batch_size, self.n_layer, self.n_head) >= 1,
             "block_size, batch_size, n_layer and n_head must be >= 1"),
            (self.d_model % self.n_head == 0, f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.lr > 0 and self.max_lr > 0 and self.min_lr >= 0, "learning rates must be positive"),
            (all(0.0 <= b < 1.0 for b in self.betas), "betas must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.grad_clip > 0, "grad_clip must be > 0"),
            (self.grad_accum_steps >= 1, "grad_accum_steps must be >= 1"),
            (0.0 < self.onecycle_pct_start < 1.0, "onecycle_pct_start must be in (0, 1)"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (0.0 <= self.ema_decay < 1.0, "ema_decay must be in [0, 1)"),
            (0.0 <= self.token_mask_prob < 1.0, "token_mask_prob must be in [0, 1)"),
            (0.0 <= self.sequence_augment_prob <= 1.0, "sequence_augment_prob must be in [0, 1]"),
            (self.epochs >= 1 and self.evals_per_epoch >= 1, "epochs and evals_per_epoch must be >= 1"),
        ]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise ConfigError("; ".join(bad))

    # --- (de)serialization: a plain JSON-able dict is the stored form ---
    @property
    def data_seed(self) -> int:
        """The seed that draws the titles and the train/validation split."""
        return self.seed if self.split_seed is None else self.split_seed

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        check_fields(d)
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)

    def replace(self, **changes: Any) -> "TrainConfig":
        return self.from_dict({**self.to_dict(), **changes})

    def diff(self, other: "TrainConfig | None" = None) -> dict[str, Any]:
        """Fields whose value differs from `other` (default: the baseline)."""
        ref = (other or TrainConfig()).to_dict()
        return {k: v for k, v in self.to_dict().items() if ref[k] != v}

    def identity_hash(self, data_fingerprint: str | None = None) -> str:
        """Hash of what makes this run differ from the baseline, plus its data and seed.

        Only non-default fields enter (defaults ARE the baseline), so a new switch added in
        its off position leaves every stored run's identity unchanged. The data path is
        replaced by the data's fingerprint when given: one file under two paths is one run."""
        d = {**self.diff(), "data": data_fingerprint or self.data, "seed": self.seed}
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


_HINTS.update(typing.get_type_hints(TrainConfig))
FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}


DEFAULT_TRAINER = "ablate.training.train:train"  # the training entry point every executor calls, module:function


@dataclass(frozen=True)
class ExecOptions:
    """How to run a config; none of it changes what is being measured."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    compile: bool = False  # torch.compile the model
    max_steps: int | None = None  # stop after N optimizer steps; schedule and eval points unchanged, plus one where it stops
    cache_dir: str | None = None  # tokenizer/ids cache (default: ~/.cache/ablate or $ABLATE_CACHE)
    checkpoint_dir: str | None = None  # write a checkpoint at each evaluation when set
    resume: bool = False  # continue from checkpoint_dir's checkpoint when there is one
    threads: int | None = None  # torch intra-op threads (CPU)
    step_metrics: bool = True  # report lr / grad norm / loss of every step at each evaluation
    run_dir: str | None = None  # a fresh directory for this run and attempt (your own trainer's {run_dir})
    output: str | None = None  # where your own command's stdout and stderr are kept as printed (training.transcript)
    runs_sharing_device: int = 1  # runs the executor trains at once on this run's device: timings compare at 1
    timed_exclusively: bool = False  # execution.timing: exclusive (nothing else of ablate's on the device)




def check_fields(d: dict[str, Any], where: str = "config") -> None:
    """Reject unknown keys with a suggestion for the closest real field."""
    for key in d:
        if key not in FIELDS:
            raise ConfigError(f"{where}: unknown field {key!r}{suggest(key, FIELDS)}")


def suggest(name: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_errors(cfg: TrainConfig) -> list[str]:
    errors = []
    for name, hint in _HINTS.items():
        value = getattr(cfg, name)
        if not _matches(value, hint):
            errors.append(f"{name}: expected {_describe(hint)}, got {value!r}")
    return errors


def _optional(hint: Any) -> Any:
    """X for a hint `X | None`, else None."""
    args = typing.get_args(hint)
    return next(a for a in args if a is not type(None)) if len(args) == 2 and type(None) in args else None


def _matches(value: Any, hint: Any) -> bool:
    if _optional(hint):
        return value is None or _matches(value, _optional(hint))
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        return isinstance(value, tuple) and len(value) == len(args) and all(
            _matches(v, a) for v, a in zip(value, args))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _unbounded(cfg: TrainConfig) -> list[str]:
    """Fields holding nan or ±inf: a config is stored as JSON, which has neither (`lr: .nan` was
    stored as text no JSON reader accepts, and ablate's own merge then refused the run)."""
    bad = []
    for name in _HINTS:
        value = getattr(cfg, name)
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            bad.append(f"{name}: expected a finite number, got {value!r}")
    return bad


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin is tuple:
        return "a list of " + str(len(typing.get_args(hint))) + " numbers"
    return getattr(hint, "__name__", str(hint))


def parse_value(name: str, text: str) -> Any:
    """Parse a command-line `FIELD=VALUE` value into the field's type."""
    if name not in FIELDS:
        raise ConfigError(f"--set: unknown field {name!r}{suggest(name, FIELDS)}")
    hint = _HINTS[name]
    if _optional(hint):
        if text.lower() in ("none", "null"):
            return None
        hint = _optional(hint)
    origin = typing.get_origin(hint)
    try:
        if origin is tuple:
            return tuple(float(x) for x in text.strip("()[] ").split(","))
        if hint is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if hint is int:
            return int(float(text)) if float(text).is_integer() else int(text)
        if hint is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"--set {name}={text}: expected {_describe(hint)}") from None
    return text


def format_value(value: Any) -> str:
    """A config value as `parse_value` reads it back (the inverse, for `--set FIELD=VALUE`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(repr(float(v)) for v in value)
    return repr(value) if isinstance(value, float) else str(value)
