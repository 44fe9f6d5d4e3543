"""The results database as pandas tables, for reports, plots, notebooks and exports.

Every loader is one query per table, whatever the number of runs, so a report over hundreds of
runs costs a handful of queries. Loaders take `db` as a SQLAlchemy URL, a path to a .db file,
an open `Store`, or None for `database.default_url()`; they never create a database.
"""

from __future__ import annotations

import json
import math
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
from sqlalchemy import JSON, Float, case, func, or_, select, type_coerce
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement

from ..storage.schema import EVAL_COLUMNS, MAX_STEP, Eval, Experiment, ExperimentRun, Run
from ..storage.store import Store, open_store
from ..training.config import MAINRUN_VAL_LOSS, suggest
from . import outfile

RUN_COLUMNS = (
    "experiment", "run_id", "hash", "position", "name", "toggles", "seed", "status", "attempt",
    "final_val_loss", "best_val_loss", "best_step", "wall_time_s", "tokens_per_s", "steps",
    "max_steps", "truncated", "code_version", "device", "error",
)
INT_COLUMNS = ("run_id", "position", "seed", "attempt", "best_step", "steps", "max_steps")  # nullable
NUMBER_COLUMNS = (*INT_COLUMNS, "final_val_loss", "best_val_loss", "wall_time_s", "tokens_per_s")
EVAL_VALUES = ("step", *EVAL_COLUMNS)
CURVE_POINTS = 500  # of a run, for a plot: more than the plot is wide in pixels

class ResultsError(LookupError):
    """An experiment or run the database does not hold; the message says what it does hold."""


def _rows(store: Store, statement: Any) -> list:
    return store.query(statement)


def list_experiments(db: str | Path | Store | None = None) -> pd.DataFrame:
    """One row per experiment: name, design, reference, yaml_text, its verdict plan and the looks
    taken, run counts, timestamps."""
    completed = func.sum(case((Run.status == "completed", 1), else_=0))
    statement = (
        select(Experiment, func.count(Run.id), completed)
        .outerjoin(ExperimentRun, ExperimentRun.experiment_id == Experiment.id)
        .outerjoin(Run, Run.id == ExperimentRun.run_id)
        .group_by(Experiment.id)
        .order_by(Experiment.name)
    )
    with open_store(db, read_only=True) as store:
        rows = _rows(store, statement)
    return pd.DataFrame(
        [{"experiment": e.name, "design": e.design, "reference": e.reference, "runs": n,
          "completed": int(done or 0), "description": e.description, "yaml_text": e.yaml_text,
          "plan": e.plan, "looks_taken": e.looks_taken,
          "created_at": e.created_at, "updated_at": e.updated_at} for e, n, done in rows],
        columns=["experiment", "design", "reference", "runs", "completed", "description",
                 "yaml_text", "plan", "looks_taken", "created_at", "updated_at"],
    )


def pick_experiment(db: str | Path | Store | None, name: str | None) -> pd.Series:
    """The named experiment, or the only one when no name is given; else a ResultsError."""
    experiments = list_experiments(db)
    names = ", ".join(experiments["experiment"]) or "none"
    if name is not None:
        hit = experiments[experiments["experiment"] == name]
        if hit.empty:
            raise ResultsError(f"unknown experiment {name!r}{suggest(name, experiments['experiment'])}; "
                               f"the database holds: {names}")
        return hit.iloc[0]
    if len(experiments) != 1:
        raise ResultsError("no experiments in the database" if experiments.empty else
                           f"the database holds several experiments ({names}); pick one with --experiment "
                           f"NAME or the matrix file (`ablate runs` also takes --all)")
    return experiments.iloc[0]


def reference_of(experiment: pd.Series) -> float:
    """The loss an experiment's Δref is measured against: its own, else Mainrun's."""
    reference = experiment.get("reference")
    return MAINRUN_VAL_LOSS if reference is None or pd.isna(reference) else float(reference)


def _check_experiment(store: Store, experiment: str | None) -> None:
    if experiment is not None and store.experiment(experiment) is None:
        pick_experiment(store, experiment)  # raises, listing the experiments that exist


