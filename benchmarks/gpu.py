#!/usr/bin/env python
"""Everything that needs a GPU, in one command that fits a short GPU lease.

    python benchmarks/gpu.py OUT_DIR [--budget 540] [--stages env,tests,...] [--data DIR]
    python benchmarks/gpu.py OUT_DIR --dry-run      # the same stages on CPU, tiny, ~2 minutes

A GPU is lent rarely and briefly, so this runs as stages, each in its own process and
time-boxed (a slow stage cannot starve the rest), each writing OUT_DIR/<stage>.json the moment
it ends (a later failure loses nothing). A stage's box starts once its process has imported
torch and ablate (up to IMPORT_LIMIT_S, recorded as import_s): a slow import on a loaded
machine delays a stage instead of eating its box. The budget still bounds the whole call.

  env      GPU, driver, CUDA, torch; peak matmul TFLOP/s measured (bf16, tf32, fp32)
  tests    the CUDA test subset: `pytest -m cuda tests/test_cuda.py`, outcome per test
  speed    the Mainrun baseline at full size: step time, tokens/s, MFU, projected 7-epoch
           time, for baseline, sdpa, bf16, bf16+sdpa, adamw (fused), tf32
  cost     `experiments/report-cpu-cost.yaml` at the Mainrun model's size (one epoch of 50,000
           titles), timed exclusively through `ablate run`: sdpa, mixed_precision (fp16 +
           GradScaler on CUDA) and grad_accum each get their speed and memory verdicts, seed
           by seed, into OUT_DIR/cost.db; the report's effects go into cost.json
  compile  the same rows under torch.compile (slow to build, so boxed apart)
  packing  8 full-size runs (one epoch of 50,000 titles: 70 steps) through `ablate run` at
           jobs_per_device 1, 2, 4, 8: wall time and summed tokens/s, to choose the default
  answer   `experiments/report.yaml` at Mainrun scale (100,000 titles, 7 epochs) with
           whatever time is left, baseline and the largest CPU-proxy effects first, into
           OUT_DIR/results.db (a consistent snapshot after every finished run)

Run it again with the same OUT_DIR and it skips the stages that finished and continues the
answer from OUT_DIR/results.db (interrupted runs start over; completed ones never do).
OUT_DIR/stages.json lists every stage's status and seconds. `--dry-run` exists so that this
script is tested in CI (tests/test_gpu_script.py) and cannot rot before the next GPU comes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIG_CSV = "hn_stories_2016_2020.csv"
SMALL_CSV = "hacker_news.csv"
STAGES = ("env", "tests", "speed", "cost", "compile", "packing", "answer")
# Shares of the budget; the answer takes what is left (>= 22 %). The first H200 lease needed
# 103 s for the tests and > 65 s for the first compiled row; packing (answered there) is last.
# cost: 12 runs of ~10 s each (a 70-step run took 6.6 s there, plus its process start).
SHARE = {"env": 0.04, "tests": 0.22, "speed": 0.10, "cost": 0.22, "compile": 0.12, "packing": 0.08}
# CPU, 2 cores: maxima, ~3x what each took with another process busy on both cores (2026-12-07:
# 9, 21, 14, 21, 50 s), so a slower machine still reaches the answer; quiet, the dry run takes ~2 min.
DRY_BOX_S = {"env": 60, "tests": 90, "speed": 60, "cost": 120, "compile": 90, "packing": 180}
DRY_ANSWER_S = 300  # the dry answer's three tiny runs end long before this; it only bounds a hang
IMPORT_LIMIT_S = 180  # a stage still importing after this is stuck, not slow: it is killed
GRACE_S = 20  # a stage's process is killed this long after its box ends
STOP_S = 10  # a stage's own child gets SIGINT (runs record themselves interrupted), then SIGKILL
SPEED_ROWS = ("baseline", "sdpa", "bf16", "bf16+sdpa", "adamw", "tf32")  # benchmarks/run.py's switches
COMPILE_ROWS = ("baseline", "compile", "compile+bf16+sdpa")
PACKING_JOBS = (8, 4, 2, 1)  # the quick settings first: a cut box loses the slowest one
DRY_PACKING_JOBS = (2, 1)
MAINRUN_STEPS = 980  # 7 epochs x 140 steps: 100,000 titles of the offline stories file
TINY_OVERRIDES = {"num_titles": 1000, "vocab_size": 300, "d_model": 16, "n_layer": 1,
                  "n_head": 2, "block_size": 16, "batch_size": 8, "epochs": 1,
                  "evals_per_epoch": 1}


# --------------------------------------------------------------------------- stages
def stage_env(args, out: Path, deadline: float) -> dict:
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from run import bench_peak, machine  # noqa: E402 - benchmarks/run.py, beside this file

    import ablate.cli, ablate.execution.job, ablate.storage.store, datasets, pydantic, sqlalchemy  # noqa: F401, E401
    # ^ every later stage needs these: a machine that lacks one fails here, in seconds

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = {"machine": machine(device), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1),
                    nvidia_smi=_command(["nvidia-smi", "--query-gpu=name,driver_version,"
                                         "memory.total,clocks.max.sm", "--format=csv"]))
    info["peak"] = bench_peak(device, quick=args.dry_run)
    return info


def stage_tests(args, out: Path, deadline: float) -> dict:
    xml = args.work / "cuda-tests.xml"
    env = {**os.environ, "ABLATE_TEST_DATA": _small(args)}
    proc = _run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                 "-s", "tests/test_cuda.py", f"--junitxml={xml}"], deadline - STOP_S, env=env)
    tests = _junit(xml) if xml.exists() else []
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "skipped")}
    return {"returncode": proc["returncode"], **counts, "tests": tests, "tail": proc["tail"]}


def stage_speed(args, out: Path, deadline: float, compile: bool = False) -> dict:
    rows = list(COMPILE_ROWS if compile else SPEED_ROWS)
    if args.dry_run:  # the path, not the rows: the baseline and the row that combines the others
        rows = [rows[0], rows[-1] if compile else "bf16+sdpa"]
    backend = ["--compile-backend", "aot_eager"] if args.dry_run else []  # no C++ builds
    model, steps, rounds = ("small", "3", "1") if args.dry_run else (
        "mainrun", "20", "1" if compile else "2")  # a compiled row costs a build per round
    result = args.work / f"{'compile' if compile else 'speed'}-bench.json"
    proc = _run([sys.executable, "benchmarks/run.py", "--only", "switches", "--model", model,
                 "--steps", steps, "--rounds", rounds, "--switches", *rows, *backend,
                 "--json", str(result)], deadline - STOP_S)
    if proc["returncode"] != 0 or not result.exists():
        raise StageError(f"benchmarks/run.py exited {proc['returncode']}", proc["tail"])
    return {"command": proc["command"], **json.loads(result.read_text())}


def stage_compile(args, out: Path, deadline: float) -> dict:
    return stage_speed(args, out, deadline, compile=True)


PACKING_MATRIX = """\
name: gpu-packing-{jobs}
description: packing benchmark (benchmarks/gpu.py), {runs} runs at jobs_per_device {jobs}
base:
  preset: mainrun
  overrides: {overrides}
