"""The `ablate` command line: thin wrappers over the library."""

from __future__ import annotations

import json
import sys
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .training import catalog
from .training.config import DEFAULT_TRAINER, ConfigError, ExecOptions, TrainConfig, parse_value, suggest

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Ablation matrices for small language models: which changes help?")
err = Console(stderr=True, soft_wrap=True)  # piped output: whole lines, never wrapped at 80


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"ablate {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="print ablate's version and exit")] = False) -> None:
    """Ablation matrices for small language models: which changes help?"""


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def _user_errors():
    """What a user can get wrong (a database that cannot be opened, an unknown experiment or
    run, a bad matrix, config or option): one line, exit 2."""
    from .execution.executors import ExecutorError
    from .execution.matrix import MatrixError
    from .execution.runner import RunnerError
    from .results.frames import ResultsError
    from .storage.database import StoreError

    try:
        yield
    except (StoreError, ResultsError, MatrixError, ConfigError, ExecutorError, RunnerError) as e:
        fail(escape(str(e)))  # messages are plain text: 'ablate[ray]' is not markup


def build_config(preset: str, toggles: list[str], sets: list[str], data: str | None) -> TrainConfig:
    cfg = catalog.apply(catalog.preset(preset), toggles)
    changes = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE")
        name, value = item.split("=", 1)
        changes[name.strip()] = parse_value(name.strip(), value.strip())
    if data:
        changes["data"] = data
    return cfg.replace(**changes)


@app.command()
def train(
    set_: Annotated[list[str], typer.Option("--set", help="FIELD=VALUE config override")] = [],
    toggle: Annotated[list[str], typer.Option(help="catalog optimization to apply")] = [],
    preset: Annotated[str, typer.Option(help="base preset: " + ", ".join(catalog.PRESETS))] = "mainrun",
    data: Annotated[Optional[str], typer.Option(help="local csv/parquet/jsonl with a 'title' column")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="stop after N optimizer steps (run marked truncated)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per evaluation on stdout")] = False,
) -> None:
    """Train one configuration (no database)."""
    try:
        cfg = build_config(preset, toggle, set_, data)
    except ConfigError as e:
        fail(str(e))  # before torch is imported: a typo is answered at once
    from .training.train import train as run_training  # torch import only for commands that train

    options = ExecOptions(device=device, compile=compile, max_steps=max_steps)

    def on_eval(m: dict) -> None:
        if as_json:
            row = {k: v for k, v in m.items() if k != "step_metrics"}
            sys.stdout.write(json.dumps(row) + "\n")
            sys.stdout.flush()
        else:
            err.print(f"step {m['step']:>5}  val_loss {m['val_loss']:.6f}  "
                      f"full {m['val_loss_full']:.6f}  train {m['train_loss']:.4f}  "
                      f"lr {m['lr']:.2e}  {m['tokens_per_s']:,.0f} tok/s", highlight=False)

    try:
        result = run_training(cfg, on_eval, options)
    except (ConfigError, RuntimeError) as e:
        fail(str(e), code=1)
    err.print(f"final val_loss {result['final_val_loss']:.6f} (best {result['best_val_loss']:.6f} "
              f"at step {result['best_step']}), {result['param_count']:,} parameters, "
              f"{result['wall_time_s']:.1f}s on {result['device']}"
              + (" [truncated]" if result["truncated"] else ""), highlight=False)


def _planned(matrix_path: str, data: str | None):
    """The matrix file (its warnings printed) and its runs with their identities; a bad file or
    a missing data file: one line, exit 2."""
    from .execution import runner
    from .execution.matrix import MatrixError, load_matrix
    from .training.datasource import DataError

    try:
        matrix = load_matrix(matrix_path)
    except MatrixError as e:
        fail(str(e))
    for warning in matrix.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    try:
        return matrix, runner.plan(matrix, data)
    except DataError as e:
        fail(str(e))


def _matrix_db(db: str | None, matrix) -> str:
    """--db, else $ABLATE_DB, else the matrix's own `db:`, else ./results.db."""
    from .storage.database import default_url

    return db or default_url(matrix.spec.db)


DbOption = Annotated[Optional[str], typer.Option(
    "--db", help="results database: SQLAlchemy URL or .db path (default: $ABLATE_DB or sqlite:///results.db)")]
DataOption = Annotated[Optional[str], typer.Option(help="local data file in place of the matrix's data")]


