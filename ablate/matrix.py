"""Ablation matrices: a YAML file that names a base config, toggles and a design, expanded here
into the planned runs.

Everything that can be wrong with a matrix is found at load time, before anything trains: bad
YAML, unknown keys and toggles, bad config values, toggles that conflict inside one run and
designs larger than `max_runs`. Each problem is one line of a `MatrixError`, shaped
`<file>: <key path>: <what was expected>`, so a user can go straight to the offending line.

Every toggle is a factor whose first level is "off" (the base config). A catalog or inline
toggle has levels [off, on]; a field factor `{lr: [...]}` has the base value plus each listed
value that differs from it, labelled `lr=<value>`. A toggle that changes nothing on the base is
dropped with a warning rather than rejected: the catalog's `block_size` is a no-op on Mainrun
but a real change on `report-current`, and one matrix file should work on both.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .catalog import CATALOG, PRESETS, preset
from .config import FIELDS, MAINRUN_VAL_LOSS, ConfigError, TrainConfig, suggest

DESIGNS = ("one-at-a-time", "leave-one-out", "factorial", "fractional", "cumulative", "list")
# Designs whose runs switch each toggle on or off, so a factor with several levels has no meaning.
TWO_LEVEL_DESIGNS = ("leave-one-out", "fractional", "cumulative")
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"  # matrix and inline toggle names end up in file names
RESERVED_NAMES = ("baseline", "all")  # generated run names a toggle must not shadow
LOCAL_DATA_SUFFIXES = (".csv", ".parquet", ".jsonl")  # anything else may be a hub dataset id


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
    config: TrainConfig


@dataclass
class Factor:
    name: str
    levels: list[tuple[str, dict[str, Any]]]  # (label, patch); levels[0] is off: the base, patch {}
    description: str = ""
    allowed: bool = True  # False for catalog entries that break Mainrun's rules
    where: str = ""  # key path it was declared at, for error messages


# --- the YAML schema -------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Base(_Strict):
    preset: str = "mainrun"
    overrides: dict[str, Any] = {}

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}{suggest(v, PRESETS)}; expected one of {', '.join(PRESETS)}")
        return v


class InlineToggle(_Strict):
    name: str
    patch: dict[str, Any] = Field(min_length=1)
    description: str = ""

    @field_validator("name")
    @classmethod
    def _usable_name(cls, v: str) -> str:
        if not re.fullmatch(NAME_PATTERN, v):
            raise ValueError(f"expected 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                             f"or digit, got {v!r}")
        if v in RESERVED_NAMES:
            raise ValueError(f"{v!r} is a generated run name; choose another")
        return v


class Run(_Strict):
    name: str = Field(min_length=1)
    toggles: list[str] = []


class Execution(_Strict):
    devices: str | list[int] = "auto"
    jobs_per_device: int = Field(1, ge=1)
    warm_workers: bool = True  # a spare job process per slot imports torch while the slot trains

    @field_validator("devices", mode="before")
    @classmethod
    def _devices(cls, v: Any) -> Any:
        indices = isinstance(v, list) and v and len(set(v)) == len(v) and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v)
        if v in ("auto", "cpu") or indices:
            return v
        raise ValueError(f"expected 'auto', 'cpu' or a list of distinct GPU indices, got {v!r}")


class MatrixSpec(_Strict):
    name: str
    description: str = ""
    base: Base = Base()
    data: str | None = None
    reference: float = MAINRUN_VAL_LOSS
    seeds: list[int] | None = None
    design: str
    toggles: list[Any] = []  # checked item by item below: three shapes, each with its own errors
    runs: list[Run] | None = None
    max_runs: int = Field(200, ge=1)
    execution: Execution = Execution()

    @field_validator("name")
    @classmethod
    def _file_name(cls, v: str) -> str:
        if not re.fullmatch(NAME_PATTERN, v):
            raise ValueError(f"expected 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                             f"or digit (it names files), got {v!r}")
        return v

    @field_validator("design")
    @classmethod
    def _known_design(cls, v: str) -> str:
        if v not in DESIGNS:
            raise ValueError(f"unknown design {v!r}{suggest(v, DESIGNS)}; expected one of {', '.join(DESIGNS)}")
        return v

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError(f"expected a non-empty list of distinct integers, got {v!r}")
        return v


# --- the loaded matrix -----------------------------------------------------------------------

@dataclass
class Matrix:
    path: Path
    text: str
    spec: MatrixSpec
    base: TrainConfig  # preset + overrides + data
    factors: list[Factor]  # no-op toggles already dropped
    seeds: list[int]
    warnings: list[str]
    _rows: list[tuple[str, tuple[str, ...], TrainConfig]] = field(repr=False)

    name = property(lambda self: self.spec.name)
    description = property(lambda self: self.spec.description)
    reference = property(lambda self: self.spec.reference)
    design = property(lambda self: self.spec.design)
    max_runs = property(lambda self: self.spec.max_runs)
    execution = property(lambda self: self.spec.execution)

    def expand(self, data_override: str | None = None) -> list[PlannedRun]:
        """All runs, seed-major: every design row for the first seed, then for the next, so a
        matrix stopped halfway still has complete replicates. `data_override` (the CLI's --data)
        replaces the data path as given."""
        runs = []
        for seed in self.seeds:
            for name, toggles, config in self._rows:
                changes: dict[str, Any] = {"seed": seed}
                if data_override is not None:
                    changes["data"] = data_override
                runs.append(PlannedRun(name, toggles, seed, config.replace(**changes)))
        return runs


def load_matrix(path: str | Path) -> Matrix:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MatrixError(str(path), [f"cannot read the file: {getattr(e, 'strerror', None) or e}"]) from None
    return parse_matrix(text, path)


def parse_matrix(text: str, path: str | Path = "<matrix>") -> Matrix:
    where = str(path)
    raw = _read_yaml(text, where)
    try:
        spec = MatrixSpec.model_validate(raw)
    except ValidationError as e:
        raise MatrixError(where, _pydantic_problems(e, MatrixSpec)) from None
    problems = _shape_problems(spec)
    _raise_if(where, problems)

    base = _build_base(spec, Path(path), problems)
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

    seeds = spec.seeds or [base.seed]
    # Seeds are stored as 64-bit integers (and seed torch): a bigger one fails at the first write.
    _raise_if(where, [f"{'seeds' if spec.seeds else 'base.overrides.seed'}: {s} is outside the "
                      f"64-bit range of a seed" for s in seeds if not -2**63 <= s < 2**63])
    count = _row_count(spec.design, factors, runs)
    if count * len(seeds) > spec.max_runs:
        _raise_if(where, [f"max_runs: design {spec.design!r} has {count} runs x {len(seeds)} seeds = "
                          f"{count * len(seeds)}, over the limit of {spec.max_runs}; raise max_runs or "
                          f"choose a smaller design"])
    rows = _distinct(_compose(_design_rows(spec.design, factors, runs), factors, base, problems),
                     warnings)
    _raise_if(where, problems)
    return Matrix(Path(path), text, spec, base, factors, seeds, [f"{where}: {w}" for w in warnings], rows)


def _distinct(rows: list, warnings: list[str]) -> list:
    """One run per distinct configuration: a design row that equals an earlier one (e.g. the
    stack minus a toggle whose patch another toggle already carries) is the same run under a
    second name, so it is dropped with a warning instead of stealing the first one's name."""
    seen: dict = {}
    kept = []
    for row in rows:
        name, _, config = row
        if config in seen:
            warnings.append(f"run {name!r} is the same configuration as {seen[config]!r}; dropped")
            continue
        seen[config] = name
        kept.append(row)
    return kept


def _raise_if(where: str, problems: list[str]) -> None:
    if problems:
        raise MatrixError(where, problems)


def _read_yaml(text: str, where: str) -> dict:
    try:
        raw = yaml.safe_load(text)  # never yaml.load: a matrix file must not construct objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise MatrixError(where, [f"{at}invalid YAML: {problem}"]) from None
    except RecursionError:  # the YAML composer recurses once per nesting level
        raise MatrixError(where, [f"(top level): nested deeper than {MAX_DEPTH} levels"]) from None
    _check_size(raw, where)
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else type(raw).__name__
        raise MatrixError(where, [f"(top level): expected a mapping of keys, got {got}"])
    return raw


MAX_DEPTH = 32  # a real matrix nests 5 levels at most
MAX_NODES = 100_000  # values after expanding YAML aliases; a real matrix has a few hundred


def _check_size(raw: Any, where: str) -> None:
    """Refuse what no matrix needs and every later step would choke on: aliases expanding to
    millions of values ("billion laughs"), self-referencing values, deep nesting (recursion in
    validation), and text that is not valid UTF-8 (lone surrogates from "\\ud800" escapes, which
    the database cannot store). Iterative and bounded: it stops at the first MAX_NODES values."""
    stack, nodes = [(raw, 0)], 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise MatrixError(where, [f"(top level): more than {MAX_NODES:,} values once YAML aliases "
                                      f"are expanded (or a value that contains itself)"])
        if depth > MAX_DEPTH:
            raise MatrixError(where, [f"(top level): nested deeper than {MAX_DEPTH} levels"])
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise MatrixError(where, [f"(top level): text {value[:40]!r} is not valid UTF-8 "
                                          f"(a lone surrogate escape?)"]) from None
        elif isinstance(value, dict):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, (list, tuple, set)):
            stack.extend((item, depth + 1) for item in value)


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
    seen: dict[str, int] = {}
    for i, run in enumerate(spec.runs or []):
        if run.name in seen:
            problems.append(f"runs[{i}].name: duplicate run name {run.name!r} (also runs[{seen[run.name]}])")
        seen.setdefault(run.name, i)
    return problems


