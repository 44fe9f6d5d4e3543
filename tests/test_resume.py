"""A run resumed from a checkpoint continues exactly where it stopped (bit for bit on CPU)."""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from ablate.training.config import ConfigError, ExecOptions, TrainConfig
from ablate.training.checkpoint import CHECKPOINT_FILE
from ablate.training.train import train

from .conftest import TINY

# Every source of randomness and state at once: dropout, EMA, token masking, sequence
# augmentation, AdamW moments and a OneCycle schedule that also cycles beta1.
STATEFUL = dict(TINY, epochs=2, evals_per_epoch=3, ema_decay=0.9, token_mask_prob=0.1,
                sequence_augment_prob=0.5, optimizer="adamw", schedule="onecycle")


def run(cfg, **options):
    evals = []
    result = train(cfg, evals.append, ExecOptions(**options))
    return evals, result


def comparable(evals):
    return [(e["step"], e["val_loss"], e["val_loss_full"], e["train_loss"], e["lr"], e["grad_norm"],
             [(m["step"], m["train_loss"], m["grad_norm"]) for m in e["step_metrics"]]) for e in evals]


@pytest.fixture(scope="module")
def uninterrupted(hn_csv):
    return run(TrainConfig(**STATEFUL))


@pytest.mark.parametrize("stop_eval", [4, 3])  # mid-epoch, and the last eval of epoch 1
def test_resumed_run_equals_uninterrupted_run(uninterrupted, tmp_path, stop_eval):
    full_evals, full_result = uninterrupted
    cfg = TrainConfig(**STATEFUL)
    stop_step = full_evals[stop_eval - 1]["step"]
    first, truncated = run(cfg, max_steps=stop_step, checkpoint_dir=str(tmp_path))
    assert truncated["truncated"] and first[-1]["step"] == stop_step
    steps_now = []
    hook = register_optimizer_step_post_hook(lambda *_: steps_now.append(1))
    try:
        resumed, result = run(cfg, checkpoint_dir=str(tmp_path), resume=True)
    finally:
        hook.remove()
    assert comparable(resumed) == comparable(full_evals)  # the restored part is replayed too
    assert result["final_val_loss"] == full_result["final_val_loss"] and not result["truncated"]
    assert result["resumed_from_step"] == stop_step and full_result["resumed_from_step"] == 0
    # only the resumed part was trained now (counted, not timed), its training time added to the first's
    assert len(steps_now) == full_result["steps"] - stop_step
    assert result["train_time_s"] > truncated["train_time_s"]


def test_checkpoint_of_another_config_is_refused(hn_csv, tmp_path):
    cfg = TrainConfig(**TINY)
    run(cfg, max_steps=1, checkpoint_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="another configuration.*dropout"):
        run(cfg.replace(dropout=0.0), checkpoint_dir=str(tmp_path), resume=True)


def test_checkpoints_load_without_running_code(hn_csv, tmp_path):
    run(TrainConfig(**TINY), max_steps=1, checkpoint_dir=str(tmp_path))
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)  # raises on any object
    assert state["position"]["step"] == 1
