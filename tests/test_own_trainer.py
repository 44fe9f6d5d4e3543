"""Your own training script (issue 19): a matrix that names its trainer, parameters and metric
is planned, run, resumed and reported like Mainrun's, and a trainer that crashes, hangs, prints
malformed JSON or reports nothing fails its own run with one line while the matrix goes on.

The end-to-end runs use examples/tiny-mlp (a numpy MLP, about a second a run) and a faulty
script written here; both run through `ablate run` and real job processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ablate
from ablate.cli import app
from ablate.execution.attempt import check_data_unchanged
from ablate.training.command import Evaluations, TrainerError
from ablate.training.command import train as command_train
from ablate.training.params import ParamsConfig
from ablate.execution.matrix import MatrixError, load_matrix, parse_matrix
from ablate.execution.runner import plan, register
from ablate.results.render import render
from ablate.results.report import build_report
from ablate.storage.store import Store
from ablate.training.config import ExecOptions
from ablate.training.datasource import DataError

from .conftest import EXAMPLE

OWN = """
name: own
design: one-at-a-time
trainer: {command: "python train.py --lr {lr} --seed {seed}"}
params: {lr: 0.05, hidden: 16, act: tanh}
min_effect: 0.002
"""

FAULTY = textwrap.dedent('''
    """A trainer that misbehaves as its --mode says."""
    import json, os, sys, time
    mode = sys.argv[1]
    print("starting", flush=True)  # not JSON: goes to the run's log
    if mode == "hang_once" and not os.path.exists("hung.flag"):
        open("hung.flag", "w").close()
        mode = "hang"
    if mode == "hang":
        with open("hang.pid", "w") as f:
            f.write(str(os.getpid()))
        time.sleep(600)
    if mode == "crash":
        print(json.dumps({"step": 1, "val_loss": 2.0}), flush=True)
        raise ZeroDivisionError("the trainer divided by zero")
    if mode == "malformed":
        print('{"step": 1, "val_loss": 2.0', flush=True)
        time.sleep(600)  # stopped as soon as the line is read
    if mode == "nometric":
        print(json.dumps({"step": 1, "loss": 2.0}), flush=True)
    if mode in ("ok", "hang_once"):
        print(json.dumps({"step": 1, "val_loss": 2.0}), flush=True)
''')


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "ABLATE_DB"}


def _ablate(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300, **kw)


def _runs(db: Path) -> dict[str, tuple]:
    """{name/seed: (status, attempt, error)} of every run in a database."""
    with sqlite3.connect(db) as conn:
        return {f"{n}/{s}": (st, a, e) for n, s, st, a, e in
                conn.execute("select name, seed, status, attempt, error from runs")}


def _faulty(tmp_path: Path, modes: list[str], extra: str = "") -> Path:
    (tmp_path / "faulty.py").write_text(FAULTY)
    (tmp_path / "matrix.yaml").write_text(textwrap.dedent(f"""
        name: faulty
        design: one-at-a-time
        trainer: {{command: "python faulty.py {{mode}}", timeout: 2}}
        params: {{mode: ok}}
        min_effect: 0.01
        db: faulty.db
        toggles: [{{mode: {modes}}}]
        {extra}
    """))
    return tmp_path / "matrix.yaml"


# ------------------------------------------------------------------------------ the matrix file


def test_a_matrix_names_its_trainer_params_inputs_and_metric():
    matrix = load_matrix(EXAMPLE / "matrix.yaml")
    assert matrix.custom and matrix.reference is None
    assert [label for f in matrix.factors for label, _ in f.levels[1:]] == ["wide", "fast_lr", "decay"]
    runs = matrix.expand()
    assert len(runs) == 4 * 3 and runs[1].config.hidden == 64 and runs[1].config.lr == 0.05
    assert runs[0].config.to_dict()["trainer"]["inputs"] == ["train.py", "data.csv"]


@pytest.mark.parametrize("extra, expected", [
    ("toggles: [{name: t, patch: {lrr: 1.0}}]", "toggles[0].patch.lrr: unknown config field (did you mean 'lr'?)"),
    ("toggles: [{lr: [fast]}]", "toggles[0].lr[0]: expected float like the baseline's 0.05, got 'fast'"),
    ("toggles: [{hidden: [1.5]}]", "toggles[0].hidden[0]: expected int like the baseline's 16, got 1.5"),
    ("toggles: [sdpa]", "toggles[0]: 'sdpa': the catalog's optimizations are Mainrun's"),
    ("base: {preset: mainrun}\ntoggles: [{lr: [0.1]}]", "base: Mainrun's trainer only"),
    ("inputs: [missing.py]\ntoggles: [{lr: [0.1]}]", "inputs[0]: 'missing.py': expected a file or directory"),
    ("metric: {name: acc, goal: up}\ntoggles: [{lr: [0.1]}]", "metric.goal: expected 'minimize' or 'maximize'"),
    ("metric: {name: acc, also: [{name: ppl}]}\ntoggles: [{lr: [0.1]}]", "metric.also[0].min_effect: "),
    ("metric: {name: acc, also: [{name: acc, min_effect: 1}]}\ntoggles: [{lr: [0.1]}]",
     "metric: expected distinct metric names, got acc, acc"),
    ("metric: {name: acc, pattern: 'acc (?P<acc>[0-9.]+)', also: [{name: ppl, min_effect: 1}]}\ntoggles: [{lr: [0.1]}]",
     "metric.also[0]: expected a named group (?P<ppl>...) for the metric 'ppl' (named groups: acc)"),
])
def test_a_bad_own_trainer_matrix_names_the_key_and_what_was_expected(extra, expected, tmp_path):
    with pytest.raises(MatrixError) as e:
        parse_matrix(OWN + extra, tmp_path / "m.yaml")
    assert f"{tmp_path / 'm.yaml'}: {expected}" in str(e.value).splitlines()[0]


@pytest.mark.parametrize("text, expected", [
    ('trainer: {command: "python t.py {nope}"}\nparams: {lr: 1.0}', "trainer.command: {nope} names no parameter"),
    ('trainer: {command: "x", entry: "a:b"}\nparams: {lr: 1.0}', "trainer: expected exactly one of command or entry"),
    ('trainer: {entry: "no_such_module_here:main"}\nparams: {lr: 1.0}', "trainer.entry: no module 'no_such_module_here'"),
    ('trainer: {command: "x {lr}"}\nparams: {lr: 3e-4}', "params.lr: YAML reads 3e-4 as text; write 0.0003 for a number"),
    ('trainer: {command: "x"}\nparams: {seed: 1}', "params.seed: expected a name"),
    ('params: {lr: 1.0}', "params: only for your own trainer"),
])
def test_the_trainer_and_its_params_are_checked_at_load(text, expected, tmp_path):
    with pytest.raises(MatrixError) as e:
        parse_matrix(f"name: x\ndesign: one-at-a-time\n{text}\ntoggles: [{{lr: [2.0]}}]\n", tmp_path / "m.yaml")
    assert expected in str(e.value)


def test_identity_is_trainer_params_seed_and_input_content_not_where_it_lies(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for copy in (a, b):
        shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("*.db", "__pycache__"))
    hashes = lambda d: [r.hash for r in plan(load_matrix(d / "matrix.yaml"))]  # noqa: E731
    assert hashes(a) == hashes(b) and len(set(hashes(a))) == 12
    planned = plan(load_matrix(b / "matrix.yaml"))[0]
    check_data_unchanged(planned.planned.config.to_dict(), planned.hash)  # as a job checks it
    with (b / "data.csv").open("a") as f:
        f.write("0.1,0.2,0.3\n")
    assert not set(hashes(a)) & set(hashes(b))  # other data, other runs
    with pytest.raises(DataError, match="inputs train.py, data.csv changed since this matrix was planned"):
        check_data_unchanged(planned.planned.config.to_dict(), planned.hash)
    (a / "entry.yaml").write_text(_as_entry((a / "matrix.yaml").read_text()))
    assert not set(hashes(a)) & {r.hash for r in plan(load_matrix(a / "entry.yaml"))}


def test_bad_input_exits_2_before_the_database_exists(tmp_path):
    matrix = _faulty(tmp_path, ["crash"])
    runner = CliRunner()
    for args in (["--trainer", "ablate.training.train:train"], ["--data", "x.csv"]):
        result = runner.invoke(app, ["run", str(matrix), "--db", str(tmp_path / "x.db"), *args])
        assert result.exit_code == 2, result.output
    (tmp_path / "bad.yaml").write_text(OWN + "toggles: [{lr: [fast]}]\n")
    result = runner.invoke(app, ["run", str(tmp_path / "bad.yaml"), "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 2 and "toggles[0].lr[0]" in result.output
    assert not (tmp_path / "x.db").exists()


# ------------------------------------------------------------------------ the example, end to end


def test_the_html_page_names_your_trainer_where_mainrun_has_its_data(example_run):
    """Issue 37: the page's provenance said 'data —' for a command trainer."""
    from ablate.results.html import render_html

    page = render_html(f"sqlite:///{example_run.db}", ["tiny-mlp"])
    assert '<th class="text">trainer</th><td class="text">python train.py --lr {lr} --hidden {hidden}' in page
    assert '<th class="text">inputs</th><td class="text">train.py, data.csv</td>' in page
    assert '<th class="text">data</th>' not in page
    python = ".".join(map(str, sys.version_info[:3]))  # the environment the runs came from (issue 37)
    assert f'<th class="text">environment</th><td class="text">Python {python}, ' in page