def _build_base(spec: MatrixSpec, path: Path, problems: list[str]) -> TrainConfig | None:
    overrides = spec.base.overrides
    for key in overrides:
        if key not in FIELDS:
            problems.append(f"base.overrides.{key}: unknown config field{suggest(key, FIELDS)}")
    if problems:
        return None
    try:
        base = preset(spec.base.preset).replace(**overrides)
    except ConfigError as e:
        problems.extend(_config_problems("base.overrides", e, keyed=True))
        return None
    if spec.data is not None:
        base = base.replace(data=_resolve_data(spec.data, path))
    return base


def _resolve_data(data: str, matrix_path: Path) -> str:
    """A local file is relative to the matrix file, so the matrix runs from any directory; a
    hub dataset id (no data-file suffix, nothing there on disk) is kept as written."""
    p = Path(data).expanduser()
    if p.is_absolute():
        return str(p)
    candidate = matrix_path.parent / p
    if p.suffix in LOCAL_DATA_SUFFIXES or candidate.exists():
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


def _build_factor(item: Any, where: str, base: TrainConfig, problems: list[str]) -> Factor | None:
    shapes = "a catalog name, a {name, patch, description} mapping or a {field: [values]} mapping"
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
            problems.extend(_pydantic_problems(e, InlineToggle, where))
            return None
        unknown = [k for k in inline.patch if k not in FIELDS]
        for key in unknown:
            problems.append(f"{where}.patch.{key}: unknown config field{suggest(key, FIELDS)}")
        if unknown:
            return None
        return _two_level(inline.name, inline.patch, inline.description, True, where, base, problems,
                          patch_where=f"{where}.patch")
    if isinstance(item, dict) and len(item) == 1:
        (key, values), = item.items()
        if key not in FIELDS:
            problems.append(f"{where}.{key}: unknown config field{suggest(str(key), [*FIELDS, 'name'])}; "
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
        problems.extend(_config_problems(patch_where or where, e, keyed=True))
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
            problems.extend(_config_problems(f"{where}.{key}[{j}]", e, keyed=False))
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
                  warnings: list[str], dropped: set[str]) -> list[tuple[str, str, dict[int, int]]]:
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
            if hit is None and name in CATALOG:
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