seeds: [1337]
design: one-at-a-time
toggles:
  - lr: {lrs}
execution: {{jobs_per_device: {jobs}}}
"""


def stage_packing(args, out: Path, deadline: float) -> dict:
    """8 runs that differ only in lr (one prepared data set), at each jobs_per_device."""
    if args.dry_run:
        overrides, jobs_list, runs = dict(TINY_OVERRIDES), DRY_PACKING_JOBS, 2
    else:
        overrides, jobs_list, runs = {"num_titles": 50_000, "epochs": 1}, PACKING_JOBS, 8
    lrs = [round(6e-3 * (1 + 0.05 * i), 6) for i in range(1, runs)]
    data = _small(args) if args.dry_run else args.data / BIG_CSV
    _prepare_data({**overrides, "data": str(data)})  # once, outside the timed settings
    result: dict = {"runs_per_setting": runs, "overrides": overrides, "settings": {}}
    for jobs in jobs_list:
        matrix = args.work / f"packing-{jobs}.yaml"
        matrix.write_text(PACKING_MATRIX.format(jobs=jobs, runs=runs, lrs=json.dumps(lrs),
                                                overrides=json.dumps(overrides)))
        db = args.work / f"packing-{jobs}.db"
        db.unlink(missing_ok=True)
        t0 = time.perf_counter()
        proc = _run(_ablate_run(matrix, data, db, args.work / "logs"), deadline - STOP_S)
        wall = time.perf_counter() - t0
        rows = _query(db, "SELECT steps, tokens_per_s, wall_time_s, device, config FROM runs "
                          "WHERE status = 'completed'")
        steps = max((r[0] for r in rows), default=0)
        tokens = sum(r[0] * _tokens_per_step(json.loads(r[4])) for r in rows)
        result["settings"][str(jobs)] = {
            "wall_s": wall, "completed": len(rows), "returncode": proc["returncode"],
            "tokens_per_s_summed": tokens / wall, "run_tokens_per_s_mean":
            sum(r[1] for r in rows) / len(rows) if rows else None,
            "run_wall_s_mean": sum(r[2] for r in rows) / len(rows) if rows else None,
            "run_steps": steps,
            "device": rows[0][3] if rows else None, "tail": proc["tail"][-1500:]}
        _write(out, result)  # each setting is kept the moment it ends
        if proc["timed_out"]:
            break
    done = {int(j): s for j, s in result["settings"].items() if s["completed"] == runs}
    if done:
        result["best_jobs_per_device"] = min(done, key=lambda j: done[j]["wall_s"])
    return result


def stage_answer(args, out: Path, deadline: float) -> dict:
    """experiments/report.yaml into a work database, snapshotted into OUT_DIR/results.db after
    every finished run; stopped with Ctrl-C (SIGINT) before the deadline, as a user would."""
    work_db = args.work / f"answer-{os.getpid()}.db"  # never one an earlier call still holds
    snapshot = out.parent / "results.db"
    _continue(snapshot, work_db)
    matrix = REPO / "experiments" / "report.yaml"
    data = args.data / BIG_CSV
    if args.dry_run:
        import yaml

        spec = yaml.safe_load(matrix.read_text())
        spec.update(name="report-dryrun", base={**spec["base"], "overrides": TINY_OVERRIDES},
                    toggles=spec["toggles"][:2])
        matrix = args.work / "report-dryrun.yaml"
        matrix.write_text(yaml.safe_dump(spec, sort_keys=False))
        data = _small(args)
    jobs = args.jobs_per_device or (2 if args.dry_run else _answer_jobs(
        out.parent / "packing.json", deadline - time.time(), MAINRUN_STEPS))
    cmd = _ablate_run(matrix, data, work_db, args.work / "logs") + ["--jobs-per-device", str(jobs)]
    t0 = time.perf_counter()
    run = _run_snapshotting(cmd, work_db, snapshot, deadline, args.work / "answer.log")
    runs = _query(work_db, "SELECT name, status, final_val_loss, json_extract(result, "
                           "'$.final_val_loss_full'), steps, wall_time_s, device FROM runs "
                           "ORDER BY id")
    cols = ("name", "status", "final_val_loss", "final_val_loss_full", "steps", "wall_time_s",
            "device")
    return {"command": " ".join(cmd), "jobs_per_device": jobs, "wall_s": time.perf_counter() - t0,
            **run, "runs": [dict(zip(cols, r)) for r in runs]}


def stage_cost(args, out: Path, deadline: float) -> dict:
    """The CPU cost experiment's configurations at the Mainrun model's size, one run on the GPU
    at a time (execution.timing: exclusive), so that each gets a speed and a memory verdict
    against its seed's baseline; continued from OUT_DIR/cost.db when an earlier call was cut."""
    import yaml

    spec = yaml.safe_load((REPO / "experiments" / "report-cpu-cost.yaml").read_text())
    overrides = {**TINY_OVERRIDES, "evals_per_epoch": 3} if args.dry_run else {
        "num_titles": 50_000, "epochs": 1, "evals_per_epoch": 5}  # 4 intervals a run to time
    seeds = spec["seeds"][:2] if args.dry_run else spec["seeds"][:3]
    spec.update(name="gpu-cost", description="benchmarks/gpu.py's cost stage: " + spec["description"],
                base={**spec["base"], "overrides": {**overrides, "split_seed": 1337}}, seeds=seeds,
                toggles=spec["toggles"][:1] if args.dry_run else spec["toggles"],
                execution={"timing": "exclusive"})
    spec.pop("data", None)
    matrix = args.work / "gpu-cost.yaml"
    matrix.write_text(yaml.safe_dump(spec, sort_keys=False))
    data = _small(args) if args.dry_run else args.data / BIG_CSV
    work_db, snapshot = args.work / f"cost-{os.getpid()}.db", out.parent / "cost.db"
    _continue(snapshot, work_db)
    cmd = _ablate_run(matrix, data, work_db, args.work / "logs")
    run = _run_snapshotting(cmd, work_db, snapshot, deadline, args.work / "cost.log")
    report = subprocess.run([sys.executable, "-m", "ablate", "report", "--db", f"sqlite:///{work_db}",
                             "-e", "gpu-cost", "--format", "json"], cwd=REPO, capture_output=True,
                            text=True, timeout=max(10.0, deadline - time.time()))
    if report.returncode != 0:
        raise StageError(f"ablate report exited {report.returncode}", report.stderr[-3000:])
    answer = json.loads(report.stdout)
    keep = ("effect", "n", "estimate", "ci_lo", "ci_hi", "verdict") + tuple(
        f"{kind}_{part}" for kind in ("speed", "memory") for part in ("ratio", "lo", "hi", "verdict", "reason"))
    completed, planned = _count(work_db), len(seeds) * (1 + len(spec["toggles"]))
    return {"status": "ok" if completed == planned else "incomplete",  # a later call continues it
            "command": " ".join(cmd), **run, "completed": completed, "planned": planned, "overrides": overrides,
            "lines": answer["lines"], "effects": [{k: e.get(k) for k in keep} for e in answer["effects"]]}


