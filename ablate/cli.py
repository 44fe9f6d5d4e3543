"""The `ablate` command line: thin wrappers over the library."""

from __future__ import annotations

import json
import sys
from contextlib import closing
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from .cli_db import db_app
from .cli_init import init_cmd
from .cli_serve import serve_cmd
from .extras import require
from .results import outfile
from .terminal import DbOption, console, err, fail, say, user_errors
from .training import catalog
from .training.config import ConfigError, ExecOptions, suggest

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Ablation matrices for small language models: which changes help?")
app.add_typer(db_app, name="db")
app.command("serve")(serve_cmd)
app.command("init")(init_cmd)


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"ablate {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="print ablate's version and exit")] = False) -> None:
    """Ablation matrices for small language models: which changes help?"""


@app.command()
def train(
    set_: Annotated[list[str], typer.Option("--set", metavar="FIELD=VALUE", help="config override (repeatable)")] = [],
    toggle: Annotated[list[str], typer.Option(metavar="NAME", help="catalog optimization to apply (repeatable)")] = [],
    preset: Annotated[str, typer.Option(help="base preset: " + ", ".join(catalog.PRESETS))] = "mainrun",
    data: Annotated[Optional[str], typer.Option(help="local csv/parquet/jsonl with a 'title' column")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="stop after N optimizer steps (run marked truncated)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (torch's intra-op): a CPU run's numbers depend on them")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per evaluation on stdout")] = False,
) -> None:
    """Train one configuration (no database)."""
    try:
        cfg = catalog.build_config(preset, toggle, set_, data)
    except ConfigError as e:
        fail(str(e))  # before torch is imported: a typo is answered at once
    with user_errors():
        require("mainrun", "the built-in trainer (ablate train)")
    from .training.train import train as run_training  # torch import only for commands that train

    options = ExecOptions(device=device, compile=compile, max_steps=max_steps, threads=threads)

    def on_eval(m: dict) -> None:
        if as_json:
            row = {k: v for k, v in m.items() if k != "step_metrics"}
            sys.stdout.write(json.dumps(row) + "\n")
            sys.stdout.flush()
        else:
            err.print(f"step {m['step']:>5}  val_loss {m['val_loss']:.6f}  "
                      f"full {m['val_loss_full']:.6f}  train {m['train_loss']:.4f}  "
                      f"lr {m['lr']:.2e}  {m['tokens_per_s']:,.0f} tok/s")

    try:
        result = run_training(cfg, on_eval, options)
    except (ConfigError, RuntimeError) as e:
        fail(str(e), code=1)
    err.print(f"final val_loss {result['final_val_loss']:.6f} (best {result['best_val_loss']:.6f} "
              f"at step {result['best_step']}), {result['param_count']:,} parameters, "
              f"{result['wall_time_s']:.1f}s on {result['device']}"
              + (" [truncated]" if result["truncated"] else ""))


def _planned(matrix_path: str, data: str | None):
    """The matrix file (its warnings printed) and its runs with their identities; a bad file or
    a missing data file: one line, exit 2."""
    from .execution import runner
    from .execution.matrix import load_matrix

    with user_errors():
        matrix = load_matrix(matrix_path)
        for warning in matrix.warnings:
            say("warning", "yellow", warning)
        return matrix, runner.plan(matrix, data)


def _matrix_db(db: str | None, matrix) -> str:
    """--db, else $ABLATE_DB, else the matrix's own `db:`, else ./results.db."""
    from .storage.database import default_url

    return db or default_url(matrix.spec.db)


DataOption = Annotated[Optional[str], typer.Option(help="local data file in place of the matrix's data")]


