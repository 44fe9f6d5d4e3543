"""The CUDA paths: every switch that only means something on a GPU, checked on one.

Skipped where CUDA is absent (CI has none); `benchmarks/gpu.py` runs exactly this file
(`pytest -m cuda`) on a lent GPU and stores the outcome. Tolerances are stated per test: a
path whose kernels are deterministic must match bit for bit, the others within float
tolerance of the path they replace.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ablate.training.train as T
from ablate.training.config import ExecOptions, TrainConfig
from ablate.training.data import prepare
from ablate.training.model import GPT
from ablate.storage.store import Store
from ablate.training.train import make_optimizer, set_matmul_precision, train

from .conftest import TINY, record_linear_dtypes
from .test_resume import STATEFUL, comparable

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA: benchmarks/gpu.py runs these on a GPU")]

NO_DROPOUT = dict(TINY, dropout=0.0)  # dropout masks come from a device's own generator


@pytest.fixture(scope="module")
def data(hn_csv):
    return prepare(TrainConfig(**TINY))


def run(cfg: TrainConfig, data, device: str = "cuda", **options):
    evals: list[dict] = []
    result = train(cfg, evals.append, ExecOptions(device=device, **options), data=data)
    return evals, result


def losses(evals: list[dict], key: str = "val_loss") -> list[float]:
    return [e[key] for e in evals]


def test_fp32_training_on_cuda_matches_cpu(data):
    """Without dropout nothing random differs between devices: the same training, to float
    tolerance (GPU reductions sum in another order)."""
    cfg = TrainConfig(**NO_DROPOUT)
    cpu, _ = run(cfg, data, device="cpu", max_steps=40)
    gpu, result = run(cfg, data, max_steps=40)
    assert "cpu" not in result["device"]  # the GPU's name is recorded
    assert losses(gpu) == pytest.approx(losses(cpu), rel=1e-4)
    assert losses(gpu, "train_loss") == pytest.approx(losses(cpu, "train_loss"), rel=1e-4)


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_trains_in_half_precision_and_evaluates_in_fp32(data, monkeypatch, precision, dtype):
    """Training matmuls run in the half type (fp16 with a GradScaler), the official evaluation
    in fp32; the losses stay within 2% of the fp32 run's."""
    cfg = TrainConfig(**NO_DROPOUT)
    fp32, _ = run(cfg, data, max_steps=40)
    seen = record_linear_dtypes(monkeypatch)
    half, _ = run(cfg.replace(precision=precision), data, max_steps=40)
    assert {d for training, d in seen if training} == {dtype}
    assert {d for training, d in seen if not training} == {torch.float32}
    assert all(math.isfinite(v) for v in losses(half))
    assert losses(half) == pytest.approx(losses(fp32), rel=2e-2)


def test_adamw_is_fused_on_cuda_and_matches_the_unfused_step(data, monkeypatch):
    cfg = TrainConfig(**NO_DROPOUT, optimizer="adamw", lr=1e-3)
    model = GPT(cfg, data.vocab_size).cuda()
    assert make_optimizer(model, cfg, torch.device("cuda")).defaults["fused"] is True
    fused, _ = run(cfg, data, max_steps=30)

    def unfused(model, cfg, device):
        return torch.optim.AdamW(T.param_groups(model, cfg), lr=cfg.lr, betas=cfg.betas,
                                 foreach=True)
    monkeypatch.setattr(T, "make_optimizer", unfused)
    plain, _ = run(cfg, data, max_steps=30)
    assert losses(fused) == pytest.approx(losses(plain), rel=1e-4)


def test_flash_sdpa_trains_with_dropout_and_equals_manual_attention(data):
    """Under bf16 autocast the flash kernel serves training attention, dropout inside it; a
    whole bf16 run with sdpa and no dropout gives what the manual attention gives. (The fp32
    evaluation cannot use flash: torch picks another SDPA kernel there.)"""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    cfg = TrainConfig(**TINY, attention="sdpa")
    torch.manual_seed(0)
    model = GPT(cfg, data.vocab_size).cuda().train()
    x = data.train_ids[:8 * cfg.block_size].view(8, cfg.block_size).cuda()
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
        first, second = model(x), model(x)  # raises if flash cannot serve the call
        second.float().logsumexp(-1).mean().backward()
    assert not torch.equal(first, second)  # dropout was applied, differently each call
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    base = cfg.replace(dropout=0.0, precision="bf16")
    manual, _ = run(base.replace(attention="manual"), data, max_steps=20)
    flash, _ = run(base, data, max_steps=20)
    assert losses(flash) == pytest.approx(losses(manual), rel=2e-2)  # bf16 softmax orders


