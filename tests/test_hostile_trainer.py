"""Hostile trainers (issue 26): a trainer's limits hold whatever it does. The timeout is wall
time however fast it prints, its evaluations are capped, its run ends with its process even if
a child holds stdout, and what is not identity (timeout, workdir) follows the matrix as it is
now; a directory input leaves out ablate's own outputs."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from ablate.training.command import TrainerError, train
from ablate.training.params import ParamsConfig
from ablate.execution.matrix import load_matrix
from ablate.execution.runner import plan, register
from ablate.storage.store import Store


def own_trainer(tmp_path: Path, script: str, **how) -> dict:
    """A stored config of your own trainer running `script` (python) in tmp_path."""
    (tmp_path / "t.py").write_text(textwrap.dedent(script))
    return ParamsConfig("command", f"{sys.executable} t.py", (("lr", 0.1),), workdir=str(tmp_path), **how).to_dict()


def test_a_flooding_trainer_times_out_on_time_with_its_evaluations_capped(tmp_path):
    """Case 4 and the acceptance test: 200,000 lines, then sleeping, with a 5 s timeout."""
    config = own_trainer(tmp_path, """
        import sys, time
        sys.stdout.writelines('{"step": %d, "val_loss": 1.0}\\n' % i for i in range(200_000))
        sys.stdout.flush()
        time.sleep(60)
    """, timeout_s=5, max_evals=100)
    seen = []
    with pytest.raises(TrainerError, match="timed out after 5 s"):  # not the end of its 60 s sleep
        train(config, seen.append, None)
    assert len(seen) == 100


def test_past_max_evals_only_the_last_evaluation_is_stored(tmp_path):
    config = own_trainer(tmp_path, """
        for i in range(50):
            print('{"step": %d, "val_loss": %d}' % (i, 50 - i))
    """, max_evals=10)
    seen = []
    assert train(config, seen.append, None)["steps"] == 49
    assert [e["step"] for e in seen] == [*range(10), 49] and seen[-1]["val_loss"] == 1


def test_a_run_ends_with_its_trainer_not_with_a_child_holding_its_stdout(tmp_path):
    """Case 12: the run waited 40 s for a forked child; now the child is stopped with it."""
    config = own_trainer(tmp_path, """
        import os, time
        print('{"step": 1, "val_loss": 1.0}', flush=True)
        if os.fork() == 0:
            open("child.pid", "w").write(str(os.getpid()))
            time.sleep(40)
            open("child.done", "w").write("the run waited for me")
    """)
    train(config, [].append, None)
    assert not (tmp_path / "child.done").exists()  # the run ended without waiting for its child
    stat = Path(f"/proc/{int((tmp_path / 'child.pid').read_text())}/stat")
    for _ in range(600):  # SIGKILL lands within moments (a hang guard of 60 s); an unreaped child is a zombie (Z)
        if not stat.exists() or stat.read_text().split(") ")[1].startswith("Z"):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the forked child outlived its run")


def test_a_rerun_takes_timeout_and_workdir_from_the_matrix_as_it_is_now(tmp_path):
    """Case 5: the stored timeout (not identity) overrode the edited matrix."""
    (tmp_path / "t.py").write_text("")
    path = tmp_path / "m.yaml"
    text = ("name: m\ndesign: one-at-a-time\ntrainer: {command: 'python t.py {lr}', timeout: 2}\n"
            "params: {lr: 0.1}\nmin_effect: 0.01\ntoggles: [{lr: [0.2]}]\n")
    with Store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        for timeout in (2, 30):
            path.write_text(text.replace("timeout: 2", f"timeout: {timeout}"))
            matrix = load_matrix(path)
            baseline, _ = register(store, matrix, plan(matrix))
        assert store.run(baseline).config["trainer"]["timeout_s"] == 30


def test_a_directory_input_leaves_out_ablates_own_outputs(tmp_path):
    """Case 6: `inputs: ["."]` changed with the database and the logs the matrix itself wrote."""
    (tmp_path / "t.py").write_text("print(1)")
    config = ParamsConfig("command", "python t.py", (), workdir=str(tmp_path), inputs=(".",))
    before = config.fingerprint()
    for own in ("results.db", "results.db-wal", "results.db.bak-v2", "ablate-logs/m/r.log",
                "ablate-checkpoints/abc/x.pt"):
        (tmp_path / own).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / own).write_text("changes as the matrix runs")
    assert config.fingerprint() == before
    (tmp_path / "data.csv").write_text("x\n1\n")
    assert config.fingerprint() != before
