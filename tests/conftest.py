"""Shared fixtures: the built-in HN titles, a per-session tokenizer cache, tiny configs."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import settings

# Two xdist workers and the jobs and commands they start share the cores: OpenMP threads that
# spin while they wait burn the other side's CPU (a 2-thread `ablate train` beside one busy
# process: 100 CPU-s spinning, 70 passive). What CPU jobs get from the executor; before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ablate.training.datasource import BUILTIN_HN, local_path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Property tests: in CI the same examples every time (derandomised, so CI never fails at
# random); locally a wider random exploration. HYPOTHESIS_PROFILE=ci reproduces CI's run.
settings.register_profile("ci", derandomize=True, max_examples=150, deadline=None, print_blob=True)
settings.register_profile("explore", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if IN_CI else "explore"))
# The titles of ../shared/data/hacker_news.csv, shipped in the package: a bare clone tests with them.
HN_CSV = Path(os.environ.get("ABLATE_TEST_DATA") or local_path(BUILTIN_HN))

# Small enough for a 2-core CPU: ~100 steps per epoch of a 1-layer d32 model.
TINY = dict(data=str(HN_CSV), num_titles=2000, vocab_size=500, d_model=32, n_layer=1, n_head=2,
            block_size=32, batch_size=8, epochs=1, evals_per_epoch=2)


# xdist's --dist loadfile hands whole files, in collection order, to whichever worker is free
# (pyproject turns off its default of sorting files by their number of tests, which put the few
# long tests of these files last, one worker running them while the other idled). The files
# that take longest (measured: BENCHMARKS.md section 9) start first; the many short ones fill the
# gaps at the end. A file not listed keeps its place after them.
LONGEST_FIRST = ("test_ray.py", "test_runner.py", "test_faults.py", "test_gpu_script.py", "test_trainer.py",
                 "test_switches.py", "test_results_doc.py", "test_missing_data.py", "test_hostile_round4.py",
                 "test_hostile_round4_values.py", "test_one_story.py", "test_until_decided.py", "test_readme.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's order kept


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tests never read or write the user's tokenizer cache or results.db."""
    os.environ["ABLATE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["ABLATE_DB"] = "sqlite:///" + str(tmp_path_factory.mktemp("db") / "results.db")


@pytest.fixture(scope="session")
def hn_csv() -> str:
    assert HN_CSV.is_file(), f"test data not found at {HN_CSV} (ABLATE_TEST_DATA)"
    return str(HN_CSV)


# ------------------------------------------------------------------ the smoke matrix, run once

SMOKE_MATRIX = REPO / "experiments" / "smoke.yaml"


@dataclass(frozen=True)
class SmokeRun:
    """`ablate run experiments/smoke.yaml` done once per session: where its results are and
    what the command printed. os.PathLike, so it can stand in for the database path."""

    db: Path  # the SQLite file
    url: str  # --db as passed
    cwd: Path  # where the command ran (a tmp dir)
    log_dir: Path
    cmd: list  # the exact command line, to run it again
    stdout: str
    stderr: str
    returncode: int

    def __fspath__(self) -> str:
        return str(self.db)


def once_per_session(tmp_path_factory, name: str, make: Callable[[Path], dict]) -> dict:
    """`make(folder)` done once per test session, however many xdist workers ask: the first
    makes it under a lock in the folder all workers share, the others read what it returned.
    For costly runs the tests only read (a second copy would cost a worker a minute)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    record = shared / f"{name}.json"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the worker dies
        if not record.exists():
            folder = shared / name
            shutil.rmtree(folder, ignore_errors=True)  # a worker that died making it
            folder.mkdir()
            made = make(folder)
            record.write_text(json.dumps(made))
        return json.loads(record.read_text())


@pytest.fixture(scope="session")
def smoke_db(hn_csv, tmp_path_factory) -> SmokeRun:
    """Run the smoke matrix once (about a minute on 2 quiet cores; timeout only a hang guard) into a fresh SQLite file, on the
    data it names (the built-in titles): what a bare clone runs."""
    def make(cwd: Path) -> dict:
        db = cwd / "smoke.db"
        url = f"sqlite:///{db}"
        cmd = [sys.executable, "-m", "ablate", "run", str(SMOKE_MATRIX), "--db", url,
               "--log-dir", str(cwd / "logs")]
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(SmokeRun(
            db, url, cwd, cwd / "logs", cmd, proc.stdout, proc.stderr, proc.returncode)).items()}

    made = once_per_session(tmp_path_factory, "smoke", make)
    if made["returncode"] != 0:
        pytest.fail(f"smoke run failed ({made['returncode']}):\n{made['stdout']}\n{made['stderr']}")
    return SmokeRun(**{**made, **{k: Path(made[k]) for k in ("db", "cwd", "log_dir")}})


# ------------------------------------------------ the example of your own trainer, run once

EXAMPLE = REPO / "examples" / "tiny-mlp"
EXISTING = REPO / "examples" / "existing-script"


@dataclass(frozen=True)
class ExampleRun:
    """`ablate run matrix.yaml` in a copy of an example (a command trainer), once per session
    (all workers share it): the copy, its database (the matrix's `db:`, beside it) and what the
    command said."""

    cwd: Path
    db: Path
    stdout: str
    returncode: int


def _run_example(tmp_path_factory, example: Path, db_name: str) -> ExampleRun:
    def make(folder: Path) -> dict:
        cwd = folder / example.name
        shutil.copytree(example, cwd, ignore=shutil.ignore_patterns("*.db", "__pycache__"))
        env = {k: v for k, v in os.environ.items() if k != "ABLATE_DB"}  # the matrix's db: applies
        proc = subprocess.run([sys.executable, "-m", "ablate", "run", "matrix.yaml", "--log-dir", "logs"],
                              cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        return {"cwd": str(cwd), "stdout": proc.stdout, "stderr": proc.stderr, "returncode": proc.returncode}

    made = once_per_session(tmp_path_factory, example.name, make)
    if made["returncode"] != 0:
        pytest.fail(f"the example failed ({made['returncode']}):\n{made['stdout']}\n{made['stderr']}")
    cwd = Path(made["cwd"])
    return ExampleRun(cwd, cwd / db_name, made["stdout"], made["returncode"])


@pytest.fixture(scope="session")
def example_run(tmp_path_factory) -> ExampleRun:
    """examples/tiny-mlp, a script written for ablate (JSON lines)."""
    return _run_example(tmp_path_factory, EXAMPLE, "tiny-mlp.db")


@pytest.fixture(scope="session")
def existing_run(tmp_path_factory) -> ExampleRun:
    """examples/existing-script, a script that knows nothing of ablate (issue 27)."""
    return _run_example(tmp_path_factory, EXISTING, "existing-script.db")


# ------------------------------------------------------------ PostgreSQL variants of DB tests


def _pg_unavailable(reason: str) -> None:
    """Outside CI a PostgreSQL variant is skipped, visibly; in CI (CI=true) it fails."""
    if IN_CI:
        pytest.fail(f"CI=true but the PostgreSQL variants cannot run: {reason}. .ci/run starts "
                    "a server and sets ABLATE_TEST_PG_URL", pytrace=False)
    pytest.skip(f"PostgreSQL variant not run: {reason} (to run it: source .ci/postgres.sh && "
                "pg_start, or set ABLATE_TEST_PG_URL=postgresql+psycopg://USER@HOST:PORT/DB)")


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """$ABLATE_TEST_PG_URL: a PostgreSQL database the tests may create schemas in."""
    url = os.environ.get("ABLATE_TEST_PG_URL")
    if not url:
        _pg_unavailable("ABLATE_TEST_PG_URL is not set")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _pg_unavailable("psycopg is not installed (pip install 'ablate[postgres]')")
    return url


@pytest.fixture
def pg_url(pg_server_url):
    """A URL of a fresh, empty schema on the test server (search_path set in the URL, so every
    process given the URL, `ablate run` and its jobs included, sees only it); dropped after."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(pg_server_url)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(pg_server_url).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def record_linear_dtypes(monkeypatch) -> list:
    """(training?, output dtype) of every nn.Linear call in models the trainer builds from now
    on: which arithmetic the training and the evaluation ran in."""
    import torch.nn as nn

    import ablate.training.train as T
    from ablate.training.model import GPT

    seen: list = []

    def hooked_gpt(cfg, vocab_size):
        model = GPT(cfg, vocab_size)
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.register_forward_hook(lambda mod, i, o: seen.append((mod.training, o.dtype)))
        return model
    monkeypatch.setattr(T, "GPT", hooked_gpt)
    return seen