def test_the_example_runs_as_a_command_and_its_report_ranks_it_with_verdicts(example_run):
    assert "12 completed" in example_run.stdout
    report = build_report(f"sqlite:///{example_run.db}", "tiny-mlp")
    assert not report.mainrun and report.metric == "val_loss" and report.reference is None
    ranked = report.ranking[report.ranking["rank"].notna()]
    assert list(ranked["name"]) == ["fast_lr", "wide", "baseline", "decay"]
    assert ranked["final"].is_monotonic_increasing and (ranked["n"] == 3).all()
    assert dict(zip(report.effects["effect"], report.effects["verdict"])) == {
        "fast_lr": "better", "wide": "better", "decay": "worse"}
    text = render(report)
    assert "ranked by val_loss" in text and "±0.002 in val_loss" in text
    for mainrun_only in ("1.754", "Mainrun", "coverage", "nats", "Δref"):
        assert mainrun_only not in text
    again = _ablate("run", "matrix.yaml", cwd=example_run.cwd)
    assert again.returncode == 0 and "nothing to train" in " ".join(again.stdout.split())
    shown = _ablate("show", "wide", "--seed", "1", "--as-command", "--db", "tiny-mlp.db", cwd=example_run.cwd)
    assert shown.stdout.startswith(f'cd {example_run.cwd.resolve()} && RUN_DIR="$(mktemp -d)" && ABLATE_SEED=1 '
                                   f'ABLATE_RUN_DIR="$RUN_DIR" python train.py --lr 0.05 --hidden 64 '), \
        shown.stdout + shown.stderr
    by_hand = subprocess.run(shown.stdout, shell=True, cwd=example_run.cwd, env=_env(), capture_output=True, text=True)
    last = json.loads(by_hand.stdout.splitlines()[-1])
    stored = {(r.name, r.seed): r.y for r in _per_run_values(example_run.db)}
    assert last["val_loss"] == pytest.approx(stored[("wide", 1)], rel=1e-12)  # the run, reproduced by hand


