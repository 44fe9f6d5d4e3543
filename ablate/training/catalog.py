"""The report's optimizations, one declarative entry each, and the base presets.

An `Optimization` is a patch of `TrainConfig` fields plus what a reader needs to judge it:
the report section it comes from, whether Mainrun's rules allow it, and whether it changes
what Mainrun's evaluation scores (so a lower number may not mean a better model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .config import ConfigError, TrainConfig, check_fields, parse_value, suggest

# Why a tokenizer change makes Mainrun's val_loss incomparable (vocab_32k, url_pretokenizer).
_NEW_TOKENIZER = ("a different tokenizer changes how many characters Mainrun's fixed-size evaluation "
                  "windows cover")
# OneCycleLR as the report's "current" run had it (commit 0883a9a); see report-setups.md.
_REPORT_OPTIMIZER = {"optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.01}


@dataclass(frozen=True)
class Claim:
    """What the report claims an optimization does to the validation loss: `results-md` sets it
    against the measured verdicts, so the "what holds" table cannot disagree with the data."""

    loss: str  # "lower": it lowers the loss; "same": the loss does not move (a speed-up, monitoring)
    says: str  # the claim, as the report (or its author's runs) puts it
    size: float | None = None  # the change it claims, nats/char, where it gives one
    proxies: tuple[str, ...] = ()  # names a proxy-scale matrix measures it under (vocab_2x)

    def __post_init__(self) -> None:
        if self.loss not in ("lower", "same"):
            raise ConfigError(f"claim {self.says!r}: loss {self.loss!r}, expected 'lower' or 'same'")


@dataclass(frozen=True)
class Optimization:
    name: str
    description: str
    section: str  # where in seed/optimization-report.md
    patch: dict[str, Any]
    allowed: bool = True
    breaks_rule: str = ""  # the Mainrun rule it breaks, when not allowed
    changes_metric: str = ""  # why Mainrun's val_loss is not like-for-like, when it is not
    note: str = ""  # what the patch carries beyond the literal change, and why
    claim: Claim | None = None

    def __post_init__(self) -> None:
        check_fields(self.patch, where=f"catalog entry {self.name!r}")


CATALOG: dict[str, Optimization] = {o.name: o for o in [
    Optimization(
        "onecycle_fix", "OneCycleLR max_lr 5e-4, pct_start 0.2, div 5, final_div 100",
        "1. Immediate Critical Fix: OneCycleLR",
        {"optimizer": "adamw", "schedule": "onecycle", "max_lr": 5e-4, "onecycle_pct_start": 0.2,
         "onecycle_div_factor": 5.0, "onecycle_final_div_factor": 100.0},
        note="The report's schedule drives AdamW (its 'current' run); with Mainrun's momentum-free "
             "SGD OneCycleLR would cycle a momentum SGD never had, so the patch selects AdamW. "
             "cycle_momentum stays on (PyTorch's default), cycling beta1 0.85-0.95 as in the report.",
        claim=Claim("lower", "the critical fix of the schedule")),
    Optimization(
        "sdpa", "F.scaled_dot_product_attention instead of manual attention",
        "2.A Scaled Dot-Product Attention", {"attention": "sdpa"},
        claim=Claim("same", "same model, 10–20% faster")),
    Optimization(
        "swiglu", "SwiGLU MLP, hidden int(8/3 d), no biases",
        "2.B SwiGLU MLP", {"mlp": "swiglu"},
        claim=Claim("lower", "helps (the author's one-seed run: −0.011)", -0.011)),
    Optimization(
        "rmsnorm", "RMSNorm (eps 1e-6) instead of LayerNorm",
        "2.C RMSNorm", {"norm": "rmsnorm"},
        claim=Claim("lower", "a better normalisation")),
    Optimization(
        "grouped_weight_decay", "no weight decay on 1-D parameters (biases, norms)",
        "3.A Parameter-Grouped Weight Decay",
        {"weight_decay_mode": "grouped", "weight_decay": 0.01},
        note="Grouping only matters when there is decay to withhold: Mainrun's weight_decay is 0, "
             "so the patch carries the report's 0.01.",
        claim=Claim("lower", "decay only where it helps")),
    Optimization(
        "grad_accum", "gradient accumulation over 2 micro-batches (effective batch 128)",
        "3.B Gradient Accumulation", {"grad_accum_steps": 2},
        note="Halves the number of optimizer steps; the schedule counts optimizer steps.",
        claim=Claim("lower", "a larger effective batch")),
    Optimization(
        "mixed_precision", "bf16 autocast for the training forward/backward",
        "3.C Mixed Precision", {"precision": "bf16"},
        note="The report shows fp16 + GradScaler (CUDA only, precision=fp16); bf16 needs no "
             "scaler and runs on CPU too. Evaluation stays float32.",
        claim=Claim("same", "faster, the same loss")),
    Optimization(
        "vocab_32k", "BPE vocabulary of 32,000 instead of 16,000",
        "4.A Increase Vocabulary Size", {"vocab_size": 32_000},
        changes_metric=_NEW_TOKENIZER,
        claim=Claim("lower", "better representation of technical terms", proxies=("vocab_2x",))),
    Optimization(
        "url_pretokenizer", "split URLs into their own pre-token before ByteLevel",
        "4.B Pre-tokenization Rules", {"pretokenizer": "url_split"},
        changes_metric=_NEW_TOKENIZER,
        claim=Claim("lower", "URLs as their own tokens")),
    Optimization(
        "block_size", "context length 128 (the report's 'increase from 64')",
        "5. Hyperparameters", {"block_size": 128},
        changes_metric="block_size sets Mainrun's evaluation window (batch_size*block_size+1 "
                       "tokens), so it changes which validation tokens are scored",
        note="Already Mainrun's value: a no-op on the mainrun base, a change on report-current.",
        claim=Claim("lower", "better context (increase from 64)")),
    Optimization(
        "dropout_005", "dropout 0.05", "5. Hyperparameters", {"dropout": 0.05},
        claim=Claim("lower", "optimal based on analysis")),
    Optimization(
        "weight_decay_001", "weight decay 0.01", "5. Hyperparameters", {"weight_decay": 0.01},
        note="Optimizer-agnostic: L2 under SGD, decoupled under AdamW (as the report tuned it).",
        claim=Claim("lower", "optimal based on analysis")),
    Optimization(
        "lr_1e4", "learning rate 1e-4 with AdamW", "5. Hyperparameters",
        {"optimizer": "adamw", "lr": 1e-4},
        note="1e-4 is an AdamW learning rate (the report's runs all use AdamW); with Mainrun's "
             "plain SGD it would barely move the weights, so the patch selects AdamW.",
        claim=Claim("lower", "the report's learning rate (with AdamW)")),
    Optimization(
        "betas_095", "AdamW betas (0.9, 0.95)", "5. Hyperparameters",
        {"optimizer": "adamw", "betas": (0.9, 0.95)},
        note="Betas exist only for AdamW, so the patch selects it. Under onecycle with "
             "cycle_momentum, beta1 is overridden by the scheduler.",
        claim=Claim("lower", "more aggressive than the default betas")),
    Optimization(
        "evals_per_epoch_5", "5 evaluations per epoch instead of 3", "5. Hyperparameters",
        {"evals_per_epoch": 5},
        note="Monitoring only: evaluation consumes no randomness, so the final loss must not move.",
        claim=Claim("same", "better monitoring (evaluation only)")),
    Optimization(
        "ema", "evaluate an exponential moving average of the weights (decay 0.999)",
        "6.A Exponential Moving Average", {"ema_decay": 0.999},
        claim=Claim("lower", "a smoother, better model to evaluate")),
    Optimization(
        "warmup_cosine", "linear warmup 500 steps to 5e-4, cosine to 1e-5 (the report's get_lr)",
        "6.B Learning Rate Warmup with Cosine Decay",
        {"optimizer": "adamw", "schedule": "warmup_cosine", "warmup_steps": 500, "max_lr": 5e-4,
         "min_lr": 1e-5},
        note="Peak 5e-4 is an AdamW rate, so the patch selects AdamW. 500 warmup steps is the "
             "report's literal value for its 1883-step run.",
        claim=Claim("lower", "warmup then cosine decay", proxies=("warmup_cosine_scaled",))),
    Optimization(
        "token_masking", "replace 15% of input tokens with random tokens", "7.A Token Masking",
        {"token_mask_prob": 0.15}, allowed=False,
        breaks_rule="augmenting the training data is not allowed",
        claim=Claim("lower", "better generalization")),
    Optimization(
        "sequence_augmentation", "with probability 0.1 per epoch, shuffle titles and drop 5%",
        "7.B Sequence Augmentation", {"sequence_augment_prob": 0.1}, allowed=False,
        breaks_rule="augmenting the training data is not allowed",
        claim=Claim("lower", "better generalization")),
]}

# The report's recommended stack, in its "Implementation Priority" order (rule-abiding items).
RECOMMENDED_STACK = ["onecycle_fix", "grouped_weight_decay", "dropout_005", "sdpa", "ema",
                     "swiglu", "block_size", "vocab_32k", "rmsnorm", "weight_decay_001",
                     "betas_095"]

# Base presets: full configs a matrix or `ablate train` can start from (report-setups.md).
_REPORT_CURRENT = {
    "block_size": 64, "dropout": 0.05, **_REPORT_OPTIMIZER, "schedule": "onecycle",
    "max_lr": 1e-3, "onecycle_pct_start": 0.5, "onecycle_div_factor": 10.0,
    "onecycle_final_div_factor": 1e4, "onecycle_cycle_momentum": True,
}
PRESETS: dict[str, dict[str, Any]] = {
    "mainrun": {},
    "report-current": _REPORT_CURRENT,
    "report-best": {**_REPORT_CURRENT, "max_lr": 5e-4, "onecycle_pct_start": 0.15,
                    "onecycle_div_factor": 25.0, "onecycle_final_div_factor": 1e4},
}
PRESET_NOTES = {
    "mainrun": "Mainrun's baseline exactly (MAINRUN.md).",
    "report-current": "The report's 'current' run (fork commit 0883a9a): AdamW lr 1e-4 wd 0.01 on "
                      "every parameter, default betas, OneCycleLR(1e-3, pct 0.5, div 10), block 64, "
                      "dropout 0.05. Nothing inferred: report-setups.md gives every value.",
    "report-best": "The run behind the report's 1.283065 (commit 434fd44): report-current with "
                   "OneCycleLR(5e-4, pct 0.15), div 25 and final_div 1e4 by default.",
}


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}{suggest(name, PRESETS)}; "
                          f"choose one of {', '.join(PRESETS)}")
    return TrainConfig().replace(**PRESETS[name])


def lookup(name: str) -> Optimization:
    if name not in CATALOG:
        raise ConfigError(f"unknown optimization {name!r}{suggest(name, CATALOG)}")
    return CATALOG[name]


def apply(base: TrainConfig, names: list[str]) -> TrainConfig:
    """Apply catalog patches in order; two patches that set one field differently conflict."""
    try:
        return base.replace(**merge_patches((name, lookup(name).patch) for name in names))
    except PatchConflict as c:
        raise ConfigError(f"optimizations {c.first!r} and {c.second!r} set {c.key!r} differently "
                          f"({c.first_value!r} vs {c.second_value!r})") from None


class PatchConflict(ValueError):
    """Two patches set one field to different values."""

    def __init__(self, key: str, first: str, first_value: Any, second: str, second_value: Any):
        self.key, self.first, self.first_value, self.second, self.second_value = (
            key, first, first_value, second, second_value)
        super().__init__(f"{first!r} sets {key}={first_value!r} but {second!r} sets {key}={second_value!r}")


def merge_patches(patches: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One patch from several named ones (a toggle's, a catalog entry's). Setting one field twice
    to the same value is fine; to different values is a PatchConflict, not last-wins: the run
    would silently measure something else than its toggles say."""
    merged: dict[str, tuple[str, Any]] = {}
    for name, patch in patches:
        for key, value in patch.items():
            if key in merged and merged[key][1] != value:
                raise PatchConflict(key, *merged[key], name, value)
            merged.setdefault(key, (name, value))
    return {key: value for key, (_, value) in merged.items()}


def build_config(preset_name: str, toggles: list[str], sets: list[str], data: str | None) -> TrainConfig:
    """A preset, catalog toggles on it, then `FIELD=VALUE` overrides (as `--set` gives them)."""
    cfg = apply(preset(preset_name), toggles)
    changes = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE")
        name, value = item.split("=", 1)
        changes[name.strip()] = parse_value(name.strip(), value.strip())
    if data:
        changes["data"] = data
    return cfg.replace(**changes)
