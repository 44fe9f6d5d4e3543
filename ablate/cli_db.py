"""`ablate db`: the results database itself (upgrade, merge)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from .terminal import DbOption, err, fail, say, user_errors

db_app = typer.Typer(no_args_is_help=True, help="The results database itself.")


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Migrate an older ablate's database to this one's schema. Every command does it on open;
    this one only upgrades. A SQLite file is first copied to FILE.bak-vN."""
    from .storage.store import open_store

    with user_errors(), open_store(db) as store:
        if store.upgraded is None:
            err.print(f"{store.where}: already at schema {store.version}")
            return
        old, new = store.upgraded
        kept = f"; the file as it was: {store.backup}" if store.backup else ""
        err.print(f"{store.where}: schema {old} → {new}{kept}")


@db_app.command("merge")
def db_merge(
    other: Annotated[str, typer.Argument(metavar="OTHER.db", help="the database to copy from "
                                         "(a .db path or SQLAlchemy URL); never written")],
    db: DbOption = None,
    rename_from: Annotated[list[str], typer.Option(metavar="NAME:NEW", help="merge their NAME as NEW")] = [],
    skip_invalid: Annotated[bool, typer.Option(help="leave refused items out, merge the rest")] = False,
    require_signed: Annotated[bool, typer.Option(help="take only completed runs whose results are signed with "
                                                      "the key in $ABLATE_SIGNING_KEY (set where they trained)")] = False,
) -> None:
    """Merge another results database into this one. Its experiments, runs and evaluations are
    copied, matching runs by identity, in one transaction. A run completed in both is kept once;
    differing results for one identity are listed and this database's are kept (exit 1). A run
    whose config does not give its identity, a malformed row, a link to a run the matrix does
    not call by that name, or a same-named experiment of another matrix is refused, one line
    each, and the whole merge with it (exit 2). Results are taken on trust unless
    --require-signed."""
    from .execution.identity import merge
    from .storage.merge import MergeRefused
    from .storage.signing import KEY_VARIABLE
    from .storage.store import open_store

    key = os.environ.get(KEY_VARIABLE) if require_signed else None
    if require_signed and not key:
        fail(f"--require-signed checks signatures with the key in ${KEY_VARIABLE}, which is not set")
    with user_errors(), open_store(db, create=True) as store:
        try:
            report = merge(store, other, renames=rename_from, skip_invalid=skip_invalid, signing_key=key)
        except MergeRefused as e:
            for line in e.lines:
                say("refused", "bold red", line)
            raise
    for line in report.skipped:
        say("left out", "yellow", line)
    err.print(report.summary())
    for conflict in report.conflicts:
        err.print(f"conflict: {conflict}")
    if report.conflicts:
        raise typer.Exit(1)