def test_the_example_as_an_entry_point_reports_the_same_numbers(example_run, tmp_path):
    shutil.copytree(EXAMPLE, tmp_path / "entry", ignore=shutil.ignore_patterns("*.db", "__pycache__"))
    text = _as_entry((tmp_path / "entry" / "matrix.yaml").read_text()).replace("seeds: [0, 1, 2]", "seeds: [1]")
    (tmp_path / "entry" / "matrix.yaml").write_text(text)
    proc = _ablate("run", "matrix.yaml", "--log-dir", "logs", cwd=tmp_path / "entry")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mine = build_report(f"sqlite:///{tmp_path / 'entry' / 'tiny-mlp.db'}", "tiny-mlp")
    assert mine.ranking["final_sd"].isna().all()  # one seed
    command = {(r.name, r.seed): r.y for r in _per_run_values(example_run.db)}
    entry = {(r.name, r.seed): r.y for r in _per_run_values(tmp_path / "entry" / "tiny-mlp.db")}
    assert entry and all(entry[k] == pytest.approx(command[k], rel=1e-9) for k in entry)


def _as_entry(matrix: str) -> str:
    """The example's matrix with its trainer as the entry point train:main instead of the command."""
    return "\n".join('trainer: {entry: "train:main"}' if line.startswith("trainer:") else line
                     for line in matrix.splitlines()) + "\n"


