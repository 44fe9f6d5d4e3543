#!/usr/bin/env python
"""ablate's speed, measured on whatever hardware this runs on (CUDA when present, else CPU).

    python benchmarks/run.py [--quick] [--full] [--json out.json] [--only SECTION ...]

Sections (all by default; `--only` picks some):
  peak      large matmul in fp32 and bf16: the device's measured peak FLOP/s (MFU denominator)
  parity    ablate's baseline step vs the plain hand-written loop (tests/mainrun_reference.py)
  switches  time per step, tokens/s and MFU of the baseline and each speed switch
  first     time to first step (setup: data, tokenizer, model, optimizer) and to the end of
            step 1, cold (empty tokenizer cache) vs cached, in fresh processes
  eval      share of a run's wall time spent in evaluation, and in the extra val_loss_full pass
  omp       OMP_WAIT_POLICY (unset vs PASSIVE), one CPU job alone and two at once (CPU only)
  smoke     wall time of the whole smoke matrix through the CLI
  report    `ablate report` on the committed results.db as a user runs it (a fresh process),
            against a process that only imports what report needs, in the same run
  cost      what measuring a run's speed and peak memory adds to a training step (nothing runs
            per step; the per-run and per-evaluation parts timed, spread over a whole run)

Every comparison runs its variants side by side in one process, interleaved (A B A B ...),
and reports medians: other processes on the machine shift all variants alike. Step times come
from a global optimizer step hook (CUDA: synchronized), so the exact code path of `train()` is
measured and nothing in the trainer is instrumented. The interval that contains the step-1
evaluation is dropped; so is the first step (warm-up / compilation).
`--full` adds the full 27M Mainrun architecture (d512, 6 layers, vocab 16000) to parity/switches;
`--model small|mid|full|mainrun` picks the one model they use instead (`mainrun`: the baseline
config itself on 100,000 titles of the big file, for a GPU: its step-1 evaluation is slow on a CPU).
Switch rows include a projected whole-run time: median step time x the config's optimizer steps.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# CPU jobs run with passive OpenMP waiting (ablate/execution/executors.py); so does this process, which
# also keeps other processes on a shared machine from stalling our spinning workers.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_post_hook

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA_DIR = Path(os.environ.get("ABLATE_BENCH_DATA", REPO.parent / "shared" / "data"))
HN = str(DATA_DIR / "hacker_news.csv")  # else the same titles built into ablate (below)
HN_BIG = str(DATA_DIR / "hn_stories_2016_2020.csv")

from ablate.training.config import ExecOptions, TrainConfig  # noqa: E402
from ablate.training.data import prepare  # noqa: E402
from ablate.training.train import Schedule, resolve_device, train, warm_up  # noqa: E402
from tests import mainrun_reference as ref  # noqa: E402
from ablate.training.datasource import BUILTIN_HN  # noqa: E402

if not Path(HN).is_file():
    HN = BUILTIN_HN

MID = dict(data=HN, num_titles=20_000, vocab_size=8_000, d_model=256, n_layer=4, n_head=8,
           block_size=128, batch_size=64)
FULL = dict(data=HN, num_titles=20_000, vocab_size=16_000, d_model=512, n_layer=6, n_head=8,
            block_size=128, batch_size=64, val_frac=0.01)  # small val set: each call's step-1
# evaluation is not measured, and on a CPU it would cost more than the steps that are
SMALL = dict(data=HN, num_titles=4_000, vocab_size=1_000, d_model=64, n_layer=2, n_head=4,
             block_size=64, batch_size=16)  # experiments/smoke.yaml's base model
MAINRUN = dict(data=HN_BIG, num_titles=100_000)  # the baseline itself: every other field default
MODELS = {"small": (SMALL, "smoke base model"), "mid": (MID, "mid d256/L4/V8000/B64xT128"),
          "full": (FULL, "full 27M d512/L6/V16000"),
          "mainrun": (MAINRUN, "Mainrun baseline: 27M, 100k titles of hn_stories (GPU)")}
SWITCHES = {  # name -> config patch (and exec options)
    "baseline": ({}, {}),
    "sdpa": ({"attention": "sdpa"}, {}),
    "bf16": ({"precision": "bf16"}, {}),
    "bf16+sdpa": ({"precision": "bf16", "attention": "sdpa"}, {}),
    "adamw": ({"optimizer": "adamw", "lr": 1e-3}, {}),  # fused on CUDA (make_optimizer)
    "tf32": ({"tf32": True}, {}),  # CUDA only
    "compile": ({}, {"compile": True}),
    "compile+bf16+sdpa": ({"precision": "bf16", "attention": "sdpa"}, {"compile": True}),
}


# --------------------------------------------------------------------------- helpers
def load() -> dict:
    one, five, fifteen = os.getloadavg()
    return {"load_1m": round(one, 2), "load_5m": round(five, 2), "load_15m": round(fifteen, 2)}


def machine(device: torch.device) -> dict:
    info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device), "threads": torch.get_num_threads(),
            "cores": os.cpu_count(), "cpu": platform.processor()}
    with contextlib.suppress(Exception):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Timestamps at the end of every optimizer step of every optimizer in this process."""

    def __init__(self, device: torch.device):
        self.device, self.times = device, []

    def __enter__(self):
        sync(self.device)
        self.t0 = time.perf_counter()
        self.handle = register_optimizer_step_post_hook(self._hook)
        return self

    def _hook(self, *_):
        sync(self.device)
        self.times.append(time.perf_counter())

    def __exit__(self, *_):
        self.handle.remove()

    def steps(self) -> list[float]:
        """Whole loop iterations between step ends; drops 1→2 (holds the step-1 evaluation)."""
        return [b - a for a, b in zip(self.times, self.times[1:])][1:]

    def first(self) -> float:
        return self.times[0] - self.t0


