"""Hostile input, round four (issue 31): no output replaces a database or a file it was not
meant for, no secret is printed or put in a job's argv, every limit holds whatever the trainer
does, and a stored row never crashes a reading command. One test per row of the issue's table."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablate.cli import app

REPO = Path(__file__).resolve().parent.parent
TRAIN = 'import sys\nprint(\'{"step": 1, "val_loss": %s}\' % (1.0 + float(sys.argv[2]) + int(sys.argv[4]) / 100))\n'
MATRIX = """name: own
trainer: {command: "{python} train.py --lr {lr} --seed {seed}"%s}
params: {lr: 0.1}
min_effect: 0.01
seeds: [0, 1]
design: one-at-a-time
toggles: [{lr: [0.5]}]
execution: {warm_workers: false}
"""


def own_matrix(folder: Path, trainer_extra: str = "", train: str = TRAIN) -> Path:
    """A matrix of a tiny command trainer (4 runs of a second or so), its script beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(train)
    (folder / "m.yaml").write_text(MATRIX % trainer_extra)
    return folder / "m.yaml"


def ablate(*args: str, cwd: Path, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """The command line in its own process (as a user runs it), this checkout first on the path."""
    full = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=timeout)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error(output: str) -> str:
    """The single `error:` line of a refused command (and no traceback)."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """A database with the own matrix's 4 runs completed (results.db in its folder)."""
    folder = tmp_path_factory.mktemp("done")
    own_matrix(folder)
    ran = ablate("run", "m.yaml", "--db", "results.db", cwd=folder)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return folder


# ------------------------------------------------------------------ 1, 13: outputs


@pytest.mark.parametrize("fmt", ["table", "csv", "markdown", "json", "html"])
def test_1_report_out_never_replaces_a_results_database(done, tmp_path, fmt):
    """Case 1: `--out results.db` wrote text over the database; now refused by its content,
    whatever its name, and --force does not change that."""
    db = tmp_path / "results.db"
    db.write_bytes((done / "results.db").read_bytes())
    disguised = tmp_path / "report.html"  # a database under the name of the command's own output
    disguised.write_bytes(db.read_bytes())
    before = sha(db)
    for target, force in ((db, []), (disguised, ["--force"])):
        result = CliRunner().invoke(app, ["report", "-e", "own", "-f", fmt, "--out", str(target),
                                          "--db", str(db), *force])
        assert result.exit_code == 2, result.output
        assert "is a results database" in one_error(result.output)
    assert sha(db) == before and sha(disguised) == before
    assert CliRunner().invoke(app, ["runs", "--db", str(db)]).exit_code == 0


def test_1_an_existing_file_of_another_kind_needs_force_and_plot_export_are_held_alike(done, tmp_path):
    db = done / "results.db"
    before = sha(db)
    notes = tmp_path / "notes.conf"
    notes.write_text("keep me\n")
    cli = CliRunner()
    for args in (["report", "-e", "own", "-f", "csv", "--out", str(notes)],
                 ["export", "--to", str(tmp_path / "x.csv")],
                 ["plot", "-e", "own", "--out", str(tmp_path / "curves.png")]):
        if args[0] != "report":  # the same protection where the suffix says the kind
            Path(args[-1]).write_bytes(db.read_bytes())
        result = cli.invoke(app, [*args, "--db", str(db)])
        assert result.exit_code == 2, (args, result.output)
        assert "cannot write" in one_error(result.output)
    assert notes.read_text() == "keep me\n" and sha(db) == before
    result = cli.invoke(app, ["report", "-e", "own", "-f", "csv", "--out", str(notes), "--db", str(db), "--force"])
    assert result.exit_code == 0 and notes.read_text().startswith("table,rank,name"), result.output
    new = tmp_path / "report.anything"  # a new file: any name will do
    assert cli.invoke(app, ["report", "-e", "own", "--out", str(new), "--db", str(db)]).exit_code == 0
    assert new.read_text()


def test_13_no_output_is_written_through_a_symbolic_link(done, tmp_path):
    """Case 13: `results-md --out LINK.md`, a link to a .conf file, wrote through it."""
    db = done / "results.db"
    target = tmp_path / "server.conf"
    target.write_text("listen 80\n")
    cli = CliRunner()
    for name, args in (("LINK.md", ["results-md"]), ("r.md", ["report", "-e", "own", "-f", "markdown"]),
                       ("r.html", ["report", "-e", "own", "-f", "html"]), ("e.csv", ["export"])):
        link = tmp_path / name
        link.symlink_to(target)
        option = "--to" if args[0] == "export" else "--out"
        force = [] if args[0] == "results-md" else ["--force"]
        result = cli.invoke(app, [*args, option, str(link), "--db", str(db), *force])
        assert result.exit_code == 2, (args, result.output)
        assert "symbolic link" in one_error(result.output)
        assert link.is_symlink()
    assert target.read_text() == "listen 80\n"


# ------------------------------------------------------------------ 14: in-memory databases


@pytest.mark.parametrize("value", [":memory:", "sqlite://", "sqlite:///:memory:"])
def test_14_an_in_memory_database_is_refused_and_no_file_is_made(tmp_path, value):
    matrix = own_matrix(tmp_path / "w")
    result = ablate("run", str(matrix), cwd=tmp_path, env={"ABLATE_DB": value})
    assert result.returncode == 2, result.stderr
    assert "in-memory database" in one_error(result.stderr)
    assert not list(tmp_path.rglob("*memory*")) and not (tmp_path / "ablate-logs").exists()
