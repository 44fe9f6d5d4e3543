"""A run of your own trainer: a matrix's `params` (the baseline, each value's type fixed by it),
the seed, the trainer that runs them and the files it reads.

A command's placeholders: `{param}` and `{seed}` each fill one word; `{args}` (a word of its
own) expands to every parameter as the script's own flags, one argv word per piece of the
`trainer.args` template (default `--{name}={value}`; true/false parameters as `trainer.flag`,
e.g. `--{name}`, when given); `{python}` is the interpreter running ablate; `{run_dir}` a fresh
directory for this run and attempt. A literal brace is `{{` or `}}`.

`ParamsConfig` stands where Mainrun's `TrainConfig` stands in a matrix (designs patch it, the
runner hashes and stores it), so everything above the trainer works unchanged. Its identity is
the trainer (command or entry point), the parameters, the seed and a content hash of the
`inputs` the matrix names; where they sit on disk (`workdir`) and the timeout are how it runs,
not what it measures, and stay out of the hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import re
import shlex
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError, suggest

# Stored config keys beside the parameters: a parameter may not take one of these names.
RESERVED = ("seed", "trainer", "args", "python", "run_dir")
KINDS = ("command", "entry")
SKIPPED = ("__pycache__", ".git", "ablate-logs", "ablate-checkpoints")  # never part of an input directory
OWN_OUTPUTS = re.compile(r".*(\.db|\.db-wal|\.db-shm|\.db-journal|\.db\.bak-v\d+|\.partial|\.log)")  # ablate's files
OUTPUT_MARKER = ".ablate-output"  # in every log directory ablate makes, whatever --log-dir names it
SQLITE_HEADER = b"SQLite format 3\x00"  # a database under any name (`--db r.sqlite`)
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
DEFAULT_SEED = 0
DEFAULT_ARGS = "--{name}={value}"  # how {args} spells each parameter
DEFAULT_MAX_EVALS = 10_000  # a trainer that reports more is chatty or runaway: the rest (but its last) is not stored
CUSTOM_TRAINER = "ablate.training.command:train"  # what a job calls to run your trainer


def is_custom(config: dict) -> bool:
    """Whether a stored config is one of your own trainer's (Mainrun's has no `trainer` key)."""
    return isinstance(config.get("trainer"), dict)


def check_value(name: str, value: Any, like: Any = None) -> Any:
    """A parameter value as stored: a number, text or true/false, of the baseline's type when
    `like` is given (an int where the baseline has a float is widened, as in TrainConfig)."""
    if not isinstance(value, (bool, int, float, str)):
        raise ConfigError(f"{name}: expected a number, text or true/false, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):  # JSON, where configs are kept, has neither
        raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    if like is None:
        return value
    if isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(like):
        raise ConfigError(f"{name}: expected {type(like).__name__} like the baseline's {like!r}, got {value!r}")
    return value


@dataclass(frozen=True)
class ParamsConfig:
    kind: str  # "command" or "entry"
    spec: str  # the command line template, or module:function
    params: tuple[tuple[str, Any], ...]  # the parameters in declaration order (hashable)
    seed: int = DEFAULT_SEED
    workdir: str = "."  # where the command runs and the entry module is imported from
    inputs: tuple[str, ...] = ()  # files and directories under workdir whose content is identity
    timeout_s: float | None = None  # a run longer than this fails
    metric: str = "val_loss"  # what every run must report
    max_evals: int = DEFAULT_MAX_EVALS  # evaluations stored per run
    pattern: str | tuple[str, ...] | None = None  # regular expressions reading evaluations from stdout (else JSON lines)
    args: str = DEFAULT_ARGS  # how {args} spells each parameter
    flag: str | None = None  # how {args} spells a true boolean (a false one: not at all); None: as args
    seed_env: bool = False  # the script reads ABLATE_SEED: a command without {seed} still gets its seed

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"trainer: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed: expected int, got {self.seed!r}")

    def __getattr__(self, name: str) -> Any:
        """A parameter by name, as a TrainConfig field is read (`getattr(config, 'lr')`)."""
        for key, value in self.__dict__.get("params", ()):
            if key == name:
                return value
        raise AttributeError(name)

    @property
    def fields(self) -> list[str]:
        return [name for name, _ in self.params]

    def values(self) -> dict[str, Any]:
        """The parameters and the seed: what the trainer is given."""
        return {**dict(self.params), "seed": self.seed}

    def replace(self, **changes: Any) -> "ParamsConfig":
        params = dict(self.params)
        seed = changes.pop("seed", self.seed)
        errors = []
        for name, value in changes.items():
            if name not in params:
                errors.append(f"{name}: unknown parameter{suggest(name, params)}; expected one of "
                              f"{', '.join(params)}")
                continue
            try:
                params[name] = check_value(name, value, params[name])
            except ConfigError as e:
                errors.append(str(e))
        if errors:
            raise ConfigError("; ".join(errors))
        return dataclasses.replace(self, params=tuple(params.items()), seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """The stored form: the parameters, the seed, and how to run them under `trainer`."""
        return {**self.values(), "trainer": {
            self.kind: self.spec, "workdir": self.workdir, "inputs": list(self.inputs),
            "timeout_s": self.timeout_s, "metric": self.metric, "max_evals": self.max_evals,
            "pattern": list(self.pattern) if isinstance(self.pattern, tuple) else self.pattern, "args": self.args, "flag": self.flag, "seed_env": self.seed_env}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ParamsConfig":
        how = d["trainer"]
        kind = next((k for k in KINDS if k in how), "")
        params = tuple((k, v) for k, v in d.items() if k not in RESERVED)
        return cls(kind, how.get(kind, ""), params, d.get("seed", DEFAULT_SEED), how.get("workdir", "."),
                   tuple(how.get("inputs", ())), how.get("timeout_s"), how.get("metric", "val_loss"),
                   how.get("max_evals", DEFAULT_MAX_EVALS), _hashable(how.get("pattern")), how.get("args", DEFAULT_ARGS),
                   how.get("flag"), bool(how.get("seed_env", False)))

    def by_hand(self) -> str:
        """A POSIX shell line that runs this one run by hand, in `workdir`, as pasted: the command
        in a fresh run directory with the environment a job gives it (ABLATE_SEED,
        ABLATE_RUN_DIR), or the entry point called with `ablate.report_eval` as its report."""
        if self.kind == "command":
            return (f'RUN_DIR="$(mktemp -d)" && ABLATE_SEED={shlex.quote(str(self.seed))} '
                    f'ABLATE_RUN_DIR="$RUN_DIR" {self.shell_command()}')
        module, _, function = self.spec.partition(":")
        return shlex.join(["python", "-c", f"import ablate, {module}; {module}.{function}({self.values()!r}, ablate.report_eval)"])

    def shell_command(self) -> str:
        """The command as a shell line, its {run_dir} left as "$RUN_DIR" (a command trainer)."""
        return " ".join(_with_run_dir(w) for w in self.command(_RUN_DIR_MARK))

    def command(self, run_dir: str) -> list[str]:
        """The command's words for this run, every placeholder filled in."""
        return command_words(self.spec, self.values(), self.args, self.flag, run_dir)

    def fingerprint(self) -> str:
        """The content of the inputs, as one hash (paths relative to workdir, in order). A
        directory's files, but for ablate's own outputs (databases, logs, run directories):
        they change as the matrix runs, and `inputs: ["."]` must not change with them."""
        digest = hashlib.sha256()
        for name in self.inputs:
            path = Path(self.workdir) / name
            if not path.exists():
                raise FileNotFoundError(f"input {name!r} does not exist (in {self.workdir})")
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if _an_input(p, path))
            for file in files:
                digest.update(file.relative_to(self.workdir).as_posix().encode() + b"\0")
                digest.update(hashlib.sha256(file.read_bytes()).digest())
        return digest.hexdigest()

    def identity_hash(self, fingerprint: str) -> str:
        """Trainer, parameters, seed and the inputs' content: two runs alike in these are one."""
        how = {self.kind: self.spec}
        if "{args}" in self.spec:  # how the parameters reach the script is part of what it runs
            how.update(args=self.args, flag=self.flag)
        d = {"trainer": how, "params": dict(self.params), "seed": self.seed, "inputs": fingerprint}
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _hashable(pattern: Any) -> Any:
    """metric.pattern as a config holds it: a list of patterns as a tuple."""
    return tuple(pattern) if isinstance(pattern, list) else pattern


