"""Hostile and broken matrices: each is accepted or rejected with a MatrixError naming the file,
never another exception, and a rejected one never touches the database.

Checkpoints loading with weights_only=True is tested in test_resume.py, and a database of a
newer schema being refused untouched in test_store.py; not repeated here.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from ablate.execution.matrix import NAME_PATTERN, MatrixError, load_matrix, parse_matrix
from ablate.execution.runner import plan, register
from ablate.storage.store import Store
from ablate.training.datasource import DataError

VALID = {
    "name": "fuzz", "description": "a valid matrix to mutate", "design": "one-at-a-time",
    "base": {"preset": "mainrun", "overrides": {"epochs": 1, "d_model": 64}},
    "seeds": [1, 2], "reference": 1.75, "max_runs": 50,
    "execution": {"devices": "cpu", "jobs_per_device": 1},
    "toggles": ["sdpa", {"name": "nodrop", "patch": {"dropout": 0.0}, "description": "x"},
                {"lr": [0.001, 0.002]}],
}
VALID_LIST = dict(VALID, design="list", runs=[{"name": "a", "toggles": ["sdpa"]},
                                              {"name": "b", "toggles": ["nodrop", "lr=0.001"]}])

HOSTILE_TEXT = ["../../etc", "..", "/etc/passwd", "a/b", "", " ", "\x00", "\ud800", "é✓🙂", "x" * 300,
                "1e-4", "!!python/object/apply:os.system", "${HOME}", "NaN", "sdpa", "baseline"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.just(10**400), st.just(-(2**63) - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(HOSTILE_TEXT), st.text(max_size=20),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner,
                                                  max_size=4)), max_leaves=12)

# text-level injections: YAML tags that construct objects, alias bombs, deep nesting, garbage
def bomb(levels: int) -> str:
    """Aliases that expand to 9**levels values ("billion laughs"), all inside `toggles`."""
    return "toggles:\n  - &l0 [a, a, a, a, a, a, a, a, a]\n" + "".join(
        f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, levels + 1))



INJECTIONS = [
    "x: !!python/object/apply:os.system ['touch PWNED']\n",
    "description: !!python/object/new:os.system ['touch PWNED']\n",
    "description: !!python/name:os.system\n",
    "toggles: [!!python/object/apply:subprocess.check_output [['touch', 'PWNED']]]\n",
    bomb(6),
    "base: {overrides: {lr: &x [*x]}}\n",
    "toggles: &a [*a]\n",
    "toggles: " + "[" * 3000 + "]" * 3000 + "\n",
    "base: " + "{a: " * 200 + "1" + "}" * 200 + "\n",
    'description: "\\ud800"\n',
    "description: !!binary aGVsbG8=\n",
    "seeds: !!set {1, 2}\n",
    "reference: !!timestamp 2001-12-14\n",
    "name: !!str\n",
    "\t\x00garbage: [\n",
    "%YAML 9.9\n---\n",
    "--- !<tag:yaml.org,2002:python/object:os.system>\n",
    "toggles: [{lr: [1.0e+400, -1.0e+400, .nan]}]\n",
    "seeds: [18446744073709551616]\n",
    "max_runs: 100000000000000000000000000000\n",
]


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def _mutate(doc, path, how, value):
    doc = copy.deepcopy(doc)
    if not path:
        return value if how == "replace" else doc
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if how == "drop":
        del parent[last]
    elif how == "rename" and isinstance(parent, dict):
        parent[f"{last}x" if isinstance(value, (int, float)) or not value else str(value)[:20]] = parent.pop(last)
    elif how == "wrap":
        parent[last] = [parent[last]]
    elif how == "same-type":  # a value of the same type: weird but often still valid
        old = parent[last]
        parent[last] = next((v for v in value if type(v) is type(old)), old)
    elif how == "nest":
        parent[last] = {"deep": {"deeper": parent[last]}}
    else:
        parent[last] = value
    return doc


@st.composite
def mutated_matrices(draw) -> str:
    doc = draw(st.sampled_from([VALID, VALID_LIST]))
    for _ in range(draw(st.integers(1, 2))):
        paths = list(_paths(doc))
        how = draw(st.sampled_from(["drop", "rename", "replace", "wrap", "nest", "same-type",
                                    "same-type", "same-type"]))
        value = draw(st.lists(scalars, min_size=4, max_size=12) if how == "same-type" else values)
        doc = _mutate(doc, draw(st.sampled_from(paths)), how, value)
    try:
        text = yaml.safe_dump(doc, allow_unicode=draw(st.booleans()), sort_keys=False)
    except (yaml.YAMLError, UnicodeError):
        text = repr(doc)
    if draw(st.integers(0, 2)) == 0:  # text-level damage on top; at the end a key wins
        lines = text.splitlines(keepends=True)
        at = draw(st.one_of(st.just(len(lines)), st.integers(0, len(lines))))
        lines.insert(at, draw(st.sampled_from(INJECTIONS)))
        text = "".join(lines)
        if draw(st.booleans()):
            text = text[:draw(st.integers(0, len(text)))]
    return text


def with_every_injection(test):
    """Each injection appended to a valid matrix (a later key wins), as explicit examples."""
    for injection in INJECTIONS:
        test = example(text=yaml.safe_dump(VALID, sort_keys=False) + injection)(test)
    return test


@pytest.fixture(scope="module")
def store():
    with Store("sqlite://") as s:  # in memory: accepted matrices must be storable
        yield s


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=st.one_of(mutated_matrices(), st.text(max_size=200)))
@with_every_injection
@example(text=yaml.safe_dump(dict(VALID, execution={"devices": [[]]})))  # found: unhashable in a validator
@example(text="name: t\ndesign: one-at-a-time\ntoggles: [sdpa]\nreference: !!timestamp\n")  # PyYAML's own bug
@example(text=yaml.safe_dump(dict(VALID, toggles=[{"lr": [10 ** 400, 0.002]}])))  # found: float overflow
def test_any_matrix_is_accepted_or_a_matrix_error_naming_the_file(text, tmp_path, store):
    path = tmp_path / "fuzzed.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        matrix = load_matrix(path)
    except MatrixError as e:
        assert e.problems and all(p.startswith(f"{path}: ") for p in e.problems), e.problems
        assert len(str(e)) < 20_000  # an alias bomb must not become a gigabyte message
        event("rejected")
        return
    assert not (tmp_path / "PWNED").exists()
    # accepted: its names are safe in file names, and every run can be planned and stored
    assert re.fullmatch(NAME_PATTERN, matrix.name) and Path(matrix.name).name == matrix.name
    assert matrix.name not in (".", "..")
    try:
        rows = plan(matrix)
    except DataError as e:  # a mutated local data path: the runner turns this into exit 2
        assert "data file" in str(e)
        return
    assert 0 < len(rows) <= matrix.max_runs
    assert all(re.fullmatch(r"[0-9a-f]{16}", r.hash) for r in rows)  # checkpoint dir names
    ids = register(store, matrix, rows)
    assert len(ids) == len(rows)
    event("accepted and stored")


@pytest.mark.parametrize("body", [
    "name: ../../etc\ndesign: one-at-a-time\ntoggles: [sdpa]\n",
    "name: ..\ndesign: one-at-a-time\ntoggles: [sdpa]\n",
    "name: a/b\ndesign: one-at-a-time\ntoggles: [sdpa]\n",
    "name: ok\ndesign: one-at-a-time\ntoggles: [{name: ../x, patch: {dropout: 0.0}}]\n",
])
def test_names_that_could_escape_the_output_directory_are_rejected(body):
    with pytest.raises(MatrixError, match=r"^m\.yaml: (name|toggles\[0\]\.name): expected 1-64 letters"):
        parse_matrix(body, "m.yaml")


HOSTILE_FILES = {
    "tag": "name: t\ndesign: one-at-a-time\ntoggles: !!python/object/apply:os.system ['touch PWNED']\n",
    "escape": "name: ../../etc\ndesign: one-at-a-time\ntoggles: [sdpa]\n",
    "bomb": "name: b\ndesign: one-at-a-time\n" + bomb(9),  # 387 million values
    "deep": "name: d\ndesign: one-at-a-time\ntoggles: " + "[" * 3000 + "]" * 3000 + "\n",
    "surrogate": 'name: s\ndesign: one-at-a-time\ndescription: "\\ud800"\ntoggles: [sdpa]\n',
    "seed": "name: s\ndesign: one-at-a-time\nseeds: [18446744073709551616]\ntoggles: [sdpa]\n",
}


def test_cli_rejects_hostile_matrices_in_one_line_without_creating_the_database(tmp_path):
    procs = {}
    for name, body in HOSTILE_FILES.items():
        (tmp_path / f"{name}.yaml").write_text(body)
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "ablate", "run", f"{name}.yaml", "--db", f"sqlite:///{tmp_path}/{name}.db"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, out, err)
        assert err.startswith(f"error: {name}.yaml: ") and "Traceback" not in err, (name, err)
        assert len(err) < 2000, (name, err[:500])
        assert not (tmp_path / f"{name}.db").exists(), name
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "ablate-logs").exists()


# ---------------------------------------------------- markup-like text through every output path

MARKUP_TEXT = st.one_of(
    st.sampled_from(["[/x]", "[bold]b", "[red]r[/red]", "[link=x]y", "[[z]]", "\\[q", "[/]", "[#fff]c"]),
    st.text(alphabet="[]/\\=#:ab", min_size=1, max_size=10)).filter(lambda t: t.strip() == t and t)


@settings(max_examples=15, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(names=st.lists(MARKUP_TEXT, min_size=1, max_size=4, unique=True))
@example(names=[":a:"])  # found: rich's emoji codes turned a name into 🅰
def test_markup_like_names_are_printed_as_text_by_every_command(names, tmp_path_factory):
    """Run names are user text: plan, run's progress, report, runs, show and the error line
    print them as they are, never as rich markup (which raised MarkupError or ate them)."""
    import json

    from rich.console import Console
    from typer.testing import CliRunner

    from ablate.cli import app
    from ablate.execution.job import Job
    from ablate.execution.progress import LiveProgress

    tmp = tmp_path_factory.mktemp("markup")
    runs = "".join(f"  - {{name: {json.dumps(n)}, toggles: [{f'lr=0.0{i}' if i else ''}]}}\n"
                   for i, n in enumerate(names))
    matrix = tmp / "m.yaml"
    matrix.write_text("name: markup\ndesign: list\nbase: {overrides: {epochs: 1}}\ndata: t.csv\n"
                      f"toggles: [{{lr: [{', '.join(f'0.0{i}' for i in range(1, 5))}]}}]\nruns:\n{runs}")
    (tmp / "t.csv").write_text("title\n" + "hello world\n" * 1000)
    db = ["--db", f"sqlite:///{tmp}/r.db"]
    cli = CliRunner()
    with Store(f"sqlite:///{tmp}/r.db") as s:
        ids = register(s, load_matrix(matrix), plan(load_matrix(matrix)))
        s.fail(ids[0], 0, f"RuntimeError: {names[0]}")  # an error text too
        out = Console(file=__import__("io").StringIO(), markup=False, width=200)
        with LiveProgress(s, len(ids), 0, out) as progress:
            for run_id, name in zip(ids, names):
                job = Job(run_id, 0, name, "", "", {})
                progress("start", {"job": job})
                progress("end", {"job": job, "run": s.run(run_id)})
        assert all(re.search(rf" {re.escape(n)} +val_loss", out.file.getvalue()) for n in names), out.file.getvalue()
    for args in (["plan", str(matrix)], ["runs"], ["report", str(matrix)], ["report", "-f", "markdown"]):
        result = cli.invoke(app, [*args, *db])
        assert result.exit_code == 0, (args, result.output, result.exception)
        for name in names:
            assert name in result.output.replace("\\|", "|"), (args, name, result.output)
    shown = cli.invoke(app, ["show", names[-1], *db])
    assert shown.exit_code == 0 and shown.output.startswith(f"{names[-1]} (run "), shown.output
    missing = cli.invoke(app, ["show", names[0] + "nope", *db])
    assert missing.exit_code == 2 and repr(names[0] + "nope") in missing.output, missing.output
