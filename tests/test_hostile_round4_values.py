"""Hostile input, round four (issue 31), values and limits: what a matrix, a trainer or a merged
database holds beyond what ablate can keep or compute with is refused in one line, and a row
that got in anyway never crashes a reading command. One test per row of the issue's table
(tests/test_hostile_round4.py holds the rows about files and secrets)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablate.cli import app

from .test_hostile_round4 import SPY, ablate, done, everything_written, one_error, own_matrix  # noqa: F401 - done: a fixture


# ------------------------------------------------------------------ 10, 16, 18: values as written


@pytest.mark.parametrize("where", ["params: {lr: %s}", "params: {lr: 0.1}\ntoggles: [{lr: [%s]}]",
                                   "mainrun"])
@pytest.mark.parametrize("value", [".nan", "-.inf"])
def test_10_nan_and_inf_are_refused_when_the_matrix_is_loaded(tmp_path, where, value):
    """Case 10: `lr: .nan` was stored as a config no JSON reader accepts."""
    matrix = own_matrix(tmp_path / "w")
    if where == "mainrun":
        matrix.write_text(f"name: m\ndesign: one-at-a-time\nbase: {{overrides: {{lr: {value}}}}}\ntoggles: [sdpa]\n")
    else:
        text = matrix.read_text().replace("params: {lr: 0.1}\n", "").replace("toggles: [{lr: [0.5]}]\n", "")
        matrix.write_text(text + (where % value) + ("\n" if "toggles" in where else "\ntoggles: [{lr: [0.5]}]\n"))
    result = ablate("run", str(matrix), "--db", "r.db", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert re.search(r"lr(\[0\])?: expected a finite number, got (nan|-inf)$", one_error(result.stderr))
    assert not (tmp_path / "r.db").exists()


def test_16_a_markdown_cell_that_a_spreadsheet_would_run_is_quoted_as_in_csv(done, tmp_path):
    """Case 16: `+1+cmd|' /C calc'!A0` (a signed number, then a formula) was left as it was."""
    import shutil
    import sqlite3

    import pandas as pd

    from ablate.results.render import markdown_table

    db = tmp_path / "r.db"
    shutil.copy(done / "results.db", db)
    hostile = "+1+cmd|' /C calc'!A0"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE experiment_runs SET name = ? WHERE name != 'baseline'", (hostile,))
    result = CliRunner().invoke(app, ["runs", "--db", str(db), "-f", "markdown"])
    assert result.exit_code == 0, result.output
    assert "'+1+cmd\\|' /C calc'!A0" in result.output and "| +1+cmd" not in result.output
    shown = markdown_table(pd.DataFrame({"x": [hostile, "-1 +cmd|x!A0", "+0.0378", "-1.9e-05", "+43.7%", "-",
                                               "+0.41 [+0.40…+0.42], worse (n=3)"]}))
    cells = [line.strip("| ") for line in shown.splitlines()[2:]]
    assert cells == ["'+1+cmd\\|' /C calc'!A0", "'-1 +cmd\\|x!A0", "+0.0378", "-1.9e-05", "+43.7%", "-",
                     "+0.41 [+0.40…+0.42], worse (n=3)"]


@pytest.mark.parametrize("where", ["params: {lr: %s}", "mainrun"])
def test_18_a_float_beyond_range_is_told_so_not_advised_to_be_written_as_it_is(tmp_path, where):
    """Case 18: `lr: 1.0e400` was answered "write 1.0e-4", the form it already had."""
    matrix = own_matrix(tmp_path / "w")
    if where == "mainrun":
        matrix.write_text("name: m\ndesign: one-at-a-time\nbase: {overrides: {lr: 1.0e400}}\ntoggles: [sdpa]\n")
    else:
        matrix.write_text(matrix.read_text().replace("params: {lr: 0.1}", where % "1.0e400"))
    result = ablate("plan", str(matrix), "--db", "r.db", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_error(result.stderr)
    assert "1.0e400" in line and "beyond the largest number a float holds" in line and "write" not in line, line


# ------------------------------------------------------------------ 3, 4: limits a trainer cannot defeat


def statuses(db: Path) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT name, status, error FROM runs ORDER BY id").fetchall()


def test_3_a_pattern_that_backtracks_without_end_fails_its_run_in_one_line(tmp_path):
    """Case 3: `(a+)+`-like patterns held the job inside `re` for good, its heartbeat frozen and
    its timeout never checked. Matching now has a time budget and releases the job."""
    folder = tmp_path / "w"
    own_matrix(folder, train="print('val ' + 'a' * 40 + '!', flush=True)\n")
    errors = both_runs_fail(folder, "trainer: {command: \"{python} train.py --lr {lr}\", timeout: 600}\n"
                                    "metric: {name: val_loss, pattern: '^val (?P<val_loss>(a|aa)+)$'}\n")
    for error in errors:
        assert "metric.pattern '^val (?P<val_loss>(a|aa)+)$' took over 1 s on stdout line 1" in error, error
        assert "\n" not in error


def both_runs_fail(folder: Path, trainer_lines: str) -> list[str]:
    """Run a two-run matrix of your own trainer (`trainer_lines` hold its trainer and what
    else differs): the command exits 1 and both runs are failed; their errors."""
    (folder / "m.yaml").write_text(
        f"name: own\n{trainer_lines}params: {{lr: 0.1}}\nmin_effect: 0.01\n"
        "design: one-at-a-time\ntoggles: [{lr: [0.5]}]\nexecution: {warm_workers: false}\n")
    result = ablate("run", "m.yaml", "--db", "r.db", "--keep-going", cwd=folder, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = statuses(folder / "r.db")
    assert [status for _, status, _ in rows] == ["failed", "failed"], rows
    return [error for _, _, error in rows]


BUSY = """import time

