"""The CLI imports what a command uses (issue 35): `ablate --help` none of the heavy libraries,
`ablate runs` and `ablate report` no plotting library and no torch. Asserted by the modules a
fresh process holds afterwards, not by time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import REPO

HEAVY = ("pandas", "sqlalchemy", "matplotlib", "torch", "tokenizers", "datasets", "starlette")


def loaded_by(*argv: str) -> set[str]:
    code = ("import json, sys, io, contextlib\nfrom ablate.cli import app\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "    try:\n        app(%r)\n    except SystemExit as e:\n        assert not e.code, e.code\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)))") % (list(argv), HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return {m.split(".")[0] for m in json.loads(out.stdout.strip().splitlines()[-1])}


def test_help_imports_none_of_the_heavy_libraries():
    assert loaded_by("--help") == set()


@pytest.mark.parametrize("argv", [("runs", "--db", "results.db", "-e", "report-cpu"),
                                  ("report", "--db", "results.db", "-e", "report-cpu", "-f", "json")])
def test_reading_results_imports_no_plotting_no_torch_no_server(argv):
    loaded = loaded_by(*argv)
    assert {"pandas", "sqlalchemy"} <= loaded and not loaded & {"matplotlib", "torch", "tokenizers", "datasets", "starlette"}
