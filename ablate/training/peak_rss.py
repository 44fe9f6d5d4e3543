"""A process's peak resident memory (VmHWM), which Linux restarts from the current resident
memory on a write of 5 to /proc/self/clear_refs: so a run's peak is measured from where it
starts, in a process that held more before (a reused worker, a tokenizer trained first)."""

from __future__ import annotations

import re
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_high_water_mark() -> bool:
    """The process's peak resident memory starts again from what it holds now; False where it
    cannot (not Linux, or /proc not writable)."""
    try:
        CLEAR_REFS.write_text("5")
        return high_water_mark_bytes() is not None
    except OSError:  # not Linux, or /proc not writable: no per-run peak
        return False


def high_water_mark_bytes() -> int | None:
    try:
        match = re.search(r"^VmHWM:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return 1024 * int(match.group(1)) if match else None