def _per_run_values(db: Path) -> list:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select r.name, r.seed, e.val_loss from runs r join evals e on e.run_id = r.id "
                            "and e.attempt = r.attempt where e.step = 60").fetchall()
    from types import SimpleNamespace
    return [SimpleNamespace(name=n, seed=s, y=y) for n, s, y in rows]


# --------------------------------------------------------------------------------------- faults


def test_a_crashing_hanging_or_malformed_trainer_fails_its_run_and_the_matrix_goes_on(tmp_path):
    matrix = _faulty(tmp_path, ["crash", "hang", "malformed", "silent", "nometric"],
                     "execution: {jobs_per_device: 3}")
    proc = _ablate("run", str(matrix), "--log-dir", "logs", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    runs = _runs(tmp_path / "faulty.db")
    assert runs["baseline/0"][0] == "completed"
    errors = {name.split("/")[0]: (status, error) for name, (status, _, error) in runs.items() if status != "completed"}
    assert errors == {
        "mode=crash": ("failed", "TrainerError: python faulty.py exited with code 1: ZeroDivisionError: the trainer "
                                 "divided by zero"),
        "mode=hang": ("failed", "TrainerError: timed out after 2 s (trainer.timeout); stopped"),
        "mode=malformed": ("failed", "TrainerError: stdout line 2 is not valid JSON (Expecting ',' delimiter): "
                                     '{"step": 1, "val_loss": 2.0'),
        "mode=silent": ("failed", 'TrainerError: no evaluation reported; print JSON lines such as {"step": 100, '
                                  '"val_loss": 2.31} (or call ablate.report_eval)'),
        "mode=nometric": ("failed", "TrainerError: no evaluation has 'val_loss', the matrix's metric (the last, "
                                    "step 1, has: loss)"),
    }
    assert not _alive(int((tmp_path / "hang.pid").read_text()))  # the hung trainer was stopped
    log = next((tmp_path / "logs" / "faulty").glob("*/run1-*.log")).read_text()
    assert "starting" in log  # a trainer's plain output goes to its log


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and b") Z" not in Path(f"/proc/{pid}/stat").read_bytes()


def test_ctrl_c_interrupts_the_run_stops_its_trainer_and_a_rerun_trains_only_what_is_left(tmp_path):
    matrix = _faulty(tmp_path, ["hang_once"], "execution: {jobs_per_device: 1}")
    cmd = [sys.executable, "-m", "ablate", "run", str(matrix), "--log-dir", "logs"]
    runner = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)  # a terminal's Ctrl-C: the runner's group
    deadline = time.monotonic() + 120
    while not (tmp_path / "hang.pid").exists() and time.monotonic() < deadline and runner.poll() is None:
        time.sleep(0.2)
    trainer = int((tmp_path / "hang.pid").read_text())
    os.killpg(runner.pid, signal.SIGINT)
    assert runner.wait(timeout=180) == 130, runner.stdout.read()
    first = _runs(tmp_path / "faulty.db")
    assert first["baseline/0"][:2] == ("completed", 1)
    assert first["mode=hang_once/0"][0] == "interrupted"
    assert not _alive(trainer)
    again = _ablate("run", str(matrix), "--log-dir", "logs", cwd=tmp_path)
    assert again.returncode == 0 and "trained 1 run(s) now" in again.stdout, again.stdout + again.stderr
    second = _runs(tmp_path / "faulty.db")
    assert second["baseline/0"] == first["baseline/0"]  # not trained again
    assert second["mode=hang_once/0"][:2] == ("completed", 2)


