"""Reading YAML that someone else wrote: plain data only, bounded in size and depth.

`yaml.safe_load` never constructs objects, but plain data can still hurt every later step:
aliases expanding to millions of values ("billion laughs"), a value that contains itself, deep
nesting (recursion in validation), text that is not valid UTF-8 (lone surrogates from "\\ud800"
escapes, which the database cannot store). All are refused here, with the place when YAML knows it.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import yaml

MAX_DEPTH = 32  # a real matrix nests 5 levels at most
MAX_NODES = 100_000  # values after expanding YAML aliases; a real matrix has a few hundred
MAX_CHARS = 1_000_000  # a real matrix is a few kilobytes; parsing megabytes takes a minute and a gigabyte


class YAMLProblem(ValueError):
    """Text that is not a usable YAML mapping; the message says where (when known) and why."""


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """safe_load's loader (plain data only; libyaml's parser where PyYAML has it, 20x faster on a
    matrix of thousands of toggles), but a key given twice in one mapping is an error: YAML's
    last-wins would silently drop the first `toggles:` or `lr:`."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<` merges may be overridden; a non-scalar key is refused later
            key = self.construct_object(key_node)
            if key in first:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given at line {first[key] + 1})",
                    key_node.start_mark)
            first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_mapping(text: str) -> dict:
    """The mapping a YAML text holds, or a YAMLProblem. A copy of a cached parse: a report reads
    its stored matrix text several times over (its metric, its plan), and a matrix of a thousand
    configurations takes a third of a second each time."""
    return copy.deepcopy(_parsed(text))


@lru_cache(maxsize=16)
def _parsed(text: str) -> dict:
    if len(text) > MAX_CHARS:
        raise YAMLProblem(f"(top level): {len(text):,} characters, over the limit of {MAX_CHARS:,} "
                          f"for a matrix file")
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: nothing constructs objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise YAMLProblem(f"{at}invalid YAML: {problem}") from None
    except RecursionError:  # the YAML composer recurses once per nesting level
        raise YAMLProblem(f"(top level): nested deeper than {MAX_DEPTH} levels") from None
    except Exception as e:  # noqa: BLE001 - PyYAML's own bugs (`!!timestamp` with no value)
        raise YAMLProblem(f"invalid YAML: the YAML reader failed on it ({type(e).__name__}: {e})") from None
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
