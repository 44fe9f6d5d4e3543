"""Live terminal progress for `ablate run`: one line per active run and an overall bar.

It reads the runs' latest evaluations from the store (which the jobs write), so it shows the
same numbers a later `ablate report` will, and costs the training processes nothing.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from ..storage.store import Store

REFRESH_S = 2.0


class LiveProgress:
    def __init__(self, store: Store, total: int, done: int, console: Console):
        self.store = store
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(bar_width=24),
            TextColumn("{task.fields[info]}", markup=False), TimeElapsedColumn(), console=console)
        self.overall = self.progress.add_task("matrix", total=total, completed=done,
                                              info=f"{done}/{total} runs done")
        self.tasks: dict[int, TaskID] = {}
        self.total, self.done, self.last = total, done, 0.0

    def __enter__(self) -> "LiveProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, event: str, details: dict) -> None:
        if event == "start":
            job = details["job"]
            self.tasks[job.run_id] = self.progress.add_task(
                f"{job.name[:28]:<28}", total=None, info="preparing data…")
        elif event == "end":
            job, run = details["job"], details["run"]
            task = self.tasks.pop(job.run_id, None)
            if task is not None:
                self.progress.remove_task(task)
            self.done += 1
            self.progress.update(self.overall, completed=self.done,
                                 info=f"{self.done}/{self.total} runs done")
            loss = f"{run.final_val_loss:.4f}" if run.final_val_loss is not None else "-"
            colour = {"completed": "green", "failed": "red"}.get(run.status, "yellow")
            why = f"  {run.error}" if run.error else ""
            self.console.print(Text.assemble((f"{run.status:<11}", colour), f" {job.name}  val_loss {loss}{why}"))
        elif event == "reaped":
            self.console.print(Text(f"run {details['run_id']} had no live process: marked "
                                    f"interrupted, it will be run again", style="yellow"))
        elif event == "tick" and time.monotonic() - self.last > REFRESH_S:
            self.last = time.monotonic()
            for job in details["active"]:
                self._refresh(job)

    def _refresh(self, job) -> None:
        evals = self.store.evals(job.run_id, job.attempt)
        if not evals or job.run_id not in self.tasks:
            return
        e = evals[-1]  # a trainer owes only step and val_loss: everything else is optional
        total = (e.extra or {}).get("max_steps") or e.step
        eta = f"  ETA {e.elapsed_s / e.step * (total - e.step):,.0f}s" if e.elapsed_s and e.step else ""
        speed = f"  {e.tokens_per_s:,.0f} tok/s" if e.tokens_per_s else ""
        self.progress.update(self.tasks[job.run_id], total=total, completed=e.step,
                             info=f"step {e.step}/{total}  loss {e.val_loss:.4f}{speed}{eta}")
