"""README.md and its reference pages under docs/ are executable: their SQL and pandas examples
run on real results, their YAML examples load, every `ablate ...` command they show names a real
subcommand with real options, and every link between them leads to a file that exists.

The examples run as on a fresh clone with no `../shared` beside it: against a copy of the
shipped `results.db` in a repository root of its own, with the smoke matrix's database (the
session fixture `smoke_db`) as `smoke.db`, where `experiments/smoke.yaml` puts it, and the
example of your own trainer (`example_run`) as `tiny-mlp.db`, where its matrix puts it. The copy
also holds one failed run (in its own experiment), recorded through the store as a crashing
job would record it, so the "failed runs" examples have a row.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sqlite3
from pathlib import Path

import click
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from ablate.cli import app
from ablate.execution.matrix import load_matrix, parse_matrix
from ablate.execution.runner import plan
from ablate.storage.store import Store

from .conftest import EXAMPLE, EXISTING, REPO

PAGES = [REPO / "README.md", *(REPO / "docs" / page for page in (
    "running.md", "your-script.md", "results.md", "fairness.md", "database.md", "security.md", "scale.md"))]
README = "\n".join(page.read_text(encoding="utf-8") for page in PAGES)  # the front page, then the reference
COMMAND = typer.main.get_command(app)
DB_SECTION = "The results database"
READ_SECTION = "Reading the results"
MATRIX_SECTION = "Running a matrix"
OWN_SECTION = "Ablating your own training script"
EXISTING_SECTION = "Ablating an existing script"


# ------------------------------------------------------------------------------ README parsing


def fenced_blocks() -> list[tuple[str, str, str]]:
    """(section heading, language, code) of every fenced block, in order."""
    blocks, section, lang, code = [], "", None, []
    for line in README.splitlines():
        if lang is None and line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("```"):
            if lang is None:
                lang, code = line[3:].strip(), []
            else:
                blocks.append((section, lang, "\n".join(code)))
                lang = None
        elif lang is not None:
            code.append(line)
    assert lang is None, "unclosed code fence in README.md"
    return blocks


def blocks(lang: str, section: str | None = None) -> list[str]:
    return [code for sec, lng, code in fenced_blocks() if lng == lang and section in (None, sec)]


def shell_commands(code: str) -> list[list[str]]:
    """Each `ablate ...` command of a bash block as argv words (without the `ablate`)."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        for part in re.split(r"&&|;|\|", line):
            words = shlex.split(part, comments=True)
            if words[:3] == ["python", "-m", "ablate"]:
                words = words[2:]
            if words[:1] == ["ablate"]:
                commands.append(words[1:])
    return commands


def inline_commands() -> list[str]:
    """`ablate ...` spans in the prose, e.g. `ablate show RUN [--as-command]`."""
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    return re.findall(r"`(ablate [^`]+)`", prose)


def bash_commands() -> list[tuple[str, list[str]]]:
    return [(sec, argv) for sec, lng, code in fenced_blocks() if lng == "bash"
            for argv in shell_commands(code)]


def test_the_front_page_is_short_and_links_every_page_and_every_link_leads_somewhere():
    front = PAGES[0].read_text(encoding="utf-8")
    assert len(front.splitlines()) < 150
    assert {p.name for p in PAGES[1:]} == set(re.findall(r"\]\(docs/([\w-]+\.md)\)", front))
    assert {p.name for p in (REPO / "docs").glob("*.md")} == {p.name for p in PAGES[1:]}  # none left out
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if not target.startswith(("http://", "https://")) and "shared/" not in target:
                assert (page.parent / target).exists(), f"{page.name}: a link to {target}, which is not there"


def test_the_readme_has_the_examples_this_file_runs():
    assert len(blocks("sql", DB_SECTION)) >= 4
    assert len(blocks("python", DB_SECTION)) >= 2
    assert len(blocks("yaml", MATRIX_SECTION)) == 1 and len(blocks("yaml", OWN_SECTION)) == 1
    assert {argv[0] for _, argv in bash_commands()} >= {
        "train", "catalog", "plan", "run", "report", "runs", "show", "plot", "export"}


# ------------------------------------------------------------------------- the results database


def _copy_db(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)  # consistent even with a WAL beside the source