def _prefixed(prefix: str, values: dict | None) -> dict:
    return {f"{prefix}{k}": v for k, v in (values.items() if isinstance(values, dict) else ())}


def load_runs(db: str | Path | Store | None = None, experiment: str | None = None) -> pd.DataFrame:
    """One row per (experiment, run), in matrix order.

    Columns: RUN_COLUMNS (name and toggles as the experiment sees them, toggles joined as
    "a+b"), then every config field as `cfg.<field>` and every extra result key (those beyond
    the runs table's columns, e.g. val_text_sha256, eval_coverage) as `res.<key>`.
    """
    statement = (
        select(Experiment.name, ExperimentRun.position, ExperimentRun.name, ExperimentRun.toggles, Run)
        .join(ExperimentRun, ExperimentRun.experiment_id == Experiment.id)
        .join(Run, Run.id == ExperimentRun.run_id)
        .order_by(Experiment.name, ExperimentRun.position, Run.id)
    )
    if experiment is not None:
        statement = statement.where(Experiment.name == experiment)
    with open_store(db, read_only=True) as store:
        _check_experiment(store, experiment)
        rows = _rows(store, statement)
    records = []
    for exp, position, name, toggles, run in rows:
        record = {column: getattr(run, column, None) for column in RUN_COLUMNS}
        record.update(experiment=exp, run_id=run.id, position=position, name=name,
                      toggles="+".join(toggles or []) if isinstance(toggles, list) else "")
        record.update({column: _number(record[column]) for column in NUMBER_COLUMNS})
        records.append({**record, **_prefixed("cfg.", run.config), **_numbers(_prefixed("res.", run.result))})
    frame = pd.DataFrame(records) if records else pd.DataFrame(columns=list(RUN_COLUMNS))
    return frame.astype({column: "Int64" for column in INT_COLUMNS})


def load_evals(db: str | Path | Store | None = None, experiment: str | None = None,
               runs: Iterable[int | str] | None = None, summary_of: Iterable[str] | None = None,
               curve_of: str | None = None) -> pd.DataFrame:
    """One row per evaluation of each run's current attempt, in step order.

    Columns: experiment, run_id, name, seed, EVAL_VALUES, and the eval's extra metrics as
    `extra.<key>` (e.g. extra.attention_entropy). `runs` keeps run ids (int) or names (str).
    Of one experiment, `summary_of` (load_evals column names) keeps only what a report reads of
    each run (see `_summary_ids`): a handful of rows per run however many evaluations it has;
    `curve_of` (a column) keeps what a plot of it draws: at most CURVE_POINTS of each run's
    evaluations with a value, evenly spread, its last among them (`thinned_ids`).
    """
    statement = (
        select(Experiment.name, ExperimentRun.name, Run.seed, Eval.run_id,
               *(getattr(Eval, column) for column in EVAL_VALUES), Eval.extra)
        .join(ExperimentRun, ExperimentRun.experiment_id == Experiment.id)
        .join(Run, Run.id == ExperimentRun.run_id)
        .join(Eval, (Eval.run_id == Run.id) & (Eval.attempt == Run.attempt))
        .order_by(Experiment.name, ExperimentRun.position, Run.id, Eval.step)
    )
    if experiment is not None:
        statement = statement.where(Experiment.name == experiment)
    wanted = None if runs is None else _runs_named(list(runs))
    if summary_of is not None and experiment is not None:
        statement = statement.where(Eval.id.in_(_summary_ids(experiment, list(summary_of))))
    if curve_of is not None and experiment is not None:
        statement = statement.where(Eval.id.in_(thinned_ids(experiment, CURVE_POINTS, _value(curve_of), wanted)))
    if wanted is not None:
        statement = statement.where(wanted)
    with open_store(db, read_only=True) as store:
        _check_experiment(store, experiment)
        rows = _rows(store, statement)
    columns = ["experiment", "name", "seed", "run_id", *EVAL_VALUES]
    records = [{**dict(zip(columns[:4], row[:4])), **{c: _number(v) for c, v in zip(columns[4:], row[4:-1])},
                **_numbers(_prefixed("extra.", row[-1]))} for row in rows]
    frame = pd.DataFrame(records) if records else pd.DataFrame(columns=columns)
    return frame[["experiment", "run_id", "name", "seed", *frame.columns[4:]]]