@app.command()
def plan(matrix_path: Annotated[str, typer.Argument(metavar="MATRIX.yaml")],
         data: DataOption = None, db: DbOption = None,
         check_pattern: Annotated[Optional[Path], typer.Option(help="read this saved output with the matrix's metric.pattern, as a run would; trains nothing")] = None) -> None:
    """Expand a matrix without running it: its runs and what is done. It lists each run's identity."""
    from rich.table import Table

    from .execution import runner
    from .storage.database import is_missing
    from .storage.store import open_store
    from .training.output import TrainerError
    from .training.transcript import check_pattern as read_output

    matrix, rows = _planned(matrix_path, data)
    if check_pattern is not None:
        config = rows[0].planned.config
        try:
            if not hasattr(config, "pattern"):
                raise TrainerError("reads your own command's output; Mainrun's trainer prints none to read")
            return typer.echo("\n".join(read_output(check_pattern, config.pattern, config.metric)))
        except (TrainerError, OSError) as e:
            fail(f"--check-pattern {check_pattern}: {e}")
    url = _matrix_db(db, matrix)
    known, estimate = {}, None
    if not is_missing(url):  # planning reads the database, never creates it
        with user_errors(), open_store(url) as store:
            known = store.runs_by_hash(r.hash for r in rows)
            estimate = runner.estimate_seconds(store, rows, matrix)
    table = Table(title=f"{matrix.name}: {matrix.design}, {len(rows)} runs")
    for col in ("#", "run", "toggles on", "seed", "hash", "status"):
        table.add_column(col)
    for r in rows:
        status = known[r.hash].status if r.hash in known else "new"
        table.add_row(str(r.position), r.planned.name, ", ".join(r.planned.toggles) or "-",
                      str(r.planned.seed), r.hash, status)
    console().print(table)
    done = sum(1 for r in rows if r.hash in known and known[r.hash].status == "completed")
    eta = (f"about {estimate / 60:.1f} min serial, from similar completed runs"
           if estimate is not None else "no similar completed run to estimate from")
    out = console()
    out.print(f"{len(rows)} runs, {done} already completed; {eta}")
    _print_commands(out, rows)
    if matrix.first_seeds < len(matrix.seeds):
        out.print(f"seeds until decided: the first round is seeds {matrix.seeds[:matrix.first_seeds]}; "
                  f"undecided comparisons get up to {len(matrix.seeds)} (these {len(rows)} runs at most)")


