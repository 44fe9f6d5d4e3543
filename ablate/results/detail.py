"""One run of an experiment as `ablate show` and the HTML page show it: its identity and
results, its config against its same-seed baseline, and its evaluations."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..training.params import ParamsConfig, is_custom
from ..storage.schema import plain
from ..training.config import TrainConfig
from .frames import missing
from .report import baseline_name, eval_column


@dataclass
class RunDetail:
    run: dict  # identity, status and results of the run
    config: TrainConfig | ParamsConfig  # as stored; fields the run predates take their defaults
    truncated_at: int | None  # the step a truncated run stopped at
    config_diff: pd.DataFrame  # field, value, and the baseline's value
    evals: pd.DataFrame
    values: list[float]  # the ranking metric over evaluations, for a sparkline


_INT_FIELDS = {f.name for f in dataclasses.fields(TrainConfig) if f.type in ("int", "int | None")}


def _typed(name: str, value: Any) -> Any:
    """A frame holds an int field that some runs leave None (split_seed) as floats: 1337.0 is
    1337 again, so the config validates and prints as the run stored it."""
    if name in _INT_FIELDS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def baseline_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of the in-matrix baseline in a load_runs() frame."""
    return runs[runs["name"] == baseline_name(runs)]


def run_detail(runs: pd.DataFrame, evals: pd.DataFrame, row: pd.Series,
               baselines: pd.DataFrame | None = None) -> RunDetail:
    """One run of a load_runs() frame with its config diff against its same-seed baseline (a
    baseline of your own trainer's, against nothing: its parameters are no one's defaults).
    `baselines`: `baseline_rows(runs)`, where the caller details many runs of one frame."""
    config = {k[4:]: _typed(k[4:], v) for k, v in row.items() if k.startswith("cfg.")}
    stored = {k: plain(v) for k, v in config.items() if not missing(v)}
    own = is_custom(stored)
    base_rows = baseline_rows(runs) if baselines is None else baselines
    base_rows = base_rows[base_rows["experiment"] == row["experiment"]]
    same_seed = base_rows[base_rows["seed"] == row["seed"]]
    base = same_seed if len(same_seed) else base_rows
    if len(base) and base.iloc[0]["run_id"] != row["run_id"]:
        against, label = {k[4:]: v for k, v in base.iloc[0].items() if k.startswith("cfg.")}, "baseline"
    else:
        against, label = (stored if own else TrainConfig().to_dict()), "default"
    diff = pd.DataFrame([{"field": k, "value": _value(v), label: _value(against.get(k))}
                         for k, v in config.items() if _value(v) != _value(against.get(k))],
                        columns=["field", "value", label])
    mine = evals[evals["run_id"] == row["run_id"]].drop(columns=["experiment", "run_id", "name", "seed"])
    info = {k: plain(row.get(k)) for k in ("run_id", "experiment", "name", "hash", "seed", "status", "error",
                                              "toggles", "final_val_loss", "best_val_loss", "best_step",
                                              "wall_time_s", "tokens_per_s", "code_version")}
    info.update({k: plain(row.get(f"res.{k}")) for k in RUN_RESULT_DETAILS})
    info = {k: (None if missing(v) else v) for k, v in info.items()}
    metric = stored["trainer"].get("metric", "val_loss") if own else "val_loss"
    column = eval_column(metric)
    truncated = not missing(row.get("truncated")) and bool(row["truncated"]) and not missing(row.get("steps"))
    return RunDetail(info, (ParamsConfig if own else TrainConfig).from_dict(stored),
                     int(row["steps"]) if truncated else None, diff, mine.reset_index(drop=True),
                     mine[column].astype(float).tolist() if column in mine else [])


RUN_RESULT_DETAILS = ("warmup_s", "step_time_s", "train_tokens_per_s", "peak_rss_bytes", "peak_rss_of",
                      "peak_cuda_allocated_bytes", "environment")  # what a run cost and ran on, from its result


def cost_line(run: dict) -> str | None:
    """A run's cost in one line: its speed after the warm-up step and its peak memory."""
    parts = []
    if run.get("step_time_s") is not None:
        parts.append(f"{run['step_time_s'] * 1e3:,.1f} ms/step, {run['train_tokens_per_s']:,.0f} tokens/s "
                     f"after a {run['warmup_s']:.2f} s first step" if run.get("warmup_s") is not None else
                     f"{run['step_time_s'] * 1e3:,.1f} ms/step, {run['train_tokens_per_s']:,.0f} tokens/s")
    if run.get("peak_rss_bytes") is not None:
        parts.append(f"peak memory {run['peak_rss_bytes'] / 2**20:,.0f} MiB resident ({run['peak_rss_of']})")
    if run.get("peak_cuda_allocated_bytes") is not None:
        parts.append(f"{run['peak_cuda_allocated_bytes'] / 2**20:,.0f} MiB CUDA allocated at peak")
    return "cost: " + "; ".join(parts) if parts else None


def _value(value: Any) -> Any:
    """A config value as compared and shown: unset (None, or a frame's nan for a field the run
    predates) is None, so two unset values are no difference."""
    return None if missing(value) else plain(value)