@pytest.fixture(scope="module")
def workspace(smoke_db, example_run, existing_run, tmp_path_factory) -> Path:
    """A fresh clone as the README assumes it, with nothing beside it: the shipped results.db
    (plus one failed run), experiments/, examples/, the smoke matrix's smoke.db and the
    examples' tiny-mlp.db and existing-script.db."""
    root = tmp_path_factory.mktemp("readme") / "main"
    root.mkdir()
    shutil.copytree(REPO / "experiments", root / "experiments")
    for example in (EXAMPLE, EXISTING):
        shutil.copytree(example, root / "examples" / example.name, ignore=shutil.ignore_patterns("*.db", "__pycache__"))
    _copy_db(smoke_db.db, root / "smoke.db")
    _copy_db(example_run.db, root / "tiny-mlp.db")
    _copy_db(existing_run.db, root / "existing-script.db")
    db = root / "results.db"
    _copy_db(REPO / "results.db", db)
    store = Store(f"sqlite:///{db}")
    try:
        exp = store.upsert_experiment("smoke-failures", "a job that crashed", None, None, "list")
        (config,) = [r[0] for r in sqlite3.connect(db).execute(
            "select config from runs where name = 'baseline' limit 1")]
        config = {**json.loads(config), "lr": 1e9}
        (run_id,) = store.add_runs(exp, [{"hash": "0" * 16, "name": "diverges", "config": config,
                                          "toggles": [], "seed": 1337, "position": 0}])
        run = store.claim([run_id], host="test", pid=1, code_version="test")
        store.record_eval(run_id, run.attempt, {"step": 1, "val_loss": 9.9, "val_loss_full": 9.9,
                                                 "eval_coverage": 0.99})
        store.fail(run_id, run.attempt, "NonFiniteLoss: non-finite validation loss at step 12",
                   "Traceback (most recent call last):\n  ...\nNonFiniteLoss: non-finite validation loss")
    finally:
        store.close()
    return root


@pytest.fixture
def in_workspace(workspace, monkeypatch) -> Path:
    monkeypatch.chdir(workspace)
    monkeypatch.delenv("ABLATE_DB", raising=False)  # the README's default: ./results.db
    return workspace


@pytest.mark.parametrize("sql", blocks("sql", DB_SECTION),
                         ids=lambda s: re.sub(r"\W+", "-", s.split("FROM")[0].strip())[:40])
def test_sql_example(sql, workspace):
    """Each on the shipped results.db, or on the database its first line names (`-- on X.db`)."""
    statement = sql.strip()
    assert sqlite3.complete_statement(statement) and statement.count(";") == 1, \
        "one statement per ```sql block, ending in ';'"
    named = re.match(r"-- on (\S+\.db)\n", statement)
    with sqlite3.connect(workspace / (named.group(1) if named else "results.db")) as conn:
        rows = conn.execute(statement).fetchall()
    assert rows, f"no rows from:\n{statement}"


def test_the_best_per_toggle_sql_ranks_as_the_report_does(tmp_path):
    """The README's "best per toggle" SQL on the shipped results.db is the report's ranking: the
    same configurations in the same order, each with the report's paired Δbase (the mean over
    the seeds it shares with the baseline of the same-seed difference in the final
    val_loss_full) and that number of seeds."""
    (sql,) = [code for code in blocks("sql", DB_SECTION) if "AS d_base" in code and "'report-cpu'" in code]
    db = tmp_path / "results.db"
    _copy_db(REPO / "results.db", db)
    assert_ranks_as_the_report(sql, db, "report-cpu")


def test_the_own_metric_sql_ranks_as_the_report_does(workspace):
    """Issue 37: the README's SQL read Mainrun's columns only, empty for your own metric; its own
    metric example, on the example's command-trainer database, is the report's ranking too."""
    (sql,) = [code for code in blocks("sql", DB_SECTION) if code.startswith("-- on tiny-mlp.db")]
    assert_ranks_as_the_report(sql, workspace / "tiny-mlp.db", "tiny-mlp")


def assert_ranks_as_the_report(sql: str, db: Path, experiment: str) -> None:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(sql).fetchall()
    result = CliRunner().invoke(app, ["report", "--db", str(db), "-e", experiment, "--format", "json"])
    ranked = sorted((r for r in json.loads(result.stdout)["ranking"] if r["rank"] is not None),
                    key=lambda r: r["rank"])
    assert [name for name, *_ in rows] == [r["name"] for r in ranked]
    assert [d for *_, d in rows] == pytest.approx([r["d_base"] for r in ranked], abs=5e-6)
    assert [n for _, n, _ in rows] == [r["n"] for r in ranked]


@pytest.mark.parametrize("code", blocks("python", DB_SECTION), ids=lambda c: c.splitlines()[0][:40])
def test_python_example(code, in_workspace, capsys):
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, "README.md", "exec"), namespace)
    frames = {k: v for k, v in namespace.items() if isinstance(v, (pd.DataFrame, pd.Series))}
    assert frames, "the example builds no table"
    for name, frame in frames.items():
        assert len(frame) > 0, f"{name} is empty"
    assert capsys.readouterr().out.strip()