def test_tf32_switch_sets_and_resets_matmul_precision(data):
    cuda = torch.device("cuda")
    cfg = TrainConfig(**NO_DROPOUT)
    set_matmul_precision(cfg.replace(tf32=True), cuda)
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    set_matmul_precision(cfg, cuda)  # the next config in the same process
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    ieee, _ = run(cfg, data, max_steps=30)
    tf32, _ = run(cfg.replace(tf32=True), data, max_steps=30)
    assert losses(tf32) == pytest.approx(losses(ieee), rel=1e-2)


def test_compile_keeps_eager_dropout_on_cuda(data):
    """inductor's fallback_random makes a compiled run draw eager's dropout masks."""
    cfg = TrainConfig(**TINY)
    eager, _ = run(cfg, data, max_steps=30)
    compiled, result = run(cfg, data, max_steps=30, compile=True)
    assert result["compile"] is True
    for key in ("val_loss", "train_loss"):
        assert losses(compiled, key) == pytest.approx(losses(eager, key), rel=1e-4)


def test_checkpoint_resume_on_cuda_continues_the_run(data, tmp_path):
    """Every RNG (CUDA's included), the optimizer and the data position come back: the resumed
    run equals the uninterrupted one exactly when the kernels are deterministic, and to 1e-5
    relative otherwise (asserted; the observed difference is printed)."""
    cfg = TrainConfig(**STATEFUL)
    full, full_result = run(cfg, data)
    stop_step = full[3]["step"]
    run(cfg, data, max_steps=stop_step, checkpoint_dir=str(tmp_path))
    resumed, result = run(cfg, data, checkpoint_dir=str(tmp_path), resume=True)
    assert result["resumed_from_step"] == stop_step
    assert [e["step"] for e in resumed] == [e["step"] for e in full]
    exact = comparable(resumed) == comparable(full)
    worst = max(abs(a - b) / abs(b) for a, b in zip(losses(resumed), losses(full)))
    print(f"resume on CUDA: bit-exact={exact}, max relative val_loss difference {worst:.2e}")
    assert losses(resumed) == pytest.approx(losses(full), rel=1e-5)
    assert result["final_val_loss"] == pytest.approx(full_result["final_val_loss"], rel=1e-5)


MATRIX = """\
name: cuda-slots
base:
  overrides: {{num_titles: 2000, vocab_size: 500, d_model: 32, n_layer: 1, n_head: 2,
              block_size: 32, batch_size: 8, epochs: 1, evals_per_epoch: 2}}
data: {data}
seeds: [1]
design: one-at-a-time
toggles: [swiglu, rmsnorm]
execution: {{jobs_per_device: {jobs}, warm_workers: {warm}}}
"""


def run_matrix(tmp_path: Path, hn_csv: str, jobs: int, warm: bool) -> dict[tuple, list[float]]:
    matrix = tmp_path / f"m{jobs}{warm}.yaml"
    matrix.write_text(MATRIX.format(data=hn_csv, jobs=jobs, warm=str(warm).lower()))
    db = tmp_path / f"m{jobs}{warm}.db"
    proc = subprocess.run([sys.executable, "-m", "ablate", "run", str(matrix), "--db", str(db),
                           "--log-dir", str(tmp_path / "logs")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    store = Store(f"sqlite:///{db}")
    runs = store.completed_runs()
    assert len(runs) == 3 and all("cpu" not in r.device for r in runs)
    return {(r.name, r.seed): [e.val_loss for e in store.evals(r.id)] for r in runs}


def test_jobs_share_one_gpu_with_warm_workers(tmp_path, hn_csv):
    """Two jobs share one GPU and the third run goes to a slot's warm worker: every run
    completes on the GPU and trains what a lone cold job trains."""
    packed = run_matrix(tmp_path, hn_csv, jobs=2, warm=True)
    alone = run_matrix(tmp_path, hn_csv, jobs=1, warm=False)
    for key, curve in alone.items():
        assert packed[key] == pytest.approx(curve, rel=1e-5)