@app.command()
def plan(matrix_path: Annotated[str, typer.Argument(metavar="MATRIX.yaml")],
         data: DataOption = None, db: DbOption = None) -> None:
    """Expand a matrix without running it: runs, identities, what is already done."""
    from rich.table import Table

    from .execution import runner
    from .storage.database import is_missing
    from .storage.store import open_store

    matrix, rows = _planned(matrix_path, data)
    url = _matrix_db(db, matrix)
    known, estimate = {}, None
    if not is_missing(url):  # planning reads the database, never creates it
        with _user_errors(), open_store(url) as store:
            known = store.runs_by_hash(r.hash for r in rows)
            estimate = runner.estimate_seconds(store, rows, matrix)
    table = Table(title=f"{matrix.name}: {matrix.design}, {len(rows)} runs")
    for col in ("#", "run", "toggles on", "seed", "hash", "status"):
        table.add_column(col)
    for r in rows:
        status = known[r.hash].status if r.hash in known else "new"
        table.add_row(str(r.position), r.planned.name, ", ".join(r.planned.toggles) or "-",
                      str(r.planned.seed), r.hash, status)
    Console().print(table)
    done = sum(1 for r in rows if r.hash in known and known[r.hash].status == "completed")
    eta = (f"about {estimate / 60:.1f} min serial, from similar completed runs"
           if estimate is not None else "no similar completed run to estimate from")
    Console().print(f"{len(rows)} runs, {done} already completed; {eta}", highlight=False)


@app.command()
def run(
    matrix_path: Annotated[str, typer.Argument(metavar="MATRIX.yaml")],
    data: DataOption = None,
    db: DbOption = None,
    rerun: Annotated[Optional[str], typer.Option(help="failed | all: run these again")] = None,
    executor: Annotated[str, typer.Option(help="local | ray")] = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray: auto | HOST:PORT | ray://HOST:PORT (default: a new local Ray instance)")] = None,
    gpus_per_run: Annotated[Optional[float], typer.Option(help="Ray: GPUs per run, fractions pack runs (default: 1 if the cluster has GPUs, else 0)")] = None,
    cpus_per_run: Annotated[Optional[float], typer.Option(help="Ray: CPUs per run (default: 1)")] = None,
    jobs_per_device: Annotated[Optional[int], typer.Option(help="override the matrix's jobs per device")] = None,
    warm_workers: Annotated[Optional[bool], typer.Option("--warm-workers/--no-warm-workers", help="keep a spare job process per slot that imports torch while the slot trains (default: the matrix's execution.warm_workers, true)")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile each model")] = False,
    log_dir: Annotated[str, typer.Option(help="where each job's output goes")] = "ablate-logs",
    trainer: Annotated[str, typer.Option(help="training entry point, module:function")] = DEFAULT_TRAINER,
    checkpoints: Annotated[bool, typer.Option("--checkpoints", help="checkpoint every run at each evaluation")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="continue interrupted runs from their last checkpoint (implies --checkpoints)")] = False,
    checkpoint_dir: Annotated[str, typer.Option(help="where checkpoints go, one folder per run hash")] = "ablate-checkpoints",
) -> None:
    """Run a matrix: every configuration once, results committed as they happen."""
    from .execution import runner
    from .execution.executors import ExecutorChoice, make_executor
    from .execution.progress import LiveProgress
    from .storage.store import open_store

    with _user_errors():
        runner.check_rerun(rerun, resume)
        choice = ExecutorChoice(executor, address=address, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run,
                                jobs_per_device=jobs_per_device, warm_workers=warm_workers)
    matrix, rows = _planned(matrix_path, data)
    console = Console(soft_wrap=True)
    with _user_errors(), open_store(_matrix_db(db, matrix), create=True) as store:
        run_ids = runner.register(store, matrix, rows)
        total, done = len(set(run_ids)), runner.count_completed(store, rows)
        if done == total and rerun != "all":
            console.print(f"{matrix.name}: all {total} runs already completed in {store.url}; "
                          f"nothing to train (--rerun all trains them again)", highlight=False)
            return
        with closing(make_executor(choice, matrix.execution, Path(log_dir) / matrix.name)) as pool:
            console.print(f"{matrix.name}: {len(rows)} runs ({done} already completed) on {pool.describe()}; "
                          f"results in {store.url}", highlight=False)
            baselines = {r.planned.seed: rid for r, rid in zip(rows, run_ids) if r.planned.name == "baseline"}
            with LiveProgress(store, total, done, console, baselines) as progress:
                outcome = runner.run(store, run_ids, pool, trainer=trainer, rerun=rerun,
                                     options={"compile": compile, "resume": resume},
                                     checkpoint_root=Path(checkpoint_dir) if checkpoints or resume else None,
                                     on_event=progress)
        console.print(f"{matrix.name}: trained {len(outcome.trained)} run(s) now; "
                      f"{runner.summary(store, run_ids)}. See `{_report_command(matrix_path, db)}`.", highlight=False)
    if outcome.interrupted:
        raise typer.Exit(130)


