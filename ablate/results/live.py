"""What the live view (`ablate serve`) shows of an experiment while its matrix runs, read from the
database alone, so that a run on a Ray cluster or another machine is watched the same way.

Two reads, split by cost. `progress` is what changes every second, in a few small queries: the
state of every run (per configuration and seed), the evaluations added since the last one the
page has (by id, so a poll sends only what is new), the failures with the end of their
tracebacks, an ETA and a `version` that changes whenever anything the report reads changes.
`report_view` is the report itself, `ablate report --format json` and the HTML page's section
for the experiment, built by the same functions, so the live view cannot say something else:
the server builds it again only when `version` moves.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from ..storage.schema import EVAL_COLUMNS, STATUSES, Eval, Experiment, ExperimentRun, Run
from ..storage.store import open_store
from ..execution.seeds import own_metric
from . import palette
from .frames import ResultsError, experiment_evals, thinned_ids

MAX_TOTAL = 20_000  # points of a first load over all runs: what a browser draws in an instant
MIN_POINTS = 2  # per run (its first and last), however many runs share MAX_TOTAL
TAIL_LINES = 12  # of a failed run's traceback (its output's end, for your own trainer)


def experiments(db: Any) -> list[dict]:
    """Every experiment with its runs counted by status, most recently changed first."""
    statement = (select(Experiment.name, Experiment.design, Experiment.updated_at, Run.status, func.count(Run.id))
                 .outerjoin(ExperimentRun, ExperimentRun.experiment_id == Experiment.id)
                 .outerjoin(Run, Run.id == ExperimentRun.run_id)
                 .group_by(Experiment.id, Experiment.name, Experiment.design, Experiment.updated_at, Run.status))
    found: dict[str, dict] = {}
    with open_store(db, read_only=True) as store:
        rows = store.query(statement)
    for name, design, updated, status, n in rows:
        entry = found.setdefault(name, {"name": name, "design": design, "updated": _iso(updated),
                                        "counts": dict.fromkeys(STATUSES, 0)})
        if status is not None:
            entry["counts"][status] = entry["counts"].get(status, 0) + n
    return sorted(found.values(), key=lambda e: e["updated"] or "", reverse=True)


def progress(db: Any, experiment: str, since: int = 0, known: str | None = None) -> dict:
    """The experiment's runs now and its evaluations with an id above `since`: a first load
    (since 0) keeps MAX_TOTAL over all runs (at least MIN_POINTS each), evenly spread, the last
    always among them. Where the page already has this `version` (`known`), only the steps of
    the running runs: a poll of an experiment where nothing ended and no evaluation came is a
    few bytes, however large."""
    with open_store(db, read_only=True) as store:
        metric, rows = _experiment_runs(store, experiment)
        value = getattr(Eval, metric) if metric in EVAL_COLUMNS else Eval.extra
        evals = store.query(_points(experiment, value, since, per_run=max(MIN_POINTS, MAX_TOTAL // max(1, len(rows)))))
        newest = _newest(store, experiment) if since == 0 else max([since, *(e[0] for e in evals)])
    runs = [_run(name, position, run) for name, position, run in rows]
    now = _version(runs, newest)
    if now == known:
        return {"version": now, "last_id": since, "points": [], "unchanged": True,
                "steps": {r["run_id"]: r["step"] for r in runs if r["status"] == "running"}}
    points = [[run_id, step, _value(v, metric)] for _, run_id, step, v in evals]
    points = [p for p in points if p[2] is not None]
    counts = dict.fromkeys(STATUSES, 0)
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    names = [r["config"] for r in runs]
    return {"experiment": experiment, "metric": metric, "runs": runs, "counts": counts,
            "points": points, "last_id": newest,
            "colours": palette.configuration_colours(names), "eta_s": _eta(runs),
            "failures": [r for r in runs if r["status"] in ("failed", "interrupted")],
            "version": now}


def version(db: Any, experiment: str) -> str:
    """`progress(...)["version"]` without reading a single evaluation row."""
    with open_store(db, read_only=True) as store:
        _, rows = _experiment_runs(store, experiment)
        newest = _newest(store, experiment)
    return _version([_run(name, position, run) for name, position, run in rows], newest)


def _experiment_runs(store: Any, experiment: str) -> tuple[str, list]:
    """The metric the experiment's report ranks by (its matrix's own, else Mainrun's val_loss)
    and its runs as (configuration, position, Run), in matrix order."""
    found = store.query(select(Experiment.yaml_text).where(Experiment.name == experiment))
    if not found:
        raise ResultsError(f"no experiment named {experiment!r} in {store.where}")
    own = own_metric(found[0][0])
    rows = store.query(select(ExperimentRun.name, ExperimentRun.position, Run)
                       .join(Run, Run.id == ExperimentRun.run_id)
                       .join(Experiment, Experiment.id == ExperimentRun.experiment_id)
                       .where(Experiment.name == experiment)
                       .order_by(ExperimentRun.position, Run.seed, Run.id))
    return (own[0] if own else "val_loss"), rows


def _newest(store: Any, experiment: str) -> int:
    """The id of the experiment's newest evaluation (of its runs' current attempts), 0 if none."""
    return store.query(experiment_evals(experiment, func.max(Eval.id)))[0][0] or 0


def run_view(db: Any, run_id: int) -> dict:
    """One run as `ablate show` gives it: identity and results, its config against its same-seed
    baseline, the command that reproduces it, and its curve."""
    from .detail import run_detail
    from .frames import load_evals, load_runs
    from .render import as_command

    with open_store(db, read_only=True) as store:
        found = store.query(select(Experiment.name).join(ExperimentRun, ExperimentRun.experiment_id == Experiment.id)
                            .where(ExperimentRun.run_id == run_id).order_by(Experiment.name).limit(1))
        if not found:
            raise ResultsError(f"no run {run_id} in {store.where}")
        experiment = found[0][0]
        metric, _ = _experiment_runs(store, experiment)
        runs = load_runs(store, experiment)
        evals = load_evals(store, experiment, runs=[run_id])
    detail = run_detail(runs, evals, runs[runs["run_id"] == run_id].iloc[0])
    steps = detail.evals["step"].tolist() if len(detail.values) else []
    return {"run": {k: _plain(v) for k, v in detail.run.items()},
            "metric": metric,
            "diff": [{k: _plain(v) for k, v in row.items()} for row in detail.config_diff.to_dict("records")],
            "command": as_command(detail),
            "points": [[int(step), value] for step, value in zip(steps, map(_plain, detail.values)) if value is not None]}


def report_view(db: Any, experiment: str) -> dict:
    """The report as `ablate report --format json` prints it; the HTML page's section for the
    experiment without its images (the page draws the curves itself) and without each
    configuration's details (its run's page has them; 10,000 took seconds to build each time);
    and the configurations' colours by their rank, as the plots give them (before a report,
    `progress` gives them by their place in the matrix)."""
    from .html import experiment_section
    from .render import render
    from .report import build_report

    report = build_report(db, experiment)
    return {"json": json.loads(render(report, "json")), "html": experiment_section(db, report, static=False),
            "colours": palette.configuration_colours(report.ranking["name"])}  # as plot_curves gives them


def _plain(value: Any) -> Any:
    """A value JSON can carry: numbers stay numbers (nan is null), everything else its text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # a numpy scalar
        return _plain(value.item())
    return str(value)