def load_speed(db: str | Path | Store | None, experiment: str) -> pd.DataFrame:
    """(run_id, step, tokens_seen, tokens_per_s) of every evaluation of the experiment's runs that
    has a throughput (the built-in trainer's; a command's have none), for the speed of each run."""
    statement = experiment_evals(experiment, Eval.run_id, Eval.step, Eval.tokens_seen, Eval.tokens_per_s) \
        .where(Eval.tokens_per_s.is_not(None))
    with open_store(db, read_only=True) as store:
        rows = _rows(store, statement)
    return pd.DataFrame([[_number(v) for v in row] for row in rows],
                        columns=["run_id", "step", "tokens_seen", "tokens_per_s"])


def experiment_evals(experiment: str, *columns: Any) -> Any:
    """SELECT `columns` of the evaluations of the experiment's runs, their current attempts only."""
    return (select(*columns)
            .join(Run, (Eval.run_id == Run.id) & (Eval.attempt == Run.attempt))
            .join(ExperimentRun, ExperimentRun.run_id == Run.id)
            .join(Experiment, Experiment.id == ExperimentRun.experiment_id)
            .where(Experiment.name == experiment))


def _runs_named(wanted: list[int | str]) -> Any:
    """The runs among `wanted`, run ids (int) or configuration names (str), as a WHERE clause."""
    ids = [r for r in wanted if isinstance(r, int)]
    names = [r for r in wanted if isinstance(r, str)]
    return Run.id.in_(ids) | ExperimentRun.name.in_(names)


def thinned_ids(experiment: str, per_run: int, value: Any = None, runs: Any = None) -> Any:
    """The ids of at most `per_run` evaluations of each of the experiment's runs (current
    attempts; where `value` is not null; of the runs the `runs` clause keeps), evenly spread and
    counted back from the last, which is always among them: chosen by window functions in the
    database, so that a million evaluations never leave it for a plot that draws a thousand."""
    back = func.row_number().over(partition_by=Eval.run_id, order_by=(Eval.step.desc(), Eval.id.desc())) - 1
    rows = experiment_evals(experiment, Eval.id, back.label("back"), func.count().over(partition_by=Eval.run_id).label("n"))
    for keep in (value.is_not(None) if value is not None else None, runs):
        rows = rows if keep is None else rows.where(keep)
    ranked = rows.subquery()
    stride = (ranked.c.n + per_run - 1) // per_run  # floor division in SQL, on both databases
    return select(ranked.c.id).where(ranked.c.back % stride == 0)


def missing(value: Any) -> bool:
    """None, pandas' NA or a float nan (not a list, which pd.isna would test element-wise)."""
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _summary_ids(experiment: str, columns: list[str]) -> Any:
    """The ids of the evaluations a report reads of each run's current attempt: its last one
    (highest step), and for each column its last one with a value, its lowest and its highest
    (the earliest among equals, as pandas' idxmin in step order picks). Two grouped passes in the
    database, each over the experiment's evaluations in index order (a window function's sort of
    every evaluation cost 3x more), so that only these rows travel."""
    values = [_value(c).label(f"v{i}") for i, c in enumerate(columns)]
    # one table used twice: both databases materialize it, each row's values out of JSON once
    scope = experiment_evals(experiment, Eval.run_id, Eval.attempt, Eval.step, *values).cte("scope")
    v = [scope.c[f"v{i}"] for i in range(len(columns))]
    bounds = select(scope.c.run_id, scope.c.attempt, func.max(scope.c.step).label("last"),
                    *(f(c).label(f"{name}{i}") for i, c in enumerate(v) for name, f in (
                        ("valued", lambda c: func.max(case((c.is_not(None), scope.c.step)))),
                        ("lo", func.min), ("hi", func.max)))) \
        .group_by(scope.c.run_id, scope.c.attempt).cte("bounds")
    ends = [(c == bounds.c[f"{end}{i}"], f"{end}{i}") for i, c in enumerate(v) for end in ("lo", "hi")]
    earliest = select(scope.c.run_id, *(func.min(case((hit, scope.c.step))).label(name) for hit, name in ends)) \
        .join(bounds, bounds.c.run_id == scope.c.run_id).where(or_(*(hit for hit, _ in ends))) \
        .group_by(scope.c.run_id).subquery()
    steps = [bounds.c.last, *(bounds.c[f"valued{i}"] for i in range(len(v))),
             *(earliest.c[f"{end}{i}"] for i in range(len(v)) for end in ("lo", "hi"))]
    return (select(Eval.id)
            .join(bounds, (Eval.run_id == bounds.c.run_id) & (Eval.attempt == bounds.c.attempt))
            .join(earliest, earliest.c.run_id == bounds.c.run_id, isouter=True)
            .where(or_(*(Eval.step == s for s in steps))))


