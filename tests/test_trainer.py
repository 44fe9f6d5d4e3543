"""The baseline IS Mainrun: parity with Mainrun's numbers and with an independent reference."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ablate.training.config import ExecOptions, TrainConfig
from ablate.training import data as data_module
from ablate.training.data import prepare
from ablate.training.model import GPT
from ablate.training.train import train

from . import mainrun_reference as ref
from .conftest import TINY

# From Mainrun's own code on ../shared/data/hacker_news.csv (issue #2).
MAINRUN_PARITY = {1: 1.8865593465846087, 11: 1.872060782947993, 22: 1.8575547111794928,
                  33: 1.8451239159412656, 44: 1.8342493254232277}


def test_mainrun_parity_through_the_cli(hn_csv):
    cmd = [sys.executable, "-m", "ablate", "train", "--data", hn_csv, "--set", "num_titles=20000",
           "--set", "vocab_size=4000", "--set", "d_model=128", "--set", "n_layer=2",
           "--set", "n_head=4", "--max-steps", "44", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]  # nothing but JSON on stdout
    assert [r["step"] for r in rows] == list(MAINRUN_PARITY)
    for r in rows:
        assert r["val_loss"] == pytest.approx(MAINRUN_PARITY[r["step"]], rel=1e-6)


def test_parity_with_independent_reference_on_other_settings(hn_csv):
    """Another size, block, batch, lr, dropout and seed: every evaluation equal."""
    settings = dict(num_titles=3000, vocab_size=800, d_model=48, n_layer=2, n_head=3,
                    block_size=48, batch_size=12, dropout=0.2, lr=3e-2, seed=7, epochs=2,
                    evals_per_epoch=8, val_frac=0.15)
    expected, n_params, _ = ref.run(hn_csv, **settings, max_steps=40)
    got = {}
    result = train(TrainConfig(data=hn_csv, **settings), lambda m: got.update({m["step"]: m["val_loss"]}),
                   ExecOptions(max_steps=40))
    assert got.keys() == {*expected, 40} and len(expected) >= 3  # and one where it stops
    for step, value in expected.items():
        assert got[step] == pytest.approx(value, rel=1e-6)
    assert result["param_count"] == n_params


def test_full_baseline_has_mainrun_parameter_count():
    torch.manual_seed(0)
    assert GPT(TrainConfig(), vocab_size=16_000).num_params() == 27_172_864


def test_same_seed_gives_same_initial_weights_as_reference():
    cfg = TrainConfig(vocab_size=300, d_model=32, n_layer=2, n_head=4, block_size=16)
    torch.manual_seed(1337)
    ours = GPT(cfg, 300)
    torch.manual_seed(1337)
    theirs = ref.RefGPT(300, 16, 2, 4, 32, 0.1)
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert p1.shape == p2.shape and torch.equal(p1, p2), (n1, n2)


def test_truncated_run_keeps_schedule_and_eval_points(hn_csv):
    """A truncated run evaluates where the full one does, and at the step where it stops, so its
    final loss is the trained model's."""
    cfg = TrainConfig(**TINY)
    full_steps, trunc_steps = [], []
    full = train(cfg, lambda m: full_steps.append((m["step"], m["lr"], m["val_loss"])))
    stop = full["max_steps"] // 2 + 1
    trunc = train(cfg, lambda m: trunc_steps.append((m["step"], m["lr"], m["val_loss"])),
                  ExecOptions(max_steps=stop))
    assert trunc["truncated"] and not full["truncated"]
    assert full["compile"] is False  # execution options that are not in the identity are recorded
    assert trunc["max_steps"] == full["max_steps"]
    assert trunc_steps[:-1] == [s for s in full_steps if s[0] < stop]
    assert trunc_steps[-1][0] == trunc["steps"] == stop and trunc["final_val_loss"] == trunc_steps[-1][2]


def test_second_run_skips_tokenization(hn_csv, tmp_path, monkeypatch):
    """The cached path reads neither the titles nor trains a tokenizer (what it saves in time is
    benchmarks/run.py's `first` section, measured cold against cached in the same run)."""
    cfg = TrainConfig(data=hn_csv, num_titles=20000, vocab_size=4000)
    cold = prepare(cfg, tmp_path)
    with monkeypatch.context() as m:
        for name, target in (("load_titles", data_module), ("BpeTrainer", data_module.trainers)):
            m.setattr(target, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} called on a cache hit"))
        warm = prepare(cfg, tmp_path)
    assert not cold.cache_hit and warm.cache_hit
    assert torch.equal(cold.train_ids, warm.train_ids) and torch.equal(cold.val_ids, warm.val_ids)
    assert warm.val_chars == cold.val_chars and warm.vocab_size == cold.vocab_size == 4000
    # anything that changes the ids changes the key
    assert not prepare(cfg.replace(vocab_size=3000), tmp_path).cache_hit
    assert not prepare(cfg.replace(seed=1), tmp_path).cache_hit
    # a model-only change reuses the entry
    assert prepare(cfg.replace(d_model=64, lr=1e-3), tmp_path).cache_hit


def test_no_per_step_host_sync(hn_csv, monkeypatch):
    """Reads to the host happen per evaluation, never per step."""
    calls = {"n": 0}
    for name in ("item", "tolist", "__float__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counting(self, *a, _orig=original, **k):
            calls["n"] += 1
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counting)
    cfg = TrainConfig(**{**TINY, "epochs": 2, "evals_per_epoch": 1})
    evals, steps = [], []
    result = train(cfg, evals.append, on_step=steps.append)
    assert result["steps"] >= 10 * len(evals) and len(evals) == 3  # step 1, end of each epoch
    assert calls["n"] <= 10 * len(evals), calls
    assert steps == list(range(1, result["steps"] + 1))  # progress per step, still no host sync
