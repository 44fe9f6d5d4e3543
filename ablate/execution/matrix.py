"""Ablation matrices: a YAML file that names a base config, toggles and a design, checked and
turned into factors here and expanded into the planned runs by `designs`.

Everything that can be wrong with a matrix is found at load time, before anything trains: bad
YAML, unknown keys and toggles, bad config values, toggles that conflict inside one run and
designs larger than `max_runs`. Each problem is one line of a `MatrixError`, shaped
`<file>: <key path>: <what was expected>`, so a user can go straight to the offending line.

Every toggle is a factor whose first level is "off" (the base config). A catalog or inline
toggle has levels [off, on]; a field factor `{lr: [...]}` has the base value plus each listed
value that differs from it, labelled `lr=<value>`. A toggle that changes nothing on the base is
dropped with a warning rather than rejected: the catalog's `block_size` is a no-op on Mainrun
but a real change on `report-current`, and one matrix file should work on both.

A matrix with `trainer:` runs your own training script: its `params` are the base config (a
`training.params.ParamsConfig`, checked in `own_trainer`), its toggles patch them, and the
catalog, presets and data are Mainrun's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from ..storage.schema import MAX_NAME_CHARS, plain_name
from ..training.catalog import CATALOG, PRESETS, preset
from ..training.config import COST_MIN_EFFECT, FIELDS, MAINRUN_VAL_LOSS, MIN_EFFECT, ConfigError, TrainConfig, suggest
from ..training.datasource import BUILTIN_PREFIX, local_format
from ..training.params import ParamsConfig
from .designs import DESIGNS, TWO_LEVEL_DESIGNS, ComposedRow, Factor, ListRun, build_rows, count_rows
from .own_trainer import Metric, TrainerSpec, own_base, own_shape_problems, seed_warnings
from .problems import Strict, config_problems, pydantic_problems
from .safe_yaml import YAMLProblem, read_mapping
from .seeds import SeedRange, Seeds

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"  # matrix and inline toggle names end up in file names
RESERVED_NAMES = ("baseline", "all")  # generated run names a toggle must not shadow
MAX_RUNS = 10_000  # the most max_runs may allow: rows are built in memory, a factorial can be astronomic


class MatrixError(ValueError):
    """A matrix file that cannot be run; one line per problem, each `<file>: <key path>: ...`."""

    def __init__(self, path: str, problems: list[str]):
        self.problems = [f"{path}: {p}" for p in problems]
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class PlannedRun:
    name: str  # the design row; seed replicates share it
    toggles: tuple[str, ...]  # labels of the on-levels, in declaration order
    seed: int
    config: TrainConfig | ParamsConfig


# --- the YAML schema -------------------------------------------------------------------------

def _file_safe(name: str, why: str = "") -> str:
    """A name that ends up in file names (logs, checkpoints): refuse anything that could escape."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"expected 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                         f"or digit{why}, got {name!r}")
    return name


def _one_of(value: str, choices: Any, what: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}{suggest(value, choices)}; expected one of {', '.join(choices)}")
    return value


class Base(Strict):
    preset: str = "mainrun"
    overrides: dict[str, Any] = {}

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        return _one_of(v, PRESETS, "preset")


class InlineToggle(Strict):
    name: str
    patch: dict[str, Any] = Field(min_length=1)
    description: str = ""

    @field_validator("name")
    @classmethod
    def _usable_name(cls, v: str) -> str:
        _file_safe(v)
        if v in RESERVED_NAMES:
            raise ValueError(f"{v!r} is a generated run name; choose another")
        return v


class Run(Strict):
    name: Annotated[str, AfterValidator(plain_name)] = Field(min_length=1, max_length=MAX_NAME_CHARS)
    toggles: list[str] = []


