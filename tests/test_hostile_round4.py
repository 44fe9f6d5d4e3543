"""Hostile input, round four (issue 31), files and secrets: no output replaces a database or a
file it was not meant for, no secret is printed or put in a job's argv, and the runs of two
databases never share a log or a run directory. One test per row of the issue's table
(tests/test_hostile_round4_values.py holds the rows about values and limits)."""

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


# ------------------------------------------------------------------ 2: secrets

PASSWORD = "S3cretPW-31"
SPY = """import json, os, sys
seen = open(f"/proc/{os.getppid()}/cmdline").read().replace("\\0", " ")  # the job process's argv
with open(os.path.join(os.environ["ABLATE_RUN_DIR"], "seen.txt"), "w") as f:
    f.write(seen + "\\n" + json.dumps(dict(os.environ)))
print('{"step": 1, "val_loss": %s}' % (1.0 + float(sys.argv[2]) + int(sys.argv[4]) / 100))
"""


def everything_written(folder: Path) -> str:
    """Every file under `folder` (logs, run directories, what the trainer saw), as text."""
    return "\n".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("url", [f"postgresql+psycopg://ablate:{PASSWORD}@127.0.0.1:1/ablate",
                                 f"postgresql+psycopg://ablate@127.0.0.1:1/ablate?password={PASSWORD}",
                                 f"postgresql+psycopg://ablate:{PASSWORD}@[bad/x"])
def test_2_a_password_in_a_url_that_fails_is_never_printed(tmp_path, url):
    matrix = own_matrix(tmp_path / "w")
    for env, args in (({"ABLATE_DB": url}, []), ({}, ["--db", url])):
        result = ablate("run", str(matrix), *args, cwd=tmp_path, env=env)
        assert result.returncode == 2, result.stderr
        line = one_error(result.stderr)
        assert PASSWORD not in result.stdout + result.stderr and "***" in line, line


