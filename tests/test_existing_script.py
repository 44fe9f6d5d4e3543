"""Any training script, unmodified, in one try (issue 27): examples/existing-script/train.py, written
in nanoGPT's style (--key=value flags, `step N: train loss X, val loss Y` lines, a checkpoint in
out_dir, a hard-coded seed), ablated through `metric.pattern`, `{args}`, `{run_dir}` and `{seed}`
with no wrapper file; and what goes wrong with a script, said at once.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ablate.execution.matrix import MatrixError, parse_matrix
from ablate.training.params import args_words, command_words

from .conftest import REPO

EXAMPLE = REPO / "examples" / "existing-script"


@pytest.fixture
def script(tmp_path) -> Path:
    """The example, copied: its runs write nothing into the source tree."""
    folder = tmp_path / "existing-script"
    shutil.copytree(EXAMPLE, folder)
    return folder


def ablate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ABLATE_DB"}
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def report(db: Path, cwd: Path) -> dict:
    out = ablate("report", "--db", str(db), "--format", "json", cwd=cwd)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_nanogpt_style_script_is_ablated_as_it_is(script):
    db = script / "r.db"
    ran = ablate("run", "matrix.yaml", "--db", str(db), cwd=script)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "on 2 cpu slot(s)" in " ".join(ran.stdout.split())
    spans = sorted(sqlite3.connect(db).execute("SELECT started_at, finished_at FROM runs").fetchall())
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))  # two jobs at once
    runs = sqlite3.connect(db).execute("SELECT id, seed, final_val_loss, config FROM runs").fetchall()
    assert len(runs) == 6
    # each run and attempt had its own directory, and the script's checkpoint went there
    checkpoints = sorted((script / "ablate-logs" / "existing-script").glob("*/runs/run*-attempt1/ckpt.json"))
    assert len(checkpoints) == 6 and len({c.read_text() for c in checkpoints}) == 6
    assert not (script / "out").exists()  # never the script's default out_dir, shared by every run
    out = report(db, script)
    ranking = [r["name"] for r in out["ranking"] if r["rank"] is not None]
    assert ranking[-1] == "decay" and len(ranking) == 3
    effects = {e["effect"]: e["verdict"] for e in out["effects"]}
    assert effects["decay"] == "worse"  # weight decay 0.5 on a linear fit: clearly worse
    evals = sqlite3.connect(db).execute("SELECT COUNT(*), COUNT(DISTINCT val_loss) FROM evals").fetchone()
    assert evals[0] == 6 * 4  # four `step N:` lines per run, each an evaluation with its own step
    baseline = next(r for r in out["ranking"] if r["name"] == "baseline")
    assert baseline["n"] == 2 and baseline["final_sd"] > 0  # the seed reached the script: seeds differ
    # show --as-command runs as pasted (issue 37: it printed a literal RUN_DIR) and reproduces the value
    shown = ablate("show", "decay", "--seed", "1", "--as-command", "--db", str(db), cwd=script)
    assert shown.returncode == 0 and "RUN_DIR" in shown.stdout, shown.stdout + shown.stderr
    by_hand = subprocess.run(shown.stdout, shell=True, cwd=script.parent, capture_output=True, text=True, timeout=300)
    assert by_hand.returncode == 0, by_hand.stdout + by_hand.stderr
    printed = [line for line in by_hand.stdout.splitlines() if line.startswith("step ")][-1]
    stored, = sqlite3.connect(db).execute(
        "SELECT e.val_loss FROM evals e JOIN runs r ON r.id = e.run_id AND r.attempt = e.attempt "
        "WHERE r.name = 'decay' AND r.seed = 1 ORDER BY e.step DESC LIMIT 1").fetchone()
    assert float(printed.rsplit("val loss ", 1)[1]) == stored
    assert not (script / "out").exists() and not (script.parent / "out").exists()  # its checkpoint: a fresh dir


def test_plan_prints_each_configurations_command_before_anything_runs(script):
    planned = ablate("plan", "matrix.yaml", "--db", str(script / "r.db"), cwd=script)
    assert planned.returncode == 0, planned.stderr
    lines = [line.strip() for line in planned.stdout.splitlines()]
    commands = {line.split(":", 1)[0]: line.split(": ", 1)[1] for line in lines
                if line.startswith(("baseline:", "high_lr:", "decay:"))}
    assert set(commands) == {"baseline", "high_lr", "decay"}
    assert commands["decay"].endswith('train.py --learning_rate=0.05 --batch_size=16 --weight_decay=0.5 '
                                      '--seed=0 --out_dir="$RUN_DIR"')
    assert "(3; 6 runs)" in " ".join(planned.stdout.split()) and not (script / "r.db").exists()


def test_without_its_seed_the_script_is_warned_about_and_gets_no_verdict(script):
    matrix = script / "matrix.yaml"
    matrix.write_text(matrix.read_text().replace(" --seed={seed}", ""))
    planned = ablate("plan", "matrix.yaml", "--db", str(script / "r.db"), cwd=script)
    assert "this command never receives the seed" in " ".join((planned.stdout + planned.stderr).split())
    assert ablate("run", "matrix.yaml", "--db", str(script / "r.db"), cwd=script).returncode == 0
    verdicts = {e["effect"]: e["verdict"] for e in report(script / "r.db", script)["effects"]}
    assert set(verdicts.values()) == {"seeds identical"}


def test_a_pattern_that_never_matches_fails_the_run_with_the_pattern_and_the_last_lines(script):
    matrix = script / "matrix.yaml"
    matrix.write_text(matrix.read_text().replace("val loss (?P<val_loss>", "validation (?P<val_loss>"))
    ran = ablate("run", "matrix.yaml", "--db", str(script / "r.db"), cwd=script)
    assert ran.returncode == 1
    error = sqlite3.connect(script / "r.db").execute("SELECT error FROM runs WHERE error IS NOT NULL").fetchone()[0]
    assert "metric.pattern 'step (?P<step>" in error and "matched no line" in error
    assert "step 200: train loss" in error  # the output's last lines, so the mismatch shows
    # and the first two failed alike: the other four were never started (with 2 jobs, exactly:
    # the first failure holds the free slot until the second ends; tests/test_fail_fast.py)
    assert "the first 2 runs failed alike, so no more were started" in " ".join(ran.stdout.split())
    statuses = [s for (s,) in sqlite3.connect(script / "r.db").execute("SELECT status FROM runs")]
    assert statuses.count("failed") == 2 and statuses.count("queued") == 4
    # fixed, the same command continues: every run completes, nothing is lost
    matrix.write_text(matrix.read_text().replace("validation (?P<val_loss>", "val loss (?P<val_loss>"))
    again = ablate("run", "matrix.yaml", "--db", str(script / "r.db"), "--rerun", "failed", cwd=script)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {s for (s,) in sqlite3.connect(script / "r.db").execute("SELECT status FROM runs")} == {"completed"}


def test_keep_going_starts_every_run(script):
    matrix = script / "matrix.yaml"
    matrix.write_text(matrix.read_text().replace("val loss (?P<val_loss>", "validation (?P<val_loss>"))
    ran = ablate("run", "matrix.yaml", "--db", str(script / "r.db"), "--keep-going", cwd=script)
    assert ran.returncode == 1
    statuses = [s for (s,) in sqlite3.connect(script / "r.db").execute("SELECT status FROM runs")]
    assert statuses == ["failed"] * 6


def test_editing_the_script_trains_again_without_inputs_declared(script):
    matrix = parse_matrix((script / "matrix.yaml").read_text(), script / "matrix.yaml")
    assert matrix.base.inputs == ("train.py",)  # the command's script is hashed by default
    db = str(script / "r.db")
    assert ablate("run", "matrix.yaml", "--db", db, cwd=script).returncode == 0
    (script / "train.py").write_text((script / "train.py").read_text().replace("max_iters = 200", "max_iters = 100"))
    again = ablate("run", "matrix.yaml", "--db", db, cwd=script)
    assert again.returncode == 0 and "trained 6 run(s) now" in again.stdout


@pytest.mark.parametrize("style, flag, words", [
    ("--{name}={value}", None, ["--lr=0.1", "--wide=True", "--act=tanh"]),
    ("--{name} {value}", None, ["--lr", "0.1", "--wide", "True", "--act", "tanh"]),
    ("{name}={value}", None, ["lr=0.1", "wide=True", "act=tanh"]),
    ("--{name} {value}", "--{name}", ["--lr", "0.1", "--wide", "--act", "tanh"]),
])
def test_args_expand_every_param_in_the_scripts_own_style(style, flag, words):
    values = {"lr": 0.1, "wide": True, "act": "tanh", "seed": 3}
    assert args_words(values, style, flag) == words  # the seed only where the command names it
    assert args_words({**values, "wide": False}, style, "--{name}") == [w for w in words if w not in (
        "--wide", "True", "--wide=True", "wide=True")]
    command = command_words("{python} train.py {args} --seed={seed} --out={run_dir} {{x}}", values, style, flag, "/r")
    assert command == [sys.executable, "train.py", *words, "--seed=3", "--out=/r", "{x}"]


def test_every_matrix_problem_of_an_own_script_is_reported_at_once(tmp_path):
    (tmp_path / "train.py").write_text("")
    text = """
