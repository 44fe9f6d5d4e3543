"""What your training script's output says: which stdout lines are evaluations and what they hold.

Two forms, chosen by the matrix's `metric.pattern`:

* no pattern: a line that starts with `{` is a JSON object with an integer `step` and numbers
  (what `ablate.report_eval` prints);
* a pattern: a Python regular expression (the `re` module's dialect) with named groups. Every
  line it matches (searched anywhere in the line) is one evaluation: the group `step`, if
  the pattern has one, is its step, else the count of matching lines so far; every other named
  group that matched is a value, read as a number. nanoGPT's `step 100: train loss 2.31, val
  loss 2.35` is `step (?P<step>\\d+): train loss (?P<train_loss>[\\d.]+), val loss (?P<val_loss>[\\d.]+)`.

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


def pattern_problems(pattern: str, metric: str) -> list[str]:
    """Why `pattern` cannot read evaluations of `metric`: it does not compile, or has no group
    for the metric. Each a `metric.pattern: ...` line."""
    try:
        groups = re.compile(pattern).groupindex
        regex.compile(pattern)  # the engine that matches it, with a time budget
    except (re.error, regex.error) as e:
        return [f"metric.pattern: {e} (a Python regular expression; a group is (?P<name>...))"]
    if metric not in groups:
        named = ", ".join(groups) or "none"
        return [f"metric.pattern: expected a named group (?P<{metric}>...) for the metric {metric!r} "
                f"(named groups: {named})"]
    return []


class OutputReader:
    """Turns the trainer's stdout lines into evaluations (dicts with `step`), or None for a line
    that is not one."""

    def __init__(self, pattern: str | None = None):
        self.pattern = pattern
        self.regex = regex.compile(pattern) if pattern else None
        self.matched = 0

    def read(self, line: str, number: int, deadline: float | None = None) -> dict[str, Any] | None:
        """The evaluation a line holds, or None. Matching stops at MATCH_BUDGET_S, or at the
        run's `deadline` (time.monotonic()) if sooner: PatternTimeout."""
        text = line.strip()
        if self.regex is None:
            if not text.startswith("{"):
                return None
            try:
                return json.loads(text)
            except json.JSONDecodeError as e:
                raise TrainerError(f"stdout line {number} is not valid JSON ({e.msg}): {text[:120]}") from None
        budget = MATCH_BUDGET_S if deadline is None else max(0.0, min(MATCH_BUDGET_S, deadline - time.monotonic()))
        try:
            found = self.regex.search(text, timeout=budget)
        except TimeoutError:
            raise PatternTimeout(f"metric.pattern {self.pattern!r} took over {budget:.3g} s on stdout line {number} "
                                 f"({len(text):,} characters) and was stopped: nested repeats such as "
                                 f"(a+)+ try every split of a line; simplify the pattern") from None
        if found is None:
            return None
        self.matched += 1
        values: dict[str, Any] = {}
        for name, value in found.groupdict().items():
            if value is None:  # an optional group that did not take part
                continue
            try:
                values[name] = int(value) if name == "step" else float(value)
            except ValueError:
                raise TrainerError(f"stdout line {number}: the group {name!r} of metric.pattern matched "
                                   f"{value[:60]!r}; expected a number") from None
        values.setdefault("step", self.matched)
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
        if self.count <= self.limit:
            self.on_eval(dict(values))
        elif self.count == self.limit + 1:
            print(f"ablate: more than {self.limit} evaluations (trainer.max_evals): later ones are not "
                  f"stored, but for the last", file=sys.stderr, flush=True)

    def finish(self) -> None:
        """The run completed: its last evaluation, stored if it was past the limit, must carry
        the metric."""
        if self.last is None:
            raise TrainerError("no evaluation reported; " + (
                f'print JSON lines such as {{"step": 100, "{self.metric}": 2.31}} (or call ablate.report_eval)'
                if self.how == "command" else f"call report(100, {self.metric}=2.31), the function's second argument"))
        if self.metric not in self.last:
            keys = ", ".join(k for k in self.last if k != "step") or "none"
            raise TrainerError(f"the last evaluation (step {self.last['step']}) has no {self.metric!r}, the "
                               f"matrix's metric (it has: {keys})")
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