def _value(column: str) -> Any:
    """A load_evals column as SQL: its own column, or a number under its key in `extra` (NULL
    where the key holds anything but a finite number, as `_number` reads it)."""
    if column in EVAL_COLUMNS:
        return getattr(Eval, column)
    return _JsonNumber(type_coerce(Eval.extra, JSON)[column.removeprefix("extra.")])


class _JsonNumber(ColumnElement):
    """extra[key] where it is a JSON number, else NULL: SQLite asks json_type (the document is
    parsed once per row, then cached), PostgreSQL json_typeof."""
    inherit_cache = True
    type = Float()

    def __init__(self, node: Any):
        self.node = node


@compiles(_JsonNumber, "sqlite")
def _json_number_sqlite(element: _JsonNumber, compiler: Any, **kw: Any) -> str:
    document, path = (compiler.process(side, **kw) for side in (element.node.left, element.node.right))
    value = f"json_extract({document}, {path})"
    return f"CASE json_type({document}, {path}) WHEN 'integer' THEN {value} WHEN 'real' THEN {value} END"


@compiles(_JsonNumber)
def _json_number_default(element: _JsonNumber, compiler: Any, **kw: Any) -> str:
    node = element.node
    return (f"CASE WHEN json_typeof({compiler.process(node, **kw)}) = 'number' "
            f"THEN {compiler.process(node.as_float(), **kw)} END")


def per_frame(build: Callable[[pd.DataFrame], Any]) -> Callable[[pd.DataFrame], Any]:
    """`build(frame)`, computed once for as long as that very frame lives (a frame cannot be a
    dict key): the lookups a report makes thousands of times over one per-run frame, one
    configuration at a time, cost one pass over it. A new frame (`assign`) is a new key."""
    cache: dict[int, tuple[weakref.ref, Any]] = {}

    def cached(frame: pd.DataFrame) -> Any:
        hit = cache.get(id(frame))
        if hit is not None and hit[0]() is frame:
            return hit[1]
        value = build(frame)
        cache[id(frame)] = (weakref.ref(frame, lambda _, key=id(frame): cache.pop(key, None)), value)
        return value

    return cached


def _number(value: Any) -> Any:
    """A stored number as the frames hold it: None for what a write should never have let in and
    a reading command cannot compute with (text in a number column, inf, a step past 2**53)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value if abs(value) <= MAX_STEP else None
    return None


def _numbers(values: dict) -> dict:
    """A JSON column's values with its numbers made safe as `_number` does; text stays text."""
    return {k: _number(v) if isinstance(v, (int, float)) else v for k, v in values.items()}


def split_toggles(joined: Any) -> list[str]:
    """A load_runs() `toggles` cell ("a+b", "" for none) as the list of toggles it joins."""
    return [t for t in str(joined or "").split("+") if t]