name: bad
design: one-at-a-time
trainer: {command: "python train.py {args} --x={nothing}", args: "--{nam}={value}"}
params: {lr: 1e-3, warm: 2E2, width: 64}
metric: {name: val_loss, pattern: 'loss (?P<loss>[\\d.]+'}
toggles: [{name: wide, patch: {width: 128}}]
"""
    with pytest.raises(MatrixError) as e:
        parse_matrix(text, tmp_path / "bad.yaml")
    problems = " | ".join(e.value.problems)
    for expected in ("params.lr: YAML reads 1e-3 as text", "params.warm: YAML reads 2E2 as text",
                     "min_effect: give min_effect in your metric's units", "metric.pattern: missing ),",
                     "trainer.args: '--{nam}={value}'"):
        assert expected in problems, expected


def test_an_entry_point_is_called_with_python_numpy_and_torch_seeded_by_the_run(tmp_path, monkeypatch):
    from ablate.training.command import train
    from ablate.training.params import ParamsConfig

    (tmp_path / "seeded_entry.py").write_text(
        "import random, numpy, torch\n"
        "def main(config, report):\n"
        "    report(1, val_loss=random.random() + numpy.random.rand() + torch.rand(1).item())\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def final(seed: int) -> float:
        seen = []
        config = ParamsConfig("entry", "seeded_entry:main", (("lr", 0.1),), seed=seed, workdir=str(tmp_path))
        train(config.to_dict(), seen.append, None)
        return seen[-1]["val_loss"]
    assert final(1) == final(1) != final(2)
