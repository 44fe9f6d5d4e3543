"""A run's checkpoint: everything its next step depends on, written atomically and read back
as tensors only (weights_only=True), so a checkpoint can neither be half-written nor run code.
`train` saves one at each evaluation with --checkpoints and continues from it with --resume."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, TrainConfig

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(path: Path, cfg: TrainConfig, stateful: dict, ema: Any,
                    position: dict) -> Path:
    """Everything the next step depends on — weights, optimizer, scheduler, scaler, EMA, every
    RNG, the data position and the evaluations so far — written atomically (tmp + rename), so
    a kill while writing leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: obj.state_dict() if hasattr(obj, "state_dict") else obj.get_state()
             for name, obj in stateful.items() if obj is not None}
    state.update(config=cfg.to_dict(), ema=ema.shadow if ema else None, position=position,
                 rng_cpu=torch.get_rng_state(), rng_python=random.getstate(),
                 rng_cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:  # a full disk must not leave a half-written file behind
        tmp.unlink(missing_ok=True)
        raise
    return path


def restore_checkpoint(path: Path, cfg: TrainConfig, stateful: dict, ema: Any,
                       device: torch.device) -> dict:
    """Load a checkpoint into freshly built objects (tensors only: weights_only=True, so a
    checkpoint cannot run code); returns the saved position."""
    state = _load_tensors(path, device)
    if state["config"] != cfg.to_dict():
        raise ConfigError(f"checkpoint {path} belongs to another configuration; "
                          f"differs in {sorted(k for k, v in cfg.to_dict().items() if state['config'].get(k) != v)}")
    for name, obj in stateful.items():
        if obj is None:
            continue
        if hasattr(obj, "load_state_dict"):
            obj.load_state_dict(state[name])
        else:
            obj.set_state(state[name].cpu())
    if ema:
        with torch.no_grad():
            torch._foreach_copy_(ema.shadow, state["ema"])
    torch.set_rng_state(state["rng_cpu"].cpu())
    random.setstate(_as_tuples(state["rng_python"]))
    if state["rng_cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
    return state["position"]


def _load_tensors(path: Path, device: torch.device) -> dict:
    """torch.load(weights_only=True), its failures as one line that names the file: refused as
    unsafe (it would construct objects) or unreadable. Never a hint to load it unsafely."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError...
        unsafe = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), None)
        why = (f"refused as unsafe: loading it would construct objects ({unsafe})" if unsafe else
               f"corrupt or not a checkpoint ({type(e).__name__})")
        raise RuntimeError(f"checkpoint {path}: {why}; delete it to train this run from the start") from None


def _as_tuples(value: Any) -> Any:
    """random.setstate wants the tuples that pickling turned into lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