_RUN_DIR_MARK = "\0run_dir\0"  # no command word can hold a NUL: where {run_dir} went


def _with_run_dir(word: str) -> str:
    """One command word quoted for the shell, {run_dir} in it left to the shell's "$RUN_DIR"."""
    return '"$RUN_DIR"'.join(shlex.quote(part) if part else "" for part in word.split(_RUN_DIR_MARK)) or "''"


def _an_input(file: Path, folder: Path) -> bool:
    """Whether a file under an input directory is part of the identity: not ablate's own output
    (a directory named as ablate's, or holding its marker; a database by name or by content,
    and its side files)."""
    if not file.is_file() or set(file.relative_to(folder).parts) & set(SKIPPED) or OWN_OUTPUTS.fullmatch(file.name):
        return False
    if any((folder / parent / OUTPUT_MARKER).exists() for parent in file.relative_to(folder).parents):
        return False
    for side in SQLITE_SIDE_FILES:
        if file.name.endswith(side) and _is_sqlite(file.with_name(file.name[:-len(side)])):
            return False
    return not _is_sqlite(file)


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def usable_name(name: str) -> bool:
    """A parameter name a command can spell as `{name}` and no name of ablate's own."""
    own = {f.name for f in dataclasses.fields(ParamsConfig)} | set(RESERVED)
    return bool(re.fullmatch(r"[A-Za-z_]\w*", name)) and name not in own and not hasattr(ParamsConfig, name)