def _print_commands(out, rows) -> None:
    """Your own command trainer's command line for each configuration's first run, as it will
    run (before anything runs, so a wrong flag shows now, not in a run's log)."""
    from .training.params import ParamsConfig

    first: dict[str, ParamsConfig] = {}
    for r in rows:
        config = r.planned.config
        if isinstance(config, ParamsConfig) and config.kind == "command":
            first.setdefault(r.planned.name, config)
    if not first:
        return
    workdir = next(iter(first.values())).workdir
    out.print(f"the command of each configuration ({len(first)}; {len(rows)} runs) at its first seed, run in "
              f"{workdir}, each run with its own $RUN_DIR:", markup=False, highlight=False)
    for name, config in first.items():
        out.print(f"  {name}: {config.shell_command()}", markup=False, highlight=False, soft_wrap=True)


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
    warm_workers: Annotated[Optional[bool], typer.Option("--warm-workers/--no-warm-workers", help="fork every CPU run from one process that imported torch once; a GPU slot keeps a spare importing while it trains (default: the matrix's execution.warm_workers, true)")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile each model")] = False,
    log_dir: Annotated[str, typer.Option(help="where each job's output goes")] = "ablate-logs",
    trainer: Annotated[Optional[str], typer.Option(help="training entry point, module:function (default: the matrix's trainer, else Mainrun's)")] = None,
    checkpoints: Annotated[bool, typer.Option("--checkpoints", help="checkpoint every run at each evaluation")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="continue interrupted runs from their last checkpoint (implies --checkpoints)")] = False,
    checkpoint_dir: Annotated[str, typer.Option(help="where checkpoints go, one folder per run hash")] = "ablate-checkpoints",
    decide: Annotated[bool, typer.Option("--until-decided", help="add seeds, round by round, to the comparisons still inconclusive (the listed seeds are the first round)")] = False,
    max_seeds: Annotated[Optional[int], typer.Option(help="--until-decided: the most seeds a comparison gets (default: the matrix's seeds.max, else 12)")] = None,
    fail_fast: Annotated[Optional[int], typer.Option(help="start no more runs when the first N to end all failed with one error (default 2)")] = None,
    keep_going: Annotated[bool, typer.Option("--keep-going", help="start every run, however the first ones failed")] = False,
) -> None:
    """Run a matrix: each configuration once, or seeds until decided. Results are committed as
    they happen. Exit status: 0 every run completed, 1 some failed or were interrupted, 2 bad
    input, 130 Ctrl-C."""
    from .execution import runner, sequential, workspace
    from .execution.executors import ExecutorChoice, check_timing, make_executor
    from .execution.progress import LiveProgress
    from .results.looks import undecided
    from .storage.store import open_store

    with user_errors():
        runner.check_rerun(rerun, resume)
        fail_fast = runner.fail_fast_runs(fail_fast, keep_going)
        workspace.check_log_dir(log_dir)  # a file there: one line now, not a run left running
        choice = ExecutorChoice(executor, address=address, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run,
                                jobs_per_device=jobs_per_device, warm_workers=warm_workers)
    if max_seeds is not None and not decide:
        fail("--max-seeds is for --until-decided")
    matrix, rows = _planned(matrix_path, data)
    with user_errors():
        trainer = runner.entry_point(matrix, trainer)
        check_timing(choice, matrix.execution)
        if trainer == runner.DEFAULT_TRAINER:  # before the database is touched or a job started
            require("mainrun", "the built-in trainer (a matrix without trainer:)")
    if decide:
        with user_errors():
            matrix = sequential.until_decided(matrix, max_seeds)
        rows = runner.plan(matrix, data)
    first = [r for r in rows if r.planned.seed in matrix.seeds[:matrix.first_seeds]]
    out = console(soft_wrap=True)
    with user_errors(), open_store(_matrix_db(db, matrix), create=True) as store:
        logs = workspace.prepare(log_dir, matrix.name, workspace.database_label(store))
        total, done = len(first), runner.count_completed(store, first)
        if done == total and rerun != "all" and matrix.first_seeds == len(matrix.seeds):
            runner.register(store, matrix, rows)
            out.print(f"{matrix.name}: all {total} runs already completed in {store.shown_url}; "
                      f"nothing to train (--rerun all trains them again)")
            return

        def train_round(ids: list[int]) -> runner.Outcome:
            runs = {i: store.run(i) for i in set(ids)}
            done_before = 0 if rerun == "all" else sum(r.status == "completed" for r in runs.values())
            baselines = {r.seed: i for i, r in runs.items() if r.name == "baseline"}  # for Δbase
            with LiveProgress(store, len(runs), done_before, out, baselines) as progress:
                return runner.run(store, ids, pool, trainer=trainer, rerun=rerun,
                                  options={"compile": compile, "resume": resume},
                                  checkpoint_root=Path(checkpoint_dir) if checkpoints or resume else None,
                                  run_root=logs.resolve() / "runs",
                                  fail_fast=fail_fast, on_event=progress)

        def on_round(n: int, names: set[str]) -> None:
            out.print(f"{matrix.name}: after {n} seeds, " + (
                f"{len(names)} configuration(s) still undecided get seed {matrix.seeds[n]}" if names
                else "every comparison is decided"))

        with closing(make_executor(choice, matrix.execution, logs)) as pool:
            again = ", trained again: --rerun all" if rerun == "all" and done else ""
            out.print(f"{matrix.name}: {total} runs ({done} already completed{again}) on {pool.describe()}; "
                      f"results in {store.shown_url}")
            outcome, run_ids = sequential.run_until_decided(
                store, matrix, rows, train_round, lambda seeds: undecided(store.url, matrix.name, seeds), on_round)
        out.print(f"{matrix.name}: trained {len(outcome.trained)} run(s) now; "
                  f"{runner.summary(store, run_ids)}. See `{runner.report_command(matrix_path, db)}`.")
        if outcome.interrupted:
            out.print(runner.continue_line(matrix_path, db, checkpoints or resume))
        failed = runner.any_failed(store, run_ids)
        if outcome.stopped_by:
            out.print(f"{matrix.name}: the first {fail_fast} runs failed alike, so no more were started: "
                      f"{outcome.stopped_by}\n  Fix it and run `ablate run {matrix_path} --rerun failed` (completed "
                      f"runs are kept), or add --keep-going to start every run anyway.")
    if outcome.interrupted or failed:
        raise typer.Exit(130 if outcome.interrupted else 1)


@app.command("catalog")
def show_catalog(fmt: Annotated[str, typer.Option("--format", "-f", help="table | markdown | csv | json")] = "table") -> None:
    """List the report's optimizations and the base presets."""
    from .results.render import FORMATS, catalog_frame, catalog_table, render_frame

    _check(fmt, FORMATS, "--format")
    if fmt != "table":
        sys.stdout.write(render_frame(catalog_frame(), fmt, "Optimizations"))
        return
    console().print(catalog_table())
    for name, note in catalog.PRESET_NOTES.items():
        console().print(Text.assemble((name, "bold"), f": {note}"))


# ------------------------------------------------------ results: report, runs, show, plot, export

ExperimentOption = Annotated[Optional[str], typer.Option(
    "--experiment", "-e", help="experiment name (default: the only one in the database)")]
