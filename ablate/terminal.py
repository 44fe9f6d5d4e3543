"""How the command line speaks: text on stderr as it is given, and the one-line errors (exit 2)
for everything a user can get wrong."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from .training.config import ConfigError


def console(**options) -> Console:
    """A console that prints text as it is: names, values, paths and messages come from users,
    and `[/x]` in one is text, never markup (styles are given as Text spans instead)."""
    return Console(markup=False, highlight=False, emoji=False, **options)


err = console(stderr=True, soft_wrap=True)  # piped output: whole lines, never wrapped at 80


def say(label: str, style: str, message: str) -> None:
    """`label: message` on stderr, the label styled and the message as plain text."""
    err.print(Text.assemble((f"{label}:", style), " ", message))


def fail(message: str, code: int = 2) -> None:
    say("error", "bold red", message)
    raise typer.Exit(code)


@contextmanager
def user_errors():
    """What a user can get wrong (a database that cannot be opened, an unknown experiment or
    run, a bad matrix, config or option): one line, exit 2."""
    from .execution.executors import ExecutorError
    from .extras import MissingExtra
    from .execution.matrix import MatrixError
    from .execution.runner import RunnerError
    from .execution.scaffold import ScaffoldError
    from .execution.workspace import WorkspaceError
    from .results.frames import ResultsError
    from .results.outfile import OutputError
    from .storage.database import StoreError
    from .training.datasource import DataError

    try:
        yield
    except (StoreError, ResultsError, MatrixError, ConfigError, ExecutorError, RunnerError, DataError,
            MissingExtra, OutputError, ScaffoldError, WorkspaceError) as e:
        fail(str(e))


DbOption = Annotated[Optional[str], typer.Option(
    "--db", help="results database: SQLAlchemy URL or .db path (default: $ABLATE_DB, else the matrix's db:, else ./results.db)")]
