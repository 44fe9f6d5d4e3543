"""Reading YAML that someone else wrote: plain data only, bounded in size and depth.

`yaml.safe_load` never constructs objects, but plain data can still hurt every later step:
aliases expanding to millions of values ("billion laughs"), a value that contains itself, deep
nesting (recursion in validation), text that is not valid UTF-8 (lone surrogates from "\\ud800"
escapes, which the database cannot store). All are refused here, with the place when YAML knows it.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_DEPTH = 32  # a real matrix nests 5 levels at most
MAX_NODES = 100_000  # values after expanding YAML aliases; a real matrix has a few hundred


class YAMLProblem(ValueError):
    """Text that is not a usable YAML mapping; the message says where (when known) and why."""


def read_mapping(text: str) -> dict:
    """The mapping a YAML text holds, or a YAMLProblem."""
    try:
        raw = yaml.safe_load(text)  # never yaml.load: a file must not construct objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise YAMLProblem(f"{at}invalid YAML: {problem}") from None
    except RecursionError:  # the YAML composer recurses once per nesting level
        raise YAMLProblem(f"(top level): nested deeper than {MAX_DEPTH} levels") from None
    _check_size(raw)
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else type(raw).__name__
        raise YAMLProblem(f"(top level): expected a mapping of keys, got {got}")
    return raw


def _check_size(raw: Any) -> None:
    """Iterative and bounded: it stops at the first MAX_NODES values."""
    stack, nodes = [(raw, 0)], 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise YAMLProblem(f"(top level): more than {MAX_NODES:,} values once YAML aliases are expanded "
                              f"(or a value that contains itself)")
        if depth > MAX_DEPTH:
            raise YAMLProblem(f"(top level): nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise YAMLProblem(f"(top level): text {value[:40]!r} is not valid UTF-8 "
                                  f"(a lone surrogate escape?)") from None
        elif isinstance(value, dict):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, (list, tuple, set)):
            stack.extend((item, depth + 1) for item in value)
