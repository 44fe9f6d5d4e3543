"""Hostile input, round two: user text is never rich markup, duplicate YAML keys, bounded
matrices, every problem of a matrix reported at once."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.execution import matrix as matrix_module
from ablate.execution import safe_yaml
from ablate.execution.matrix import MatrixError, load_matrix, parse_matrix

REPO = Path(__file__).resolve().parent.parent
TRAINER = "tests.fake_trainer:train"
MARKUP = ["[/x]", "[bold]b", "[red]r[/red]", "[link=file:///etc]l", "[[esc]]", "a]b[c", "\\[x"]


def bracket_matrix(tmp_path: Path) -> Path:
    """A list design whose run names are all markup-like text, its data under a bracketed path."""
    data = tmp_path / "d[old]" / "titles[1].csv"
    data.parent.mkdir(exist_ok=True)
    data.write_text("title\n" + "hello world\n" * 1000)
    runs = "".join(f"  - {{name: {json.dumps(name)}, toggles: {f'[lr=0.0{i}]' if i else '[]'}}}\n"
                   for i, name in enumerate(MARKUP))
    path = tmp_path / "brackets.yaml"
    path.write_text("name: brackets\ndesign: list\nbase: {overrides: {epochs: 1, evals_per_epoch: 2}}\n"
                    "execution: {devices: cpu, warm_workers: false}\n"
                    f"toggles: [{{lr: [{', '.join(f'0.0{i}' for i in range(1, len(MARKUP)))}]}}]\n"
                    f"data: '{data}'\nruns:\n{runs}")
    return path


def test_bracketed_names_values_and_paths_are_text_in_every_command(tmp_path):
    matrix, db = bracket_matrix(tmp_path), tmp_path / "r[1].db"
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    ran = subprocess.run([sys.executable, "-m", "ablate", "run", str(matrix), "--db", str(db),
                          "--trainer", TRAINER, "--log-dir", str(tmp_path / "logs")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "MarkupError" not in ran.stderr
    for name in MARKUP:  # each run's end line names it as it is
        assert re.search(rf" {re.escape(name)} +val_loss", ran.stdout), (name, ran.stdout)

    cli = CliRunner()
    url = ["--db", f"sqlite:///{db}"]
    for args in (["plan", str(matrix)], ["report", str(matrix)], ["report", str(matrix), "-f", "markdown"],
                 ["runs"], ["runs", "-f", "markdown"], ["show", "[/x]"], ["show", "[bold]b", "-f", "markdown"]):
        result = cli.invoke(app, [*args, *url])
        assert result.exit_code == 0, (args, result.output, result.exception)
        shown = result.output.replace("\\|", "|")
        for name in (MARKUP if args[0] in ("plan", "report", "runs") else [args[1]]):
            assert name in shown, (args, name, result.output)
    exported = cli.invoke(app, ["export", "--to", str(tmp_path / "out[1].csv"), *url])
    assert exported.exit_code == 0 and "out[1].csv" in exported.output, exported.output
    plotted = cli.invoke(app, ["plot", str(matrix), "--out", str(tmp_path / "p[1].png"), *url])
    assert plotted.exit_code == 0 and (tmp_path / "p[1].png").is_file(), plotted.output


@pytest.mark.parametrize("args, message", [
    (["run", "M", "--data", "runs[old].csv"], "data file 'runs[old].csv' does not exist"),
    (["run", "M", "--db", "/tmp/[old]/x.db"], "directory /tmp/[old] does not exist"),  # plan opens no db
    (["run", "M", "--executor", "[bold]x"], "--executor '[bold]x'"),
])
def test_bracketed_text_in_error_messages_is_kept(tmp_path, args, message):
    matrix = bracket_matrix(tmp_path)
    result = CliRunner().invoke(app, [str(matrix) if a == "M" else a for a in args])
    assert result.exit_code == 2, (result.output, result.exception)
    assert message in result.output, result.output


def test_a_matrix_error_keeps_the_catalog_hint_in_brackets(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\ndesign: one-at-a-time\ntoggles: [[1, 2]]\n")
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 2 and "{field: [values]}" in result.output, result.output


@pytest.mark.parametrize("body, first, again", [
    ("name: m\ndesign: one-at-a-time\ntoggles: [sdpa]\ntoggles: [swiglu]\n", 3, 4),
    ("name: m\ndesign: one-at-a-time\nbase:\n  overrides: {lr: 0.1,\n    lr: 0.2}\ntoggles: [sdpa]\n", 4, 5),
    ("name: m\ndesign: list\ntoggles: [sdpa]\nruns:\n  - name: a\n    toggles: []\n    name: b\n", 5, 7),
])
def test_a_key_given_twice_is_an_error_naming_both_lines(body, first, again):
    with pytest.raises(MatrixError) as e:
        parse_matrix(body, "m.yaml")
    assert str(e.value).startswith(f"m.yaml: line {again}, ") and f"first given at line {first}" in str(e.value)


def test_yaml_merge_keys_may_still_be_overridden():
    text = ("name: m\ndesign: one-at-a-time\nx-small: &small {d_model: 64, n_layer: 2}\n"
            "base: {overrides: {<<: *small, d_model: 32}}\ntoggles: [sdpa]\n")
    with pytest.raises(MatrixError, match="x-small: unknown key"):  # the anchor's key, not the merge
        parse_matrix(text, "m.yaml")
    matrix = parse_matrix(text.replace("x-small: &small {d_model: 64, n_layer: 2}\n", "")
                          .replace("<<: *small, ", ""), "m.yaml")
    assert matrix.base.d_model == 32


def test_every_problem_is_reported_at_once():
    text = ("name: a/b\ndesign: nope\n"
            "base: {overrides: {lrr: 0.1, d_model: big, dropout: x}}\ntoggles: [sdpa]\n")
    with pytest.raises(MatrixError) as e:
        parse_matrix(text, "m.yaml")
    problems = "\n".join(e.value.problems)
    for part in ("m.yaml: name:", "m.yaml: design:", "base.overrides.lrr: unknown config field",
                 "base.overrides.d_model: expected int", "base.overrides.dropout: expected float"):
        assert part in problems, problems


def never_called(what: str):
    """A stand-in that fails the test if the guarded work is reached at all: a bound that holds
    by construction, not by how fast this machine happens to be."""
    def refuse(*_, **__):
        raise AssertionError(f"{what} was reached")
    return refuse


def test_a_huge_matrix_file_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    path = tmp_path / "seeds.yaml"
    path.write_text("name: m\ndesign: one-at-a-time\ntoggles: [sdpa]\nseeds: ["
                    + ", ".join(str(i) for i in range(300_000)) + "]\n")
    monkeypatch.setattr(safe_yaml.yaml, "load", never_called("the YAML parser"))
    with pytest.raises(MatrixError, match="characters, over the limit"):
        load_matrix(path)


def test_max_runs_is_bounded_so_a_design_is_never_materialised_at_astronomic_size(monkeypatch):
    levels = ", ".join(str(0.001 * i) for i in range(1, 21))
    toggles = ", ".join(f"{{{f}: [{levels}]}}" for f in ("lr", "dropout", "weight_decay"))  # 21**3 runs
    monkeypatch.setattr(matrix_module, "build_rows", never_called("the design's rows"))
    with pytest.raises(MatrixError, match=r"max_runs: expected less than or equal to 10000"):
        parse_matrix(f"name: m\ndesign: factorial\nmax_runs: 1000000000\ntoggles: [{toggles}]\n", "m.yaml")
    with pytest.raises(MatrixError, match=r"max_runs: design 'factorial' has \d+ runs x 2 seeds"):  # counted, not built
        parse_matrix(f"name: m\ndesign: factorial\nmax_runs: 10000\nseeds: [1, 2]\ntoggles: [{toggles}]\n", "m.yaml")


# ------------------------------------------------------------- reading changes nothing, ever

def results_db(tmp_path: Path, journal: str) -> Path:
    """A results database holding one registered matrix, in the given SQLite journal mode."""
    import sqlite3

    from ablate.execution.runner import plan, register
    from ablate.storage.store import Store

    db = tmp_path / "ro" / "r.db"
    db.parent.mkdir()
    matrix = bracket_matrix(tmp_path)
    with Store(f"sqlite:///{db}") as store:
        ids = register(store, load_matrix(matrix), plan(load_matrix(matrix)))
        store.fail(ids[0], 0, "RuntimeError: boom")
    conn = sqlite3.connect(db)
    conn.execute(f"pragma journal_mode={journal}")
    conn.close()
    assert sorted(p.name for p in db.parent.iterdir()) == ["r.db"]
    return db


READERS = [["runs"], ["report", "-e", "brackets"], ["show", "[/x]"], ["runs", "-f", "json"]]


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_reading_commands_change_nothing_byte_for_byte(tmp_path, journal):
    db = results_db(tmp_path, journal)
    before = {p.name: p.read_bytes() for p in db.parent.iterdir()}
    for args in [*READERS, ["export", "--to", str(tmp_path / "x.csv")]]:
        result = CliRunner().invoke(app, [*args, "--db", str(db)])
        assert result.exit_code == 0, (args, result.output, result.exception)
    assert {p.name: p.read_bytes() for p in db.parent.iterdir()} == before  # no WAL switch, no -shm


def test_a_database_in_a_read_only_directory_is_read(tmp_path, monkeypatch):
    """As root every file is writable, so the read-only filesystem is what os.access says."""
    db = results_db(tmp_path, "wal")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: mode != os.W_OK and real_access(p, mode))
    for args in READERS:
        result = CliRunner().invoke(app, [*args, "--db", str(db)])
        assert result.exit_code == 0, (args, result.output, result.exception)
        assert "unable to open" not in result.output
    empty = tmp_path / "ro" / "empty.db"
    empty.touch()
    result = CliRunner().invoke(app, ["runs", "--db", str(empty)])
    assert result.exit_code == 2 and "is empty" in result.output and empty.stat().st_size == 0


# ------------------------------------------------------------ one `error:` line, never a traceback

def schema_1_without_a_column(tmp_path: Path) -> Path:
    import shutil
    import sqlite3

    db = tmp_path / "v1.db"
    shutil.copy(REPO / "tests" / "fixtures" / "results-v1.db", db)
    conn = sqlite3.connect(db)
    conn.execute("alter table runs drop column host")
    conn.commit()
    conn.close()
    return db


def one_line_error(args: list[str], cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "ablate", *args], cwd=cwd, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert result.returncode == 2, (args, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize("case, message", [
    ("not-sqlite", "file is not a database"),
    ("no-driver", "pip install 'ablate[postgres]'"),
    ("version-one", "schema_version 'one' in its meta table is not a number"),
    ("missing-column", "lacks runs.host"),
    ("jobs-1", "--jobs-per-device -1: expected 1 or more"),
    ("jobs0", "--jobs-per-device 0: expected 1 or more"),
    ("export-nodir", "directory 'nodir' does not exist"),
    ("plot-nodir", "directory 'nodir' does not exist"),
    ("plot-txt", "expected a .png or .svg or .pdf file name"),
])
def test_bad_databases_and_options_are_one_error_line(tmp_path, case, message):
    import sqlite3

    matrix = bracket_matrix(tmp_path)
    good = results_db(tmp_path, "wal")
    db = {"not-sqlite": tmp_path / "x.db", "version-one": tmp_path / "ro" / "r.db",
          "missing-column": schema_1_without_a_column(tmp_path)}.get(case, good)
    (tmp_path / "x.db").write_text("hello, not a database\n")
    if case == "version-one":
        with sqlite3.connect(db) as conn:
            conn.execute("update meta set value = 'one' where key = 'schema_version'")
        conn.close()
    before = db.read_bytes()
    url = "postgresql+pg8000://nobody@localhost/x" if case == "no-driver" else str(db)
    args = {"jobs-1": ["run", str(matrix), "--jobs-per-device", "-1"],
            "jobs0": ["run", str(matrix), "--jobs-per-device", "0"],
            "export-nodir": ["export", "--to", "nodir/x.csv"],
            "plot-nodir": ["plot", "--out", "nodir/p.png"], "plot-txt": ["plot", "--out", "p.txt"],
            }.get(case, ["run", str(matrix), "--trainer", TRAINER])
    assert message in one_line_error([*args, "--db", url], tmp_path)
    assert db.read_bytes() == before  # nothing written before the problem was found


def test_a_locked_database_is_an_error_line(tmp_path, monkeypatch):
    import sqlite3

    from ablate.storage import database

    monkeypatch.setattr(database, "_READ_ONLY_PRAGMAS", ("PRAGMA busy_timeout=50",))
    db = results_db(tmp_path, "delete")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("begin exclusive")
    try:
        result = CliRunner().invoke(app, ["runs", "--db", str(db)])
    finally:
        holder.close()
    assert result.exit_code == 2 and "database is locked" in result.output, (result.output, result.exception)


def test_a_full_disk_under_the_runner_is_a_store_error_not_a_traceback(tmp_path):
    import sqlite3

    from sqlalchemy import event

    from ablate.storage.database import StoreError
    from ablate.storage.store import Store

    with Store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        @event.listens_for(store._engine, "before_cursor_execute")
        def _full(conn, cursor, statement, *args) -> None:
            if statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
                raise sqlite3.OperationalError("database or disk is full")

        with pytest.raises(StoreError, match="database or disk is full"):
            store.upsert_experiment("m", "", "name: m", 1.754, "list")


# ------------------------------------------------------------ bad data fails the command at plan time

@pytest.mark.parametrize("name, content, message", [
    ("empty.csv", b"", "cannot be read as csv"),
    ("junk.csv", b"\x00\xff\xfe junk", "cannot be read as csv"),
    ("numbers.csv", b"title\n1\n2\n3\n", "3 titles are not text (e.g. 1, a int"),
    ("other.csv", b"name\nx\n", "has no 'title' column (columns: name)"),
    ("tiny.csv", b"title\nhello\n", "too little text for one batch of 8193 tokens"),
    ("titles", None, "data file './titles' does not exist"),  # no suffix: a path, not a hub id
])
def test_bad_local_data_fails_the_command_before_any_run_starts(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    matrix = tmp_path / "m.yaml"
    matrix.write_text("name: m\ndesign: one-at-a-time\ntoggles: [sdpa]\n")
    error = one_line_error(["run", str(matrix), "--data", f"./{name}", "--db", str(tmp_path / "r.db"),
                            "--trainer", TRAINER], tmp_path)
    assert message in error
    assert not (tmp_path / "r.db").exists()


# ------------------------------------------------------------ a bad checkpoint: one line, the file, no unsafe advice

class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_bad_checkpoint_is_one_line_naming_the_file_and_never_advising_unsafe_loading(tmp_path, monkeypatch):
    import torch

    from ablate.training.config import TrainConfig
    from ablate.training.checkpoint import restore_checkpoint

    monkeypatch.chdir(tmp_path)
    evil, junk, cut = tmp_path / "evil.pt", tmp_path / "junk.pt", tmp_path / "cut.pt"
    torch.save({"config": {}, "x": Payload()}, evil)
    junk.write_bytes(b"\x00junk" * 10)
    cut.write_bytes(evil.read_bytes()[:50])
    for path, why in ((evil, "refused as unsafe"), (junk, "corrupt"), (cut, "corrupt")):
        with pytest.raises(RuntimeError) as e:
            restore_checkpoint(path, TrainConfig(), {}, None, torch.device("cpu"))
        message = str(e.value)
        assert f"checkpoint {path}: {why}" in message and "\n" not in message, message
        assert "weights_only" not in message, message
    assert not (tmp_path / "PWNED").exists()


def test_a_runs_error_is_one_line(tmp_path):
    from ablate.execution.runner import plan, register
    from ablate.storage.store import Store

    matrix = bracket_matrix(tmp_path)
    with Store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        run_id = register(store, load_matrix(matrix), plan(load_matrix(matrix)))[0]
        store.fail(run_id, 0, "UnpicklingError: Weights only load failed.\n\nIn PyTorch 2.6 ...\n  more")
        assert store.run(run_id).error == "UnpicklingError: Weights only load failed. In PyTorch 2.6 ... more"


# --- issue 26: bounded text (case 7) -------------------------------------------------------------

def test_a_huge_error_is_stored_cut_to_its_cap_with_a_marker(tmp_path):
    """An entry point raising a 5 MB message was stored whole; its log keeps it whole."""
    from ablate.storage.schema import MAX_ERROR_CHARS
    from ablate.storage.store import Store

    with Store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        exp = store.upsert_experiment("m", "d" * 100_000, None, None, None)
        (run_id,) = store.add_runs(exp, [{"hash": "ab" * 8, "name": "r", "config": {}, "toggles": [], "position": 0}])
        claimed = store.claim([run_id], host="h", pid=1, code_version="x")
        store.fail(run_id, claimed.attempt, "ValueError: " + "x" * 5_000_000, "Traceback\n" + "y" * 10_000)
        run = store.run(run_id)
    assert len(run.error) == MAX_ERROR_CHARS and run.error.endswith("5,000,012 characters in all]")
    assert len(run.traceback) == 4_000


def test_a_run_name_past_its_cap_is_a_matrix_error():
    """A 20,000-character run name was stored whole and slowed every reading command."""
    text = "name: m\ndesign: list\ntoggles: [{lr: [0.1]}]\nruns: [{name: " + "n" * 20_000 + ", toggles: []}]\n"
    with pytest.raises(MatrixError, match=r"runs\[0\]\.name: .*at most 200 characters") as raised:
        parse_matrix(text)
    assert len(str(raised.value)) < 300


@pytest.mark.parametrize("args, message", [  # issue 26, case 10: these were tracebacks
    (["report", "--db", "a" * 5000], "a name longer than a file system allows"),
    (["db", "merge", "a" * 5000 + ".db", "--db", "r.db"], "a name longer than a file system allows"),
    (["results-md", "--out", "t.db"], "cannot write 't.db': expected a .md file name"),
])
def test_a_long_db_name_or_a_results_md_out_of_another_kind_is_one_error_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and result.output.startswith("error: ") and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and len(result.output) < 400


@pytest.mark.parametrize("value", ["sqlite://", "sqlite:///:memory:", " "])
def test_ablate_db_in_memory_or_blank_is_refused_before_any_run_starts(tmp_path, monkeypatch, value):
    """Case 11: 12 runs failed 'job exited with code 3' with empty logs, or a file ' ' appeared."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", str(bracket_matrix(tmp_path)), "--trainer", TRAINER],
                                env={"ABLATE_DB": value})
    assert result.exit_code == 2 and result.output.startswith("error: $ABLATE_DB: "), result.output
    assert not (tmp_path / " ").exists() and not (tmp_path / "ablate-logs").exists()