def find_runs(runs: pd.DataFrame, ref: str, seed: int | None = None) -> pd.DataFrame:
    """Every run `ref` names in a load_runs() frame (a run id, a run name, or a hash prefix),
    of this seed when given; none is a ResultsError that suggests the closest name."""
    if seed is not None:
        runs = runs[runs["seed"] == seed]
    unique = runs.drop_duplicates("run_id")
    if ref.isdigit() and (hit := unique[unique["run_id"] == int(ref)]).shape[0]:
        return hit
    by_name = runs[runs["name"] == ref]
    if by_name["experiment"].nunique() > 1:
        raise ResultsError(f"run name {ref!r} is in several experiments "
                           f"({', '.join(sorted(by_name['experiment'].unique()))}); pick one with --experiment")
    hits = by_name if not by_name.empty else unique[unique["hash"].str.startswith(ref.lower())]
    if hits.empty:
        of_seed = f" of seed {seed}" if seed is not None else ""
        raise ResultsError(f"no run {ref!r}{of_seed} (by id, name or hash prefix)"
                           f"{suggest(ref, runs['name'].unique())}")
    return hits


def find_run(runs: pd.DataFrame, ref: str, seed: int | None = None) -> pd.Series:
    """The one run `ref` names (see find_runs); several is a ResultsError listing them."""
    hits = find_runs(runs, ref, seed)
    if len(hits) == 1:
        return hits.iloc[0]
    choices = ", ".join(f"{r.run_id} (seed {r.seed})" for r in hits.itertuples())
    raise ResultsError(f"{ref!r} matches {len(hits)} runs; give --seed or a run id: {choices}")


def select_runs(runs: pd.DataFrame, status: str | None = None, toggle: str | None = None) -> pd.DataFrame:
    """The load_runs() rows with this status and/or this toggle on."""
    keep = pd.Series(True, index=runs.index)
    if status is not None:
        keep &= runs["status"] == status
    if toggle is not None:
        known = {t for ts in runs["toggles"] for t in split_toggles(ts)}
        if toggle not in known:
            raise ResultsError(f"--toggle {toggle!r}: no run has it on{suggest(toggle, sorted(known))}; "
                               f"toggles: {', '.join(sorted(known)) or 'none'}")
        keep &= runs["toggles"].map(lambda t: toggle in split_toggles(t))
    return runs[keep]


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """CSV-bound text that a spreadsheet shows as text: a cell that starts like a formula
    (`=cmd|...`, a name from someone else's database) gets a leading apostrophe."""
    return frame.map(lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_START) else v)


def export(frame: pd.DataFrame, path: str | Path, force: bool = False) -> Path:
    """Write a loader's frame to .csv or .parquet (lists and dicts become JSON text in parquet)."""
    path = outfile.checked(path, (".csv", ".parquet"), force=force)
    try:
        if path.suffix.lower() == ".csv":
            return outfile.replace(path, lambda tmp: spreadsheet_safe(frame).to_csv(tmp, index=False))
        plain = frame.map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
        return outfile.replace(path, lambda tmp: plain.to_parquet(tmp, index=False))
    except ImportError as e:
        raise ResultsError(f"writing parquet needs pyarrow or fastparquet ({e}); or export to .csv") from None


def with_own_finals(runs: pd.DataFrame, db: str | Path | Store | None = None) -> pd.DataFrame:
    """Runs of your own trainer get `final <metric>`, the value of the metric their matrix
    declares at the last evaluation that has it (Mainrun's runs carry theirs in final_val_loss)."""
    if "cfg.trainer" not in runs:
        return runs
    metric = runs["cfg.trainer"].map(lambda t: t.get("metric") if isinstance(t, dict) else None)
    if metric.isna().all():
        return runs
    evals = load_evals(db, runs=runs["run_id"].astype(int).tolist())
    out = runs.copy()
    for name in metric.dropna().unique():
        column = name if name in evals else f"extra.{name}"
        scored = evals.dropna(subset=[column]) if column in evals else evals.iloc[:0]
        values = scored.groupby("run_id").tail(1).set_index("run_id")[column] if len(scored) else pd.Series(dtype=float)
        out[f"final {name}"] = [values.get(i) if m == name else None for i, m in zip(out["run_id"], metric)]
    return out