def command_words(template: str, values: dict[str, Any], args: str = DEFAULT_ARGS, flag: str | None = None,
                  run_dir: str = "RUN_DIR") -> list[str]:
    """The command's words with every placeholder filled in, one word at a time (a value with a
    space in it stays one argument); `{args}`, a word of its own, is every parameter's words."""
    fill = {**values, "python": sys.executable, "run_dir": run_dir}
    words: list[str] = []
    for word in shlex.split(template):
        if word == "{args}":
            words += args_words(values, args, flag)
        elif "{args}" in word:
            raise ValueError(f"{{args}} must be a word of its own, not part of {word!r}")
        else:
            words.append(_fill(word, fill))
    return words


MAX_FORMAT_WIDTH = 100  # `{seed:>20000000}` in a merged template once made a 40 MB page


def _fill(word: str, fill: dict[str, Any]) -> str:
    """One word of the template filled in: each placeholder a bare name (`{seed}`, `{lr:.0e}`),
    never an attribute or an index, its width and precision at most MAX_FORMAT_WIDTH."""
    for _, field, spec, conversion in string.Formatter().parse(word):
        if field is None:
            continue
        if not re.fullmatch(r"[A-Za-z_]\w*", field) or conversion is not None:
            raise ValueError(f"{{{field}}}: a placeholder is a name such as {{seed}} (no attribute, index "
                             f"or conversion)")
        if "{" in (spec or "") or any(int(n) > MAX_FORMAT_WIDTH for n in re.findall(r"\d+", spec or "")):
            raise ValueError(f"{{{field}:{spec[:20]}}}: a format's width and precision are at most "
                             f"{MAX_FORMAT_WIDTH}")
    return word.format_map(fill)


def args_words(values: dict[str, Any], args: str = DEFAULT_ARGS, flag: str | None = None) -> list[str]:
    """Every parameter (not the seed) as the script's own flags: each piece of the `args`
    template one word; a true boolean as `flag` and a false one left out, where `flag` is given."""
    words: list[str] = []
    for name, value in values.items():
        if name == "seed":
            continue
        if isinstance(value, bool) and flag is not None:
            words += [piece.format(name=name) for piece in shlex.split(flag)] if value else []
        else:
            words += [piece.format(name=name, value=value) for piece in shlex.split(args)]
    return words