def _value(stored: Any, metric: str) -> float | None:
    value = stored.get(metric) if isinstance(stored, dict) and metric not in EVAL_COLUMNS else stored
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _run(config: str, position: int, run: Run) -> dict:
    tail = "\n".join((run.traceback or "").rstrip().splitlines()[-TAIL_LINES:])
    return {"run_id": run.id, "config": config, "position": position, "seed": run.seed,
            "status": run.status, "attempt": run.attempt, "step": run.current_step or run.steps,
            "max_steps": run.max_steps, "started": _iso(run.started_at), "finished": _iso(run.finished_at),
            "wall_s": _seconds(run), "error": run.error, "tail": tail}


def _seconds(run: Run) -> float | None:
    if run.wall_time_s is not None:
        return float(run.wall_time_s)
    if run.started_at is not None and run.finished_at is not None:
        return (run.finished_at - run.started_at).total_seconds()
    return None


def _points(experiment: str, value: Any, since: int, per_run: int) -> Any:
    """The evaluations after id `since` of the experiment's runs (current attempts), oldest first;
    a first load (since 0) keeps at most `per_run` of each run (`thinned_ids`)."""
    rows = experiment_evals(experiment, Eval.id, Eval.run_id, Eval.step, value).order_by(Eval.id)
    return rows.where(Eval.id > since) if since else rows.where(Eval.id.in_(thinned_ids(experiment, per_run)))


def _eta(runs: list[dict]) -> float | None:
    """Seconds until the queued and running runs end at the mean time of the completed ones, as
    many at a time as run now; None before any run completed or when nothing is left."""
    done = [r["wall_s"] for r in runs if r["status"] == "completed" and r["wall_s"]]
    running = [r for r in runs if r["status"] == "running"]
    queued = sum(r["status"] == "queued" for r in runs)
    if not done or not (running or queued):
        return None
    left = queued + sum(1 - min(1.0, (r["step"] or 0) / r["max_steps"]) if r["max_steps"] else 1.0
                        for r in running)
    return left * sum(done) / len(done) / max(1, len(running))


def _version(runs: list[dict], last_id: int) -> str:
    """Changes whenever the report could: a new evaluation, or a run whose state moved."""
    states = sorted((r["run_id"], r["config"], r["status"], r["attempt"], r["finished"] or "") for r in runs)
    return f"{last_id}:{hashlib.sha1(json.dumps(states).encode()).hexdigest()[:12]}"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
