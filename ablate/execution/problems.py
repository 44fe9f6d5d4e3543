"""A matrix's errors as its user reads them: one `<key path>: <what was expected>` line per
problem, from pydantic's errors and from config errors."""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..training.config import FIELDS, ConfigError, suggest
from .seeds import untagged


class Strict(BaseModel):
    """A matrix section: unknown keys and wrong types are errors, never coerced or ignored."""
    model_config = ConfigDict(extra="forbid", strict=True)


def _keypath(prefix: str, loc: tuple) -> str:
    text = prefix
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def pydantic_problems(err: ValidationError, model: type[BaseModel], prefix: str = "") -> list[str]:
    """One `<key path>: expected ...` line per pydantic error, with did-you-mean for unknown keys."""
    problems = []
    for e in err.errors():
        loc, kind, given = untagged(e["loc"]), e["type"], _Shown(e.get("input"))
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


class _Shown:
    """A given value in a problem line: its repr, cut to a line's worth."""

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        text = repr(self.value)
        return text if len(text) <= 100 else f"{text[:80]}... ({len(text):,} characters)"


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


def config_problems(where: str, err: ConfigError, keyed: bool, fields: Any = FIELDS) -> list[str]:
    """Split a config error into lines under `where`; with `keyed`, a part about one field of
    `fields` (`d_model: expected int, got 'big'`) goes under `where.d_model`."""
    problems = []
    for part in str(err).split("; "):
        key, sep, rest = part.partition(": ")
        if sep and key in fields:
            part = rest
            line = f"{where}.{key}: {rest}" if keyed else f"{where}: {rest}"
        else:
            line = f"{where}: {part}"
        number = re.search(r"got '([-+]?[\d.]+)e([-+]?\d+)'", part)
        if number and math.isinf(float(f"{number[1]}e{number[2]}")):
            line += " (beyond the largest number a float holds, about 1.8e308)"
        elif number and "." not in number[1]:
            line += f" (YAML reads {number[1]}e{number[2]} as text; write {number[1]}.0e{number[2]})"
        problems.append(line)
    return problems
