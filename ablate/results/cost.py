"""What each comparison costs: its speed and its peak memory, judged like the loss.

A run's cost is what its trainer measured (`training.train`: its training throughput after the
warm-up step, as time per token, and peak CUDA allocation; `execution.resources`: the run process's peak resident
memory; a command trainer: the command's wall time and its process tree's peak). A comparison's
cost effect is the same comparison as its loss effect (the design's rows, paired by seed), on
the logarithm of the cost: its mean is the log of the ratio treated / control, its interval the
ratio's interval, read against ±log(1 + cost_min_effect) at the report's level into

  faster / slower / same speed / inconclusive   (time per token: a ratio below 1 is faster)
  less memory / more memory / same memory / inconclusive

Timings are only comparable when the runs were timed alike: a run that shared its device with
other runs (jobs_per_device > 1, Ray packing several runs on a device), or runs on different
hosts, devices or thread counts, give no speed verdict, with the reason. Memory is judged
unless the runs' devices differ (a CUDA peak and a CPU peak are different quantities).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

from .frames import missing, per_frame

WORDS = {"speed": {"better": "faster", "worse": "slower", "negligible": "same speed"},
         "memory": {"better": "less memory", "worse": "more memory", "negligible": "same memory"}}
NOT_COMPARABLE = "not comparable"
STEADY = "steady_s_per_token"  # the per_run column of steady_seconds_per_token
COST_COLUMNS = [f"{kind}_{part}" for kind in WORDS for part in ("ratio", "lo", "hi", "verdict", "reason")]

EffectsOf = Callable[[pd.DataFrame, float], pd.DataFrame]  # (per_run with y, δ) -> the design's effects


def speed_of(per_run: pd.DataFrame) -> pd.Series:
    """Seconds a run took per unit of work: the built-in trainer's time per training token over
    its optimizer steps after the warm-up (per token, not per step: gradient accumulation's step
    does twice the work, and a longer block more tokens), else (your own trainer's command) the
    run's wall time. (The built-in trainer's wall time holds data preparation and evaluations:
    never its speed.) The built-in trainer's is the median over its evaluation intervals
    (`steady_seconds_per_token`) where every such run has one, else the mean over the run for
    all of them alike."""
    step = 1 / _numeric(per_run, "res.train_tokens_per_s")
    steady = _numeric(per_run, STEADY)
    if step.notna().any() and steady[step.notna()].notna().all():
        step = steady.where(step.notna())
    command = per_run["cfg.trainer"].notna() if "cfg.trainer" in per_run else pd.Series(False, index=per_run.index)
    return step.fillna(_numeric(per_run, "wall_time_s").where(command))


def steady_seconds_per_token(evals: pd.DataFrame) -> pd.Series:
    """Each run's training seconds per token (by run_id): the median over its evaluation
    intervals after step 1 (so the warm-up step is out), each interval's training time read off
    the evaluations' cumulative tokens_seen / tokens_per_s (evaluation time is never in it). A
    shared machine slows a run in bursts (2-3x a step for a few intervals, seen on a 2-core VM):
    they move a median little and a mean a lot. Missing for a run with fewer than two intervals."""
    if not {"run_id", "step", "tokens_seen", "tokens_per_s"} <= set(evals.columns):
        return pd.Series(dtype=float)
    e = evals[["run_id", "step", "tokens_seen", "tokens_per_s"]].apply(pd.to_numeric, errors="coerce").dropna()
    e = e[(e["tokens_per_s"] > 0) & (e["step"] >= 1)].astype({"run_id": "int64"})
    e = e.sort_values(["run_id", "step"], ignore_index=True)
    seconds = e["tokens_seen"] / e["tokens_per_s"]
    tokens = e["tokens_seen"].groupby(e["run_id"]).diff()
    per_token = (seconds.groupby(e["run_id"]).diff() / tokens).where(tokens > 0).dropna()
    by_run = per_token.groupby(e.loc[per_token.index, "run_id"])
    return by_run.median().where(by_run.size() >= 2).dropna()


def memory_of(per_run: pd.DataFrame) -> pd.Series:
    """A run's peak memory in bytes: CUDA's peak allocation on a GPU, else the peak resident
    memory of its process (a command's: its largest process)."""
    return _numeric(per_run, "res.peak_cuda_allocated_bytes").fillna(_numeric(per_run, "res.peak_rss_bytes"))


def cost_effects(per_run: pd.DataFrame, effects_of: EffectsOf, cost_min_effect: float) -> pd.DataFrame:
    """One row per effect label: each cost's ratio (treated / control), its interval and verdict,
    and the reason where there is no verdict because the runs were not timed alike."""
    columns: dict[str, pd.DataFrame] = {}
    delta = math.log1p(cost_min_effect)
    for kind, values in (("speed", speed_of(per_run)), ("memory", memory_of(per_run))):
        usable = values.where(values > 0)
        effects = effects_of(per_run.assign(y=np.log(usable)), delta)
        reasons = [_incomparable(per_run, configs, kind) for configs in effects["configs"]]
        words = WORDS[kind]
        columns[kind] = pd.DataFrame({
            "effect": effects["effect"],
            f"{kind}_ratio": np.exp(effects["estimate"].astype(float)),
            f"{kind}_lo": np.exp(effects["ci_lo"].astype(float)),
            f"{kind}_hi": np.exp(effects["ci_hi"].astype(float)),
            f"{kind}_verdict": ["" if v == "no data" else NOT_COMPARABLE if reason else words.get(v, v)
                                for v, reason in zip(effects["verdict"], reasons)],
            f"{kind}_reason": reasons,
        })
        undecided = columns[kind][f"{kind}_verdict"] == NOT_COMPARABLE
        columns[kind].loc[undecided, [f"{kind}_lo", f"{kind}_hi"]] = math.nan
    return columns["speed"].merge(columns["memory"], on="effect", how="outer")[["effect", *COST_COLUMNS]]


def cost_line(effects: pd.DataFrame, cost_min_effect: float) -> str:
    """What the speed and memory verdicts are, said once above the tables where any was measured."""
    if not (effects.get("speed_verdict", pd.Series(dtype=object)).astype(str) != "").any() and \
            not (effects.get("memory_verdict", pd.Series(dtype=object)).astype(str) != "").any():
        return ""
    return (f"Speed and memory: time per training token (the median over each run's evaluation intervals; "
            f"a command's: its wall time) and peak memory, as ratios "
            f"treated / control paired by seed, at the intervals' level; each verdict is read against "
            f"±{cost_min_effect:.0%}, and runs not timed alike get no speed verdict.")


def timing_line(per_run: pd.DataFrame) -> str:
    """How an experiment's completed runs were timed: exclusively (execution.timing), sharing
    devices, or as ablate ran them one per device; and the order they ran in (drift)."""
    done = per_run[per_run["status"] == "completed"]
    sharing = _numeric(done, "res.runs_sharing_device")
    if not len(done) or sharing.isna().all():
        return ""
    exclusive = done["res.timed_exclusively"].eq(True).all() if "res.timed_exclusively" in done else False
    how = ("timed exclusively (execution.timing: exclusive: one run per device, nothing of ablate's beside it)"
           if exclusive else f"up to {int(sharing.max())} run(s) at a time per device")
    return (f"Timing: {how}; runs started seed by seed (every configuration of a seed, in matrix order, "
            f"before the next seed).")


def cost_lines(effects: pd.DataFrame, per_run: pd.DataFrame, cost_min_effect: float) -> list[str]:
    """The lines above the tables that say what the cost verdicts are and how the runs were timed."""
    return [line for line in (cost_line(effects, cost_min_effect), timing_line(per_run)) if line]


def attach(effects: pd.DataFrame, costs: pd.DataFrame) -> pd.DataFrame:
    """The loss effects with their cost columns beside them (matched by the effect's label)."""
    return effects.merge(costs, on="effect", how="left")


def _incomparable(per_run: pd.DataFrame, configs: list, kind: str) -> str:
    """Why the runs of a comparison were not measured alike ("" when they were)."""
    runs = [r for c in dict.fromkeys(configs) if c for r in _timings(per_run).get(c, [])]
    if not runs:
        return ""
    devices = sorted({str(d) for d, _, _ in runs if not missing(d)})
    kinds = {d.split(" ")[0] for d in devices}
    if kind == "memory":
        return f"measured on different devices ({', '.join(sorted(kinds))})" if len(kinds) > 1 else ""
    sharing = [s for _, _, s in runs]
    if any(math.isnan(s) for s in sharing):
        return "how the runs were timed was not recorded (runs from before ablate recorded it)"
    if max(sharing) > 1:
        return f"timed while sharing a device ({int(max(sharing))} runs at a time)"
    hosts = sorted({str(h) for _, h, _ in runs if not missing(h)})
    if len(hosts) > 1:
        return f"timed on {len(hosts)} different hosts"
    if len(devices) > 1:
        return f"timed on different devices or thread counts ({', '.join(devices)})"
    return ""


@per_frame
def _timings(per_run: pd.DataFrame) -> dict:
    """{configuration: [(device, host, runs sharing its device)]} of its completed runs, once per frame."""
    done = per_run[per_run["status"] == "completed"]
    absent = pd.Series(None, index=done.index, dtype=object)
    index: dict = {}
    for name, *timing in zip(done["name"], done.get("device", absent), done.get("host", absent),
                             _numeric(done, "res.runs_sharing_device")):
        index.setdefault(name, []).append(tuple(timing))
    return index


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def ratio_text(ratio: float, lo: float, hi: float, verdict: str, kind: str) -> str:
    """A cost effect in words: '1.31× faster (1.22–1.40×)' (a time ratio below 1 is a speed-up
    of 1/ratio), else the verdict with the ratio treated / control: 'more memory (×1.22,
    1.15–1.30)', 'same speed (time ×1.01, 0.98–1.04)'; no verdict, the reason's label alone."""
    if not isinstance(verdict, str):
        return ""
    if verdict == NOT_COMPARABLE or not math.isfinite(ratio):
        return verdict
    interval = f", {lo:.2f}–{hi:.2f}" if math.isfinite(lo) and math.isfinite(hi) else ""
    if kind == "speed" and verdict in ("faster", "slower") and interval:
        shown, a, b = (1 / ratio, 1 / hi, 1 / lo) if verdict == "faster" else (ratio, lo, hi)
        return f"{shown:.2f}× {verdict} ({a:.2f}–{b:.2f}×)"
    return f"{verdict} ({'time ' if kind == 'speed' else ''}×{ratio:.2f}{interval})"