# --- issue 26: names are never paths, formulas or look-alikes (case 13) ---------------------------

def test_csv_cells_that_start_like_a_formula_are_text():
    import pandas as pd

    from ablate.results.render import render_frame

    frame = pd.DataFrame({"name": ["=cmd|' /C calc'!A0", "@SUM(1)", "+1", "-ema", "lr=0.1"], "x": [-1.5, 2, 3, 4, 5]})
    lines = render_frame(frame, "csv").splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["'=cmd|' /C calc'!A0", "'@SUM(1)", "'+1", "'-ema", "lr=0.1"]
    assert lines[1].endswith(",-1.5")  # numbers stay numbers
    # markdown: its cells are all text, so a signed number stays as it is and a formula is quoted
    rows = [r.split(" | ")[0].removeprefix("| ") for r in render_frame(frame, "markdown").splitlines()[2:]]
    assert rows == ["'=cmd\\|' /C calc'!A0", "'@SUM(1)", "+1", "'-ema", "lr=0.1"]


@pytest.mark.parametrize("name, expected", [
    ("cafe\u0301", "duplicate run name 'café'"),  # NFC: the same name as 'café'
    ("safe\u202etxt.exe", "may not hold control or bidirectional characters (U+202E)"),
    ("a\u2066b", "(U+2066)"),
])
def test_names_are_nfc_and_bidi_controls_are_refused_at_load(name, expected):
    text = ("name: m\ndesign: list\ntoggles: [{lr: [0.1]}]\n"
            f"runs: [{{name: café, toggles: []}}, {{name: \"{name}\", toggles: [lr=0.1]}}]\n")
    with pytest.raises(MatrixError, match=re.escape(expected)):
        parse_matrix(text)