def custom_base(kind: str, text: str, params: dict[str, Any], inputs: list[str], workdir: Path,
                problems: list[str], **how: Any) -> ParamsConfig | None:
    """Your trainer's baseline from a matrix: `params` with their types, its inputs (each must
    exist under the matrix's directory) and a command whose placeholders name parameters, or an
    entry point whose module can be found. Each problem is a `<key path>: ...` line."""
    before = len(problems)
    checked: dict[str, Any] = {}
    for name, value in params.items():
        try:
            if not usable_name(str(name)):
                raise ConfigError(f"{name}: expected a name of letters, digits and '_' that is not one "
                                  f"of ablate's own (seed, trainer, replace, ...)")
            checked[name] = check_value(name, value)
            if isinstance(value, str) and re.fullmatch(r"[-+]?[\d.]+e[-+]?\d+", value, re.IGNORECASE):
                if math.isinf(float(value)):
                    raise ConfigError(f"{name}: {value} is beyond the largest number a float holds (about 1.8e308)")
                raise ConfigError(f"{name}: YAML reads {value} as text; write {float(value)!r} for a number")
        except ConfigError as e:
            problems.append(f"params.{e}")
            if usable_name(str(name)):  # still a parameter: the command's {name} is not a second problem
                checked[name] = ""
    for i, name in enumerate(inputs):
        if Path(name).is_absolute() or ".." in Path(name).parts or not (workdir / name).exists():
            problems.append(f"inputs[{i}]: {name!r}: expected a file or directory under the matrix's "
                            f"directory {str(workdir)!r}")
    base = ParamsConfig(kind, text, tuple(checked.items()), workdir=str(workdir),
                        inputs=tuple(inputs) or script_inputs(kind, text, workdir), **how)
    for key, template in (("args", base.args), ("flag", base.flag or "{name}")):
        try:
            args_words({"x": 1}, template) if key == "args" else [p.format(name="x") for p in shlex.split(template)]
        except (KeyError, ValueError, IndexError) as e:
            problems.append(f"trainer.{key}: {template!r}: expected a template of {{name}}"
                            f"{' and {value}' if key == 'args' else ''} ({type(e).__name__}: {e})")
    if kind == "command":
        try:
            base.command("RUN_DIR")
        except KeyError as e:
            problems.append(f"trainer.command: {{{e.args[0]}}} names no parameter; expected one of "
                            f"{', '.join('{' + k + '}' for k in [*base.values(), 'args', 'python', 'run_dir'])}")
        except (ValueError, IndexError) as e:
            problems.append(f"trainer.command: {e} (write a literal brace as {{{{ or }}}})")
    elif not module_found(text.partition(":")[0], workdir):
        problems.append(f"trainer.entry: no module {text.partition(':')[0]!r} in {str(workdir)!r} "
                        f"or on the Python path")
    return base if len(problems) == before else None


def script_inputs(kind: str, text: str, workdir: Path) -> tuple[str, ...]:
    """What a matrix with no `inputs` hashes into its runs' identity: the script its command runs
    (its first word ending in .py that is a file under the matrix's directory), or the entry
    point's module file there; editing it then trains again instead of reusing stale results."""
    if kind == "command":
        try:
            words = shlex.split(text)
        except ValueError:
            return ()
        candidates = [w for w in words if w.endswith(".py") and "{" not in w]
    else:
        spec = _find_spec(text.partition(":")[0], workdir)
        candidates = [spec.origin] if spec is not None and spec.origin else []
    for word in candidates:
        path = (workdir / word).resolve()
        if path.is_file() and path.is_relative_to(workdir.resolve()):
            return (path.relative_to(workdir.resolve()).as_posix(),)
    return ()


def module_found(module: str, workdir: Path) -> bool:
    """Whether `module` imports from `workdir` or the Python path (without importing it)."""
    return _find_spec(module, workdir) is not None


def _find_spec(module: str, workdir: Path) -> Any:
    sys.path.insert(0, str(workdir))
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    finally:
        sys.path.remove(str(workdir))