def flops_per_token(cfg: TrainConfig, vocab: int) -> float:
    """Training FLOPs per token: 6 x matmul params (blocks + tied head) + attention 12·L·T·d."""
    d, L, T = cfg.d_model, cfg.n_layer, cfg.block_size
    hidden = int(8 / 3 * d) if cfg.mlp == "swiglu" else 4 * d
    mlp = 3 * d * hidden if cfg.mlp == "swiglu" else 2 * d * hidden
    return 6 * (L * (4 * d * d + mlp) + d * vocab) + 12 * L * T * d


def ablate_steps(cfg: TrainConfig, data, device, steps: int, **opts) -> list[float]:
    with StepClock(device) as clock:
        train(cfg, options=ExecOptions(device=str(device), max_steps=steps, step_metrics=False,
                                       **opts), data=data)
    return clock.steps()


def ref_steps(cfg: TrainConfig, data, steps: int) -> list[float]:
    with StepClock(torch.device("cpu")) as clock:
        ref.run(cfg.data, num_titles=cfg.num_titles, vocab_size=cfg.vocab_size,
                d_model=cfg.d_model, n_layer=cfg.n_layer, n_head=cfg.n_head,
                block_size=cfg.block_size, batch_size=cfg.batch_size, seed=cfg.seed,
                max_steps=steps,
                data=(data.train_ids, data.val_ids, data.val_chars, data.vocab_size))
    return clock.steps()


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# --------------------------------------------------------------------------- sections
def bench_peak(device, quick: bool) -> dict:
    n = 2048 if device.type == "cpu" else 8192
    reps = 3 if quick else 5
    out = {"n": n}
    mats = {dt: (torch.randn(n, n, device=device).to(dt), torch.randn(n, n, device=device).to(dt))
            for dt in (torch.float32, torch.bfloat16)}
    times = {dt: [] for dt in mats}
    for dt, (a, b) in mats.items():  # warm-up
        a @ b
    for _ in range(reps):
        for dt, (a, b) in mats.items():  # interleaved
            sync(device)
            t0 = time.perf_counter()
            a @ b
            sync(device)
            times[dt].append(time.perf_counter() - t0)
    for dt, ts in times.items():
        key = "fp32" if dt == torch.float32 else "bf16"
        out[f"{key}_tflops"] = 2 * n ** 3 / med(ts) / 1e12
    out["bf16_over_fp32"] = out["bf16_tflops"] / out["fp32_tflops"]
    if device.type == "cuda":  # what most GPU MFU numbers use: TF32 tensor cores for fp32
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        a, b = mats[torch.float32]
        a @ b
        ts = []
        for _ in range(reps):
            sync(device)
            t0 = time.perf_counter()
            a @ b
            sync(device)
            ts.append(time.perf_counter() - t0)
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        out["tf32_tflops"] = 2 * n ** 3 / med(ts) / 1e12
    return out | load()


