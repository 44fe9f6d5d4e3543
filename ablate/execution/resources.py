"""The peak memory of one run, measured in the process that runs it, whoever's trainer it is.

A job process may run more than one attempt (a Ray worker is reused; a warm spare imported
torch before its run arrived), so the peak is reset when the attempt starts: Linux resets a
process's high-water mark of resident memory (VmHWM) on a write of 5 to /proc/self/clear_refs.
A command trainer's run is its child process: its peak is the largest resident memory of any
child reaped since (getrusage(RUSAGE_CHILDREN): a maximum over processes, not a sum), known
where it rose during this attempt, as it does in a fresh job process.
"""

from __future__ import annotations

import re
import resource
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakMemory:
    """Started with the attempt; `read()` at its end gives the result fields."""

    def __init__(self) -> None:
        self.reset = _reset_high_water_mark()
        self.children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss

    def read(self, command: bool) -> dict:
        """The run's peak: its command's (a command trainer: the process that trains), else
        this process's; {} where it cannot be known."""
        if command:
            children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            if children <= self.children_before:  # an earlier attempt's child peaked higher
                return {}
            return {"peak_rss_bytes": 1024 * children, "peak_rss_of": "the command's largest process"}
        own = _high_water_mark_kib() if self.reset else None
        return {} if own is None else {"peak_rss_bytes": 1024 * own, "peak_rss_of": "the run's process"}


def _reset_high_water_mark() -> bool:
    try:
        CLEAR_REFS.write_text("5")
        return _high_water_mark_kib() is not None
    except OSError:  # not Linux, or /proc not writable: no per-run peak
        return False


def _high_water_mark_kib() -> int | None:
    try:
        match = re.search(r"^VmHWM:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None