# --- designs ---------------------------------------------------------------------------------

Row = tuple[str, str | None, tuple[int, ...]]  # run name, key path of a list run, level per factor


def _row_count(design: str, factors: list[Factor], runs: list | None) -> int:
    """How many rows a design has, without building them (a factorial can be astronomically big)."""
    k = len(factors)
    return {
        "one-at-a-time": 1 + sum(len(f.levels) - 1 for f in factors),
        "leave-one-out": k + 2,
        "factorial": math.prod(len(f.levels) for f in factors),
        "fractional": _fractional_order(k),
        "cumulative": k + 1,
        "list": len(runs or []),
    }[design]


def _design_rows(design: str, factors: list[Factor], runs: list | None) -> list[Row]:
    k = len(factors)
    off = (0,) * k
    if design == "one-at-a-time":
        return [("baseline", None, off)] + [
            (f.levels[level][0], None, off[:i] + (level,) + off[i + 1:])
            for i, f in enumerate(factors) for level in range(1, len(f.levels))]
    if design == "leave-one-out":
        return [("baseline", None, off), ("all", None, (1,) * k)] + [
            (f"all-minus-{f.name}", None, tuple(int(j != i) for j in range(k)))
            for i, f in enumerate(factors)]
    if design == "factorial":
        return [(_joined(factors, levels) or "baseline", None, levels)
                for levels in itertools.product(*(range(len(f.levels)) for f in factors))]
    if design == "fractional":
        h = hadamard(_fractional_order(k))
        rows = [tuple(int(row[j] == -1) for j in range(1, k + 1)) for row in h]
        return [(_joined(factors, levels) or "baseline", None, levels) for levels in rows]
    if design == "cumulative":
        return [("baseline", None, off)] + [
            ("+" + _joined(factors, (1,) * n + (0,) * (k - n)), None, (1,) * n + (0,) * (k - n))
            for n in range(1, k + 1)]
    return [(name, where, tuple(chosen.get(i, 0) for i in range(k))) for name, where, chosen in runs or []]