def bench_parity(device, base: dict, steps: int, rounds: int, label: str) -> dict:
    """ablate's baseline step vs the reference loop; CPU only (the reference is CPU code)."""
    cfg = TrainConfig(**base)
    data = prepare(cfg)
    a, r, ratios = [], [], []
    before = load()
    for i in range(rounds):  # A B, B A, ...: whichever runs first in a round pays for fresh memory
        if i % 2:
            tr = med(ref_steps(cfg, data, steps))
            ta = med(ablate_steps(cfg, data, device, steps))
        else:
            ta = med(ablate_steps(cfg, data, device, steps))
            tr = med(ref_steps(cfg, data, steps))
        a.append(ta)
        r.append(tr)
        ratios.append(ta / tr)
    return {"config": label, "steps_per_call": steps, "rounds": rounds,
            "ablate_step_s": med(a), "reference_step_s": med(r),
            "ratio_median": med(ratios), "ratios": ratios, "load_before": before,
            "load_after": load()}


def bench_switches(device, base: dict, steps: int, rounds: int, peak: dict | None,
                   names: list[str], label: str) -> dict:
    data = prepare(TrainConfig(**base))
    results = {n: [] for n in names}
    broken: dict[str, str] = {}
    before = load()
    for _ in range(rounds):
        for name in names:
            if name in broken:
                continue
            patch, opts = SWITCHES[name]
            cfg = TrainConfig(**{**base, **patch})
            try:
                results[name].append(med(ablate_steps(cfg, data, device, steps, **opts)))
            except Exception as e:  # e.g. torch.compile without a working compiler
                broken[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    rows = {}
    base_s = med(results.get("baseline", []))
    for name in names:
        if name in broken:
            rows[name] = {"error": broken[name]}
            continue
        patch, _ = SWITCHES[name]
        cfg = TrainConfig(**{**base, **patch})
        s = med(results[name])
        tokens = cfg.batch_size * cfg.block_size * cfg.grad_accum_steps
        fl = flops_per_token(cfg, data.vocab_size) * tokens / s
        run_steps = Schedule(cfg, len(data.train_ids)).max_steps  # the whole run of this config
        row = {"step_s": s, "tokens_per_s": tokens / s, "speedup": base_s / s,
               "achieved_tflops": fl / 1e12, "rounds": results[name], "run_steps": run_steps,
               "projected_run_s": s * run_steps}  # step time x steps: evaluations not included
        if peak:
            key = "bf16_tflops" if cfg.precision == "bf16" else (
                "tf32_tflops" if device.type == "cuda" else "fp32_tflops")
            row["mfu"] = fl / 1e12 / peak[key]
            row["mfu_vs"] = key
        rows[name] = row
    return {"config": label, "steps_per_call": steps, "rounds": rounds, "rows": rows,
            "load_before": before, "load_after": load()}


def bench_cost(device, configs: dict[str, dict], repeats: int = 2000) -> dict:
    """What measuring a run's cost adds to its training steps. Nothing of it runs per step; per
    run, the peak-memory reset and read (execution/resources.PeakMemory; on CUDA the allocator's
    peak reset and read) and the cost fields (train._cost); per evaluation, two clock reads. Each
    is timed on its own (`repeats` times), spread over the config's whole run (its steps and
    evaluations), and compared with this config's median step time measured here."""
    from ablate.execution.resources import PeakMemory
    from ablate.training.train import _cost

    def per_run() -> None:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        peak = PeakMemory()
        _cost(1000, 100.0, 0.5, 8192, device)
        peak.read(command=False)

    def per_eval() -> float:
        return time.perf_counter() - time.perf_counter()

    def each(fn) -> float:
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t0) / repeats

    rows = {}
    for label, base in configs.items():
        cfg = TrainConfig(**base)
        data = prepare(cfg)
        step_s = med(ablate_steps(cfg, data, device, 6))
        sched = Schedule(cfg, len(data.train_ids))
        evals = sum(map(sched.is_eval_step, range(1, sched.max_steps + 1)))
        run_s, eval_s = med([each(per_run) for _ in range(3)]), med([each(per_eval) for _ in range(3)])
        added = (run_s + evals * eval_s) / sched.max_steps
        rows[label] = {"step_s": step_s, "run_steps": sched.max_steps, "run_evals": evals,
                       "per_run_s": run_s, "per_eval_s": eval_s, "added_per_step_s": added,
                       "added_pct": 100 * added / step_s}
    return {"repeats": repeats, "rows": rows}