RUNNERS = {"env": stage_env, "tests": stage_tests, "speed": stage_speed, "cost": stage_cost,
           "compile": stage_compile, "packing": stage_packing, "answer": stage_answer}


# --------------------------------------------------------------------------- the driver
class StageError(RuntimeError):
    def __init__(self, message: str, tail: str = ""):
        super().__init__(message)
        self.tail = tail


def run_stage(args) -> None:
    """Inside the stage's own process: import, then do it inside its box, write
    OUT_DIR/<stage>.json, exit 0 or 1."""
    out = args.out / f"{args.stage}.json"
    t0 = time.perf_counter()
    import torch  # noqa: F401 - what every stage imports first: the box starts after it
    import ablate.cli  # noqa: F401
    import_s = time.perf_counter() - t0
    deadline = min(time.time() + args.box, args.end)
    t0 = time.perf_counter()
    try:
        result = {"status": "ok", **RUNNERS[args.stage](args, out, deadline)}
    except Exception as e:  # the stage failed; the next ones still run
        import traceback

        result = {"status": "failed", "error": f"{type(e).__name__}: {e}",
                  "tail": getattr(e, "tail", "") or traceback.format_exc()[-3000:]}
    result["seconds"], result["import_s"] = time.perf_counter() - t0, import_s
    result["dry_run"] = args.dry_run
    _write(out, result)
    sys.exit(0 if result["status"] == "ok" else 1)