def _report_command(matrix_path: str, db: str | None) -> str:
    """The command that reads what `ablate run` just wrote: its matrix, and its --db if given."""
    import shlex

    return shlex.join(["ablate", "report", matrix_path, *(["--db", db] if db else [])])


db_app = typer.Typer(no_args_is_help=True, help="The results database itself.")
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Migrate a database written by an older ablate to this one's schema (every command does
    it on open; this one only upgrades). A SQLite file is first copied to FILE.bak-vN."""
    from .storage.store import open_store

    with _user_errors(), open_store(db) as store:
        if store.upgraded is None:
            err.print(f"{store.where}: already at schema {store.version}", highlight=False)
            return
        old, new = store.upgraded
        kept = f"; the file as it was: {store.backup}" if store.backup else ""
        err.print(f"{store.where}: schema {old} → {new}{kept}", highlight=False)


@app.command("catalog")
def show_catalog(fmt: Annotated[str, typer.Option("--format", "-f", help="table | markdown | csv | json")] = "table") -> None:
    """List the report's optimizations and the base presets."""
    from rich.table import Table

    from .results.render import FORMATS, render_frame

    _check(fmt, FORMATS, "--format")
    if fmt != "table":
        import pandas as pd

        rows = [{"name": o.name, "section": o.section, "patch": json.dumps(o.patch), "allowed": o.allowed,
                 "breaks_rule": o.breaks_rule or "", "changes_metric": o.changes_metric or ""}
                for o in catalog.CATALOG.values()]
        sys.stdout.write(render_frame(pd.DataFrame(rows), fmt, "Optimizations"))
        return
    table = Table(title="Optimizations (seed/optimization-report.md)")
    widest = max(map(len, catalog.CATALOG))
    table.add_column("name", no_wrap=True, min_width=widest)  # a name is typed: never cut
    for col in ("section", "patch", "Mainrun rules"):
        table.add_column(col)
    for o in catalog.CATALOG.values():
        rule = "allowed" if o.allowed else f"[red]breaks: {escape(o.breaks_rule)}[/]"
        if o.changes_metric:
            rule += "\n[yellow]changes the metric[/]"
        table.add_row(o.name, o.section, escape(json.dumps(o.patch)), rule)
    Console().print(table)
    for name, note in catalog.PRESET_NOTES.items():
        Console().print(f"[bold]{name}[/]: {escape(note)}", highlight=False)


# ------------------------------------------------------ results: report, runs, show, plot, export

ExperimentOption = Annotated[Optional[str], typer.Option(
    "--experiment", "-e", help="experiment name (default: the only one in the database)")]
FormatOption = Annotated[str, typer.Option("--format", "-f", help="table | markdown | csv | json")]
MetricOption = Annotated[Optional[str], typer.Option(
    help="mainrun (val_loss) | full (val_loss_full); default: mainrun unless eval coverages differ")]


def _check(value: Optional[str], choices: tuple, option: str) -> None:
    if value is not None and value not in choices:
        fail(f"{option} {value!r}: expected one of {', '.join(choices)}{suggest(value, choices)}")


def _emit(render) -> None:
    """Print render(width, color): the terminal's width and colours, or 100 plain columns in a pipe."""
    console = Console()
    width, color = (console.width, True) if console.is_terminal else (100, False)
    sys.stdout.write(render(width, color))


def _experiment(db: Optional[str], experiment: Optional[str], matrix_path: Optional[Path]) -> tuple[Optional[str], str]:
    """The database and experiment to read: --experiment, else the matrix file's name, else the
    only experiment (listing them if several); --db, else the matrix's database."""
    from .execution.matrix import load_matrix
    from .results.frames import list_experiments, pick_experiment
    from .results.render import render_frame

    if matrix_path is not None:
        matrix = load_matrix(matrix_path)
        experiment, db = experiment or matrix.name, _matrix_db(db, matrix)
    if experiment is None and len(experiments := list_experiments(db)) != 1:
        err.print(render_frame(experiments[["experiment", "design", "runs", "completed"]], "table", "Experiments"))
    return db, pick_experiment(db, experiment)["experiment"]


@app.command("report")
def report_cmd(
    matrix: Annotated[Optional[Path], typer.Argument(help="matrix YAML; its name selects the experiment")] = None,
    experiment: ExperimentOption = None, db: DbOption = None, metric: MetricOption = None,
    fmt: FormatOption = "table",
) -> None:
    """Rank an experiment's configurations and estimate each toggle's effect."""
    from .results.render import FORMATS, render
    from .results.report import METRICS, build_report

    _check(metric, tuple(METRICS), "--metric")
    _check(fmt, FORMATS, "--format")
    with _user_errors():
        report = build_report(*_experiment(db, experiment, matrix), metric)
    _emit(lambda width, color: render(report, fmt, width, color))