class _FirstStepDone(Exception):
    pass


def _stop_after_step(*_) -> None:
    raise _FirstStepDone


def _first_step_worker(config: dict, cache_dir: str, device: str, warm: bool) -> None:
    """Runs in a fresh process (torch already imported, as in a job): seconds from the train()
    call until the first training forward starts (data + tokenizer + model + optimizer setup:
    the issue's "time to first step") and until the first optimizer step ends. `warm`: first
    do what a warm worker does before its run arrives (`ablate.training.train.warm_up`)."""
    if warm:
        warm_up()
    dev = torch.device(device)
    first_forward: list[float] = []

    def on_forward(*_) -> None:  # a pre-hook that returns a value would replace the input
        if not first_forward:
            first_forward.append(time.perf_counter())

    hook = torch.nn.modules.module.register_module_forward_pre_hook(on_forward)
    with StepClock(dev) as clock:
        stop = register_optimizer_step_post_hook(_stop_after_step)  # skips the step-1 evaluation
        try:
            train(TrainConfig(**config), options=ExecOptions(device=device, max_steps=1,
                                                             cache_dir=cache_dir,
                                                             step_metrics=False))
        except _FirstStepDone:
            pass
    stop.remove()
    hook.remove()
    print(json.dumps({"setup_s": first_forward[0] - clock.t0, "first_step_s": clock.first()}))


def bench_first(device, configs: dict[str, dict], rounds: int) -> dict:
    out = {}
    for label, config in configs.items():
        kinds = {"cold": "", "cached": "", "cached_warm": "warm"}  # warm: as in a warm worker
        runs: dict[str, list[dict]] = {k: [] for k in kinds}
        before = load()
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as cache:
                for kind, warm in kinds.items():  # an empty cache, then the same cache again
                    proc = subprocess.run(
                        [sys.executable, __file__, "--_first-step", json.dumps(config), cache,
                         str(device), warm], capture_output=True, text=True, check=True)
                    runs[kind].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        row = {"load_before": before, "load_after": load()}
        for what in ("setup_s", "first_step_s"):
            cold, cached, warm = ([r[what] for r in runs[k]] for k in kinds)
            row[what] = {"cold": med(cold), "cached": med(cached), "cached_warm": med(warm),
                         "speedup": med(cold) / med(cached), "speedup_warm": med(cold) / med(warm),
                         "cold_rounds": cold, "cached_rounds": cached, "cached_warm_rounds": warm}
        out[label] = row
    return out


