"""`ablate init SCRIPT`: a starting matrix for your own training script, its flags read from the
script instead of retyped (as Guild AI reads a script's flags).

How the flags are found, without training:
* argparse: the script runs until it parses its arguments, where `parse_known_args` (which
  `parse_args` calls) is replaced by a dump of the parser's actions, then the process exits.
  Exact: each flag's dest, default, type and choices.
* otherwise its `--help` text, as click, typer, absl or argparse print it: each `--flag` with
  a `default` stated beside it.
* otherwise module-level settings with literal values, which `--key=value` flags override
  (nanoGPT's "configurator" style), read from the source without running it.

A flag named like a seed becomes `{seed}`, one named like an output directory `{run_dir}` (every
run its own). A sample output line given with `--line` becomes `metric.pattern`, each number a
named group, checked against that line.
"""

from __future__ import annotations

import ast
import json
import keyword
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HELP_TIMEOUT_S = 60.0  # a script still running after this is training, not printing its flags
SEED_NAMES = ("seed", "random_seed", "rng_seed")
RUN_DIR_NAMES = ("out_dir", "output_dir", "outdir", "save_dir", "checkpoint_dir", "ckpt_dir", "log_dir")
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
INTEGER = r"[-+]?\d+"
MAX_TOGGLES = 3

# Run as `python -c DUMP_ARGPARSE SCRIPT --help`: the script's own code up to its argument parsing.
DUMP_ARGPARSE = r"""
import argparse, json, os, runpy, sys
def _plain(v):
    return v if v is None or isinstance(v, (bool, int, float, str)) else repr(v)
def _dump(self, args=None, namespace=None):
    actions = [{"dest": a.dest, "flags": list(a.option_strings), "default": _plain(a.default),
                "type": getattr(a.type, "__name__", None), "kind": type(a).__name__,
                "choices": [_plain(c) for c in a.choices] if a.choices else None,
                "nargs": a.nargs if isinstance(a.nargs, (int, str)) else None, "required": a.required}
               for a in self._actions if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]
    with open(os.environ["ABLATE_INIT_OUT"], "w") as f:
        json.dump(actions, f)
    os._exit(0)
argparse.ArgumentParser.parse_known_args = _dump
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class ScaffoldError(RuntimeError):
    """The script's flags cannot be read; the message says why and what to do."""


@dataclass
class Flag:
    name: str  # a parameter name: an identifier
    spelling: str  # how the script takes it: --learning-rate
    default: Any
    note: str = ""  # why it is not a parameter, when it is not


@dataclass
class Flags:
    source: str  # argparse | help text | module settings
    params: list[Flag] = field(default_factory=list)
    seed: Flag | None = None
    run_dir: Flag | None = None
    left_out: list[Flag] = field(default_factory=list)  # flags that cannot be a parameter, with why


