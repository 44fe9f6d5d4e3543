"""Live terminal progress for `ablate run`: one line per active run and an overall bar.

It reads the runs' latest evaluations from the store (which the jobs write), so it shows the
same numbers a later `ablate report` will, and costs the training processes nothing.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from ..storage.schema import EVAL_COLUMNS
from ..storage.store import Store
from ..training.params import is_custom

REFRESH_S = 2.0
NAME_WIDTH = 28  # run names are cut to this, so every bar and completion line starts in one column


class LiveProgress:
    """`baselines` maps each seed to the run id of the matrix's baseline, for each finished run's
    Δbase."""

    def __init__(self, store: Store, total: int, done: int, console: Console,
                 baselines: dict[int, int] | None = None):
        self.store = store
        self.console = console
        self.baselines = baselines or {}
        self.progress = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(bar_width=24),
            TextColumn("{task.fields[info]}", markup=False), TimeElapsedColumn(), console=console)
        self.overall = self.progress.add_task(f"{'matrix':<{NAME_WIDTH + 11}}", total=total,
                                              completed=done, info=f"{done}/{total} runs done")
        self.tasks: dict[int, TaskID] = {}
        self.started: dict[int, float] = {}
        self.durations: list[float] = []  # wall seconds of the runs that ended here
        self.slots = 1  # the most runs seen training at once
        self.total, self.done, self.last = total, done, 0.0

    def __enter__(self) -> "LiveProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, event: str, details: dict) -> None:
        if event == "start":
            job = details["job"]
            self.started[job.run_id] = time.monotonic()
            self.tasks[job.run_id] = self.progress.add_task(self._label(job), total=None, info="starting…")
            self.slots = max(self.slots, len(self.tasks))
        elif event == "end":
            job, run = details["job"], details["run"]
            task = self.tasks.pop(job.run_id, None)
            if task is not None:
                self.progress.remove_task(task)
            if job.run_id in self.started:
                self.durations.append(time.monotonic() - self.started.pop(job.run_id))
            self.done += 1
            self.progress.update(self.overall, completed=self.done, info=self._matrix_info())
            metric, loss = self._final(run)
            colour = {"completed": "green", "failed": "red"}.get(run.status, "yellow")
            why = f"  {run.error}" if run.error else ""
            wall = f"{run.wall_time_s:.0f}s" if run.wall_time_s is not None else ""
            self.console.print(Text.assemble(
                (f"{run.status:<11}", colour), f" {self._label(job)} {metric} {loss:>7}  "
                f"{self._delta_base(run):<15}{wall:>5}{why}"))
        elif event == "reaped":
            self.console.print(Text(f"run {details['run_id']} had no live process: marked "
                                    f"interrupted, it will be run again", style="yellow"))
        elif event == "tick" and time.monotonic() - self.last > REFRESH_S:
            self.last = time.monotonic()
            for job in details["active"]:
                self._refresh(job)

    def _label(self, job) -> str:
        """A run as its lines start: its seed (runs of one name differ by it), then its name cut
        to NAME_WIDTH, in fixed columns."""
        run = self.store.run(job.run_id)
        seed = "" if run is None or run.seed is None else run.seed
        return f"seed {seed!s:<5} {job.name[:NAME_WIDTH]:<{NAME_WIDTH}}"

    def _matrix_info(self) -> str:
        """Runs done, and the time the rest will take at the measured pace of this session's runs."""
        info = f"{self.done}/{self.total} runs done"
        left = self.total - self.done
        if self.durations and left > 0:
            seconds = sum(self.durations) / len(self.durations) * left / self.slots
            info += f", about {seconds / 60:.1f} min left" if seconds >= 60 else f", about {seconds:.0f}s left"
        return info

    def _final(self, run) -> tuple[str, str]:
        """The run's final metric and its value, as printed."""
        metric, value = self._final_value(run)
        return metric, f"{value:.4f}" if value is not None else "-"

    def _final_value(self, run) -> tuple[str, float | None]:
        """The run's final metric and its value: Mainrun's val_loss, or your own trainer's metric
        at the last evaluation that has it."""
        config = run.config if run.final_val_loss is None else None  # Mainrun's has its loss
        if not is_custom(config or {}):
            return "val_loss", run.final_val_loss
        metric = run.config["trainer"].get("metric", "val_loss")
        values = [getattr(e, metric, None) if metric in EVAL_COLUMNS else (e.extra or {}).get(metric)
                  for e in self.store.evals(run.id, run.attempt)]
        value = next((v for v in reversed(values) if v is not None), None)
        return metric, None if value is None else float(value)

    def _delta_base(self, run) -> str:
        """The run's final metric minus its seed's baseline's (Mainrun's loss or your own
        metric), once both are known."""
        base_id = self.baselines.get(run.seed)
        base = self.store.run(base_id) if base_id is not None and base_id != run.id else None
        if base is None or run.status != "completed" or base.status != "completed":
            return ""
        (metric, value), (base_metric, base_value) = self._final_value(run), self._final_value(base)
        if value is None or base_value is None or metric != base_metric:
            return ""
        delta = value - base_value + 0.0  # never -0.0
        return f"Δbase {delta:+.4f}" if delta == 0 or abs(delta) >= 5e-5 else f"Δbase {delta:+.1e}"

    def _refresh(self, job) -> None:
        evals = self.store.evals(job.run_id, job.attempt)
        if not evals or job.run_id not in self.tasks:
            return
        e = evals[-1]  # Mainrun's trainer owes step and val_loss, your own only step
        total = (e.extra or {}).get("max_steps") or e.step
        run = self.store.run(job.run_id)  # the step reached since, where the trainer reports steps
        reached = getattr(run, "current_step", None) if run is not None and run.attempt == job.attempt else None
        step = min(max(e.step, reached or 0), total)
        # the pace between the last two evaluations: the first step carries warm-up costs
        ref = evals[-2] if len(evals) > 1 and evals[-2].elapsed_s is not None else None
        pace = ((e.elapsed_s - ref.elapsed_s) / (e.step - ref.step) if ref and e.step > ref.step
                else e.elapsed_s / e.step if e.elapsed_s and e.step else None)
        eta = f"  ETA {pace * (total - step):,.0f}s" if pace and e.elapsed_s else ""
        speed = f"  {e.tokens_per_s:,.0f} tok/s" if e.tokens_per_s else ""
        loss = f"  val_loss {e.val_loss:.4f}@{e.step}" if e.val_loss is not None else ""
        self.progress.update(self.tasks[job.run_id], total=total, completed=step,
                             info=f"step {step}/{total}{loss}{speed}{eta}")
