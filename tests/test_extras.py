"""A lighter install for your own script (issue 37): without torch, tokenizers, datasets and
matplotlib, your own trainer's matrix runs and reports; what needs one of them says which extra
in one line, before anything starts. The packages are hidden by a finder that refuses them,
installed by a sitecustomize on PYTHONPATH, so every process (the job processes too) sees them
missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import EXAMPLE, REPO, SMOKE_MATRIX

HIDDEN = ("torch", "tokenizers", "datasets", "matplotlib")


HIDER = """
import sys

class Hidden:
    \"\"\"Refuses the hidden packages, found or imported: as if they were not installed.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {hidden!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by the test)", name=name)
        return None

sys.meta_path.insert(0, Hidden())
"""


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> dict:
    """An environment in which the optional packages cannot be found or imported: a
    sitecustomize first on PYTHONPATH puts a finder that refuses them in every process."""
    shadow = tmp_path_factory.mktemp("shadow")
    (shadow / "sitecustomize.py").write_text(HIDER.format(hidden=set(HIDDEN)))
    env = {k: v for k, v in os.environ.items() if k != "ABLATE_DB"}
    return {**env, "PYTHONPATH": os.pathsep.join([str(shadow), str(REPO)])}


def ablate(env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_hidden_packages_really_are_missing(bare, tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=bare, capture_output=True, text=True)
    assert probe.returncode == 1 and "ModuleNotFoundError: No module named 'torch' (hidden by the test)" in probe.stderr
    found = subprocess.run([sys.executable, "-c", "import importlib.util as u; u.find_spec('matplotlib')"], env=bare,
                           capture_output=True, text=True)
    assert found.returncode == 1 and "hidden by the test" in found.stderr


def test_your_own_script_runs_and_reports_without_the_optional_packages(bare, tmp_path):
    folder = tmp_path / "tiny-mlp"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("*.db", "__pycache__"))
    matrix = folder / "matrix.yaml"
    matrix.write_text(matrix.read_text().replace("seeds: [0, 1, 2]", "seeds: [0, 1]"))
    ran = ablate(bare, folder, "run", "matrix.yaml")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "8 completed" in " ".join(ran.stdout.split())
    report = ablate(bare, folder, "report", "matrix.yaml")
    assert report.returncode == 0 and "tiny-mlp — one-at-a-time" in report.stdout, report.stderr


@pytest.mark.parametrize("args, extra", [
    (["train", "--data", "builtin:hacker_news", "--max-steps", "1"], "mainrun"),
    (["run", str(SMOKE_MATRIX), "--db", "r.db"], "mainrun"),
    (["plot", "--db", str(REPO / "results.db"), "-e", "report-cpu", "--out", "c.png"], "plots"),
    (["report", "--db", str(REPO / "results.db"), "-e", "report-cpu", "-f", "html", "--out", "r.html"], "plots"),
])
def test_what_needs_an_extra_names_it_in_one_line_and_starts_nothing(bare, tmp_path, args, extra):
    result = ablate(bare, tmp_path, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"pip install 'ablate[{extra}]'" in line and "not installed here" in line
    assert list(tmp_path.iterdir()) == []  # no database, log, plot or page was started