FormatOption = Annotated[str, typer.Option("--format", "-f", help="table | markdown | csv | json")]
MetricOption = Annotated[Optional[str], typer.Option(
    help="mainrun (val_loss) | full (val_loss_full); default: mainrun unless eval coverages differ. "
    "Your own trainer: a metric of its metric.also")]
ForceOption = Annotated[bool, typer.Option("--force", help="replace an existing file of another kind (never a database)")]
MinEffectOption = Annotated[Optional[float], typer.Option(
    "--min-effect", help="smallest effect of interest, nats/char (default: the matrix's min_effect, else 0.005)")]


def _check_min_effect(min_effect: Optional[float]) -> None:
    if min_effect is not None and not min_effect > 0:
        fail(f"--min-effect {min_effect!r}: expected a positive number (nats per character)")


def _check(value: Optional[str], choices: tuple, option: str) -> None:
    if value is not None and value not in choices:
        fail(f"{option} {value!r}: expected one of {', '.join(choices)}{suggest(value, choices)}")


def _emit(render) -> None:
    """Print render(width, color): the terminal's width and colours, or 100 plain columns in a pipe."""
    terminal = console()
    width, color = (terminal.width, True) if terminal.is_terminal else (100, False)
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
    experiment: Annotated[Optional[list[str]], typer.Option(
        "--experiment", "-e", metavar="NAME", help="experiment name (default: the only one in the database; "
        "repeat it for a table across experiments first; html: default every experiment)")] = None,
    db: DbOption = None, metric: MetricOption = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | markdown | csv | json | html")] = "table",
    min_effect: MinEffectOption = None,
    out: Annotated[Optional[Path], typer.Option(help="write the report to this file (html: report.html)")] = None,
    force: ForceOption = False,
) -> None:
    """An experiment's verdicts and its ranked configurations."""
    from .results.render import FORMATS, render
    from .results.report import build_report

    _check(fmt, (*FORMATS, "html"), "--format")
    _check_min_effect(min_effect)
    if fmt == "html":  # one self-contained page, several experiments at once
        from .results.html import render_html

        with user_errors():
            path = outfile.checked(out or Path("report.html"), (".html", ".htm"), force=force)
            if matrix and not experiment:  # the matrix names the experiment (and maybe the db)
                db, name = _experiment(db, None, matrix)
                experiment = [name]
            page = render_html(db, experiment, metric, min_effect)
            outfile.write_text(path, page)
        err.print(f"wrote {path}")
        return
    with user_errors():
        out = out and outfile.checked(out, outfile.TEXT_KINDS[fmt], force=force, named=False)  # before the report
        names = experiment or [None]
        if len(names) > 1:  # one table across the experiments first, then each one's report
            from .results.across import render_many

            reports = [build_report(*_experiment(db, name, matrix), metric, min_effect) for name in names]
            text = lambda width, color: render_many(reports, fmt, width, color)  # noqa: E731
        else:
            report = build_report(*_experiment(db, names[0], matrix), metric, min_effect)
            text = lambda width, color: render(report, fmt, width, color)  # noqa: E731
        if out:
            outfile.write_text(out, text(100, False))
            err.print(f"wrote {out}")
            return
    _emit(text)


@app.command("runs")
def runs_cmd(
    matrix: Annotated[Optional[Path], typer.Argument(help="matrix YAML; its name selects the experiment")] = None,
    experiment: ExperimentOption = None,
    status: Annotated[Optional[str], typer.Option(help="queued | running | completed | failed | interrupted")] = None,
    toggle: Annotated[Optional[str], typer.Option(help="only runs with this toggle on")] = None,
    every: Annotated[bool, typer.Option("--all", help="every experiment's runs (without it, as report: the one experiment)")] = False,
    db: DbOption = None, fmt: FormatOption = "table",
) -> None:
    """List runs with their status and results. In csv or json, every column."""
    from .results.frames import load_runs, pick_experiment, select_runs, with_own_finals
    from .results.render import FORMATS, render_frame, runs_display
    from .storage.schema import STATUSES

    _check(status, STATUSES, "--status")
    _check(fmt, FORMATS, "--format")
    with user_errors():
        if matrix is not None:  # as report: the matrix names the experiment and its database
            db, experiment = _experiment(db, experiment, matrix)
        elif experiment is None and not every:  # one experiment's runs, as report shows them
            experiment = pick_experiment(db, None)["experiment"]
        runs = with_own_finals(select_runs(load_runs(db, experiment), status, toggle), db)
    shown = runs if fmt in ("csv", "json") else runs_display(runs)
    _emit(lambda width, color: render_frame(shown, fmt, f"{len(runs)} run(s)", width, color))


