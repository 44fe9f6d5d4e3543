"""The peak memory of one run, measured in the process that runs it, whoever's trainer it is.

A job process may run more than one attempt (a Ray worker is reused; a warm spare imported
torch before its run arrived), so the peak is reset when the attempt starts
(training/peak_rss.py).
The built-in trainer resets it once more after preparing its data and reports that peak itself:
training's, not the tokenizer's of a run that missed the data cache.
A command trainer's run is its child process: its peak is the largest resident memory of any
child reaped since (getrusage(RUSAGE_CHILDREN): a maximum over processes, not a sum), known
where it rose during this attempt, as it does in a fresh job process.
"""

from __future__ import annotations

import resource

from ..training.peak_rss import high_water_mark_bytes, reset_high_water_mark


class PeakMemory:
    """Started with the attempt; `read()` at its end gives the result fields."""

    def __init__(self) -> None:
        self.reset = reset_high_water_mark()
        self.children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss

    def read(self, command: bool) -> dict:
        """The run's peak: its command's (a command trainer: the process that trains), else
        this process's; {} where it cannot be known."""
        if command:
            children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            if children <= self.children_before:  # an earlier attempt's child peaked higher
                return {}
            return {"peak_rss_bytes": 1024 * children, "peak_rss_of": "the command's largest process"}
        own = high_water_mark_bytes() if self.reset else None
        return {} if own is None else {"peak_rss_bytes": own, "peak_rss_of": "the run's process"}