def drive(args) -> int:
    """Run the stages in order, each in its own process, each boxed; returns 0 if all are ok."""
    args.out.mkdir(parents=True, exist_ok=True)
    summary_path = args.out / "stages.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    start = time.time()
    end = start + args.budget
    # Without the answer (which takes what is left), the budget is spread over the chosen stages.
    scale = 1.0 if "answer" in args.stages else 1 / sum(SHARE[s] for s in args.stages)
    for stage in args.stages:
        out = args.out / f"{stage}.json"
        if stage != "answer" and _status(out) == "ok" and not args.redo:
            summary[stage] = {**summary.get(stage, {}), "skipped": "done in an earlier call"}
            continue
        left = end - time.time()
        if stage == "answer":  # the open-ended stage: whatever is left
            box = left
        else:
            box = min(left, DRY_BOX_S[stage] if args.dry_run else SHARE[stage] * scale * args.budget)
        if box < 5:
            summary[stage] = {"status": "not run", "reason": "budget spent"}
            _write(summary_path, summary)
            continue
        t0 = time.time()
        cmd = [sys.executable, __file__, str(args.out), "--stage", stage, "--box", str(box),
               "--end", str(end), "--data", str(args.data), "--work", str(args.work)]
        cmd += ["--dry-run"] if args.dry_run else []
        cmd += ["--jobs-per-device", str(args.jobs_per_device)] if args.jobs_per_device else []
        print(f"[gpu] {stage}: up to {box:.0f} s after its imports", flush=True)
        proc = _run(cmd, min(t0 + IMPORT_LIMIT_S + box, end) + GRACE_S)
        status = _status(out) or ("timed out" if proc["timed_out"] else "crashed")
        if status != "ok" and not out.exists():  # killed before it could write: say so
            _write(out, {"status": status, "seconds": time.time() - t0, "tail": proc["tail"]})
        summary[stage] = {"status": status, "seconds": round(time.time() - t0, 1),
                          "box_s": round(box)}
        _write(summary_path, summary)
        print(f"[gpu] {stage}: {status} in {time.time() - t0:.0f} s", flush=True)
        if stage == "env" and status != "ok":  # imports or the device are broken: stop now
            print(f"[gpu] env failed, nothing else can run: see {out}", flush=True)
            return 1
    return 0 if all(s.get("status", "ok") == "ok" for s in summary.values()) else 1