def bench_eval(device, configs: dict[str, dict], rounds: int) -> dict:
    """Whole runs; the evaluation time is wall minus train time. The val_loss_full pass is timed
    by wrapping the module's function (same call, same arguments)."""
    import ablate.training.train as T

    out = {}
    for label, config in configs.items():
        cfg = TrainConfig(**config)
        data = prepare(cfg)
        shares = []
        for _ in range(rounds):
            spent = {"full": 0.0, "mainrun": 0.0}
            orig_full, orig_main = T.full_val_loss, T.mainrun_val_loss

            def timed(fn, key):
                def wrapper(*a, **k):
                    sync(device)
                    t0 = time.perf_counter()
                    r = fn(*a, **k)
                    sync(device)
                    spent[key] += time.perf_counter() - t0
                    return r
                return wrapper

            T.full_val_loss, T.mainrun_val_loss = timed(orig_full, "full"), timed(orig_main, "mainrun")
            try:
                t0 = time.perf_counter()
                res = train(cfg, options=ExecOptions(device=str(device)), data=data)
                wall = time.perf_counter() - t0
            finally:
                T.full_val_loss, T.mainrun_val_loss = orig_full, orig_main
            shares.append({"wall_s": wall, "train_s": res["train_time_s"],
                           "eval_s": wall - res["train_time_s"], "evals": res["evals"],
                           "steps": res["steps"], "mainrun_eval_s": spent["mainrun"],
                           "full_eval_s": spent["full"], "eval_share": 1 - res["train_time_s"] / wall,
                           "full_share": spent["full"] / wall})
        out[label] = {"eval_share": med([s["eval_share"] for s in shares]),
                      "full_share": med([s["full_share"] for s in shares]),
                      "runs": shares, **load()}
    return out