class Execution(Strict):
    devices: str | list[int] = "auto"
    jobs_per_device: int | None = Field(None, ge=1)  # None: executors.DEFAULT_JOBS_PER_DEVICE
    warm_workers: bool = True  # CPU: runs fork from one process that imported torch; GPU: a spare per slot
    # exclusive: one run per device at a time and, on a CPU, no spare importing beside it, so
    # timings compare (the report says so); shared: as jobs_per_device and warm_workers say
    timing: Literal["shared", "exclusive"] = "shared"

    @model_validator(mode="after")
    def _exclusive(self) -> "Execution":
        if self.timing == "exclusive" and (self.jobs_per_device or 1) > 1:
            raise ValueError(f"timing 'exclusive' runs one run per device at a time; jobs_per_device "
                             f"{self.jobs_per_device} contradicts it")
        return self

    @field_validator("devices", mode="before")
    @classmethod
    def _devices(cls, v: Any) -> Any:
        indices = isinstance(v, list) and v and all(  # types first: a list in it is unhashable
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v) and len(set(v)) == len(v)
        if v in ("auto", "cpu") or indices:
            return v
        raise ValueError(f"expected 'auto', 'cpu' or a list of distinct GPU indices, got {v!r}")


class MatrixSpec(Strict):
    name: str
    description: str = ""
    base: Base = Base()
    data: str | None = None
    db: str | None = None  # the database commands given this file use by default (relative to the current directory)
    reference: float = MAINRUN_VAL_LOSS
    min_effect: float = Field(MIN_EFFECT, gt=0)  # nats/char: what the verdicts call a change that matters
    cost_min_effect: float = Field(COST_MIN_EFFECT, gt=0, lt=1)  # relative: a speed or memory change that matters
    family: Literal["comparison", "experiment"] = "comparison"  # what one interval level covers (docs/results.md: Verdicts)
    seeds: Seeds | None = None
    design: str
    toggles: list[Any] = []  # checked item by item below: three shapes, each with its own errors
    runs: list[Run] | None = None
    max_runs: int = Field(200, ge=1, le=MAX_RUNS)
    execution: Execution = Execution()
    trainer: TrainerSpec | None = None  # None: Mainrun's trainer, and `base` is its config
    params: dict[str, Any] | None = None  # your trainer's baseline; each value's type is its parameter's
    inputs: list[str] = []  # files and directories (relative to the matrix) whose content is identity
    metric: Metric | None = None  # your trainer's ranking metric; Mainrun's is val_loss

    @field_validator("name")
    @classmethod
    def _file_name(cls, v: str) -> str:
        return _file_safe(v, " (it names files)")

    @field_validator("design")
    @classmethod
    def _known_design(cls, v: str) -> str:
        return _one_of(v, DESIGNS, "design")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int] | SeedRange | None) -> list[int] | SeedRange | None:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError(f"expected a non-empty list of distinct integers, got {v!r}")
        return v


# --- the loaded matrix -----------------------------------------------------------------------

@dataclass
class Matrix:
    path: Path
    text: str
    spec: MatrixSpec
    base: TrainConfig | ParamsConfig  # preset + overrides + data, or your trainer's params
    factors: list[Factor]  # no-op toggles already dropped
    seeds: list[int]  # every seed a run may get: with seeds {min, max}, the first `min` come first
    warnings: list[str]
    _rows: list[ComposedRow] = field(repr=False)

    name = property(lambda self: self.spec.name)
    description = property(lambda self: self.spec.description)
    reference = property(lambda self: None if self.custom else self.spec.reference)
    custom = property(lambda self: isinstance(self.base, ParamsConfig))  # your own trainer's
    design = property(lambda self: self.spec.design)
    max_runs = property(lambda self: self.spec.max_runs)
    execution = property(lambda self: self.spec.execution)
    # seeds in the first round: all of them, or a seed range's `min` (then one more per round)
    first_seeds = property(lambda self: getattr(self.spec.seeds, "min", len(self.seeds)))

    def expand(self, data_override: str | None = None) -> list[PlannedRun]:
        """All runs, seed-major: every design row for the first seed, then for the next, so a
        matrix stopped halfway still has complete replicates. `data_override` (the CLI's --data)
        replaces the data path as given."""
        data = {} if data_override is None else {"data": data_override}
        return [PlannedRun(name, toggles, seed, config.replace(seed=seed, **data))
                for seed in self.seeds for name, toggles, config in self._rows]


def load_matrix(path: str | Path) -> Matrix:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MatrixError(str(path), [f"cannot read the file: {getattr(e, 'strerror', None) or e}"]) from None
    return parse_matrix(text, path)


