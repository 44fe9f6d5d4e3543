"""What each optional part of ablate needs installed, and the one line said when it is missing.

Ablating your own script needs none of these: the built-in (Mainrun) trainer needs torch,
tokenizers and datasets (`pip install 'ablate[mainrun]'`), plots and the HTML page matplotlib
(`pip install 'ablate[plots]'`). A command that needs one says so before it starts anything.
"""

from __future__ import annotations

import importlib

EXTRAS = {"mainrun": ("torch", "tokenizers", "datasets"), "plots": ("matplotlib",)}


class MissingExtra(RuntimeError):
    """An optional dependency a command needs is not installed; the message says which extra."""


def installed(module: str) -> bool:
    """Importable here (imported, not only found: a broken install counts as missing)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def require(extra: str, what: str) -> None:
    """Raise MissingExtra naming the extra when any of its modules is missing."""
    missing = [m for m in EXTRAS[extra] if not installed(m)]
    if missing:
        raise MissingExtra(f"{what} needs {', '.join(missing)}, not installed here: "
                           f"pip install 'ablate[{extra}]' (or -e '.[{extra}]' in a clone)")