def bench_eval_components(device, base: dict, rounds: int, label: str) -> dict:
    """Cost of one val_loss_full batch (batch_size x block_size tokens, eval mode, no grad)
    relative to one training step of the same model, interleaved. Multiply by the run's
    evaluation count and validation batches to extrapolate a share (labelled as such)."""
    from torch.nn import functional as F

    from ablate.training.model import GPT
    from ablate.training.train import full_val_loss

    cfg = TrainConfig(**base)
    V, B, T = cfg.vocab_size, cfg.batch_size, cfg.block_size
    torch.manual_seed(0)
    model = GPT(cfg, V).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    x, y = (torch.randint(0, V, (B, T), device=device) for _ in range(2))
    val = torch.randint(0, V, (2 * B * T + 1,), device=device)

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x).view(-1, V), y.view(-1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()

    def full():
        model.eval()
        full_val_loss(model, val, T, B, 1)

    times = {"step": [], "full_batch": []}
    step(), full()
    for _ in range(rounds):
        for key, fn, n in (("step", step, 1), ("full_batch", full, 2)):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[key].append((time.perf_counter() - t0) / n)
    return {"config": label, "step_s": med(times["step"]), "full_batch_s": med(times["full_batch"]),
            "full_batch_over_step": med(times["full_batch"]) / med(times["step"]), **load()}


def _omp_worker(steps: int, threads: int) -> None:
    torch.set_num_threads(threads)
    cfg = TrainConfig(**SMALL)
    data = prepare(cfg)
    dev = torch.device("cpu")
    print(json.dumps({"step_s": med(ablate_steps(cfg, data, dev, steps))}))


def bench_omp(rounds: int, steps: int) -> dict:
    """One job alone and two concurrent jobs, each with all cores' threads (two runners on one
    machine), OMP_WAIT_POLICY unset (libgomp default) vs PASSIVE (what executors.py sets)."""
    prepare(TrainConfig(**SMALL))
    threads = os.cpu_count() or 1
    res = {f"{n}x_{p}": [] for n in (1, 2) for p in ("unset", "PASSIVE")}
    before = load()

    def launch(policy):
        env = dict(os.environ)
        env.pop("OMP_WAIT_POLICY", None)
        if policy != "unset":
            env["OMP_WAIT_POLICY"] = policy
        return subprocess.Popen([sys.executable, __file__, "--_omp", str(steps), str(threads)],
                                env=env, stdout=subprocess.PIPE, text=True)

    for _ in range(rounds):
        for n in (1, 2):
            for policy in ("unset", "PASSIVE"):
                procs = [launch(policy) for _ in range(n)]
                vals = [json.loads(p.communicate()[0].strip().splitlines()[-1])["step_s"]
                        for p in procs]
                res[f"{n}x_{policy}"].append(med(vals))
    out = {k: med(v) for k, v in res.items()}
    out["passive_cost_alone"] = out["1x_PASSIVE"] / out["1x_unset"]
    out["passive_gain_two_jobs"] = out["2x_unset"] / out["2x_PASSIVE"]
    return {"config": "smoke base model, threads=%d per job" % threads, "steps": steps,
            "per_round": res, **out, "load_before": before, "load_after": load()}


def bench_smoke() -> dict:
    before = load()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ABLATE_CACHE": str(Path(tmp) / "cache")}
        cmd = [sys.executable, "-m", "ablate", "run", "experiments/smoke.yaml", "--data", HN,
               "--db", f"sqlite:///{tmp}/smoke.db", "--log-dir", str(Path(tmp) / "logs")]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    return {"command": " ".join(cmd[1:]), "wall_s": wall, "returncode": proc.returncode,
            "tail": proc.stdout[-400:] if proc.returncode else "", "load_before": before,
            "load_after": load()}


def bench_report(rounds: int, experiment: str = "report-cpu") -> dict:
    """What a user waits for: `ablate report` in a fresh process (start-up, imports, reading,
    rendering) on a copy of the committed results.db, interleaved with a process that only
    imports what report needs (pandas, SQLAlchemy, rich: most of the wait), so the ratio says
    what reading and rendering add, on this machine, now."""
    before = load()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "results.db"
        db.write_bytes((REPO / "results.db").read_bytes())
        url = f"sqlite:///{db}"
        variants = {
            "imports": [sys.executable, "-c", "import ablate.cli, ablate.results.report, "
                        "ablate.results.render, ablate.storage.store"],
            "report table": [sys.executable, "-m", "ablate", "report", "-e", experiment, "--db", url],
            "report json": [sys.executable, "-m", "ablate", "report", "-e", experiment, "--db", url,
                            "--format", "json"],
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(rounds):
            for name, cmd in variants.items():
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                                      env={**os.environ, "COLUMNS": "120"})
                times[name].append(time.perf_counter() - t0)
                if proc.returncode:
                    raise RuntimeError(f"{' '.join(cmd[1:])} exited {proc.returncode}: {proc.stderr[-400:]}")
    medians = {k: med(v) for k, v in times.items()}
    return {"experiment": experiment, "rounds": rounds, "seconds": times, "median_s": medians,
            "report_over_imports": medians["report table"] / medians["imports"],
            "json_over_imports": medians["report json"] / medians["imports"],
            "load_before": before, "load_after": load()}


# --------------------------------------------------------------------------- output
def print_tables(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    m = res["machine"]
    con.print(f"[bold]{m.get('gpu') or m['cpu']}[/] · {m['cores']} cores · torch {m['torch']} · "
              f"{m['date']}")
    if "peak" in res:
        p = res["peak"]
        con.print(f"peak ({p['n']}³ matmul): fp32 {p['fp32_tflops']:.3f} TFLOP/s, bf16 "
                  f"{p['bf16_tflops']:.3f} TFLOP/s ({p['bf16_over_fp32']:.2f}x)"
                  + (f", tf32 {p['tf32_tflops']:.1f}" if "tf32_tflops" in p else ""))
    for par in res.get("parity", []):
        con.print(f"parity ({par['config']}): ablate {par['ablate_step_s'] * 1e3:.1f} ms/step, "
                  f"reference {par['reference_step_s'] * 1e3:.1f} ms/step, ratio "
                  f"{par['ratio_median']:.3f} (per round {', '.join(f'{r:.3f}' for r in par['ratios'])})")
    for sw in res.get("switches", []):
        t = Table(title=f"speed switches ({sw['config']})")
        for c in ("switch", "ms/step", "tokens/s", "speedup", "TFLOP/s", "MFU", "whole run*"):
            t.add_column(c, justify="right")
        for name, row in sw["rows"].items():
            if "error" in row:
                t.add_row(name, "—", "—", "—", "—", row["error"][:40])
                continue
            t.add_row(name, f"{row['step_s'] * 1e3:.1f}", f"{row['tokens_per_s']:.0f}",
                      f"{row['speedup']:.2f}x", f"{row['achieved_tflops']:.3f}",
                      f"{row['mfu']:.1%} ({row['mfu_vs'][:4]})" if "mfu" in row else "—",
                      f"{row['projected_run_s']:.1f} s")
        con.print(t)
        con.print("* projected: median step time x the config's optimizer steps (evaluations excluded)")
    for label, f in res.get("first", {}).items():
        su, fs = f["setup_s"], f["first_step_s"]
        con.print(f"time to first step ({label}): cold {su['cold']:.2f} s, cached "
                  f"{su['cached']:.2f} s ({su['speedup']:.1f}x), cached in a warm worker "
                  f"{su['cached_warm']:.2f} s ({su['speedup_warm']:.1f}x); to the end of step 1: "
                  f"cold {fs['cold']:.2f} s, cached {fs['cached']:.2f} s ({fs['speedup']:.1f}x), "
                  f"warm {fs['cached_warm']:.2f} s ({fs['speedup_warm']:.1f}x)")
    for label, e in res.get("eval", {}).items():
        con.print(f"evaluation ({label}): {e['eval_share']:.1%} of wall time, val_loss_full "
                  f"pass {e['full_share']:.1%}")
    if "eval_components" in res:
        c = res["eval_components"]
        con.print(f"one val_loss_full batch = {c['full_batch_over_step']:.2f} training steps "
                  f"({c['config']})")
    if "omp" in res:
        o = res["omp"]
        con.print(f"OMP_WAIT_POLICY ({o['config']}): alone unset {o['1x_unset'] * 1e3:.1f} / "
                  f"PASSIVE {o['1x_PASSIVE'] * 1e3:.1f} ms/step ({o['passive_cost_alone']:.2f}x); "
                  f"two jobs unset {o['2x_unset'] * 1e3:.1f} / PASSIVE {o['2x_PASSIVE'] * 1e3:.1f} "
                  f"ms/step (PASSIVE {o['passive_gain_two_jobs']:.1f}x faster)")
    if "smoke" in res:
        s = res["smoke"]
        con.print(f"smoke matrix: {s['wall_s']:.1f} s (rc {s['returncode']})")
    if "report" in res:
        r, m = res["report"], res["report"]["median_s"]
        con.print(f"ablate report -e {r['experiment']} (median of {r['rounds']}): table "
                  f"{m['report table']:.2f} s, json {m['report json']:.2f} s, its imports alone "
                  f"{m['imports']:.2f} s; report / imports {r['report_over_imports']:.2f}x")
    if "cost" in res:
        for label, r in res["cost"]["rows"].items():
            con.print(f"measuring cost, {label}: {r['per_run_s'] * 1e6:.0f} µs per run + "
                      f"{r['per_eval_s'] * 1e9:.0f} ns per evaluation over {r['run_steps']} steps and "
                      f"{r['run_evals']} evaluations = {r['added_per_step_s'] * 1e6:.2f} µs per step, "
                      f"{r['added_pct']:.2g} % of its {r['step_s'] * 1e3:.1f} ms step")



def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, small configs only")
    ap.add_argument("--full", action="store_true", help="also the full 27M baseline model")
    ap.add_argument("--model", choices=list(MODELS),
                    help="the model of parity/switches (default: small with --quick, else mid)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--only", nargs="*", help="sections: peak parity switches first eval omp smoke report cost")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--switches", nargs="*", choices=list(SWITCHES),
                    help="the switch rows to measure (default: all that apply here)")
    ap.add_argument("--steps", type=int, help="optimizer steps per timed call (switches)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (switches)")
    ap.add_argument("--compile-backend", help="torch.compile backend of the compile rows "
                    "(default inductor; aot_eager checks the path without building kernels)")
    ap.add_argument("--_first-step", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--_omp", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._first_step:
        config, cache, device, warm = args._first_step
        return _first_step_worker(json.loads(config), cache, device, warm == "warm")
    if args._omp:
        return _omp_worker(*args._omp)
    os.environ.setdefault("ABLATE_CACHE", str(Path(tempfile.gettempdir()) / "ablate-bench-cache"))
    if args.compile_backend:  # the trainer calls torch.compile(model): give it this backend
        torch.compile = functools.partial(torch.compile, backend=args.compile_backend)

    device = resolve_device(args.device)
    cpu = device.type == "cpu"
    sections = set(args.only or ["peak", "parity", "switches", "first", "eval", "omp", "smoke", "report", "cost"])
    q = args.quick
    res: dict = {"machine": machine(device), "load_start": load(), "quick": q}
    model = args.model or ("small" if q else "mid")
    mid, mid_label = MODELS[model]
    if "peak" in sections or "switches" in sections:
        res["peak"] = bench_peak(device, q)
    if "parity" in sections:
        if cpu:  # the reference loop is CPU code
            res["parity"] = [bench_parity(device, mid, 6 if q else 4, 3, mid_label)]
            if args.full:
                res["parity"].append(bench_parity(device, FULL, 4, 3, "full 27M d512/L6/V16000"))
        else:
            res["parity"] = []
    if "switches" in sections:
        names = args.switches or list(SWITCHES)
        if cpu and "tf32" in names:
            names.remove("tf32")
        if q or args.no_compile:
            names = [n for n in names if not n.startswith("compile")]
        res["switches"] = [bench_switches(device, mid, args.steps or (5 if q else 4),
                                          args.rounds or 3, res.get("peak"), names, mid_label)]
        if args.full:
            res["switches"].append(bench_switches(
                device, FULL, 4, 2, res.get("peak"),
                ["baseline", "sdpa", "bf16", "bf16+sdpa"], "full 27M d512/L6/V16000"))
    if "first" in sections:
        configs = {"smoke base model, 4k titles": SMALL}
        if not q:
            configs["Mainrun baseline: 27M model, 100k titles of hn_stories, V16000"] = {
                "data": HN_BIG, "num_titles": 100_000}
        res["first"] = bench_first(device, configs, 1 if q else 2)
    if "eval" in sections:
        small = {**SMALL, "epochs": 2}
        configs = {"smoke base config (2 epochs)": small}
        if not q:  # Mainrun's data scale and schedule, the model scaled down (label says so)
            configs["Mainrun data scale (100k titles hn_stories, V16000, B64xT128), 1 epoch x 3 "
                    "evals + step 1, model d64/L2 — NOT the 27M model"] = {
                **SMALL, "data": HN_BIG, "num_titles": 100_000, "vocab_size": 16_000,
                "block_size": 128, "batch_size": 64, "epochs": 1}
        res["eval"] = bench_eval(device, configs, 1)
        if args.full:
            res["eval_components"] = bench_eval_components(device, FULL, 3, "full 27M d512/L6/V16000")
    if "omp" in sections and cpu:
        res["omp"] = bench_omp(1 if q else 2, 30 if q else 60)
    if "smoke" in sections and not q:
        res["smoke"] = bench_smoke()
    if "report" in sections:
        res["report"] = bench_report(3 if q else 5)
    if "cost" in sections:
        configs = {"smoke base model": SMALL}
        if not q:
            configs[mid_label] = mid
        res["cost"] = bench_cost(device, configs)
    res["load_end"] = load()
    print_tables(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return res


if __name__ == "__main__":
    main()