# --------------------------------------------------------------------------- helpers
def _run(cmd: list[str], deadline: float, env: dict | None = None) -> dict:
    """Run `cmd` in its own process group until `deadline` (then SIGINT, then SIGKILL)."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=_dies_with_parent(signal.SIGKILL))
    reader = _Tail(proc)
    timed_out = False
    try:
        proc.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        timed_out = True
        _stop(proc)
    reader.join()
    return {"command": " ".join(cmd), "returncode": proc.returncode, "timed_out": timed_out,
            "tail": reader.text()[-4000:]}


def _run_snapshotting(cmd: list[str], work_db: Path, snapshot: Path, deadline: float, log: Path) -> dict:
    """`ablate run` into work_db, snapshotted into `snapshot` after every finished run (a killed
    script loses no finished run); stopped with Ctrl-C (SIGINT) before the deadline, as a user
    would, so that its runs record themselves interrupted with their evaluations kept."""
    stop_at = deadline - 2 * STOP_S  # the runner gives its jobs STOP_S to record themselves
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            preexec_fn=_dies_with_parent(signal.SIGINT))
    reader = _Tail(proc, log)
    completed, stopped = -1, False
    while proc.poll() is None:
        if time.time() >= stop_at and not stopped:
            proc.send_signal(signal.SIGINT)
            stopped = True
        now = _count(work_db)
        if now != completed:
            completed = now
            _snapshot(work_db, snapshot)
        time.sleep(1.0)
    reader.join()
    _snapshot(work_db, snapshot)
    return {"stopped_at_deadline": stopped, "returncode": proc.returncode, "tail": reader.text()[-3000:]}


def _dies_with_parent(sig: int):
    """Linux: the child gets `sig` when this process dies, so killing the script at any point
    leaves no stage or runner behind (the runner's SIGINT makes its jobs record themselves)."""
    def arm() -> None:
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    return arm


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGINT, STOP_S), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


class _Tail:
    """Collects a child's output in a thread (and echoes it to a log file when given)."""

    def __init__(self, proc: subprocess.Popen, log: Path | None = None):
        import threading

        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(proc, log), daemon=True)
        self.thread.start()

    def _read(self, proc, log) -> None:
        sink = log.open("a") if log else None
        for line in proc.stdout:
            self.lines.append(line)
            if sink:
                sink.write(line)
                sink.flush()
        if sink:
            sink.close()

    def join(self) -> None:
        self.thread.join(timeout=10)

    def text(self) -> str:
        return "".join(self.lines[-400:])


def _small(args) -> str:
    """The small data: the shared csv where it is, else the same titles built into ablate (so
    the dry run also runs from a bare clone)."""
    from ablate.training.datasource import BUILTIN_HN

    path = args.data / SMALL_CSV
    return str(path) if path.is_file() else BUILTIN_HN


def _ablate_run(matrix: Path, data: str | Path, db: Path, logs: Path) -> list[str]:
    return [sys.executable, "-m", "ablate", "run", str(matrix), "--data", str(data),
            "--db", f"sqlite:///{db}", "--log-dir", str(logs)]


