"""`ablate init SCRIPT`: a starting matrix from a script's flags (the work is execution/scaffold.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .results import outfile
from .terminal import say, user_errors


def init_cmd(
    script: Annotated[Path, typer.Argument(metavar="SCRIPT.py", help="your training script")],
    line: Annotated[Optional[str], typer.Option(help="one line the script prints with its metric, to read it from")] = None,
    out: Annotated[Optional[Path], typer.Option(help="the matrix to write (default: ablate-SCRIPT.yaml beside the script)")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing file")] = False,
) -> None:
    """Write a starting matrix from a script's flags; never trains."""
    from .execution.scaffold import write_starting_matrix

    with user_errors():
        path = outfile.checked(out or script.with_name(f"ablate-{script.stem}.yaml"), (".yaml", ".yml"), force=True)
        summary = write_starting_matrix(script, path, line, force)
    say("wrote", "green", f"{path}: {summary}. Next: ablate plan {path}")