# ------------------------------------------------------------------ a metric to maximize, in-process


def test_a_metric_to_maximize_ranks_highest_first_and_its_verdicts_follow(tmp_path):
    """accuracy (an `extra` metric) with goal: maximize — the better configuration is the one
    whose accuracy is higher, its Δ positive, its interval the right way round."""
    text = OWN.replace("min_effect: 0.002", "min_effect: 0.01") + "metric: {name: accuracy, goal: maximize}\nseeds: [0, 1, 2]\n" \
                 "toggles: [{name: wide, patch: {hidden: 64}}, {name: slow, patch: {lr: 0.01}}]\n"
    matrix = parse_matrix(text, tmp_path / "m.yaml")
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    rows = plan(matrix)
    ids = register(store, matrix, rows)
    accuracy = {"baseline": 0.80, "wide": 0.90, "slow": 0.70}
    for run_id, row in zip(ids, rows):
        run = store.claim([run_id], host="test", pid=1, code_version="test")
        # seeds move every configuration, and the toggles' differences vary a little by seed (one
        # difference on every seed would be a zero-width interval: no verdict)
        seed, toggled = row.planned.seed, row.planned.name != "baseline"
        value = accuracy[row.planned.name] + 0.002 * seed + 0.001 * seed * toggled
        store.record_eval(run_id, run.attempt, {"step": 1, "accuracy": value - 0.1})
        store.record_eval(run_id, run.attempt, {"step": 2, "accuracy": value})
        store.finish(run_id, run.attempt, {"steps": 2})
    store.close()
    report = build_report(f"sqlite:///{tmp_path / 'r.db'}", "own")
    ranked = report.ranking[report.ranking["rank"].notna()]
    assert list(ranked["name"]) == ["wide", "baseline", "slow"] and ranked.iloc[0]["is_best"]
    assert ranked.iloc[0]["best"] == pytest.approx(ranked.iloc[0]["final"])  # the highest is the best
    effects = report.effects.set_index("effect")
    assert effects.loc["wide", "verdict"] == "better" and effects.loc["slow", "verdict"] == "worse"
    assert 0.01 < effects.loc["wide", "ci_lo"] < effects.loc["wide", "ci_hi"]
    assert list(report.effects["effect"]) == ["wide", "slow"]  # best first
    assert "positive = better" in report.effects_title and "higher is better" in report.lines[0]


