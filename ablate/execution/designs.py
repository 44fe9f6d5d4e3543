"""Designs: which combinations of factor levels a matrix runs, and what each design can tell apart.

A design turns factors (each a list of levels, level 0 being "off") into rows, one row per run:
a name and a level per factor. Each row's patches are merged onto the base config
(`catalog.merge_patches`: two toggles that set one field differently are an error, not
last-wins) and rows that come out as the same configuration are kept once. `matrix.py` reads
the YAML and builds the factors; a new design is a name in DESIGNS plus a branch in `count_rows`
and `_rows` (and, in the report, a way to read its effects).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from ..training.catalog import PatchConflict, merge_patches
from ..training.config import ConfigError, TrainConfig

DESIGNS = ("one-at-a-time", "leave-one-out", "factorial", "fractional", "cumulative", "list")
# Designs whose runs switch each toggle on or off, so a factor with several levels has no meaning.
TWO_LEVEL_DESIGNS = ("leave-one-out", "fractional", "cumulative")
LEAVE_OUT = "all-minus-"  # a leave-one-out row's name: the full stack minus one toggle

Row = tuple[str, str | None, tuple[int, ...]]  # run name, key path of a list run, level per factor
ListRun = tuple[str, str, dict[int, int]]  # a list design's run: name, key path, {factor: level}
ComposedRow = tuple[str, tuple[str, ...], TrainConfig]  # run name, labels of its on-levels, config


@dataclass
class Factor:
    name: str
    levels: list[tuple[str, dict[str, Any]]]  # (label, patch); levels[0] is off: the base, patch {}
    description: str = ""
    allowed: bool = True  # False for catalog entries that break Mainrun's rules
    where: str = ""  # key path it was declared at, for error messages


def count_rows(design: str, factors: list[Factor], runs: list[ListRun] | None) -> int:
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


def build_rows(design: str, factors: list[Factor], base: TrainConfig, runs: list[ListRun] | None,
               problems: list[str], warnings: list[str]) -> list[ComposedRow]:
    """The design's runs as configs: its rows with their patches merged onto `base`, one per
    distinct configuration. Conflicts and invalid combinations are added to `problems`."""
    return _distinct(_compose(_rows(design, factors, runs), factors, base, problems), warnings)


def _rows(design: str, factors: list[Factor], runs: list[ListRun] | None) -> list[Row]:
    k = len(factors)
    off = (0,) * k
    if design == "one-at-a-time":
        return [("baseline", None, off)] + [
            (f.levels[level][0], None, off[:i] + (level,) + off[i + 1:])
            for i, f in enumerate(factors) for level in range(1, len(f.levels))]
    if design == "leave-one-out":
        return [("baseline", None, off), ("all", None, (1,) * k)] + [
            (LEAVE_OUT + f.name, None, tuple(int(j != i) for j in range(k)))
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


def _compose(rows: list[Row], factors: list[Factor], base: TrainConfig, problems: list[str]) -> list[ComposedRow]:
    """Apply each row's patches to the base. Each conflict or invalid combination is reported
    once, at the first run that has it."""
    composed, reported = [], set()
    declared_at = {label: f.where for f in factors for label, _ in f.levels}
    for name, where, levels in rows:
        on = [f.levels[level] for f, level in zip(factors, levels) if level]
        try:
            composed.append((name, tuple(label for label, _ in on), base.replace(**merge_patches(on))))
            continue
        except PatchConflict as c:
            problem = (c.first, c.second, c.key), (
                f"{where or declared_at[c.second]}: in run {name!r}, {c.first!r} sets {c.key}={c.first_value!r} "
                f"but {c.second!r} sets {c.key}={c.second_value!r}")
        except ConfigError as e:
            problem = str(e), f"{where or 'toggles'}: run {name!r}: {e}"
        if problem[0] not in reported:
            reported.add(problem[0])
            problems.append(problem[1])
    return composed


def _distinct(rows: list[ComposedRow], warnings: list[str]) -> list[ComposedRow]:
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


def short_name(name: str) -> str:
    """A configuration by what it changes: a leave-one-out row by what it removes (−ema)."""
    return "−" + name.removeprefix(LEAVE_OUT) if name.startswith(LEAVE_OUT) else name