@app.command("show")
def show_cmd(
    run: Annotated[str, typer.Argument(help="run id, run name (within the experiment) or hash prefix")],
    experiment: ExperimentOption = None, db: DbOption = None, fmt: FormatOption = "table",
    seed: Annotated[Optional[int], typer.Option(help="the run of this seed, when the name has several")] = None,
    as_command: Annotated[bool, typer.Option("--as-command", help="print the `ablate train` line that reproduces the run (one per seed when the name has several)")] = False,
    output: Annotated[bool, typer.Option("--output", help="your own command's output as it printed it, ▶ before each line its pattern read")] = False,
    log_dir: Annotated[str, typer.Option(help="the --log-dir the run ran with (for --output)")] = "ablate-logs",
) -> None:
    """One run: config vs its baseline, evaluations and a sparkline. Its status or error too."""
    from .results.frames import find_run, find_runs, load_evals, load_runs
    from .results.render import FORMATS, as_command as command_for, render_run
    from .results.detail import kept_output, run_detail
    from .storage.store import open_store

    _check(fmt, FORMATS, "--format")
    with user_errors(), open_store(db, read_only=True) as store:
        runs = load_runs(store, experiment)
        rows = [r for _, r in find_runs(runs, run, seed).iterrows()] if as_command else [find_run(runs, run, seed)]
        if output:
            return typer.echo(kept_output(store, rows[0], log_dir))
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
    out: Annotated[Path, typer.Option(help="PNG file to write (SVG or PDF by the suffix)")] = Path("curves.png"),
    metric: MetricOption = None,
    effects: Annotated[bool, typer.Option("--effects", help="each effect with its interval, "
                                          "coloured by verdict, instead of the curves")] = False,
    delta: Annotated[bool, typer.Option("--delta", help="each curve minus the same-seed "
                                        "baseline's (separates overlapping curves)")] = False,
    db: DbOption = None, force: ForceOption = False,
) -> None:
    """Plot validation loss by step, or (--effects) each effect. The loss is the metric `ablate
    report` ranks by, unless --metric says otherwise."""
    from .results.plot import plot_curves, plot_effects
    from .results.report import build_report

    names = [n.strip() for n in runs.split(",") if n.strip()] if runs else None
    with user_errors():
        if effects:
            outfile.checked(out, (".png", ".svg"), force=force)  # before the report is built
            path = plot_effects(build_report(*_experiment(db, experiment, matrix)), out, force)
        else:
            path = plot_curves(*_experiment(db, experiment, matrix), names, out, metric, delta, force)
    err.print(f"wrote {path}")


@app.command("export")
def export_cmd(
    to: Annotated[Path, typer.Option("--to", help="FILE.csv or FILE.parquet")],
    experiment: ExperimentOption = None,
    what: Annotated[str, typer.Option(help="runs | evals")] = "runs",
    db: DbOption = None, force: ForceOption = False,
) -> None:
    """Write runs or evaluations to a file. Runs: one row per run, config as cfg.* columns."""
    from .results.frames import export, load_evals, load_runs

    _check(what, ("runs", "evals"), "--what")
    with user_errors():
        outfile.checked(to, (".csv", ".parquet"), force=force)  # before the database is read
        frame = (load_runs if what == "runs" else load_evals)(db, experiment)
        export(frame, to, force)
    err.print(f"wrote {len(frame)} {what} to {to}")


@app.command("results-md")
def results_md(
    db: DbOption = None,
    out: Annotated[Path, typer.Option(help="the document whose generated section is rewritten")] = Path("RESULTS.md"),
    check: Annotated[bool, typer.Option("--check", help="exit 1 if the document differs from the database")] = False,
    since: Annotated[Optional[Path], typer.Option(help="an earlier procedure's verdicts (JSON): say what changed")] = None,
) -> None:
    """Regenerate RESULTS.md's tables from the results database. Prose outside the markers stays."""
    from .results import document

    with user_errors():
        out = outfile.checked(out, (".md",))
        if check:
            same = out.exists() and document.committed_block(out) == document.generated(db, since)
            err.print(f"{out}: {'up to date' if same else 'differs from the database'}")
            raise typer.Exit(0 if same else 1)
        changed = document.write(out, db, since)
    err.print(f"{out}: {'rewritten' if changed else 'already up to date'}")
