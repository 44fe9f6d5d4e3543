"""The package's shape, as ARCHITECTURE.md draws it: no import cycle, every import pointing down
the layers, the model reached only through the trainer's name, no module too long to read.

Imports are read from the source (every `import` and `from ... import`, at module level or
inside a function, TYPE_CHECKING included), so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGE = REPO / "ablate"
# Lower layers never import higher ones; packages of one layer do not import each other.
LAYERS = {"training": 0, "storage": 0, "execution": 1, "results": 2}
MAX_LINES = 500
# What the rest of the package may use of `training`: the config and its catalog, never the
# model or the loop (the CLI's `ablate train` calls the trainer itself).
TRAINING_API = {"ablate.training.config", "ablate.training.catalog", "ablate.training.datasource",
                "ablate.training.params", "ablate.training.output",  # your own trainer's config and output
                "ablate.training.transcript",  # and that output as printed, kept beside a run's log
                "ablate.training.peak_rss"}  # a process's peak memory, which every attempt measures
TORCH_MODULES = {"ablate.training.data", "ablate.training.model", "ablate.training.train", "ablate.training.checkpoint",
                 "ablate.training.command",  # seeds torch, where installed, for your entry point
                 "ablate.execution.executors"}  # the local executor counts GPUs


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str) -> set[str]:
    """Every module (of any package) that `name`'s source imports, resolved to full names."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:  # `from pkg import module` imports the module
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return found


GRAPH = {name: {m for m in imported(name) if m in MODULES and m != name} for name in MODULES}


def layer(name: str) -> tuple[str, int]:
    parts = name.split(".")
    return (parts[1], LAYERS[parts[1]]) if len(parts) > 2 else ("", len(LAYERS))  # cli on top


def test_the_graph_is_read():
    assert len(MODULES) > 25
    assert "ablate.storage.store" in GRAPH["ablate.execution.runner"]
    assert "ablate.execution.ray_executor" in GRAPH["ablate.execution.executors"]  # a lazy import


def test_no_import_cycle():
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in MODULES:
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down_the_layers(name):
    package, level = layer(name)
    upward = [target for target in GRAPH[name] if layer(target)[0] not in ("", package)
              and layer(target)[1] >= level]
    assert not upward, f"{name} imports {upward}: a layer may import only the layers below it"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.startswith("ablate.training")
                                        and n != "ablate.cli"))
def test_only_the_config_of_a_run_is_known_outside_training(name):
    model = {t for t in GRAPH[name] if t.startswith("ablate.training.")} - TRAINING_API
    assert not model, f"{name} imports {model}: executors call the trainer by its module:function name"


def test_torch_is_imported_where_runs_train_only():
    assert {name for name in MODULES if "torch" in imported(name)} == TORCH_MODULES


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_is_short_enough_to_read(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"
