"""What your training script's output says: which stdout lines are evaluations and what they hold.

Two forms, chosen by the matrix's `metric.pattern`:

* no pattern: a line that starts with `{` is a JSON object with an integer `step` and numbers
  (what `ablate.report_eval` prints);
* a pattern, or a list of them: Python regular expressions (the `re` module's dialect) with
  named groups. Every line one of them matches (searched anywhere in the line; the first in
  the list that matches) is one evaluation: the group `step`, if the pattern has one, is its
  step, else one past the last evaluation's (the first is 1); every other named group that
  matched is a value, read as a number. nanoGPT's `step 100: train loss 2.31, val loss 2.35`
  is `step (?P<step>\\d+): train loss (?P<train_loss>[\\d.]+), val loss (?P<val_loss>[\\d.]+)`;
  a second pattern reads a line printed once at the end, such as `| End of training | test
  loss 7.30`, into an evaluation of its own.

Lines that are not evaluations go to the run's log.

A pattern is matched by the `regex` module (the same dialect), with a time budget per line:
`re` cannot be stopped once it starts, so `(a+)+` against 40 characters once held a job for
good, its heartbeat and its timeout with it. A line that takes longer than the budget fails
the run with one line naming the pattern.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import regex

from .params import DEFAULT_MAX_EVALS

MATCH_BUDGET_S = 1.0  # the longest one stdout line may take to match metric.pattern


class TrainerError(RuntimeError):
    """Your trainer did not give a usable run; the message says how."""


class PatternTimeout(TrainerError):
    """metric.pattern took longer than its budget on one line (or than the time left to the run)."""


def patterns_of(pattern: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """metric.pattern as a tuple of patterns (none, one, or the list's)."""
    return () if pattern is None else (pattern,) if isinstance(pattern, str) else tuple(pattern)


def pattern_problems(pattern: str | tuple[str, ...] | list[str], metric: str) -> list[str]:
    """Why `pattern` (one, or a list) cannot read evaluations of `metric`: one does not compile,
    or none has a group for the metric. Each a `metric.pattern: ...` line."""
    patterns, groups = patterns_of(pattern), {}
    for i, one in enumerate(patterns):
        where = "metric.pattern" + (f"[{i}]" if not isinstance(pattern, str) else "")
        try:
            groups.update(re.compile(one).groupindex)
            regex.compile(one)  # the engine that matches it, with a time budget
        except (re.error, regex.error) as e:
            return [f"{where}: {e} (a Python regular expression; a group is (?P<name>...))"]
    if metric not in groups:
        named = ", ".join(groups) or "none"
        return [f"metric.pattern: expected a named group (?P<{metric}>...) for the metric {metric!r} "
                f"(named groups: {named})"]
    return []


class OutputReader:
    """Turns the trainer's stdout lines into evaluations (dicts with `step`), or None for a line
    that is not one."""

    def __init__(self, pattern: str | tuple[str, ...] | None = None):
        self.pattern = pattern
        self.regexes = [regex.compile(one) for one in patterns_of(pattern)]
        self.step = 0  # the last evaluation's

    def read(self, line: str, number: int, deadline: float | None = None) -> dict[str, Any] | None:
        """The evaluation a line holds, or None. Matching (every pattern, together) stops at
        MATCH_BUDGET_S, or at the run's `deadline` (time.monotonic()) if sooner: PatternTimeout."""
        text = line.strip()
        if not self.regexes:
            if not text.startswith("{"):
                return None
            try:
                return json.loads(text)
            except json.JSONDecodeError as e:
                raise TrainerError(f"stdout line {number} is not valid JSON ({e.msg}): {text[:120]}") from None
        budget = MATCH_BUDGET_S if deadline is None else max(0.0, min(MATCH_BUDGET_S, deadline - time.monotonic()))
        ends, found = time.monotonic() + budget, None
        for pattern in self.regexes:
            try:
                found = pattern.search(text, timeout=max(0.0, ends - time.monotonic()))
            except TimeoutError:
                raise PatternTimeout(f"metric.pattern {pattern.pattern!r} took over {budget:.3g} s on stdout line "
                                     f"{number} ({len(text):,} characters) and was stopped: nested repeats such as "
                                     f"(a+)+ try every split of a line; simplify the pattern") from None
            if found is not None:
                break
        if found is None:
            return None
        values: dict[str, Any] = {}
        for name, value in found.groupdict().items():
            if value is None:  # an optional group that did not take part
                continue
            try:
                values[name] = int(value) if name == "step" else float(value)
            except ValueError:
                raise TrainerError(f"stdout line {number}: the group {name!r} of metric.pattern matched "
                                   f"{value[:60]!r}; expected a number") from None
        values.setdefault("step", self.step + 1)
        self.step = values["step"]
        return values

    def never_matched(self, last_lines: list[str]) -> str:
        """The one-line failure of a run whose pattern matched nothing: the pattern and the
        output's last lines, so the mismatch shows."""
        shown = " | ".join(line.strip()[:120] for line in last_lines if line.strip()) or "(no output)"
        return f"metric.pattern {self.pattern!r} matched no line of the trainer's output; its last lines: {shown}"


class Evaluations:
    """Each evaluation checked (an integer step that increases, finite numbers) and passed on,
    the first `limit` of them; past it, only the last is, once the run completes (`finish`)."""

    def __init__(self, metric: str, on_eval: Callable[[dict], None], how: str = "command",
                 limit: int = DEFAULT_MAX_EVALS):
        self.metric, self.on_eval, self.how, self.limit = metric, on_eval, how, limit
        self.last: dict[str, Any] | None = None
        self.count = 0
        self.scored: tuple[int, dict[str, Any]] | None = None  # the last evaluation with the metric, and its count

    def accept(self, metrics: Any, where: str) -> None:
        if not isinstance(metrics, dict):
            raise TrainerError(f"{where}: expected a JSON object, got {metrics!r}"[:300])
        step = metrics.get("step")
        if not isinstance(step, numbers.Integral) or isinstance(step, bool) or step < 0:
            raise TrainerError(f"{where}: expected an integer 'step' >= 0, got {step!r}")
        if self.last is not None and step <= self.last["step"]:
            raise TrainerError(f"{where}: step {step} after step {self.last['step']}; steps must increase")
        values: dict[str, Any] = {"step": int(step)}
        for key, value in metrics.items():
            if key == "step":
                continue
            number = _finite(value)
            if number is None:
                raise TrainerError(f"{where}: {key!r} is {repr(value)[:60]}; expected a finite number")
            values[str(key)] = number
        self.last, self.count = values, self.count + 1
        if self.metric in values:
            self.scored = (self.count, values)
        if self.count <= self.limit:
            self.on_eval(dict(values))
        elif self.count == self.limit + 1:
            print(f"ablate: more than {self.limit} evaluations (trainer.max_evals): later ones are not "
                  f"stored, but for the last", file=sys.stderr, flush=True)

    def finish(self) -> None:
        """The run completed: an evaluation must carry the metric (the last that does gives its
        final value; a line printed after it, read by another pattern, may carry others only).
        Past the limit, that one and the last are stored."""
        if self.last is None:
            raise TrainerError("no evaluation reported; " + (
                f'print JSON lines such as {{"step": 100, "{self.metric}": 2.31}} (or call ablate.report_eval)'
                if self.how == "command" else f"call report(100, {self.metric}=2.31), the function's second argument"))
        if self.scored is None:
            keys = ", ".join(k for k in self.last if k != "step") or "none"
            raise TrainerError(f"no evaluation has {self.metric!r}, the matrix's metric (the last, step "
                               f"{self.last['step']}, has: {keys})")
        if self.scored[0] > self.limit and self.scored[1] is not self.last:
            self.on_eval(dict(self.scored[1]))
        if self.count > self.limit:
            self.on_eval(dict(self.last))


def _finite(value: Any) -> float | None:
    """A reported value as a float, or None unless it is a finite number (JSON's 1e999 too)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
