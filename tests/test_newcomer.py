"""A newcomer's first hour (issue 22): a bare clone runs, `$ABLATE_DB` may be a plain path, the
names a user types get "did you mean", and `show` reproduces a run of any seed. Read commands run
against a copy of the shipped results.db; nothing here trains."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ablate.cli import app
from ablate.training.catalog import build_config
from ablate.execution.matrix import load_matrix
from ablate.results.frames import load_runs
from ablate.storage.database import default_url
from ablate.training.config import TrainConfig
from ablate.training.datasource import BUILTIN_HN, fingerprint, local_format, local_path

from .conftest import HN_CSV, REPO, SMOKE_MATRIX

SHARED_CSV = REPO.parent / "shared" / "data" / "hacker_news.csv"


@pytest.fixture
def shipped(tmp_path, monkeypatch) -> Path:
    """A copy of the committed results.db, as ./results.db of a fresh working directory."""
    shutil.copy(REPO / "results.db", tmp_path / "results.db")
    shutil.copytree(REPO / "experiments", tmp_path / "experiments")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ABLATE_DB", raising=False)
    return tmp_path


def ablate(*argv: str):
    return CliRunner().invoke(app, list(argv))


def one_line(result) -> str:
    return " ".join(result.output.split())


# ------------------------------------------------------------- 1. a bare clone has its data


def _builtin_titles() -> list[str]:
    with gzip.open(local_path(BUILTIN_HN), "rt", encoding="utf-8", newline="") as f:
        return [row["title"] for row in csv.DictReader(f)]


def test_the_package_ships_the_titles_and_the_tests_and_smoke_matrix_use_them():
    titles = _builtin_titles()
    assert len(titles) == 20_100 and all(titles)
    assert Path(local_path(BUILTIN_HN)).stat().st_size < 500_000
    assert local_format(BUILTIN_HN) == "csv" and fingerprint(BUILTIN_HN).startswith("sha256:")
    if SHARED_CSV.is_file():  # the same titles in the same order as the shared file
        with SHARED_CSV.open(encoding="utf-8-sig", newline="") as f:
            assert [row["title"] for row in csv.DictReader(f)] == titles
    matrix = load_matrix(SMOKE_MATRIX)
    assert matrix.base.data == BUILTIN_HN and matrix.spec.db == "smoke.db"
    if "ABLATE_TEST_DATA" not in os.environ:
        assert HN_CSV == Path(local_path(BUILTIN_HN))


def test_unknown_builtin_data_is_a_clear_error():
    with pytest.raises(Exception, match="no such built-in data; expected one of builtin:hacker_news"):
        fingerprint("builtin:hackernews")


def test_the_smoke_matrix_ran_with_no_data_flag_and_its_hint_keeps_the_db(smoke_db):
    assert "--data" not in smoke_db.cmd
    assert f"See `ablate report {SMOKE_MATRIX} --db {smoke_db.url}`" in " ".join(smoke_db.stdout.split())


def test_the_smoke_matrix_defaults_to_smoke_db_in_the_current_directory(shipped):
    result = ablate("plan", "experiments/smoke.yaml")
    assert result.exit_code == 0, result.output
    assert not (shipped / "smoke.db").exists()  # plan creates no database
    result = ablate("report", "experiments/smoke.yaml")
    assert result.exit_code == 2 and f"no results database at {shipped / 'smoke.db'}" in one_line(result)


# ------------------------------------------------------ 2. $ABLATE_DB may be a plain path


@pytest.mark.parametrize("argv", [
    ["runs", "-e", "report-cpu"], ["report", "-e", "report-cpu-stack"],
    ["show", "baseline", "-e", "report-cpu", "--seed", "1337"],
    ["export", "-e", "report-cpu", "--to", "runs.csv"], ["plot", "-e", "report-cpu", "--out", "c.png"],
    ["plan", "experiments/report-cpu-stack.yaml", "--data", "builtin:hacker_news"],
], ids=lambda a: a[0])
def test_a_plain_path_in_ablate_db_works_for_every_command(argv, shipped, monkeypatch):
    moved = shipped / "elsewhere.db"
    (shipped / "results.db").rename(moved)
    monkeypatch.setenv("ABLATE_DB", str(moved))
    result = ablate(*argv)
    assert result.exit_code == 0, result.output
    assert default_url() == f"sqlite:///{moved}"
    assert not (shipped / "results.db").exists()


# ---------------------------------------------------- 4. show: --seed, --as-command per seed


def test_show_picks_a_seed(shipped):
    assert ablate("show", "onecycle_fix", "-e", "report-cpu").exit_code == 2
    result = ablate("show", "onecycle_fix", "-e", "report-cpu", "--seed", "1338")
    assert result.exit_code == 0, result.output
    assert "seed 1338" in result.output.splitlines()[0]


def test_show_diffs_only_the_fields_that_differ(shipped):
    """A field both runs leave unset (split_seed, tf32 in runs that predate them) is no row."""
    shown = json.loads(ablate("show", "all-minus-ema", "-e", "report-cpu-stack", "--seed", "1337", "-f", "json").stdout)
    diff = shown["config_diff"]
    assert diff and all(row["value"] != row["baseline"] for row in diff)
    assert {"split_seed", "tf32"}.isdisjoint(row["field"] for row in diff)


def test_as_command_prints_the_fields_that_differ_and_an_absolute_path_for_each_seed(shipped):
    result = ablate("show", "onecycle_fix", "-e", "report-cpu", "--as-command")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    runs = load_runs("results.db", "report-cpu")
    stored = runs[runs["name"] == "onecycle_fix"].sort_values("seed")
    assert len(lines) == len(stored) == 3
    for line, (_, row) in zip(lines, stored.iterrows()):
        words = shlex.split(line)
        data = words[words.index("--data") + 1]
        assert Path(data).is_absolute()
        sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
        config = build_config("mainrun", [], sets, data)
        expected = TrainConfig(**{k[4:]: v for k, v in row.items()  # fields a run predates: defaults
                                  if k.startswith("cfg.") and not (isinstance(v, float) and v != v)})
        assert config == expected
        assert {s.split("=")[0] for s in sets} == set(expected.diff()) - {"data"}
        assert len(line) < 400
        # the thread count it ran with (a CPU's sums depend on it), in options `ablate train` takes
        threads = re.fullmatch(r"cpu \((\d+) threads?\)", row["device"]).group(1)
        assert words[words.index("--device") + 1:words.index("--device") + 4] == ["cpu", "--threads", threads]
        typer.main.get_command(app).commands["train"].make_context("train", words[2:])


# --------------------------------------------------------------- 5. did you mean, --version


@pytest.mark.parametrize("argv, hint", [
    (["runs", "-e", "report-cpu", "--toggle", "sdap"], "did you mean 'sdpa'?"),
    (["show", "onecycle", "-e", "report-cpu"], "did you mean 'onecycle_fix'?"),
    (["runs", "-e", "report-cpuu"], "did you mean 'report-cpu'?"),
    (["runs", "-e", "report-cpu", "--status", "complete"], "did you mean 'completed'?"),
    (["report", "-e", "report-cpu", "--format", "markdwon"], "did you mean 'markdown'?"),
    (["plot", "-e", "report-cpu", "--runs", "basline"], "did you mean 'baseline'?"),
], ids=lambda v: v if isinstance(v, str) else v[0])
def test_every_typed_name_gets_did_you_mean(argv, hint, shipped):
    result = ablate(*argv)
    assert result.exit_code == 2 and hint in one_line(result), result.output


def test_version():
    from ablate import __version__

    result = ablate("--version")
    assert result.exit_code == 0 and result.output.strip() == f"ablate {__version__}"


def test_the_readme_fenced_commands_hold_no_missing_experiment():
    """The reading examples name experiments the shipped results.db holds."""
    from .test_readme import bash_commands

    held = set(load_runs(REPO / "results.db")["experiment"])
    for _, argv in bash_commands():
        for option, value in zip(argv, argv[1:]):
            if option in ("--experiment", "-e"):
                assert value in held, argv


# ------------------------------------------------------- 6. a report that fits its terminal


def _stack_table(width: int) -> str:
    from ablate.results.render import render
    from ablate.results.report import build_report

    return render(build_report("results.db", "report-cpu-stack"), "table", width, False)


@pytest.mark.parametrize("width", [100, 120])
def test_the_stack_report_keeps_its_numbers_at_100_columns(width, shipped):
    text = _stack_table(width)
    header = next(line for line in text.splitlines() if line.startswith("#"))
    assert header.split()[:4] == ["#", "config", "n", "final"]
    assert {"Δbase", "flags"} <= set(header.split()) and "toggles" not in header.split()
    # the report calls Δref unfair here: it goes first, and comes back when there is room
    assert ("Δref" in header.split()) == (width > 100)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "−ema" in text and "all-minus-ema" not in text  # a row named by what it removes
    words = " ".join(text.split())
    assert words.count("like a win") == 1 and words.count("changes the metric") == 1


def test_a_piped_report_is_100_columns_with_its_flags(shipped):
    result = ablate("report", "-e", "report-cpu-stack")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 100
    assert "flags" in next(line for line in lines if line.startswith("#"))


# ------------------------------------------------------------- 7. one metric everywhere


def test_plot_and_runs_say_and_use_the_report_metric(shipped, monkeypatch):
    from ablate.results import plot
    from ablate.results.report import build_report

    assert build_report("results.db", "report-cpu").metric == "full"  # coverages differ
    drawn = []
    real = plot.seed_band
    monkeypatch.setattr(plot, "seed_band", lambda evals, metric: drawn.append(metric) or real(evals, metric))
    assert ablate("plot", "-e", "report-cpu", "--out", "c.png").exit_code == 0
    assert set(drawn) == {"val_loss_full"}
    header = ablate("runs", "-e", "report-cpu").output.splitlines()[1]
    assert "final val_loss" in header and "final val_loss_full" in header


# ------------------------------------------------------------------------ 9. formatting, speed


def test_json_integers_and_effects_sorted_by_estimate(shipped):
    import json

    report = json.loads(ablate("report", "-e", "report-cpu", "-f", "json").output)
    assert report["ranking"][0]["rank"] == 1
    assert all(isinstance(report["ranking"][0][k], int) for k in ("n", "seeds", "best_step"))
    estimates = [e["estimate"] for e in report["effects"]]
    assert estimates == sorted(estimates)


def test_a_bad_toggle_is_answered_before_torch_is_imported(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ablate", "train", "--toggle", "sdap"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "did you mean 'sdpa'?" in proc.stderr
    assert not any(line.rstrip().endswith("| torch") for line in proc.stderr.splitlines())


# ------------------------------------------------------------ 8. progress a person can watch


def test_progress_lines_align_carry_delta_base_and_the_etas_use_measured_pace():
    from types import SimpleNamespace as NS

    from rich.console import Console

    from ablate.execution.progress import LiveProgress

    runs = {1: NS(id=1, seed=7, status="completed", final_val_loss=2.5, wall_time_s=31.0, error=None,
                  attempt=1, current_step=None),
            2: NS(id=2, seed=7, status="completed", final_val_loss=2.4, wall_time_s=29.0, error=None,
                  attempt=1, current_step=61),  # the job reported step 61 since its eval at 11
            3: NS(id=3, seed=7, status="completed", final_val_loss=2.5 + 1e-9, wall_time_s=30.0, error=None,
                  attempt=1, current_step=None),
            4: NS(id=4, seed=8, status="completed", final_val_loss=2.5, wall_time_s=30.0, error=None,
                  attempt=1, current_step=None),
            5: NS(id=5, seed=8, status="completed", final_val_loss=2.5)}  # seed 8's baseline: Δbase exactly 0
    evals = [NS(step=1, elapsed_s=10.0, val_loss=3.0, tokens_per_s=None, extra={"max_steps": 111}),
             NS(step=11, elapsed_s=11.0, val_loss=2.9, tokens_per_s=None, extra={"max_steps": 111})]
    store = NS(run=runs.get, evals=lambda run_id, attempt: evals)
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    progress = LiveProgress(store, total=5, done=0, console=console, baselines={7: 1, 8: 5})
    jobs = [NS(run_id=1, attempt=1, name="baseline"), NS(run_id=2, attempt=1, name="a_much_longer_name"),
            NS(run_id=3, attempt=1, name="tiny"), NS(run_id=4, attempt=1, name="tiny")]
    for job in jobs:
        progress("start", {"job": job})
    progress._refresh(jobs[1])
    task = progress.progress.tasks[progress.tasks[2]]
    # per step, not per evaluation; 0.1 s a step since the last evaluation (not 10 s), 50 left
    assert task.completed == 61 and "step 61/111" in task.fields["info"] and "ETA 5s" in task.fields["info"]
    for job in jobs:
        progress("end", {"job": job, "run": runs[job.run_id]})
    lines = [line for line in out.getvalue().splitlines() if line.startswith("completed")]
    assert len(lines) == 4 and len({line.index("val_loss") for line in lines}) == 1
    assert "Δbase -0.1000" in lines[1] and "Δbase" not in lines[0]
    assert "Δbase +1.0e-09" in lines[2] and "Δbase -0.0000" not in out.getvalue()  # tiny: not zero, never -0
    assert "Δbase +0.0000" in lines[3] and "seed 7 " in lines[2] and "seed 8 " in lines[3]  # one name, two seeds
    overall = progress.progress.tasks[progress.overall].fields["info"]
    assert overall.startswith("4/5 runs done, about") and overall.endswith("left")


def test_progress_gives_your_own_metric_its_delta_base():
    """Issue 37: `completed seed 2 gru valid_loss 7.9400` had no Δbase for a command trainer's
    metric; now it is the metric's last value minus its seed's baseline's, as for Mainrun's."""
    from types import SimpleNamespace as NS

    from rich.console import Console

    from ablate.execution.progress import LiveProgress

    config = {"trainer": {"kind": "command", "metric": "valid_loss"}}
    last = {1: 7.94, 2: 7.5, 3: None}
    runs = {i: NS(id=i, seed=2, status=status, final_val_loss=None, wall_time_s=15.0, error=None,
                  attempt=1, current_step=None, config=config)
            for i, status in ((1, "completed"), (2, "completed"), (3, "failed"))}
    store = NS(run=runs.get, evals=lambda run_id, attempt: [NS(step=3, extra={"valid_loss": last[run_id]})])
    out = io.StringIO()
    progress = LiveProgress(store, total=3, done=0, console=Console(file=out, width=120), baselines={2: 1})
    for i, name in ((1, "baseline"), (2, "gru"), (3, "lstm")):
        progress("start", {"job": NS(run_id=i, attempt=1, name=name)})
        progress("end", {"job": NS(run_id=i, attempt=1, name=name), "run": runs[i]})
    lines = {line.split()[3]: line for line in out.getvalue().splitlines() if line.startswith(("completed", "failed"))}
    assert "valid_loss  7.5000  Δbase -0.4400" in lines["gru"]
    assert "Δbase" not in lines["baseline"] and "Δbase" not in lines["lstm"]


def test_help_gives_whole_summaries_and_no_python_types():
    """At 80 columns every command's one-line summary is a whole sentence, and no option shows
    a Python type such as <bool> or <list[str]>."""
    import typer

    for group in ([], ["db"]):
        listing = CliRunner().invoke(app, [*group, "--help"], env={"COLUMNS": "80"}).output
        commands = typer.main.get_command(app)
        for name in group:
            commands = commands.commands[name]
        summaries = listing.split("Commands:")[1].strip().splitlines()
        assert len(summaries) == len(commands.commands)
        assert all(line.rstrip().endswith(".") and not line.rstrip().endswith("...") for line in summaries), listing
        for name in commands.commands:
            text = CliRunner().invoke(app, [*group, name, "--help"], env={"COLUMNS": "80"}).output
            assert "<bool>" not in text and "<list" not in text, text


def test_catalog_has_formats_and_whole_names():
    import pandas as pd


    from ablate.training.catalog import CATALOG

    result = ablate("catalog", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert pd.read_csv(io.StringIO(result.output))["name"].tolist() == list(CATALOG)
    table = CliRunner().invoke(app, ["catalog"], env={"COLUMNS": "60"}).output
    assert all(name in table for name in CATALOG)
    wide = CliRunner().invoke(app, ["catalog"], env={"COLUMNS": "80"}).output
    assert "…" not in wide and max(map(len, wide.splitlines())) <= 80  # wrapped, never cut
    assert "onecycle_final_div_factor=100.0" in wide


def test_show_formats_each_evaluation_column_one_way(shipped):
    result = ablate("show", "onecycle_fix", "-e", "report-cpu", "--seed", "1338", "-f", "markdown")
    assert result.exit_code == 0, result.output
    evals = result.output.split("**Evaluations**")[1]
    rows = [line.split(" | ") for line in evals.splitlines() if line.startswith("| ")]
    header, cells = rows[0], rows[2:]
    column = {name.strip("| "): [row[i].strip("| ") for row in cells] for i, name in enumerate(header)}
    assert all(v.isdigit() for v in column["epoch"])  # 1, not 1.0000
    assert all(v.endswith("s") for v in column["elapsed_s"]) and all("," in v for v in column["tokens_seen"][3:])


def test_as_command_of_a_run_whose_data_is_not_here_says_what_to_pass(tmp_path):
    """A database merged from another machine names a data file this one does not have: a
    comment above the line says so and how to check a copy; the line itself still parses."""
    from ablate.results.render import command_for

    gone = str(tmp_path / "elsewhere" / "hn.csv")
    comment, line = command_for(TrainConfig(data=gone), None, "cpu (4 threads)").splitlines()
    assert comment.startswith(f"# {gone} is not on this machine") and "--data FILE" in comment
    words = shlex.split(line)
    assert words[:4] == ["ablate", "train", "--data", gone] and words[-4:] == ["--device", "cpu", "--threads", "4"]
    typer.main.get_command(app).commands["train"].make_context("train", words[2:])
    assert "\n" not in command_for(TrainConfig(data=str(HN_CSV)), None, None)  # here: the line alone
