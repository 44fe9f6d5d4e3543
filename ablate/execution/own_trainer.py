"""A matrix for your own training script: `trainer:`, `params:`, `inputs:` and `metric:`, their
schema, the checks across them, and the base config (a `ParamsConfig`) they make.

Everything is checked at load time and reported at once, each problem a `<key path>: ...` line:
a command whose placeholders name no parameter, a pattern that cannot read the metric, an own
metric without its own `min_effect` (Mainrun's 0.005 nats/char means nothing in another unit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from ..training.output import pattern_problems
from ..training.params import DEFAULT_ARGS, DEFAULT_MAX_EVALS, ParamsConfig, custom_base
from .problems import Strict

CUSTOM_KEYS, MAINRUN_KEYS = ("params", "inputs", "metric"), ("base", "data", "reference")


class TrainerSpec(Strict):
    """`trainer:` your own training script, instead of Mainrun's: a command or an entry point."""
    command: str | None = Field(None, min_length=1)  # placeholders: training.params
    entry: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # module:function
    timeout: float | None = Field(None, gt=0)  # seconds a run may take; past it, it fails
    max_evals: int = Field(DEFAULT_MAX_EVALS, ge=1)  # evaluations stored per run; later ones (but the last) are not
    args: str = Field(DEFAULT_ARGS, min_length=1)  # how {args} spells each parameter
    flag: str | None = Field(None, min_length=1)  # how {args} spells a true boolean, e.g. --{name}
    seed_env: bool = False  # the script reads its seed from ABLATE_SEED

    @model_validator(mode="after")
    def _one_kind(self) -> "TrainerSpec":
        if (self.command is None) == (self.entry is None):
            raise ValueError("expected exactly one of command or entry")
        return self


class Secondary(Strict):
    """Another value of the same evaluations (a JSON key, or a named group of the pattern),
    judged with its own δ and goal by `ablate report --metric NAME`; the primary still ranks."""
    name: str = Field(pattern=r"^[A-Za-z_]\w*$")
    goal: Literal["minimize", "maximize"] = "minimize"
    min_effect: float = Field(gt=0)  # in its own units: the smallest change of it that matters


class Metric(Strict):
    name: str = Field("val_loss", pattern=r"^[A-Za-z_]\w*$")
    goal: Literal["minimize", "maximize"] = "minimize"
    pattern: str | list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)  # regexes reading stdout
    also: list[Secondary] = []  # secondary metrics: reported, never ranked by unless asked

    @model_validator(mode="after")
    def _distinct(self) -> "Metric":
        names = [self.name, *(s.name for s in self.also)]
        if len(set(names)) < len(names):
            raise ValueError(f"expected distinct metric names, got {', '.join(names)}")
        return self


def own_shape_problems(trainer: TrainerSpec | None, params: Any, given: set[str]) -> list[str]:
    """Keys that belong to the other kind of matrix, and the ones your own trainer needs."""
    if trainer is None:
        return [f"{key}: only for your own trainer (add trainer: {{command: ...}} or {{entry: "
                f"module:function}})" for key in CUSTOM_KEYS if key in given]
    problems = [f"{key}: Mainrun's trainer only; your own trainer's baseline is params"
                for key in MAINRUN_KEYS if key in given]
    if not params:
        problems.append("params: expected a mapping of your trainer's baseline parameters, e.g. {lr: 0.001}")
    if "min_effect" not in given:
        problems.append("min_effect: give min_effect in your metric's units (the smallest change that "
                        "matters); Mainrun's 0.005 nats/char would be applied to it otherwise")
    return problems


def own_base(trainer: TrainerSpec, params: dict, inputs: list[str], metric: Metric | None, path: Path,
             problems: list[str]) -> ParamsConfig | None:
    """Your own trainer's baseline: its params, run from the matrix's directory."""
    metric = metric or Metric()
    kind, text = ("command", trainer.command) if trainer.command is not None else ("entry", trainer.entry)
    if metric.pattern is not None:
        if kind == "entry":
            problems.append("metric.pattern: reads a command's output; an entry point reports its evaluations")
        problems += pattern_problems(metric.pattern, metric.name)
        problems += [p.replace("metric.pattern", f"metric.also[{i}]", 1) for i, secondary in enumerate(metric.also)
                     for p in pattern_problems(metric.pattern, secondary.name)
                     if "named group" in p]  # the pattern's own syntax error is said once, above
    return custom_base(kind, text, params, inputs, path.parent.resolve(), problems, timeout_s=trainer.timeout,
                       max_evals=trainer.max_evals, metric=metric.name,
                       pattern=tuple(metric.pattern) if isinstance(metric.pattern, list) else metric.pattern,
                       args=trainer.args, flag=trainer.flag, seed_env=trainer.seed_env)


def seed_warnings(trainer: TrainerSpec | None, seeds: list[int]) -> list[str]:
    """A command that never receives the seed: its seeds may all give one result."""
    if trainer is None or trainer.command is None or "{seed}" in trainer.command or trainer.seed_env or len(seeds) < 2:
        return []
    return ["trainer.command: this command never receives the seed: runs of one configuration will differ "
            "only if the script seeds itself (one that reads ABLATE_SEED can say so: trainer.seed_env: true)"]