def parse_matrix(text: str, path: str | Path = "<matrix>") -> Matrix:
    where = str(path)
    try:
        raw = read_mapping(text)
    except YAMLProblem as e:
        raise MatrixError(where, [str(e)]) from None
    try:
        spec = MatrixSpec.model_validate(raw)
    except ValidationError as e:
        problems, base = pydantic_problems(e, MatrixSpec), raw.get("base")
        if isinstance(base, dict) and not any(p.startswith("base") for p in problems):  # and its overrides
            _apply_overrides(base.get("preset", "mainrun"), base.get("overrides", {}), problems)
        raise MatrixError(where, problems) from None
    problems = _shape_problems(spec)
    base = _build_base(spec, Path(path), problems) if spec.trainer is None else \
        own_base(spec.trainer, spec.params or {}, spec.inputs, spec.metric, Path(path), problems)
    _raise_if(where, problems)
    assert base is not None
    warnings: list[str] = []
    dropped: set[str] = set()
    factors = _build_factors(spec, base, problems, warnings, dropped)
    _raise_if(where, problems)
    runs = _resolve_runs(spec, factors, base, problems, warnings, dropped) if spec.design == "list" else None
    _raise_if(where, problems)
    if not factors and spec.design != "list":
        _raise_if(where, ["toggles: every toggle is a no-op on the base config; nothing to ablate"])
    seeds = spec.seeds.values(base.seed) if isinstance(spec.seeds, SeedRange) else spec.seeds or [base.seed]
    # Seeds are stored as 64-bit integers (and seed torch): a bigger one fails at the first write.
    _raise_if(where, [f"{'seeds' if spec.seeds else 'base.overrides.seed'}: {s} is outside the "
                      f"64-bit range of a seed" for s in seeds if not -2**63 <= s < 2**63])
    warnings += seed_warnings(spec.trainer, seeds)
    count = count_rows(spec.design, factors, runs)
    if count * len(seeds) > spec.max_runs:
        _raise_if(where, [f"max_runs: design {spec.design!r} has {count} runs x {len(seeds)} seeds = "
                          f"{count * len(seeds)}, over the limit of {spec.max_runs}; raise max_runs (at "
                          f"most {MAX_RUNS}) or choose a smaller design"])
    rows = build_rows(spec.design, factors, base, runs, problems, warnings)
    _raise_if(where, problems)
    return Matrix(Path(path), text, spec, base, factors, seeds, [f"{where}: {w}" for w in warnings], rows)


def _raise_if(where: str, problems: list[str]) -> None:
    if problems:
        raise MatrixError(where, problems)


def _shape_problems(spec: MatrixSpec) -> list[str]:
    """Cross-key rules pydantic's per-field checks cannot see."""
    problems = []
    if spec.design == "list":
        if not spec.runs:
            problems.append("runs: design 'list' needs a non-empty list of runs")
    elif spec.runs is not None:
        problems.append(f"runs: only used by design 'list' (this design is {spec.design!r})")
    if not spec.toggles and spec.design != "list":
        problems.append("toggles: expected at least one toggle")
    problems += own_shape_problems(spec.trainer, spec.params, spec.model_fields_set)
    seen: dict[str, int] = {}
    for i, run in enumerate(spec.runs or []):
        if run.name in seen:
            problems.append(f"runs[{i}].name: duplicate run name {run.name!r} (also runs[{seen[run.name]}])")
        seen.setdefault(run.name, i)
    return problems


def _apply_overrides(preset_name: str, overrides: dict, problems: list[str]) -> TrainConfig | None:
    """The preset with `overrides` applied; every unknown field and every bad value goes to
    `problems` (all of them: an unknown field does not hide a bad value next to it)."""
    unknown = [key for key in overrides if key not in FIELDS]
    problems.extend(f"base.overrides.{key}: unknown config field{suggest(key, FIELDS)}" for key in unknown)
    try:
        config = preset(preset_name).replace(**{k: v for k, v in overrides.items() if k in FIELDS})
    except ConfigError as e:
        problems.extend(config_problems("base.overrides", e, keyed=True))
        return None
    return None if unknown else config