def test_a_secondary_metric_is_judged_with_its_own_goal_and_delta_and_the_primary_still_ranks(tmp_path):
    """val_loss ranks (δ 0.002); accuracy, declared in metric.also to maximize with δ 0.01, is
    judged by `report --metric accuracy`: 'wide' gains 0.02 (better), 'slow' 0.005 (within its
    own δ: negligible, though it would be 'better' at the primary's 0.002)."""
    text = OWN + "metric: {name: val_loss, also: [{name: accuracy, goal: maximize, min_effect: 0.01}]}\n" \
                 "seeds: [0, 1, 2]\ntoggles: [{name: wide, patch: {hidden: 64}}, {name: slow, patch: {lr: 0.01}}]\n"
    matrix = parse_matrix(text, tmp_path / "m.yaml")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    store = Store(db)
    rows = plan(matrix)
    loss, accuracy = {"baseline": 1.0, "wide": 0.9, "slow": 1.1}, {"baseline": 0.80, "wide": 0.82, "slow": 0.805}
    for run_id, row in zip(register(store, matrix, rows), rows):
        run = store.claim([run_id], host="test", pid=1, code_version="test")
        seed, toggled = row.planned.seed, row.planned.name != "baseline"
        jitter = 0.001 * seed * (1 + toggled)  # the differences vary a little by seed
        store.record_eval(run_id, run.attempt, {"step": 1, "val_loss": loss[row.planned.name] + jitter,
                                                "accuracy": accuracy[row.planned.name] + jitter / 4})
        store.finish(run_id, run.attempt, {"steps": 1})
    store.close()
    primary = build_report(db, "own")
    assert [n for n in primary.ranking["name"] if n] == ["wide", "baseline", "slow"]  # by val_loss
    assert "Also measured: accuracy (higher is better, δ = 0.01)" in primary.lines[0]
    second = build_report(db, "own", metric="accuracy")
    assert second.min_effect == 0.01 and second.goal == "maximize" and not second.after_data
    assert list(second.ranking.loc[second.ranking["rank"].notna(), "name"]) == ["wide", "slow", "baseline"]
    verdicts = dict(zip(second.effects["effect"], second.effects["verdict"]))
    assert verdicts == {"wide": "better", "slow": "negligible"}
    assert dict(zip(build_report(db, "own", metric="accuracy", min_effect=0.002).effects["effect"],
                    build_report(db, "own", metric="accuracy", min_effect=0.002).effects["verdict"]))["slow"] == "better"
    shown = CliRunner().invoke(app, ["report", "--db", db, "-e", "own", "--metric", "accuracy", "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert {e["effect"]: e["verdict"] for e in json.loads(shown.stdout)["effects"]} == verdicts
    wrong = CliRunner().invoke(app, ["report", "--db", db, "-e", "own", "--metric", "ppl"])
    assert wrong.exit_code != 0 and "ranks by its own metric 'val_loss' and declares 'accuracy'" in wrong.output


# -------------------------------------------------------------------- the entry point, in-process


def test_an_entry_point_past_its_timeout_fails_and_report_eval_prints_what_a_command_is_read_for(
        tmp_path, capsys):
    (tmp_path / "slow_trainer.py").write_text(textwrap.dedent('''
        import time

        def main(config, report):
            report(1, val_loss=config["lr"])
            time.sleep(30)
    '''))
    config = ParamsConfig("entry", "slow_trainer:main", (("lr", 0.5),), workdir=str(tmp_path), timeout_s=0.5)
    seen = []
    with pytest.raises(TrainerError, match=r"timed out after 0.5 s"):  # not the end of its 30 s sleep
        command_train(config.to_dict(), seen.append, ExecOptions())
    assert seen == [{"step": 1, "val_loss": 0.5}]
    ablate.report_eval(7, val_loss=1.25, accuracy=0.5)
    evals = Evaluations("val_loss", seen.append)
    evals.accept(json.loads(capsys.readouterr().out), "stdout line 1")
    assert seen[-1] == {"step": 7, "val_loss": 1.25, "accuracy": 0.5}
    with pytest.raises(TrainerError, match="steps must increase"):
        evals.accept({"step": 7, "val_loss": 1.0}, "stdout line 2")
    with pytest.raises(TrainerError, match="'val_loss' is nan; expected a finite number"):
        evals.accept({"step": 8, "val_loss": float("nan")}, "stdout line 3")
    for bad in (10 ** 400, "2.5", True, None):
        with pytest.raises(TrainerError, match="expected a finite number"):
            evals.accept({"step": 9, "val_loss": bad}, "stdout line 4")


def test_an_entry_point_runs_from_the_matrix_directory_like_a_command(tmp_path):
    """Relative files and late imports of neighbouring modules work as they do for a command,
    and the job's directory and path are as they were afterwards."""
    (tmp_path / "helper.py").write_text("SCALE = 2.0\n")
    (tmp_path / "value.txt").write_text("0.25\n")
    (tmp_path / "late_trainer.py").write_text(textwrap.dedent('''
        def main(config, report):
            from helper import SCALE
            with open("value.txt") as f:
                report(3, val_loss=float(f.read()) * SCALE + config["seed"])
            return {"note": 1.0}
    '''))
    config = ParamsConfig("entry", "late_trainer:main", (("lr", 0.5),), seed=1, workdir=str(tmp_path))
    seen, cwd, path = [], os.getcwd(), list(sys.path)
    result = command_train(config.to_dict(), seen.append, ExecOptions())
    assert seen == [{"step": 3, "val_loss": 1.5}] and result["note"] == 1.0 and result["steps"] == 3
    assert os.getcwd() == cwd and sys.path == path
    (tmp_path / "quiet_trainer.py").write_text("def main(config, report):\n    pass\n")
    with pytest.raises(TrainerError, match=r"no evaluation reported; call report\(100, val_loss=2.31\)"):
        quiet = ParamsConfig("entry", "quiet_trainer:main", (("lr", 0.5),), workdir=str(tmp_path))
        command_train(quiet.to_dict(), seen.append, ExecOptions())


def test_results_md_of_your_own_trainers_database(example_run, tmp_path):
    """The document's verdict line and provenance read your own trainer's config (its params and
    input files); the report's claims about Mainrun's model are left out."""
    from ablate.results import document

    block = document.generated(example_run.db)
    line = next(line for line in block.splitlines() if line.startswith("- **tiny-mlp**"))
    assert "base own trainer, lr 0.05, hidden 16" in line
    assert "better: fast_lr (" in line and "worse: decay (" in line
    assert "| inputs: train.py, data.csv |" in block and "What holds" not in block


def test_ablate_runs_shows_your_own_trainers_final_metric(example_run):
    from ablate.results.frames import load_runs, with_own_finals

    runs = with_own_finals(load_runs(example_run.db), example_run.db)
    stored = {(r.name, r.seed): r.y for r in _per_run_values(example_run.db)}
    assert {(n, s): v for n, s, v in zip(runs["name"], runs["seed"], runs["final val_loss"])} == stored
    shown = _ablate("runs", "--db", "tiny-mlp.db", "--format", "csv", cwd=example_run.cwd)
    assert shown.returncode == 0 and "final val_loss" in shown.stdout.splitlines()[0]


def test_a_commands_own_temporary_run_dir_is_removed_unless_it_left_files_there(tmp_path, monkeypatch):
    """Without a run directory from its executor, a command gets a fresh temporary one: removed
    when the run ends empty, kept (never emptied) when the command wrote into it."""
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    (tmp_path / "t.py").write_text(
        "import json, os, sys\n"
        "if sys.argv[1] == '1':\n"
        "    open(os.path.join(os.environ['ABLATE_RUN_DIR'], 'model.pt'), 'w').write('weights')\n"
        "print(json.dumps({'step': 1, 'val_loss': 1.0}))\n")
    for keep in (0, 1):
        config = ParamsConfig("command", f"{sys.executable} t.py {{keep}}", (("keep", keep),), workdir=str(tmp_path))
        command_train(config.to_dict(), lambda _: None, ExecOptions())
    left = list(scratch.glob("ablate-run-*"))
    assert len(left) == 1 and (left[0] / "model.pt").read_text() == "weights"
