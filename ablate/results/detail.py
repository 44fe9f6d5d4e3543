"""One run of an experiment as `ablate show` and the HTML page show it: its identity and
results, its config against its same-seed baseline, and its evaluations."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..training.params import ParamsConfig, is_custom
from ..storage.schema import plain
from ..training.config import TrainConfig
from ..training.transcript import MARK, marked, output_name
from .frames import ResultsError, missing, per_frame
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
    """One run of a load_runs() frame with its config diff against its same-seed baseline (see
    `against_baseline`). `baselines`: `baseline_rows(runs)`, where the caller details many runs."""
    config, diff, label = against_baseline(runs, row, baselines)
    mine = evals[evals["run_id"] == row["run_id"]].drop(columns=["experiment", "run_id", "name", "seed"])
    info = {k: plain(row.get(k)) for k in ("run_id", "experiment", "name", "hash", "seed", "status", "error",
                                              "toggles", "final_val_loss", "best_val_loss", "best_step",
                                              "wall_time_s", "tokens_per_s", "code_version", "device")}
    info.update({k: plain(row.get(f"res.{k}")) for k in RUN_RESULT_DETAILS})
    info = {k: (None if missing(v) else v) for k, v in info.items()}
    column = eval_column(config.metric if isinstance(config, ParamsConfig) else "val_loss")
    return RunDetail(info, config, truncated_at(row), pd.DataFrame(diff, columns=["field", "value", label]),
                     mine.reset_index(drop=True), mine[column].astype(float).tolist() if column in mine else [])


def against_baseline(runs: pd.DataFrame, row: Any, baselines: pd.DataFrame | None = None) -> tuple[Any, list, str]:
    """A run's config (`row`: of a load_runs() frame, a Series or its dict), and the fields where
    it differs from its same-seed baseline's, as (field, value, baseline's value), and "baseline";
    a baseline of your own trainer's is compared with nothing (its parameters are no one's
    defaults), Mainrun's with the defaults, and then the label says "default"."""
    config = _config_of(row)
    stored = {k: plain(v) for k, v in config.items() if not missing(v)}
    own = is_custom(stored)
    found = _baseline_by(baseline_rows(runs) if baselines is None else baselines)
    base = found.get((row["experiment"], row["seed"]), found.get(row["experiment"]))
    if base is not None and base["run_id"] != row["run_id"]:
        against, label = {k[4:]: v for k, v in base.items() if k.startswith("cfg.")}, "baseline"
    else:
        against, label = (stored if own else TrainConfig().to_dict()), "default"
    diff = [(k, _value(v), _value(against.get(k))) for k, v in config.items() if _value(v) != _value(against.get(k))]
    return (ParamsConfig if own else TrainConfig).from_dict(stored), diff, label


def _config_of(row: Any) -> dict:
    """The run's config fields out of its load_runs() row (`cfg.*`), ints a frame made floats typed back."""
    return {k[4:]: _typed(k[4:], v) for k, v in row.items() if k.startswith("cfg.")}


def truncated_at(row: Any) -> int | None:
    """The step a truncated run stopped at, else None."""
    truncated = not missing(row.get("truncated")) and bool(row["truncated"]) and not missing(row.get("steps"))
    return int(row["steps"]) if truncated else None


@per_frame
def _baseline_by(baselines: pd.DataFrame) -> dict:
    """A run's baseline: by (experiment, seed) the first of that seed, by experiment the first
    of any seed (looked up once per frame, not filtered once per run of 10,000)."""
    found: dict = {}
    for _, row in baselines.iterrows():
        found.setdefault((row["experiment"], row["seed"]), row)
        found.setdefault(row["experiment"], row)
    return found


def kept_output(store: Any, row: Any, log_dir: str | Path) -> str:
    """The output a run of your own command printed (its current attempt's, kept beside its log
    under `log_dir` by `ablate run`), each line a pattern read marked (training.transcript)."""
    from ..execution.workspace import database_label

    name = output_name(int(row["run_id"]), int(row["attempt"]))
    path = Path(log_dir) / str(row["experiment"]) / database_label(store) / name
    config = {k: plain(v) for k, v in _config_of(row).items() if not missing(v)}
    if not is_custom(config) or "command" not in config["trainer"]:
        raise ResultsError(f"run {row['run_id']} is not a run of your own command: its output is its log, "
                           f"{path.with_suffix('.log')}")
    if not path.is_file():
        raise ResultsError(f"no output kept for run {row['run_id']} at {path}: pass the --log-dir it ran "
                           f"with (ablate run's default: ablate-logs, beside where it ran)")
    with open(path, encoding="utf-8", errors="replace") as text:
        lines = list(marked(text, ParamsConfig.from_dict(config).pattern))
    return "\n".join((MARK if read else " " * len(MARK)) + line for read, line in lines)


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