def read_flags(script: Path, python: str = sys.executable, timeout: float = HELP_TIMEOUT_S) -> Flags:
    """The script's flags: argparse's actions, else its --help text, else its module settings."""
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "actions.json"
        env = {**os.environ, "ABLATE_INIT_OUT": str(dump), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([python, "-c", DUMP_ARGPARSE, str(script), "--help"], cwd=script.parent,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise ScaffoldError(f"{script}: still running {timeout:.0f} s after `--help`, so it was stopped "
                                f"(it may have started training); write the matrix by hand") from None
        if dump.exists():
            return _from_argparse(json.loads(dump.read_text()))
    flags = _from_help(output)
    if flags.params:
        return flags
    flags = _from_settings(script)
    if flags.params:
        return flags
    tail = "\n".join(output.strip().splitlines()[-5:])
    raise ScaffoldError(f"{script}: found no flags (no argparse parser, no --flag with a default in its "
                        f"--help, no module-level settings); its --help printed:\n{tail}")


def _classify(flags: Flags, flag: Flag) -> None:
    if flag.name in SEED_NAMES and flags.seed is None:
        flags.seed = flag
    elif flag.name in RUN_DIR_NAMES and flags.run_dir is None:
        flags.run_dir = flag
    elif flag.note:
        flags.left_out.append(flag)
    else:
        flags.params.append(flag)


def _from_argparse(actions: list[dict]) -> Flags:
    flags = Flags("argparse")
    for a in actions:
        spelling = next((f for f in a["flags"] if f.startswith("--")), a["flags"][0] if a["flags"] else a["dest"])
        flag = Flag(a["dest"], spelling, a["default"])
        if not a["flags"]:
            flag.note = "positional: add it to the command by hand"
        elif a["kind"] in ("_StoreTrueAction", "_StoreFalseAction", "BooleanOptionalAction"):
            flag.note = "a bare flag: add it to the command to switch it on"
        elif a["kind"] != "_StoreAction" or a["nargs"] not in (None, 1, "?"):
            flag.note = "takes several values or is not a plain value"
        elif a["default"] is None or isinstance(a["default"], str) and a["default"].startswith("<"):
            flag.note = "required" if a["required"] else "no default"
        elif not _usable(a["dest"]):
            flag.note = "its name is not an identifier"
        _classify(flags, flag)
    return flags


_OPTION = re.compile(r"^\s*(?:-\w,?\s+)?(--[A-Za-z][\w-]*)(?:[ =]([A-Za-z<][\w<>|.-]*))?")
_DEFAULT = re.compile(r"[\[(]default:?\s*('[^']*'|\"[^\"]*\"|[^\])\s]+)[\])]")


def _from_help(text: str) -> Flags:
    """`--flag VALUE ... [default: 0.1]` (click, typer), `(default: 0.1)` (argparse with
    ArgumentDefaultsHelpFormatter, absl): each option with the default stated in its entry."""
    flags, entries, current = Flags("help text"), [], None
    for line in text.splitlines():
        match = _OPTION.match(line)
        if match:
            current = [match.group(1), line]
            entries.append(current)
        elif current is not None and line.strip():
            current[1] += " " + line.strip()
        else:
            current = None
    for spelling, entry in entries:
        if spelling in ("--help", "--version", "--install-completion", "--show-completion"):
            continue
        default = _DEFAULT.search(entry)
        name = spelling[2:].replace("-", "_")
        flag = Flag(name, spelling, _literal(default.group(1)) if default else None)
        if re.search(re.escape(spelling) + r"\s*/\s*--", entry):
            flag.note = "an on/off switch (--x / --no-x): add it to the command by hand"
        elif default is None:
            flag.note = "no default stated in --help"
        elif not _usable(name):
            flag.note = "its name is not an identifier"
        _classify(flags, flag)
    return flags


def _from_settings(script: Path) -> Flags:
    """Module-level `name = literal` assignments, before the first statement that is neither an
    assignment, an import nor a docstring (nanoGPT's settings block)."""
    flags = Flags("module settings")
    try:
        tree = ast.parse(script.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return flags
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            continue
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            break
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            continue
        name = node.targets[0].id
        if isinstance(value, (bool, int, float, str)) and not name.startswith("_") and _usable(name):
            _classify(flags, Flag(name, f"--{name}", value))
    return flags


def _usable(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _literal(text: str) -> Any:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {"True": True, "False": False, "true": True, "false": False}.get(text, text)
    return value if isinstance(value, (bool, int, float, str)) else text


# --------------------------------------------------------------------------- the metric's pattern
def guess_pattern(line: str) -> tuple[str, str, str]:
    """(pattern, metric, goal) read off one line the script prints: each number a named group,
    named by the (last two) words before it; the metric the one named like a validation loss or
    score, else a loss, else the last that is not a step or an epoch."""
    pieces, names, last = [], [], 0
    for match in re.finditer(NUMBER, line):
        before = line[last:match.start()]
        name = "_".join(w.lower() for w in re.findall(r"[A-Za-z]+", before)[-2:])
        if name.endswith("epoch") and "epoch" not in names:
            name = "epoch"  # "| end of epoch 1 |"
        if not _usable(name):
            name = f"value{len(names) + 1}"
        while name in names:
            name += "_2"
        names.append(name)
        counter = name in ("step", "epoch", "iter", "iteration") and re.fullmatch(r"[-+]?\d+", match.group())
        pieces += [_literal_text(before), f"(?P<{name}>{INTEGER if counter else NUMBER})"]
        last = match.end()
    if not names:
        raise ScaffoldError(f"--line {line!r}: no number in it to read a metric from")
    pattern = "".join(pieces)
    if re.search(pattern, line) is None:  # built from the line itself: a bug if so, said plainly
        raise ScaffoldError(f"--line {line!r}: the guessed pattern does not match it; write metric.pattern by hand")
    metric = _pick_metric(names)
    goal = "maximize" if re.search(r"acc|f1|bleu|score|auc|reward", metric) else "minimize"
    return pattern, metric, goal


def _pick_metric(names: list[str]) -> str:
    held_out, quality = {"val", "valid", "validation", "eval", "dev", "test"}, {"loss", "ppl", "perplexity", "acc", "accuracy"}
    for wanted in (lambda w: w & held_out and w & quality, lambda w: "loss" in w):
        hits = [n for n in names if wanted(set(n.split("_")))]
        if hits:
            return hits[0]
    rest = [n for n in names if n not in ("step", "epoch", "iter", "iteration")]
    return (rest or names)[-1]


def _literal_text(text: str) -> str:
    """Literal text of a line as a pattern: escaped, any run of spaces as one or more."""
    return r"\s+".join(re.escape(part) for part in re.split(r"\s+", text))


# --------------------------------------------------------------------------- the matrix
def starting_matrix(script: Path, matrix: Path, flags: Flags, line: str | None = None) -> str:
    """The matrix YAML: the script's flags as params (their defaults are the baseline), a seed and
    a run directory where it takes them, the metric (from --line) and example toggles."""
    name = re.sub(r"[^\w-]+", "-", script.stem).strip("-") or "my-script"
    rel = os.path.relpath(script, matrix.parent)
    words = ["{python}", rel]
    if flags.source == "module settings":
        words.append("{args}")
    else:
        words += [f"{f.spelling}={{{f.name}}}" for f in flags.params]
    if flags.seed:
        words.append(f"{flags.seed.spelling}={{seed}}")
    if flags.run_dir:
        words.append(f"{flags.run_dir.spelling}={{run_dir}}")
    params = {f.name: f.default for f in flags.params}
    toggles = _example_toggles(flags.params)
    if not toggles:
        raise ScaffoldError(f"{script}: none of its flags ({', '.join(params) or 'none'}) has a numeric or "
                            f"true/false default to make an example toggle of; write toggles by hand")
    out = [f"# Written by `ablate init {rel}` from its flags ({flags.source}): every default below is the",
           "# baseline. Check the metric and min_effect, replace the example toggles, then",
           f"#   ablate plan {matrix.name}    # the command line of each configuration",
           f"name: {name}",
           "trainer:",
           f"  command: {_quote(' '.join(words))}"]
    out += [f"params: {json.dumps(params)}"]
    if line:
        pattern, metric, goal = guess_pattern(line)
        out += ["metric:", f"  name: {metric}", f"  goal: {goal}",
                f"  pattern: {_quote(pattern)}  # read off: {line.strip()[:200]}"]
    else:
        out += ["metric: {name: val_loss, goal: minimize}  # from JSON lines {\"step\": N, \"val_loss\": X};",
                "#  else a pattern for the lines it prints: `ablate init SCRIPT --line '<one of them>'`"]
    out += ["min_effect: 0.01  # the smallest change in the metric that matters, in its units: set yours",
            "seeds: [0, 1, 2]" if flags.seed else
            "seeds: [0, 1, 2]  # no seed flag found: pass {seed} yourself (or trainer: {seed_env: true})",
            "design: one-at-a-time",
            "toggles:  # examples: each changes one flag; replace them with the changes you want to test"]
    out += [f"  - name: {t}\n    patch: {json.dumps(patch)}" for t, patch in toggles]
    for f in flags.left_out:
        out.append(f"# not a param: {f.spelling} ({f.note})")
    return "\n".join(out) + "\n"


def write_starting_matrix(script: Path, path: Path, line: str | None = None, force: bool = False) -> str:
    """`ablate init`: read the script's flags, write the matrix at `path` (an existing file only
    with `force`), and say in a few words what was found."""
    if not script.is_file() or script.suffix != ".py":
        raise ScaffoldError(f"{script}: expected a Python script (.py) that exists")
    if path.exists() and not force:
        raise ScaffoldError(f"{path} exists; pass --force to replace it, or --out another file")
    flags = read_flags(script.resolve())
    text = starting_matrix(script.resolve(), path.resolve(), flags, line)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text)
    os.replace(temporary, path)  # whole or not at all; a link at `path` is replaced, not followed
    return (f"{len(flags.params)} params from its {flags.source}"
            + (f", seed {flags.seed.spelling}" if flags.seed else ", no seed flag")
            + (f", run directory {flags.run_dir.spelling}" if flags.run_dir else ""))


def _example_toggles(params: list[Flag]) -> list[tuple[str, dict]]:
    """Up to MAX_TOGGLES: a non-zero float doubled, then an int doubled, then a boolean flipped."""
    floats = [f for f in params if isinstance(f.default, float) and f.default != 0]
    ints = [f for f in params if isinstance(f.default, int) and not isinstance(f.default, bool) and f.default > 0]
    bools = [f for f in params if isinstance(f.default, bool)]
    chosen = [(f"{f.name}_x2", {f.name: f.default * 2}) for f in floats + ints]
    chosen += [(f"{f.name}_{str(not f.default).lower()}", {f.name: not f.default}) for f in bools]
    return chosen[:MAX_TOGGLES]


def _quote(text: str) -> str:
    """A YAML single-quoted scalar: no escapes inside but '' for '."""
    return "'" + text.replace("'", "''") + "'"