def test_yaml_example_is_a_valid_matrix():
    (text,) = blocks("yaml", MATRIX_SECTION)
    matrix = parse_matrix(text, REPO / "experiments" / "example.yaml")
    labels = [label for f in matrix.factors for label, _ in f.levels[1:]]
    assert labels == ["sdpa", "wide_mlp", "lr=0.003", "lr=0.012"]
    assert len(matrix.expand()) == 2 * (1 + len(labels))


def test_own_trainer_yaml_is_the_example_matrix():
    """The README's matrix of your own trainer plans the very runs of examples/tiny-mlp."""
    (text,) = blocks("yaml", OWN_SECTION)
    shown = plan(parse_matrix(text, EXAMPLE / "readme.yaml"))
    assert [(r.planned.name, r.hash) for r in shown] == [
        (r.planned.name, r.hash) for r in plan(load_matrix(EXAMPLE / "matrix.yaml"))]


def test_existing_script_yaml_is_the_example_matrix():
    """The README's matrix of an existing script plans the very runs of examples/existing-script."""
    (text,) = blocks("yaml", EXISTING_SECTION)
    shown = plan(parse_matrix(text, EXISTING / "readme.yaml"))
    assert [(r.planned.name, r.hash) for r in shown] == [
        (r.planned.name, r.hash) for r in plan(load_matrix(EXISTING / "matrix.yaml"))]


# ---------------------------------------------------------------------------- ablate commands


def _subcommand(argv: list[str]) -> tuple:
    """The (sub)command an argv names, through command groups such as `db`, and its own args;
    `ablate --version` and the like: the command itself."""
    command, rest = COMMAND, list(argv)
    while hasattr(command, "commands") and not (rest and rest[0].startswith("-")):  # a group
        assert rest and rest[0] in command.commands, f"`ablate {' '.join(argv)}`: no such subcommand"
        command, rest = command.commands[rest[0]], rest[1:]
    return command, rest


def _option_names(command: click.Command) -> set[str]:
    return {name for p in command.params for name in (*p.opts, *p.secondary_opts)}


@pytest.mark.parametrize("argv", [a for _, a in bash_commands()], ids=" ".join)
def test_command_line_parses(argv):
    """Strict parsing: the subcommand, every option and every required argument."""
    command, args = _subcommand(argv)
    words = [w for w in args if w.startswith("-")]
    unknown = [w.split("=")[0] for w in words if w.split("=")[0] not in _option_names(command)]
    assert not unknown, f"`ablate {' '.join(argv)}`: unknown option(s) {unknown}"
    if command is not COMMAND:
        command.make_context(argv[0], args, parent=click.Context(COMMAND))


@pytest.mark.parametrize("span", inline_commands())
def test_inline_command_names_real_options(span):
    argv = span.split()[1:]
    command, args = _subcommand(argv)
    for option in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", span):
        assert option in _option_names(command), f"`{span}`: {option} is not an option of {argv[0]}"
    words = [w.strip("[]") for w in args]
    command.make_context(argv[0], words, parent=click.Context(COMMAND), resilient_parsing=True)


TRAINED = {"experiments/smoke.yaml": "smoke.db", "examples/tiny-mlp/matrix.yaml": "tiny-mlp.db",
           "examples/existing-script/matrix.yaml": "existing-script.db"}


def _runnable(argv: list[str]) -> bool:
    """Commands cheap enough to run here: reading results, planning, init (a script's --help), and the runs of the smoke
    matrix and of the example (which, on the databases that hold their results, train nothing).
    `train` takes minutes on a loaded 2-core machine; tests/test_trainer.py runs the first
    README one on the same data."""
    return argv[0] in ("--version", "catalog", "init", "plan", "report", "runs", "show", "plot", "export") or (
        argv[0] == "run" and bool(TRAINED.keys() & set(argv)))


@pytest.mark.parametrize("argv", [a for _, a in bash_commands() if _runnable(a)], ids=" ".join)
def test_command_works_as_written(argv, in_workspace):
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, f"`ablate {' '.join(argv)}` exit {result.exit_code}:\n{result.output}"
    assert not (in_workspace.parent / "shared").exists()  # nothing beside the clone
    if argv[0] == "run":
        assert "nothing to train" in " ".join(result.stdout.split())
        assert TRAINED[next(a for a in argv if a in TRAINED)] in result.stdout
    for option, value in zip(argv, argv[1:]):
        if option in ("--out", "--to"):
            assert (in_workspace / value).stat().st_size > 0
