"""`ablate init SCRIPT` (issue 37): a starting matrix from the script's own flags, never training,
that runs unedited."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ablate.execution.matrix import load_matrix
from ablate.execution.scaffold import ScaffoldError, guess_pattern, read_flags

ARGPARSE_SCRIPT = '''
    import argparse, json, pathlib, random
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--act", choices=["relu", "tanh"], default="relu")
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out_dir", default="out")
    args = parser.parse_args()
    pathlib.Path("trained.marker").write_text("training ran")  # init must never get here
    random.seed(args.seed)
    pathlib.Path(args.out_dir).mkdir(exist_ok=True)
    for epoch in range(1, 4):
        loss = 1 / (epoch * args.lr * args.layers) + (0.2 if args.act == "tanh" else 0) + random.gauss(0, 0.01)
        print(f"| end of epoch {epoch} | valid loss {loss:.4f} | lr {args.lr}")
'''

CLICK_STYLE_HELP = '''
    import sys
    if "--help" in sys.argv:
        print("""Usage: train.py [OPTIONS]

    Options:
      --learning-rate FLOAT  step size  [default: 0.001]
      --epochs INTEGER       passes over the data  [default: 3]
      --use-bias / --no-use-bias
                             [default: True]
      --seed INTEGER         [default: 0]
      --name TEXT            a label
      --help                 Show this message and exit.""")
        sys.exit(0)
    raise SystemExit("trained")
'''


def write(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


def ablate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ABLATE_DB"}
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_an_argparse_script_gets_a_matrix_that_runs_unedited_and_init_never_trains(tmp_path):
    write(tmp_path, "train.py", ARGPARSE_SCRIPT)
    made = ablate("init", "train.py", "--line", "| end of epoch 3 | valid loss 1.8734 | lr 0.1", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert not (tmp_path / "trained.marker").exists()  # parse_args was reached, training was not
    matrix = load_matrix(tmp_path / "ablate-train.yaml")
    assert matrix.base.values() == {"lr": 0.1, "layers": 2, "act": "relu", "seed": matrix.base.seed}
    command = matrix.spec.trainer.command
    assert command.endswith("train.py --lr={lr} --layers={layers} --act={act} --seed={seed} --out_dir={run_dir}")
    assert (matrix.spec.metric.name, matrix.spec.metric.goal) == ("valid_loss", "minimize")
    text = (tmp_path / "ablate-train.yaml").read_text()
    assert "# not a param: --fast (a bare flag" in text
    ran = ablate("run", "ablate-train.yaml", "--db", str(tmp_path / "r.db"), cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    report = json.loads(ablate("report", "ablate-train.yaml", "--db", str(tmp_path / "r.db"), "-f", "json",
                               cwd=tmp_path).stdout)
    verdicts = {e["effect"]: e["verdict"] for e in report["effects"]}
    assert verdicts == {"lr_x2": "better", "layers_x2": "better"}  # 1/(lr·layers): halved, far beyond δ
    assert not (tmp_path / "out").exists()  # every run wrote to its own {run_dir}


def test_click_and_typer_help_text_gives_flags_with_their_stated_defaults(tmp_path):
    flags = read_flags(write(tmp_path, "cli.py", CLICK_STYLE_HELP))
    assert flags.source == "help text"
    assert [(f.name, f.spelling, f.default) for f in flags.params] == [
        ("learning_rate", "--learning-rate", 0.001), ("epochs", "--epochs", 3)]
    assert flags.seed.spelling == "--seed"
    assert {f.spelling: f.note for f in flags.left_out} == {
        "--use-bias": "an on/off switch (--x / --no-x): add it to the command by hand",
        "--name": "no default stated in --help"}


def test_module_settings_are_read_without_running_the_script(tmp_path):
    script = write(tmp_path, "train.py", '''
        """nanoGPT style: settings, then a configurator that rejects --help."""
        import sys
        out_dir = "out"
        learning_rate = 6e-4
        compile = True
        seed = 1337
        for arg in sys.argv[1:]:
            raise SystemExit(f"unknown config key: {arg}")
    ''')
    flags = read_flags(script)
    assert flags.source == "module settings"
    assert [(f.name, f.default) for f in flags.params] == [("learning_rate", 6e-4), ("compile", True)]
    assert (flags.seed.name, flags.run_dir.name) == ("seed", "out_dir")


def test_a_script_that_trains_instead_of_answering_help_is_stopped(tmp_path):
    script = write(tmp_path, "train.py", "import time\nopen('started', 'w').close()\ntime.sleep(600)\n")
    with pytest.raises(ScaffoldError, match="still running 2 s after `--help`, so it was stopped"):
        read_flags(script, timeout=2)


@pytest.mark.parametrize("line, metric, goal, groups", [
    ("step 200: train loss 0.2508, val loss 0.2712", "val_loss", "minimize",
     {"step": "200", "train_loss": "0.2508", "val_loss": "0.2712"}),
    ("| end of epoch   1 | time: 46.11s | valid loss  7.59 | valid ppl  1980.93", "valid_loss", "minimize",
     {"epoch": "1", "time": "46.11", "valid_loss": "7.59", "valid_ppl": "1980.93"}),
    ("iter 100: loss 2.3456, time 12.5ms", "loss", "minimize", {"iter": "100", "loss": "2.3456", "time": "12.5"}),
    ("Epoch 3 acc=0.91 val_acc=0.88", "val_acc", "maximize", {"epoch": "3", "acc": "0.91", "val_acc": "0.88"}),
    ("eval: -1.5e-3", "eval", "minimize", {"eval": "-1.5e-3"}),
])
def test_the_pattern_guessed_from_a_line_reads_it_back(line, metric, goal, groups):
    pattern, got_metric, got_goal = guess_pattern(line)
    assert (got_metric, got_goal) == (metric, goal)
    assert re.search(pattern, line).groupdict() == groups
    other = re.sub(r"\d", "7", line)  # the same line with other numbers still matches
    assert re.search(pattern, other)


def test_init_refuses_to_overwrite_and_says_what_is_wrong_in_one_line(tmp_path):
    write(tmp_path, "train.py", ARGPARSE_SCRIPT)
    (tmp_path / "ablate-train.yaml").write_text("mine\n")
    again = ablate("init", "train.py", cwd=tmp_path)
    assert again.returncode == 2 and "exists; pass --force" in again.stderr
    assert (tmp_path / "ablate-train.yaml").read_text() == "mine\n"
    no_number = ablate("init", "train.py", "--line", "done", "--out", "m.yaml", cwd=tmp_path)
    assert no_number.returncode == 2 and "no number in it" in no_number.stderr and not (tmp_path / "m.yaml").exists()
    missing = ablate("init", "nope.py", cwd=tmp_path)
    assert missing.returncode == 2 and "expected a Python script (.py) that exists" in missing.stderr