def _build_base(spec: MatrixSpec, path: Path, problems: list[str]) -> TrainConfig | None:
    base = _apply_overrides(spec.base.preset, spec.base.overrides, problems)
    return base.replace(data=_resolve_data(spec.data, path)) if base and spec.data is not None else base


def _fields(base: TrainConfig | ParamsConfig) -> Any:
    """The names a toggle may patch: Mainrun's config fields, or your own trainer's params."""
    return base.fields if isinstance(base, ParamsConfig) else FIELDS


def _resolve_data(data: str, matrix_path: Path) -> str:
    """A local file is relative to the matrix file, so the matrix runs from any directory; a
    hub dataset id (no data-file suffix, nothing there on disk) or built-in data is kept as written."""
    p = Path(data).expanduser()
    if p.is_absolute():
        return str(p)
    candidate = matrix_path.parent / p
    if (local_format(p) or candidate.exists()) and not data.startswith(BUILTIN_PREFIX):
        return str(candidate.resolve())
    return data


# --- toggles -> factors ----------------------------------------------------------------------

def _build_factors(spec: MatrixSpec, base: TrainConfig, problems: list[str], warnings: list[str],
                   dropped: set[str]) -> list[Factor]:
    factors: list[Factor] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(spec.toggles):
        where = f"toggles[{i}]"
        factor = _build_factor(item, where, base, problems)
        if factor is None:
            continue
        if factor.name in seen:
            problems.append(f"{where}: duplicate toggle name {factor.name!r} (also toggles[{seen[factor.name]}])")
            continue
        seen[factor.name] = i
        if len(factor.levels) == 1:
            warnings.append(f"{where}: {factor.name!r} changes nothing on the base config; dropped")
            dropped.add(factor.name)
            continue
        if spec.design in TWO_LEVEL_DESIGNS and len(factor.levels) > 2:
            labels = ", ".join(label for label, _ in factor.levels[1:])
            problems.append(f"{where}: design {spec.design!r} needs two-level toggles, but {factor.name!r} "
                            f"has {len(factor.levels) - 1} non-base levels ({labels}); use one-at-a-time "
                            f"or factorial, or list one value")
            continue
        factors.append(factor)
    return factors


def _build_factor(item: Any, where: str, base: TrainConfig | ParamsConfig, problems: list[str]) -> Factor | None:
    shapes = "a catalog name, a {name, patch, description} mapping or a {field: [values]} mapping"
    fields = _fields(base)
    if isinstance(item, str) and isinstance(base, ParamsConfig):
        problems.append(f"{where}: {item!r}: the catalog's optimizations are Mainrun's; your own trainer's "
                        f"toggle is a {{name, patch}} or a {{param: [values]}} mapping")
        return None
    if isinstance(item, str):
        if item not in CATALOG:
            problems.append(f"{where}: unknown optimization {item!r}{suggest(item, CATALOG)}; expected {shapes}")
            return None
        opt = CATALOG[item]
        return _two_level(opt.name, opt.patch, opt.description, opt.allowed, where, base, problems)
    if isinstance(item, dict) and ("name" in item or "patch" in item or len(item) > 1):
        try:
            inline = InlineToggle.model_validate(item)
        except ValidationError as e:
            problems.extend(pydantic_problems(e, InlineToggle, where))
            return None
        unknown = [k for k in inline.patch if k not in fields]
        for key in unknown:
            problems.append(f"{where}.patch.{key}: unknown config field{suggest(key, fields)}")
        if unknown:
            return None
        return _two_level(inline.name, inline.patch, inline.description, True, where, base, problems,
                          patch_where=f"{where}.patch")
    if isinstance(item, dict) and len(item) == 1:
        (key, values), = item.items()
        if key not in fields:
            problems.append(f"{where}.{key}: unknown config field{suggest(str(key), [*fields, 'name'])}; "
                            f"expected {shapes}")
            return None
        return _field_factor(key, values, where, base, problems)
    problems.append(f"{where}: expected {shapes}, got {item!r}")
    return None