def main(config, report):
    report(1, val_loss=1.0 + config["lr"] + config["seed"] / 100)
    while True:  # a loop that survives anything it can catch
        try:
            time.sleep(0.05)
        except %s:
            pass
"""


@pytest.mark.parametrize("catches", ["Exception", "BaseException"])
def test_4_an_entry_point_that_catches_the_stop_is_failed_timed_out(tmp_path, catches):
    """Case 4: an entry point whose loop caught Exception was stored as completed 43 s into a
    5 s timeout. Now the stop is not an Exception, and one that catches even a BaseException
    has its job ended a grace period later; either way the run fails "timed out"."""
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "busy.py").write_text(BUSY % catches)
    errors = both_runs_fail(folder, "trainer: {entry: 'busy:main', timeout: 1}\nseeds: [0]\n")
    assert all("timed out after 1 s (trainer.timeout)" in error for error in errors), errors


# ------------------------------------------------------------------ 9, 15: values beyond what is held

READERS = (["report", "-e", "own"], ["report", "-e", "own", "-f", "json"], ["report", "-e", "own", "-f", "markdown"],
           ["runs"], ["runs", "-f", "csv"], ["show", "baseline", "--seed", "0"], ["show", "2"])


def read_everything(db: Path, tmp_path: Path) -> None:
    """Every reading command on `db` answers without a traceback (exit 0)."""
    cli = CliRunner()
    for args in (*READERS, ["plot", "-e", "own", "--out", str(tmp_path / "c.png")],
                 ["report", "-f", "html", "--out", str(tmp_path / "r.html")]):
        result = cli.invoke(app, [*args, "--db", str(db)])
        assert result.exit_code == 0, (args, result.output, result.exception)
        assert "inf" not in result.output.replace("info", ""), (args, result.output)


def test_9_a_step_past_what_readers_hold_is_refused_when_written_and_never_crashes_a_reader(tmp_path):
    """Case 9: an evaluation at step 2**63 - 1 was stored, then report, show, plot and the HTML page
    crashed with a pandas traceback for the whole experiment."""
    import shutil
    import sqlite3

    folder = tmp_path / "w"
    own_matrix(folder, train="print('{\"step\": 9223372036854775807, \"val_loss\": 1.0}')\n")
    result = ablate("run", "m.yaml", "--db", "r.db", "--keep-going", cwd=folder)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = statuses(folder / "r.db")
    assert [status for _, status, _ in rows] == ["failed"] * 4
    assert all("step 9223372036854775807: expected a step from 0 to 9,007,199,254,740,991" in e for *_, e in rows)
    with sqlite3.connect(folder / "r.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM evals").fetchone() == (0,)
    db = tmp_path / "let-in.db"  # a row an older ablate let in
    shutil.copy(own_done(tmp_path), db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE evals SET step = 9223372036854775807 WHERE run_id = 1")
    read_everything(db, tmp_path)


def own_done(tmp_path: Path) -> Path:
    folder = tmp_path / "done"
    own_matrix(folder)
    ran = ablate("run", "m.yaml", "--db", "results.db", cwd=folder)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return folder / "results.db"


@pytest.mark.parametrize("sql, refused", [
    ("UPDATE runs SET final_val_loss = 'abc' WHERE id = 2", "runs.final_val_loss is 'abc': expected a finite number"),
    ("UPDATE runs SET started_at = 'not a date' WHERE id = 2", "runs.started_at 'not a date' is not a date"),
    ("UPDATE evals SET val_loss = 9e999 WHERE run_id = 2", "evals.val_loss is inf: expected a finite number"),
    ("UPDATE evals SET step = 9223372036854775807 WHERE run_id = 2", "evals.step is 9223372036854775807"),
])
def test_15_a_merged_row_with_a_bad_value_is_refused_and_never_crashes_a_reader(done, tmp_path, sql, refused):
    """Case 15: text in a REAL column, an invalid date or inf metrics gave a raw traceback with
    exit 1 (which means "conflict") or `inf` in the report."""
    import shutil
    import sqlite3

    theirs, mine = tmp_path / "theirs.db", tmp_path / "mine.db"
    shutil.copy(done / "results.db", theirs)
    with sqlite3.connect(theirs) as conn:
        conn.execute(sql)
    result = CliRunner().invoke(app, ["db", "merge", str(theirs), "--db", str(mine)])
    assert result.exit_code == 2, (result.output, result.exception)
    (line,) = [line for line in result.output.splitlines() if line.startswith("refused:")]
    assert refused in line, line
    assert "Traceback" not in result.output and not (mine.exists() and statuses(mine))
    read_everything(theirs, tmp_path)  # reading the damaged database itself never crashes


# ------------------------------------------------------------------ 8, 11: what a merge verifies


def forged(db: Path, sql: str, *params) -> None:
    """Edit a database as a forger would, every run's hash then recomputed from its config (an
    unkeyed hash proves nothing): only what the merge itself checks can catch the edit."""
    import json
    import sqlite3

    from ablate.training.params import ParamsConfig

    with sqlite3.connect(db) as conn:
        conn.execute(sql, params)
        for run_id, config, fingerprint in conn.execute("SELECT id, config, fingerprint FROM runs").fetchall():
            new = ParamsConfig.from_dict(json.loads(config)).identity_hash(fingerprint)
            conn.execute("UPDATE runs SET hash = ? WHERE id = ?", (new, run_id))


SWAP = ("UPDATE experiment_runs SET name = CASE name WHEN 'baseline' THEN 'lr=0.5' ELSE 'baseline' END, "
        "toggles = CASE name WHEN 'baseline' THEN '[\"lr=0.5\"]' ELSE '[]' END")


@pytest.mark.parametrize("sql, refused", [
    ("UPDATE experiment_runs SET name = 'lr=0.5', toggles = '[\"lr=0.5\"]' WHERE run_id = 1",
     "links 'lr=0.5' to a run whose lr is 0.1, where the matrix's 'lr=0.5' has '0.5'"),
    (SWAP, "links 'baseline' to a run whose lr is 0.5, where the matrix's 'baseline' has 0.1"),
    ("UPDATE runs SET seed = 7 WHERE id = 1", "runs.seed 7 disagrees with its config's seed 0"),
    ("UPDATE runs SET config = json_set(config, '$.lr', 0.3) WHERE id = 1",  # the baseline's identity changes
     "links 'baseline' to a run whose lr is 0.3, where the matrix's 'baseline' has 0.1"),
])
def test_8_relinked_reseeded_or_rebased_runs_are_refused_by_merge(done, tmp_path, sql, refused):
    """Case 8: the baseline relinked under another name, runs.seed changed while the config's
    seed was kept, or a config edited with its (unkeyed) hash recomputed: all were merged, exit 0."""
    import shutil

    theirs, mine = tmp_path / "theirs.db", tmp_path / "mine.db"
    shutil.copy(done / "results.db", theirs)
    forged(theirs, sql)
    result = CliRunner().invoke(app, ["db", "merge", str(theirs), "--db", str(mine)])
    assert result.exit_code == 2, (result.output, result.exception)
    assert any(refused in line for line in result.output.splitlines() if line.startswith("refused:")), result.output
    assert not (mine.exists() and statuses(mine))


def test_11_a_merged_command_template_with_a_giant_width_is_refused_and_never_rendered(done, tmp_path):
    """Case 11: `{seed:>20000000}` in a merged command template grew the HTML page to 40 MB."""
    import shutil
    import sqlite3

    theirs, mine = tmp_path / "theirs.db", tmp_path / "mine.db"
    shutil.copy(done / "results.db", theirs)
    giant = "{python} train.py --lr {lr} --seed {seed:>20000000}"
    forged(theirs, "UPDATE runs SET config = json_set(config, '$.trainer.command', ?)", giant)
    result = CliRunner().invoke(app, ["db", "merge", str(theirs), "--db", str(mine)])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "{seed:>20000000}: a format's width and precision are at most 100" in result.output
    page = tmp_path / "r.html"  # the forged database read as it is: the command is not rendered
    shown = CliRunner().invoke(app, ["report", "-f", "html", "--out", str(page), "--db", str(theirs)])
    assert shown.exit_code == 0, shown.output
    assert page.stat().st_size < 2_000_000 and "its command cannot be shown" in page.read_text()
    as_command = CliRunner().invoke(app, ["show", "baseline", "--seed", "0", "--as-command", "--db", str(theirs)])
    assert as_command.exit_code == 0 and len(as_command.output) < 1000, as_command.output[:300]
    with sqlite3.connect(theirs) as conn:  # the template itself, at load, is refused as well
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (4,)
    matrix = own_matrix(tmp_path / "w")
    matrix.write_text(matrix.read_text().replace("--seed {seed}", "--seed {seed:>20000000}"))
    planned = ablate("plan", str(matrix), "--db", "p.db", cwd=tmp_path)
    assert planned.returncode == 2 and "at most 100" in one_error(planned.stderr)


def test_8_require_signed_takes_only_results_signed_with_the_users_key(done, tmp_path):
    """Case 8: metrics edited to 9.99 in a merged database flipped the report. An unkeyed hash
    cannot tell; a keyed one (HMAC, the key only where the runs trained) can."""
    import shutil
    import sqlite3

    key = "k3y-only-i-know"
    folder = tmp_path / "w"
    own_matrix(folder, train=SPY)
    signed = ablate("run", "m.yaml", "--db", "signed.db", cwd=folder, env={"ABLATE_SIGNING_KEY": key})
    assert signed.returncode == 0, signed.stdout + signed.stderr
    assert key not in everything_written(folder / "ablate-logs")  # the trainer never saw the key
    cli = CliRunner()
    merge = ["db", "merge", "--require-signed", "--db"]
    missing = cli.invoke(app, [*merge, str(tmp_path / "a.db"), str(folder / "signed.db")], env={"ABLATE_SIGNING_KEY": ""})
    assert missing.exit_code == 2 and "$ABLATE_SIGNING_KEY, which is not set" in one_error(missing.output)
    ok = cli.invoke(app, [*merge, str(tmp_path / "a.db"), str(folder / "signed.db")], env={"ABLATE_SIGNING_KEY": key})
    assert ok.exit_code == 0 and "4 new run(s)" in ok.output, ok.output
    edited = tmp_path / "edited.db"
    shutil.copy(folder / "signed.db", edited)
    with sqlite3.connect(edited) as conn:
        conn.execute("UPDATE evals SET val_loss = 9.99 WHERE run_id = 2")
    for source, why in ((edited, "its signature does not match its results"),
                        (done / "results.db", "its results are not signed")):
        result = cli.invoke(app, [*merge, str(tmp_path / "b.db"), str(source)], env={"ABLATE_SIGNING_KEY": key})
        assert result.exit_code == 2, result.output
        assert any(why in line for line in result.output.splitlines() if line.startswith("refused:")), result.output
        assert not statuses(tmp_path / "b.db")
    other_key = cli.invoke(app, [*merge, str(tmp_path / "c.db"), str(folder / "signed.db")],
                           env={"ABLATE_SIGNING_KEY": "another"})
    assert other_key.exit_code == 2 and "signed with another key" in other_key.output
