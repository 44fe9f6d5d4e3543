"""Live progress stays whole where people watch it (issue 37): piped, and in tmux (a 40-column
pane, so its lines wrap and its bars are cut to fit): every run's "completed" line is there
once, and one bar is left, the final one, not a stale "3/9". (With COLUMNS exported wider than
the pane, rich draws for the wider terminal and the pane keeps stale bars, in any rich program:
the test's pane runs without it, as a shell that does not export it.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from .conftest import EXAMPLE


@pytest.fixture
def example(tmp_path):
    folder = tmp_path / "tiny-mlp"
    shutil.copytree(EXAMPLE, folder)
    return folder


def check(screen: str) -> None:
    lines = " ".join(screen.split())  # a wrapped line joined again
    for seed in (0, 1, 2):
        for name in ("baseline", "wide", "fast_lr", "decay"):
            assert len(re.findall(rf"completed seed {seed} {name} ", lines)) == 1, (seed, name, screen)
    assert re.findall(r"\b\d+/12\b", lines) == ["12/12"], screen  # one bar, the last (cut to fit)


def test_piped_progress_has_every_run_once(example):
    env = {k: v for k, v in os.environ.items() if k != "ABLATE_DB"}
    ran = subprocess.run([sys.executable, "-m", "ablate", "run", "matrix.yaml", "--db", "p.db"], cwd=example,
                         env=env, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    check(ran.stdout + ran.stderr)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="no tmux here")
def test_progress_in_a_narrow_tmux_pane_has_every_run_once_and_no_stale_bar(example):
    socket, done = f"ablate-test-{os.getpid()}", example / "exit-code"
    command = (f"cd {example} && env -u ABLATE_DB -u COLUMNS -u LINES {sys.executable} -m ablate run matrix.yaml --db t.db; "
               f"echo $? > {done}; sleep 600")
    subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-x", "40", "-y", "15", command], check=True)
    try:
        deadline = time.monotonic() + 600  # a hang guard
        while not done.exists():
            assert time.monotonic() < deadline, "the matrix never ended in tmux"
            time.sleep(0.5)
        time.sleep(0.5)  # the pane shows what was written
        screen = subprocess.run(["tmux", "-L", socket, "capture-pane", "-p", "-S", "-"], capture_output=True,
                                text=True, check=True).stdout
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
    assert done.read_text().strip() == "0", screen
    check(screen)