def _joined(factors: list[Factor], levels: tuple[int, ...]) -> str:
    return "+".join(f.levels[level][0] for f, level in zip(factors, levels) if level)


def _compose(rows: list[Row], factors: list[Factor], base: TrainConfig,
             problems: list[str]) -> list[tuple[str, tuple[str, ...], TrainConfig]]:
    """Apply each row's patches to the base. Two toggles setting one field differently is an
    error rather than last-wins: the run would silently measure something else. Each clash is
    reported once, at the first run that has it."""
    composed, reported = [], set()
    for name, where, levels in rows:
        on = [(f, f.levels[level]) for f, level in zip(factors, levels) if level]
        merged: dict[str, tuple[str, Any]] = {}
        clash = None
        for factor, (label, patch) in on:
            for key, value in patch.items():
                if key not in merged:
                    merged[key] = (label, value)
                elif merged[key][1] != value and clash is None:
                    first, old = merged[key]
                    clash = (first, label, key), (f"{where or factor.where}: in run {name!r}, {first!r} sets "
                                                  f"{key}={old!r} but {label!r} sets {key}={value!r}")
        problem = clash
        if clash is None:
            try:
                composed.append((name, tuple(label for _, (label, _) in on),
                                 base.replace(**{k: v for k, (_, v) in merged.items()})))
            except ConfigError as e:
                problem = str(e), f"{where or 'toggles'}: run {name!r}: {e}"
        if problem and problem[0] not in reported:
            reported.add(problem[0])
            problems.append(problem[1])
    return composed


def _fractional_order(k: int) -> int:
    """Smallest power of two N with N >= k + 1: the runs a resolution-III design needs."""
    return 1 << k.bit_length()


