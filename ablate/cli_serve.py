"""`ablate serve`: the live view of a results database (the server is `ablate/serve.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .terminal import DbOption, err, fail, user_errors


def serve_cmd(
    matrix: Annotated[Optional[Path], typer.Argument(help="matrix YAML: watch the database its db: names")] = None,
    db: DbOption = None,
    host: Annotated[str, typer.Option(help="address to listen on; anything but loopback needs --allow-remote")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8765,
    allow_remote: Annotated[bool, typer.Option(help="listen beyond this machine: every request then needs "
                                                    "the token printed at start")] = False,
) -> None:
    """A live web page of a results database's experiments.

    While matrices write it: progress, curves, failures, and the verdicts as `ablate report`
    gives them now. It only reads."""
    from .extras import require
    from .storage.database import default_url, resolve_url

    with user_errors():
        require("serve", "ablate serve")
        if matrix is not None and db is None:
            from .execution.matrix import load_matrix

            db = default_url(load_matrix(matrix).spec.db)
        url = resolve_url(db)
    from .serve import serve

    try:
        serve(url, host=host, port=port, allow_remote=allow_remote, say=lambda line: err.print(line, highlight=False, soft_wrap=True))
    except ValueError as e:
        fail(str(e))