def _tokens_per_step(config: dict) -> int:
    return config["batch_size"] * config["block_size"] * config.get("grad_accum_steps", 1)


def _query(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # not created yet
            return []


def _count(db: Path) -> int:
    rows = _query(db, "SELECT count(*) FROM runs WHERE status = 'completed'")
    return rows[0][0] if rows else 0


def _snapshot(src: Path, dst: Path) -> None:
    """A consistent single-file copy of a live SQLite database (WAL content included), in
    rollback-journal mode so that it travels as one file; written atomically."""
    if not src.exists():
        return
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with (closing(sqlite3.connect(f"file:{src}?mode=ro", uri=True)) as source,
          closing(sqlite3.connect(tmp)) as copy):
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")
    os.replace(tmp, dst)


def _continue(snapshot: Path, work_db: Path) -> None:
    """Start from an earlier call's snapshot, if any: its completed runs are never retrained."""
    if not snapshot.exists():
        return
    _snapshot(snapshot, work_db)
    from ablate.storage.store import Store

    # Nothing can be training into this fresh copy: its 'running' rows are stale now.
    Store(f"sqlite:///{work_db}").reap_stale(host=socket.gethostname(), stale_after_s=0,
                                             pid_alive=lambda _pid: False)


def _prepare_data(overrides: dict) -> None:
    """Tokenize once into the shared cache, so no timed setting pays for it."""
    from ablate.training.catalog import preset
    from ablate.training.data import prepare

    prepare(preset("mainrun").replace(**overrides))


def _answer_jobs(packing: Path, window_s: float, run_steps: int) -> int:
    """Jobs per device that complete the most runs inside the window: packing raises
    throughput but stretches every run, and a run cut by the deadline counts for nothing.
    Projected from packing's measured seconds per step of a run at each setting."""
    if not packing.exists():
        return 1
    settings = json.loads(packing.read_text())["settings"]
    done = {}
    for jobs, s in settings.items():
        if s["completed"] and s["run_steps"]:
            run_s = s["run_wall_s_mean"] / s["run_steps"] * run_steps
            done[int(jobs)] = int(jobs) * int(window_s // run_s)
    return max(sorted(done), key=lambda j: done[j]) if done else 1


def _status(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("status")
    except (OSError, ValueError):
        return None


def _write(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def _command(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable: {e}"


def _junit(xml: Path) -> list[dict]:
    import xml.etree.ElementTree as ET

    tests = []
    for case in ET.parse(xml).iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", (child.get("message") or "")[:500]
            elif child.tag == "skipped":
                outcome, message = "skipped", (child.get("message") or "")[:200]
        tests.append({"name": case.get("name"), "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "message": message})
    return tests


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="where every stage's file goes")
    ap.add_argument("--budget", type=float, help="seconds for all stages (default 540; "
                    "dry run: the sum of its boxes, a ceiling it stays far below)")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated, in order")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get(
        "ABLATE_BENCH_DATA", REPO.parent / "shared" / "data")),
        help=f"folder with {SMALL_CSV} and {BIG_CSV}")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temp folder)")
    ap.add_argument("--jobs-per-device", type=int, help="for the answer (default: packing's best)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the script")
    ap.add_argument("--redo", action="store_true", help="rerun stages that finished before")
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--box", type=float, help=argparse.SUPPRESS)  # a stage's seconds after its imports
    ap.add_argument("--end", type=float, help=argparse.SUPPRESS)  # the budget's end (epoch seconds)
    args = ap.parse_args(argv)
    args.out, args.data = args.out.resolve(), args.data.resolve()
    args.work = (args.work or Path(tempfile.gettempdir()) / "ablate-gpu-work").resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ABLATE_CACHE", str(args.work / "cache"))
    os.environ.setdefault("ABLATE_BENCH_DATA", str(args.data))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if args.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU path, even on a GPU machine
    if args.stage:
        return run_stage(args)
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in args.stages if s not in STAGES]
    if unknown:
        ap.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    args.budget = args.budget or (sum(DRY_BOX_S.values()) + DRY_ANSWER_S if args.dry_run else 540)
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