def hadamard(n: int) -> list[list[int]]:
    """Sylvester's Hadamard matrix of order n (a power of two): H[r][c] = (-1)^popcount(r & c),
    the closed form of H_2n = [[H, H], [H, -H]]. Row 0 is all +1; every other column is balanced
    and all columns are mutually orthogonal."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Sylvester Hadamard order must be a power of two, got {n}")
    return [[-1 if bin(r & c).count("1") % 2 else 1 for c in range(n)] for r in range(n)]


def aliasing_note(k: int) -> str:
    """What a fractional design of k toggles can and cannot tell apart.

    Columns 1..k of a Sylvester-Hadamard matrix form a resolution-III design: main effects are
    estimable and mutually orthogonal, but column a XOR b equals the product of columns a and b,
    so toggle c's main effect is aliased with the a x b interaction whenever a ^ b == c."""
    n = _fractional_order(k)
    pairs = {c: [f"{a}x{b}" for a in range(1, k + 1) for b in range(a + 1, k + 1) if a ^ b == c]
             for c in range(1, k + 1)}
    if not any(pairs.values()):
        return (f"{k} toggle(s) in {n} runs: a full factorial, so no main effect is aliased with a "
                f"two-factor interaction.")
    shown = ", ".join(f"{c} ~ {' = '.join(p)}" for c, p in pairs.items() if p)
    return (f"{k} toggles in {n} runs (resolution III): every main effect is estimable and "
            f"orthogonal to the others, but aliased with two-factor interactions (toggles numbered "
            f"1..{k} in declaration order: {shown}). A large effect may be an interaction; confirm "
            f"it with one-at-a-time or a factorial of the few toggles that matter.")


# --- error messages --------------------------------------------------------------------------

def _keypath(prefix: str, loc: tuple) -> str:
    text = prefix
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _pydantic_problems(err: ValidationError, model: type[BaseModel], prefix: str = "") -> list[str]:
    """One `<key path>: expected ...` line per pydantic error, with did-you-mean for unknown keys."""
    problems = []
    for e in err.errors():
        loc, kind, given = e["loc"], e["type"], e.get("input")
        where = _keypath(prefix, loc) or "(top level)"
        if kind == "extra_forbidden":
            valid = _fields_at(model, loc[:-1])
            problems.append(f"{where}: unknown key{suggest(str(loc[-1]), valid)}; expected one of {', '.join(valid)}")
        elif kind == "missing":
            problems.append(f"{where}: required key is missing")
        elif kind in ("model_type", "dict_type"):
            problems.append(f"{where}: expected a mapping, got {given!r}")
        elif kind == "value_error":
            problems.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
        elif e["msg"].startswith("Input should be "):
            problems.append(f"{where}: expected {e['msg'].removeprefix('Input should be ')}, got {given!r}")
        else:
            problems.append(f"{where}: {e['msg']} (got {given!r})")
    return problems


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed at `loc` of `model`, for suggestions on an unknown key."""
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        model = next(a for a in (annotation, *_args_deep(annotation))
                     if isinstance(a, type) and issubclass(a, BaseModel))
    return list(model.model_fields)


def _args_deep(annotation: Any) -> list[Any]:
    args = list(getattr(annotation, "__args__", ()))
    return args + [a for arg in args for a in _args_deep(arg)]


def _config_problems(where: str, err: ConfigError, keyed: bool) -> list[str]:
    """Split a TrainConfig error into lines under `where`; with `keyed`, a part about one field
    (`d_model: expected int, got 'big'`) goes under `where.d_model`."""
    problems = []
    for part in str(err).split("; "):
        key, sep, rest = part.partition(": ")
        if sep and key in FIELDS:
            part = rest
            line = f"{where}.{key}: {rest}" if keyed else f"{where}: {rest}"
        else:
            line = f"{where}: {part}"
        if re.search(r"got '[-+]?[\d.]+e[-+]?\d+'", part):
            line += " (YAML reads 1e-4 as text; write 1.0e-4)"
        problems.append(line)
    return problems