@app.command("runs")
def runs_cmd(
    experiment: ExperimentOption = None,
    status: Annotated[Optional[str], typer.Option(help="queued | running | completed | failed | interrupted")] = None,
    toggle: Annotated[Optional[str], typer.Option(help="only runs with this toggle on")] = None,
    db: DbOption = None, fmt: FormatOption = "table",
) -> None:
    """List runs with their status and results (csv/json: every column)."""
    from .results.frames import load_runs, select_runs
    from .results.render import FORMATS, render_frame, runs_display
    from .storage.schema import STATUSES

    _check(status, STATUSES, "--status")
    _check(fmt, FORMATS, "--format")
    with _user_errors():
        runs = select_runs(load_runs(db, experiment), status, toggle)
    shown = runs if fmt in ("csv", "json") else runs_display(runs)
    _emit(lambda width, color: render_frame(shown, fmt, f"{len(runs)} run(s)", width, color))


@app.command("show")
def show_cmd(
    run: Annotated[str, typer.Argument(help="run id, run name (within the experiment) or hash prefix")],
    experiment: ExperimentOption = None, db: DbOption = None, fmt: FormatOption = "table",
    seed: Annotated[Optional[int], typer.Option(help="the run of this seed, when the name has several")] = None,
    as_command: Annotated[bool, typer.Option("--as-command", help="print the `ablate train` line that reproduces the run (one per seed when the name has several)")] = False,
) -> None:
    """One run: config vs its baseline, status or error, evaluations and a sparkline."""
    from .results.frames import find_run, find_runs, load_evals, load_runs
    from .results.render import FORMATS, as_command as command_for, render_run
    from .results.report import run_detail
    from .storage.store import open_store

    _check(fmt, FORMATS, "--format")
    with _user_errors(), open_store(db) as store:
        runs = load_runs(store, experiment)
        rows = [r for _, r in find_runs(runs, run, seed).iterrows()] if as_command else [find_run(runs, run, seed)]
        details = [run_detail(runs, load_evals(store, row["experiment"], runs=[int(row["run_id"])]), row)
                   for row in rows]
    if as_command:
        typer.echo("\n".join(command_for(detail) for detail in details))
        return
    _emit(lambda width, color: render_run(details[0], fmt, width, color))


@app.command("plot")
def plot_cmd(
    matrix: Annotated[Optional[Path], typer.Argument(help="matrix YAML; its name selects the experiment")] = None,
    experiment: ExperimentOption = None,
    runs: Annotated[Optional[str], typer.Option(help="comma-separated run names (default: baseline + top 5)")] = None,
    out: Annotated[Path, typer.Option(help="PNG file to write")] = Path("curves.png"),
    metric: MetricOption = None,
    db: DbOption = None,
) -> None:
    """Plot validation loss against step (by default the metric `ablate report` ranks by)."""
    from .results.plot import plot_curves
    from .results.report import METRICS

    _check(metric, tuple(METRICS), "--metric")
    names = [n.strip() for n in runs.split(",") if n.strip()] if runs else None
    with _user_errors():
        path = plot_curves(*_experiment(db, experiment, matrix), names, out, metric)
    err.print(f"wrote {path}", highlight=False)


@app.command("export")
def export_cmd(
    to: Annotated[Path, typer.Option("--to", help="FILE.csv or FILE.parquet")],
    experiment: ExperimentOption = None,
    what: Annotated[str, typer.Option(help="runs | evals")] = "runs",
    db: DbOption = None,
) -> None:
    """Write runs (one row per run, config as cfg.* columns) or evaluations to a file."""
    from .results.frames import export, load_evals, load_runs

    _check(what, ("runs", "evals"), "--what")
    with _user_errors():
        frame = (load_runs if what == "runs" else load_evals)(db, experiment)
        export(frame, to)
    err.print(f"wrote {len(frame)} {what} to {to}", highlight=False)


@app.command("results-md")
def results_md(
    db: DbOption = None,
    out: Annotated[Path, typer.Option(help="the document whose generated section is rewritten")] = Path("RESULTS.md"),
    check: Annotated[bool, typer.Option("--check", help="exit 1 if the document differs from the database")] = False,
) -> None:
    """Regenerate RESULTS.md's tables from the results database (prose outside the markers stays)."""
    from .results import document

    with _user_errors():
        if check:
            same = out.exists() and document.committed_block(out) == document.generated(db)
            err.print(f"{out}: {'up to date' if same else 'differs from the database'}")
            raise typer.Exit(0 if same else 1)
        changed = document.write(out, db)
    err.print(f"{out}: {'rewritten' if changed else 'already up to date'}", highlight=False)
