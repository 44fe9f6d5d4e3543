"""What each optional part of ablate needs installed, and the one line said when it is missing.

Ablating your own script needs none of these: the built-in (Mainrun) trainer needs torch,
tokenizers and datasets (`pip install 'ablate[mainrun]'`), plots and the HTML page matplotlib
(`pip install 'ablate[plots]'`). A command that needs one says so before it starts anything.
"""

from __future__ import annotations

import importlib.util
import sys

EXTRAS = {"mainrun": ("torch", "tokenizers", "datasets"), "plots": ("matplotlib",),
          "serve": ("starlette", "uvicorn")}


class MissingExtra(RuntimeError):
    """An optional dependency a command needs is not installed; the message says which extra."""


def installed(module: str) -> bool:
    """Found on this interpreter's path (found, not imported: importing torch, tokenizers and
    datasets to say yes cost every `ablate run` seconds; an install broken past finding fails
    its runs with the import error instead)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses the name, a module without a spec
        return False


def require(extra: str, what: str) -> None:
    """Raise MissingExtra naming the extra when any of its modules is missing."""
    missing = [m for m in EXTRAS[extra] if not installed(m)]
    if missing:
        raise MissingExtra(f"{what} needs {', '.join(missing)}, not installed here: "
                           f"pip install 'ablate[{extra}]' (or -e '.[{extra}]' in a clone)")