def _two_level(name: str, patch: dict[str, Any], description: str, allowed: bool, where: str,
               base: TrainConfig, problems: list[str], patch_where: str | None = None) -> Factor | None:
    try:
        on = base.replace(**patch)
    except ConfigError as e:
        problems.extend(config_problems(patch_where or where, e, keyed=True, fields=_fields(base)))
        return None
    # Normalized values (YAML lists -> tuples, ints -> floats), so conflicts compare like with like.
    levels = [("off", {})] + ([(name, {k: getattr(on, k) for k in patch})] if on != base else [])
    return Factor(name, levels, description, allowed, where)


def _field_factor(key: str, values: Any, where: str, base: TrainConfig, problems: list[str]) -> Factor | None:
    if not isinstance(values, list) or not values:
        problems.append(f"{where}.{key}: expected a non-empty list of values, got {values!r}")
        return None
    base_value = getattr(base, key)
    levels: list[tuple[str, dict[str, Any]]] = [(f"{key}={_compact(base_value)}", {})]
    seen: list[Any] = []
    for j, raw in enumerate(values):
        try:
            value = getattr(base.replace(**{key: raw}), key)
        except ConfigError as e:
            problems.extend(config_problems(f"{where}.{key}[{j}]", e, keyed=False, fields=_fields(base)))
            continue
        if value in seen:
            problems.append(f"{where}.{key}[{j}]: duplicate value {raw!r}")
        elif value != base_value:
            levels.append((f"{key}={_compact(value)}", {key: value}))
        seen.append(value)
    return Factor(key, levels, f"{key} over {len(levels)} levels", True, where)


def _compact(value: Any) -> str:
    """Shortest faithful text for a level label: 0.0003, 1e-05, 0.9,0.95 (no spaces)."""
    if isinstance(value, (tuple, list)):
        return ",".join(_compact(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def _resolve_runs(spec: MatrixSpec, factors: list[Factor], base: TrainConfig, problems: list[str],
                  warnings: list[str], dropped: set[str]) -> list[ListRun]:
    """Map each list-design run's toggle names to (factor, level). A run may name a declared
    toggle, a field level label (`lr=0.0003`) or any catalog name, which joins the factors."""
    runs = []
    for r, run in enumerate(spec.runs or []):
        chosen: dict[int, int] = {}
        for t, name in enumerate(run.toggles):
            where = f"runs[{r}].toggles[{t}]"
            if name in dropped:  # a no-op toggle, already warned about
                continue
            hit = _find_level(name, factors)
            if hit is None and name in CATALOG and not isinstance(base, ParamsConfig):
                hit = _add_catalog_factor(name, where, factors, base, problems, warnings, dropped)
                if hit is None:
                    continue
            if hit is None:
                declared = [f.name for f in factors]
                problems.append(f"{where}: unknown toggle {name!r}{suggest(name, [*declared, *CATALOG])}; "
                                f"expected a toggle declared under toggles or a catalog name")
            elif isinstance(hit, str):
                problems.append(f"{where}: {hit}")
            elif hit[0] in chosen:
                other = factors[hit[0]].levels[chosen[hit[0]]][0]
                problems.append(f"{where}: {name!r} repeats toggle {factors[hit[0]].name!r} (as {other!r})")
            else:
                chosen[hit[0]] = hit[1]
        runs.append((run.name, f"runs[{r}]", chosen))
    return runs


def _add_catalog_factor(name: str, where: str, factors: list[Factor], base: TrainConfig,
                        problems: list[str], warnings: list[str], dropped: set[str]) -> tuple[int, int] | None:
    opt = CATALOG[name]
    factor = _two_level(name, opt.patch, opt.description, opt.allowed, where, base, problems)
    if factor is None:
        return None
    if len(factor.levels) == 1:
        warnings.append(f"{where}: {name!r} changes nothing on the base config; dropped")
        dropped.add(name)
        return None
    factors.append(factor)
    return len(factors) - 1, 1


def _find_level(name: str, factors: list[Factor]) -> tuple[int, int] | str | None:
    for i, factor in enumerate(factors):
        labels = [label for label, _ in factor.levels]
        if name in labels[1:]:
            return i, labels.index(name)
        if name == factor.name:
            if len(labels) == 2:
                return i, 1
            return f"{name!r} has several levels; name one of {', '.join(map(repr, labels[1:]))}"
    return None
