"""Your script's output as it printed it, kept beside its run's log: stdout and stderr in the
order they came, bounded (the first HEAD_BYTES and the last TAIL_BYTES, a line saying what was
cut between), so a pattern can be checked against the real lines afterwards without training
again. `ablate show RUN --output` prints it with the lines the run's patterns read marked;
`ablate plan MATRIX --check-pattern FILE` reads a saved output with the matrix's patterns.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
from pathlib import Path
from typing import Iterator

from .output import Evaluations, OutputReader, TrainerError

HEAD_BYTES = 2 * 2**20  # the output's start, kept whole
TAIL_BYTES = 2 * 2**20  # and its end: a run's last lines say why it ended
SUFFIX = ".output"  # beside the run's log: run{id}-attempt{n}.output
MARK = "▶ "  # before a line a pattern read (`marked`); other lines get as many spaces


def output_name(run_id: int, attempt: int) -> str:
    """The file of a run's attempt's output, beside its log (`run{id}-attempt{n}.log`)."""
    return f"run{run_id}-attempt{attempt}{SUFFIX}"


class Transcript:
    """Writes the lines a command prints, from both of its streams' threads, to `path` (opened
    without following a link placed at its name), keeping the head and the tail."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if path.is_symlink():
            path.unlink()
        self.file = open(path, "w", encoding="utf-8", errors="replace",
                         opener=lambda name, flags: os.open(name, flags | getattr(os, "O_NOFOLLOW", 0), 0o644))
        self.written = 0
        self.tail: collections.deque[str] = collections.deque()
        self.tail_bytes = 0
        self.cut_lines = self.cut_bytes = 0
        self.lock = threading.Lock()
        self.closed = False  # a stream's thread may still hand a line after the run ended

    def write(self, line: str) -> None:
        line = line if line.endswith("\n") else line + "\n"
        size = len(line.encode("utf-8", "replace"))
        with self.lock:
            if self.closed:
                return
            if self.written + size <= HEAD_BYTES and not self.tail:
                self.file.write(line)
                self.written += size
                return
            self.tail.append(line)
            self.tail_bytes += size
            while self.tail_bytes > TAIL_BYTES and len(self.tail) > 1:
                dropped = self.tail.popleft()
                self.tail_bytes -= len(dropped.encode("utf-8", "replace"))
                self.cut_lines += 1
                self.cut_bytes += len(dropped.encode("utf-8", "replace"))

    def close(self) -> None:
        with self.lock:
            self.closed = True
            if self.cut_lines:
                self.file.write(f"[ablate: {self.cut_lines:,} lines ({self.cut_bytes:,} bytes) not kept here: "
                                f"the first {HEAD_BYTES:,} bytes and the last {TAIL_BYTES:,} are]\n")
            self.file.writelines(self.tail)
            self.file.close()


def marked(lines: Iterator[str] | list[str], pattern: str | tuple[str, ...] | None) -> Iterator[tuple[bool, str]]:
    """Each line with whether the run's pattern(s) (none: JSON lines) read an evaluation from it."""
    reader = OutputReader(pattern)
    for number, line in enumerate(lines, 1):
        try:
            read = reader.read(line, number) is not None
        except TrainerError:  # a line the pattern matched but could not read is still one it matched
            read = True
        yield read, line.rstrip("\n")


def check_pattern(path: str | Path, pattern: str | tuple[str, ...] | None, metric: str) -> list[str]:
    """What a run would read from a saved output (a file of the script's lines, such as `ablate
    show --output` prints without its marks, or the `.output` beside a run's log): a line per
    evaluation, then a summary. Raises TrainerError as the run would fail: a group that holds
    no number, steps that do not increase, or no evaluation of `metric`."""
    reader, said, valued = OutputReader(pattern), [], 0
    checks = Evaluations(metric, lambda values: None, limit=sys.maxsize)  # a run's: steps increase, finite numbers
    with open(path, encoding="utf-8", errors="replace") as text:
        for number, line in enumerate(text, 1):
            values = reader.read(line.removeprefix(MARK), number)
            if values is None:
                continue
            checks.accept(values, f"line {number}")
            valued += metric in values
            said.append(f"line {number}: step {values['step']}" + "".join(
                f", {k} {v!r}" for k, v in values.items() if k != "step"))
    if not valued:
        raise TrainerError(f"{path}: no line gives {metric!r}, the matrix's metric ({len(said)} evaluation(s) read)")
    return [*said, f"{len(said)} evaluation(s), {valued} with {metric!r}: a run that prints these lines gives "
                   f"these evaluations"]