def test_2_a_password_is_never_printed_logged_stored_or_in_a_jobs_argv(pg_url, tmp_path):
    """Case 2: `results in …`, the closing `See ablate report … --db …` line and every job's
    argv held the password. Now the job gets the URL in its environment, and the trainer not at all."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    matrix = own_matrix(tmp_path / "w", train=SPY)
    with_password = make_url(pg_url).set(password=PASSWORD).render_as_string(hide_password=False)
    in_query = make_url(pg_url).update_query_dict({"password": PASSWORD}).render_as_string(hide_password=False)
    for how, env, args in (("userinfo", {}, ["--db", with_password]), ("query", {"ABLATE_DB": in_query}, []),
                           ("PGPASSWORD", {"PGPASSWORD": PASSWORD}, ["--db", pg_url])):
        logs = tmp_path / f"logs-{how}"
        result = ablate("run", str(matrix), *args, "--log-dir", str(logs), "--rerun", "all", cwd=tmp_path,
                        env={**env, "ABLATE_TEST_PG_URL": ""})
        assert result.returncode == 0, (how, result.stdout + result.stderr)
        assert "results in postgresql+psycopg://" in result.stdout
        seen = everything_written(logs)
        assert seen.count(".execution.job") == 4, seen  # every job's argv was read
        assert PASSWORD not in result.stdout + result.stderr and PASSWORD not in seen.replace(
            f'"PGPASSWORD": "{PASSWORD}"', ""), how  # the trainer inherits only the user's own PGPASSWORD
        assert "ABLATE_JOB_DB" not in seen and "postgresql" not in seen  # no URL reached the trainer
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        stored = [str(row) for table in ("runs", "experiments", "meta")
                  for row in conn.execute(text(f"SELECT * FROM {table}"))]
    engine.dispose()
    assert stored and not any(PASSWORD in row for row in stored)


# ------------------------------------------------------------------ 5, 6, 7, 12, 17: where a run writes

CKPT = """import os, sys
ckpt = os.path.join(sys.argv[6], "ckpt.pt")
found = os.path.exists(ckpt)
open(ckpt, "w").write(sys.argv[2])
print('{"step": 1, "val_loss": %s, "found": %d}' % (1.0 + float(sys.argv[2]) + int(sys.argv[4]) / 100, found))
"""


def ckpt_matrix(folder: Path) -> Path:
    """The own matrix whose script resumes from a checkpoint in its {run_dir} (and says so)."""
    matrix = own_matrix(folder, train=CKPT)
    matrix.write_text(matrix.read_text().replace('--lr {lr} --seed {seed}"', '--lr {lr} --seed {seed} --dir {run_dir}"'))
    return matrix


def files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_5_two_databases_never_share_a_run_log_or_a_run_directory(tmp_path):
    """Case 5: b.db's run 1 found a.db's ckpt.pt in its {run_dir} and overwrote a's log."""
    import sqlite3

    matrix = ckpt_matrix(tmp_path / "w")
    first = ablate("run", str(matrix), "--db", "a.db", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    logs = tmp_path / "ablate-logs"
    a_files = files(logs)
    second = ablate("run", str(matrix), "--db", "b.db", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert {k: v for k, v in files(logs).items() if k in a_files} == a_files  # a's logs and run dirs as they were
    for db in ("a.db", "b.db"):
        with sqlite3.connect(tmp_path / db) as conn:
            found = [row[0] for row in conn.execute("SELECT json_extract(extra, '$.found') FROM evals")]
        assert found == [0, 0, 0, 0], (db, found)  # no run started from another run's checkpoint
    assert sorted(p.name.rsplit("-", 1)[0] for p in (logs / "own").iterdir()) == ["a", "b"]


def test_6_a_link_placed_in_the_log_directory_is_never_written_through(tmp_path):
    """Case 6: a run log written through a pre-placed link overwrote its target; run_dir writes followed one."""
    matrix = ckpt_matrix(tmp_path / "w")
    first = ablate("run", str(matrix), "--db", "a.db", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    (label,) = (tmp_path / "ablate-logs" / "own").iterdir()
    victim_file, victim_dir = tmp_path / "victim.conf", tmp_path / "victim"
    victim_file.write_text("keep\n")
    victim_dir.mkdir()
    for run in range(1, 5):  # the names the next attempts will take
        (label / f"run{run}-attempt2.log").symlink_to(victim_file)
        (label / "runs" / f"run{run}-attempt2").symlink_to(victim_dir, target_is_directory=True)
    again = ablate("run", str(matrix), "--db", "a.db", "--rerun", "all", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "4 runs (4 already completed, trained again: --rerun all)" in again.stdout, again.stdout
    assert "4/4 runs done" in again.stdout and "8/4" not in again.stdout, again.stdout  # counted once
    assert victim_file.read_text() == "keep\n" and not list(victim_dir.iterdir())
    assert all(not p.is_symlink() for p in label.rglob("*attempt2*"))
    assert all((label / "runs" / f"run{run}-attempt2" / "ckpt.pt").is_file() for run in range(1, 5))
    (tmp_path / "ablate-logs" / "own").rename(tmp_path / "elsewhere")  # a link where a log directory goes
    (tmp_path / "ablate-logs" / "own").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    refused = ablate("run", str(matrix), "--db", "a.db", "--rerun", "all", cwd=tmp_path)
    assert refused.returncode == 2 and "symbolic link" in one_error(refused.stderr), refused.stderr


def test_7_inputs_dot_leaves_out_this_invocations_log_dir_database_and_run_dirs(tmp_path):
    """Case 7: with `inputs: ["."]`, `--log-dir mylogs` and `--db r.sqlite` changed the inputs'
    hash as run 1 wrote them, and every later run failed "changed since planned"."""
    folder = tmp_path / "w"
    matrix = ckpt_matrix(folder)
    matrix.write_text(matrix.read_text() + 'inputs: ["."]\n')
    args = ("run", "m.yaml", "--db", "r.sqlite", "--log-dir", "mylogs")
    first = ablate(*args, cwd=folder)
    assert first.returncode == 0 and "4 completed" in first.stdout, first.stdout + first.stderr
    assert (folder / "mylogs").is_dir() and (folder / "r.sqlite").is_file()
    again = ablate(*args, cwd=folder)
    assert again.returncode == 0 and "nothing to train" in again.stdout, again.stdout + again.stderr
    (folder / "train.py").write_text(CKPT + "# edited\n")  # a real input still counts
    edited = ablate(*args, cwd=folder)
    assert edited.returncode == 0 and "trained 4 run(s)" in edited.stdout, edited.stdout


def test_12_a_log_dir_that_is_a_file_is_one_line_before_any_run_starts(tmp_path):
    import sqlite3

    matrix = own_matrix(tmp_path / "w")
    ran = ablate("run", str(matrix), "--db", "r.db", "--log-dir", "logs", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    (tmp_path / "file").write_text("not a directory\n")
    before = sha(tmp_path / "r.db")
    for log_dir in ("file", "file/sub"):
        result = ablate("run", str(matrix), "--db", "r.db", "--log-dir", log_dir, "--rerun", "all", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "is a file, not a directory" in one_error(result.stderr)
    assert sha(tmp_path / "r.db") == before and (tmp_path / "file").read_text() == "not a directory\n"
    with sqlite3.connect(tmp_path / "r.db") as conn:
        assert conn.execute("SELECT DISTINCT status FROM runs").fetchall() == [("completed",)]


@pytest.mark.parametrize("args, message", [
    (["--fail-fast", "-1"], "--fail-fast -1: expected a number of runs, at least 1"),
    (["--fail-fast", "0"], "--fail-fast 0: expected a number of runs, at least 1"),
    (["--fail-fast", "2", "--keep-going"], "pick one"),
])
def test_17_fail_fast_below_one_or_with_keep_going_is_refused(tmp_path, args, message):
    matrix = own_matrix(tmp_path / "w")
    result = CliRunner().invoke(app, ["run", str(matrix), "--db", str(tmp_path / "r.db"), *args])
    assert result.exit_code == 2, result.output
    assert message in one_error(result.output)
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "ablate-logs").exists()
