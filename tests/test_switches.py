"""Each switch of TrainConfig does what it claims, checked against independent formulas or
against Mainrun's own path. Tiny models only: the whole file runs in seconds on 2 CPU cores."""

from __future__ import annotations

import collections
import csv
import gzip
import math
import time

import pytest
import torch
import torch.nn as nn
from tokenizers import pre_tokenizers
from torch.nn import functional as F
from torch.testing import assert_close

import ablate.training.train as T
from ablate.training.catalog import CATALOG, apply, preset
from ablate.training.config import ConfigError, ExecOptions, TrainConfig
from ablate.training.data import EOS, build_tokenizer, prepare
from ablate.training.model import GPT, MLP, RMSNorm, SwiGLU
from ablate.training.train import (EMA, NonFiniteLoss, Schedule, augmented_stream, mainrun_val_loss,
                                   make_optimizer, make_scheduler, mask_tokens, train)

from .conftest import HN_CSV, TINY, record_linear_dtypes

CPU = torch.device("cpu")


def small(**kw) -> TrainConfig:
    """A model-only config (no data) for module-level checks."""
    return TrainConfig(**{**dict(vocab_size=300, d_model=32, n_layer=2, n_head=4, block_size=16,
                                 dropout=0.0), **kw})


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and a second intra-op thread can slow them down
    a hundredfold when other processes share the 2 cores. Restored for the tests after these."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(hn_csv):
    cfg = TrainConfig(**TINY)
    return cfg, prepare(cfg)


def opts(**kw) -> ExecOptions:
    return ExecOptions(device="cpu", **kw)


class Spy:
    """Records what the training loop hands to the model and to the loss (first call of each
    kind), by wrapping GPT.forward and F.cross_entropy for the duration of a test."""

    def __init__(self, monkeypatch):
        self.model_in: list[torch.Tensor] = []
        self.train_targets: list[torch.Tensor] = []
        orig_fwd, orig_ce = GPT.forward, F.cross_entropy

        def forward(model, idx):
            if model.training:
                self.model_in.append(idx.clone())
            return orig_fwd(model, idx)

        def cross_entropy(logits, target, *a, **k):
            if torch.is_grad_enabled():  # training; evaluation runs under no_grad
                self.train_targets.append(target.clone())
            return orig_ce(logits, target, *a, **k)

        monkeypatch.setattr(GPT, "forward", forward)
        monkeypatch.setattr(F, "cross_entropy", cross_entropy)


# --------------------------------------------------------------------------- architecture
def _randomized(model: nn.Module) -> nn.Module:
    """Same large random weights for equal-seeded models: sharp attention, a real test."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def test_sdpa_equals_manual_attention(monkeypatch):
    calls = {"n": 0}
    orig = F.scaled_dot_product_attention

    def counting(*a, **k):
        calls["n"] += 1
        return orig(*a, **k)
    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    idx = torch.randint(0, 300, (3, 16), generator=torch.Generator().manual_seed(0))
    out, grads, n_calls = {}, {}, {}
    for kind in ("manual", "sdpa"):
        torch.manual_seed(1337)
        model = _randomized(GPT(small(attention=kind), 300))
        calls["n"] = 0
        full, short = model(idx), model(idx[:, :7])  # T < block_size too
        n_calls[kind] = calls["n"]
        full.logsumexp(-1).sum().backward()
        out[kind] = (full, short)
        grads[kind] = [p.grad.clone() for p in model.parameters()]
    assert n_calls == {"manual": 0, "sdpa": 4}  # 2 layers x 2 forwards: the switch is live
    for a, b in zip(out["manual"], out["sdpa"]):
        assert_close(b, a, atol=1e-5, rtol=0)
    for a, b in zip(grads["manual"], grads["sdpa"]):
        assert_close(b, a, atol=1e-4, rtol=1e-4)
    for full, short in out.values():  # causal: a prefix's logits do not see the future
        assert_close(full[:, :7], short, atol=1e-5, rtol=0)
    assert out["manual"][0].std() > 0.1  # logits are not trivially flat


def test_swiglu_shape_biases_and_formula():
    cfg = small(d_model=48, mlp="swiglu")
    torch.manual_seed(0)
    mlp = SwiGLU(cfg)
    hidden = int(8 / 3 * 48)
    assert (mlp.w1.weight.shape, mlp.w2.weight.shape, mlp.w3.weight.shape) == (
        (hidden, 48), (hidden, 48), (48, hidden))
    assert [n for n, _ in mlp.named_parameters()] == ["w1.weight", "w2.weight", "w3.weight"]
    assert SwiGLU(TrainConfig(mlp="swiglu")).w1.out_features == 1365  # int(8/3 * 512)
    x = torch.randn(2, 5, 48)
    w1, w2, w3 = mlp.w1.weight, mlp.w2.weight, mlp.w3.weight
    expected = (F.silu(x @ w1.T) * (x @ w2.T)) @ w3.T
    assert_close(mlp(x), expected, rtol=1e-5, atol=1e-6)
    model = GPT(small(mlp="swiglu"), 300)
    assert all(isinstance(b.mlp, SwiGLU) for b in model.blocks)
    assert not any(isinstance(m, (MLP, nn.GELU)) for m in model.modules())


def test_rmsnorm_formula_and_used_everywhere():
    norm = RMSNorm(16)
    assert norm.eps == 1e-6 and [n for n, _ in norm.named_parameters()] == ["weight"]
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16))
    for scale in (3.0, 1e-3):  # at 1e-3, mean(x²) ~ eps: the output depends on eps being 1e-6
        x = torch.randn(4, 16, dtype=torch.float64).float() * scale
        expected = norm.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        assert_close(norm(x), expected, rtol=1e-5, atol=1e-7)
    wrong_eps = norm.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    assert not torch.allclose(norm(x), wrong_eps, rtol=1e-3)

    base, rms = GPT(small(), 300), GPT(small(norm="rmsnorm"), 300)
    ln_names = {n for n, m in base.named_modules() if isinstance(m, nn.LayerNorm)}
    rms_names = {n for n, m in rms.named_modules() if isinstance(m, RMSNorm)}
    assert ln_names == rms_names and len(ln_names) == 2 * 2 + 1  # ln1, ln2 per block, ln_f
    assert not any(isinstance(m, nn.LayerNorm) for m in rms.modules())


# --------------------------------------------------------------------------- optimizer
def test_grouped_weight_decay_groups_and_effect():
    cfg = small(optimizer="adamw", lr=0.1, weight_decay=0.01, weight_decay_mode="grouped",
                betas=(0.9, 0.95))
    model = GPT(cfg, 300)
    opt = make_optimizer(model, cfg, CPU)
    assert isinstance(opt, torch.optim.AdamW) and len(opt.param_groups) == 2
    decay = [g for g in opt.param_groups if g["weight_decay"] == 0.01]
    no_decay = [g for g in opt.param_groups if g["weight_decay"] == 0.0]
    assert len(decay) == len(no_decay) == 1
    one_d = {id(p) for p in model.parameters() if p.ndim == 1}
    assert {id(p) for p in no_decay[0]["params"]} == one_d
    assert all(p.ndim >= 2 for p in decay[0]["params"])
    listed = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(listed) == sorted(id(p) for p in model.parameters())  # each exactly once
    named = dict(model.named_parameters())
    for name in ("blocks.0.ln1.weight", "blocks.0.ln1.bias", "blocks.0.attn.qkv.bias",
                 "blocks.1.mlp.net.0.bias", "ln_f.weight"):
        assert id(named[name]) in one_d, name
    for name in ("token_emb.weight", "pos_emb", "blocks.0.attn.qkv.weight"):
        assert id(named[name]) not in one_d, name
    assert all(g["betas"] == (0.9, 0.95) for g in opt.param_groups)
    # behaviour: a zero-gradient AdamW step is pure decoupled decay
    before = {n: p.detach().clone() for n, p in named.items()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in named.items():
        if p.ndim == 1:
            assert torch.equal(p, before[n]), n
        else:
            assert_close(p, before[n] * (1 - 0.1 * 0.01)), n


def test_all_mode_decays_everything():
    cfg = preset("report-current").replace(vocab_size=300, d_model=32, n_layer=2, n_head=4,
                                           block_size=16)
    model = GPT(cfg, 300)
    opt = make_optimizer(model, cfg, CPU)
    assert isinstance(opt, torch.optim.AdamW) and len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert group["weight_decay"] == 0.01 and group["betas"] == (0.9, 0.999)
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters()}
    ln = model.ln_f.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert_close(model.ln_f.weight, ln * (1 - group["lr"] * 0.01))  # norms decay too


def test_sgd_has_no_momentum():
    cfg = small()
    model = GPT(cfg, 300)
    opt = make_optimizer(model, cfg, CPU)
    assert type(opt) is torch.optim.SGD and len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert (g["momentum"], g["nesterov"], g["weight_decay"], g["lr"]) == (0, False, 0.0, 6e-3)
    w = model.blocks[0].attn.qkv.weight
    deltas = []
    for _ in range(3):  # the same gradient must give the same step every time
        before = w.detach().clone()
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        deltas.append(w.detach() - before)
    assert_close(deltas[2], deltas[0]) and assert_close(deltas[0], torch.full_like(w, -6e-3))


# --------------------------------------------------------------------------- grad accumulation
def test_grad_accum_equals_one_big_batch(tiny, tmp_path):
    cfg0, data = tiny
    common = dict(dropout=0.0, lr=0.5, grad_clip=1e9)  # no clipping to hide a factor of 2
    runs = {"big": cfg0.replace(batch_size=64, **common),
            "accum": cfg0.replace(batch_size=32, grad_accum_steps=2, **common),
            "half": cfg0.replace(batch_size=32, **common)}
    weights, results, train_loss = {}, {}, {}
    for name, cfg in runs.items():
        seen = []
        results[name] = train(cfg, seen.append,
                              opts(max_steps=1, checkpoint_dir=str(tmp_path / name)), data=data)
        weights[name] = torch.load(tmp_path / name / "checkpoint.pt", weights_only=False)["model"]
        train_loss[name] = seen[0]["step_metrics"][0]["train_loss"]
    torch.manual_seed(cfg0.seed)
    init = GPT(runs["big"], data.vocab_size).state_dict()
    moved = 0.0
    for k, w0 in init.items():
        big, acc = weights["big"][k] - w0, weights["accum"][k] - w0
        assert_close(acc, big, rtol=1e-4, atol=1e-7), k
        moved = max(moved, big.abs().max().item())
    assert moved > 1e-3  # the update is large enough for the comparison to mean something
    assert train_loss["accum"] == pytest.approx(train_loss["big"], rel=1e-5)
    # a single micro-batch is a different update: the comparison can fail
    half = weights["half"]["blocks.0.attn.qkv.weight"] - init["blocks.0.attn.qkv.weight"]
    big = weights["big"]["blocks.0.attn.qkv.weight"] - init["blocks.0.attn.qkv.weight"]
    assert not torch.allclose(half, big, rtol=1e-2, atol=1e-6)
    # the schedule counts optimizer steps
    s_big, s_acc = (Schedule(runs[n], len(data.train_ids)) for n in ("big", "accum"))
    assert s_acc.batches_per_epoch // 2 == s_big.batches_per_epoch == s_acc.steps_per_epoch
    assert results["accum"]["max_steps"] == results["big"]["max_steps"] == s_big.max_steps
    assert results["accum"]["steps"] == 1


# --------------------------------------------------------------------------- schedules
def report_get_lr(step, warmup_steps=500, max_steps=1883, max_lr=5e-4, min_lr=1e-5):
    """Verbatim from the report (§6.B)."""
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    elif step < max_steps:
        decay_ratio = (step - warmup_steps) / (max_steps - warmup_steps)
        coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
        return min_lr + coeff * (max_lr - min_lr)
    else:
        return min_lr


def _cos(start, end, pct):  # PyTorch OneCycleLR's anneal_strategy="cos"
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def onecycle_ref(i, total, max_lr, pct_start, div, final_div, lo=0.85, hi=0.95):
    """(lr, beta1) at scheduler index i, written from PyTorch's documented two phases."""
    initial = max_lr / div
    minimum = initial / final_div
    end1, end2 = pct_start * total - 1, total - 1
    if i <= end1:
        p = i / end1
        return _cos(initial, max_lr, p), _cos(hi, lo, p)
    p = (i - end1) / (end2 - end1)
    return _cos(max_lr, minimum, p), _cos(lo, hi, p)


def drive(cfg: TrainConfig, total: int):
    model = nn.Linear(2, 2)
    opt = make_optimizer(model, cfg, CPU)
    sched = make_scheduler(opt, cfg, total)
    lrs, beta1 = [], []
    for _ in range(total):
        group = opt.param_groups[0]
        lrs.append(group["lr"])
        beta1.append(group["betas"][0] if "betas" in group else None)
        opt.step()
        sched.step()
    return lrs, beta1


def test_warmup_cosine_follows_report_get_lr():
    cfg = apply(TrainConfig(), ["warmup_cosine"])
    total = 1500
    lrs, _ = drive(cfg, total)
    points = {0: 0.0, 250: 2.5e-4, 500: 5e-4, 1000: (5e-4 + 1e-5) / 2, total - 1: None}
    for step, value in points.items():
        expected = report_get_lr(step, 500, total, 5e-4, 1e-5)
        assert lrs[step] == pytest.approx(expected, rel=1e-9, abs=1e-15), step
        if value is not None:
            assert expected == pytest.approx(value, rel=1e-12)
    assert lrs[-1] == pytest.approx(1e-5, rel=1e-3)  # last step is (almost) min_lr
    lrs, _ = drive(cfg, 1883)  # the report's own run length, every step
    assert lrs == pytest.approx([report_get_lr(s) for s in range(1883)], rel=1e-9, abs=1e-15)
    with pytest.raises(ConfigError, match="warmup_steps"):
        make_scheduler(torch.optim.AdamW(nn.Linear(2, 2).parameters()), cfg, 500)


def test_onecycle_follows_pytorch_formula():
    cfg = apply(TrainConfig(), ["onecycle_fix"])  # max 5e-4, pct 0.2, div 5, final_div 100
    total = 1000
    lrs, beta1 = drive(cfg, total)
    end1 = int(0.2 * total - 1)  # 199
    first, warm_end, middle, last = 0, end1, end1 + (total - 1 - end1) // 2, total - 1
    assert lrs[first] == pytest.approx(5e-4 / 5, rel=1e-12)
    assert lrs[warm_end] == pytest.approx(5e-4, rel=1e-12)
    assert lrs[middle] == pytest.approx((5e-4 + 1e-4 / 100) / 2, rel=1e-9)
    assert lrs[last] == pytest.approx(1e-4 / 100, rel=1e-9)
    for i in range(total):
        lr, b1 = onecycle_ref(i, total, 5e-4, 0.2, 5.0, 100.0)
        assert lrs[i] == pytest.approx(lr, rel=1e-9, abs=1e-15), i
        assert beta1[i] == pytest.approx(b1, rel=1e-9), i


def test_report_current_cycles_adamw_beta1():
    cfg = preset("report-current")
    total = 1000
    lrs, beta1 = drive(cfg, total)
    end1 = int(0.5 * total - 1)
    assert lrs[0] == pytest.approx(1e-4, rel=1e-12)  # max_lr / div: AdamW's lr 1e-4 has no say
    assert lrs[end1] == pytest.approx(1e-3, rel=1e-12)
    assert beta1[0] == pytest.approx(0.95) and beta1[end1] == pytest.approx(0.85)
    assert beta1[-1] == pytest.approx(0.95)
    assert min(beta1) == pytest.approx(0.85) and max(beta1) == pytest.approx(0.95)
    for i in (0, 100, end1, 700, total - 1):
        lr, b1 = onecycle_ref(i, total, 1e-3, 0.5, 10.0, 1e4)
        assert lrs[i] == pytest.approx(lr, rel=1e-9, abs=1e-15) and beta1[i] == pytest.approx(b1)


def test_baseline_cosine_schedule():
    total = 200
    lrs, beta1 = drive(small(), total)
    assert beta1 == [None] * total  # SGD: no betas, no momentum cycling
    for i in (0, 50, 100, 199):
        assert lrs[i] == pytest.approx(6e-3 * (1 + math.cos(math.pi * i / total)) / 2, rel=1e-6)


# --------------------------------------------------------------------------- EMA
def test_ema_update_formula_and_swap():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    ema = EMA(model, 0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    expected = [p.detach().double().clone() for p in model.parameters()]
    for _ in range(4):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(3).sum().backward()
        opt.step()
        ema.update()
        expected = [0.9 * s + 0.1 * p.detach().double() for s, p in zip(expected, model.parameters())]
        for s, e in zip(ema.shadow, expected):
            assert_close(s.double(), e, rtol=1e-6, atol=1e-7)
    raw = [p.detach().clone() for p in model.parameters()]
    assert not all(torch.allclose(r, s) for r, s in zip(raw, ema.shadow))
    with ema.swapped_in():
        assert all(torch.equal(p, s) for p, s in zip(model.parameters(), ema.shadow))
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), raw))


def test_training_updates_ema_each_step_and_evaluates_it(tiny, tmp_path, monkeypatch):
    cfg0, data = tiny
    cfg = cfg0.replace(ema_decay=0.5, optimizer="adamw", lr=3e-3, evals_per_epoch=43)
    sched = Schedule(cfg, len(data.train_ids))
    assert sched.eval_interval == 4
    calls = []
    orig = EMA.update

    def spy(self):
        before = [s.clone() for s in self.shadow]
        params = [p.detach().clone() for p in self.params]
        orig(self)
        calls.append((before, params, [s.clone() for s in self.shadow]))
    monkeypatch.setattr(EMA, "update", spy)
    evals = []
    train(cfg, evals.append, opts(max_steps=4, checkpoint_dir=str(tmp_path)), data=data)
    assert [e["step"] for e in evals] == [1, 4] and len(calls) == 4  # one update per step
    for before, params, after in calls:
        for b, p, a in zip(before, params, after):
            assert_close(a, 0.5 * b + 0.5 * p, rtol=1e-6, atol=1e-7)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["position"]["step"] == 4
    model = GPT(cfg, data.vocab_size)
    model.load_state_dict(ckpt["model"])
    model.eval()
    # the last update saw the weights after the last optimizer step
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), calls[-1][1]))
    args = (data.val_ids, cfg.block_size, cfg.batch_size, data.val_chars)
    raw_loss = mainrun_val_loss(model, *args).item()
    with torch.no_grad():
        for p, s in zip(model.parameters(), ckpt["ema"]):
            p.copy_(s)
    ema_loss = mainrun_val_loss(model, *args).item()
    assert evals[-1]["val_loss"] == pytest.approx(ema_loss, rel=1e-12)
    assert abs(evals[-1]["val_loss"] - raw_loss) > 1e-3


# --------------------------------------------------------------------------- augmentation
@pytest.mark.parametrize("p", [0.05, 0.15, 0.5])
def test_mask_tokens_rate_and_no_in_place(p):
    V = 50
    x = torch.randint(0, V, (400, 500), generator=torch.Generator().manual_seed(0))
    x0 = x.clone()
    out = mask_tokens(x, p, V, torch.Generator().manual_seed(1))
    assert torch.equal(x, x0) and out.data_ptr() != x.data_ptr()
    assert out.shape == x.shape and out.dtype == x.dtype and 0 <= out.min() and out.max() < V
    q = p * (1 - 1 / V)  # a replacement can draw the same id
    frac = (out != x).double().mean().item()
    assert abs(frac - q) < 4 * math.sqrt(q * (1 - q) / x.numel()), (frac, q)
    assert torch.equal(mask_tokens(x, 0.0, V, torch.Generator()), x)


def test_masking_changes_inputs_never_targets(tiny, monkeypatch):
    cfg0, data = tiny
    cfg = cfg0.replace(token_mask_prob=0.5)
    masked = []
    orig = T.mask_tokens

    def spy_mask(x, prob, vocab_size, generator):
        out = orig(x, prob, vocab_size, generator)
        masked.append((x.clone(), out.clone(), prob, vocab_size))
        return out
    monkeypatch.setattr(T, "mask_tokens", spy_mask)
    spy = Spy(monkeypatch)
    train(cfg, options=opts(max_steps=2), data=data)
    B, L = cfg.batch_size, cfg.block_size
    x = data.train_ids[:B * L].view(B, L)
    y = data.train_ids[1:B * L + 1].view(B, L)
    assert len(masked) == 2 and masked[0][2:] == (0.5, data.vocab_size)
    assert torch.equal(masked[0][0], x)  # the mask sees the clean stream
    assert torch.equal(spy.model_in[0], masked[0][1])  # the model sees the masked one
    assert 0.3 < (spy.model_in[0] != x).float().mean().item() < 0.7
    assert torch.equal(spy.train_targets[0].view(B, L), y)  # targets: the clean stream
    assert torch.equal(spy.train_targets[1].view(B, L), data.train_ids[B * L + 1:2 * B * L + 1].view(B, L))


def _segments(ids: torch.Tensor, eos: int) -> list[tuple[int, ...]]:
    ends = (ids == eos).nonzero().flatten().tolist()
    out, start = [], 0
    for e in ends:
        out.append(tuple(ids[start:e + 1].tolist()))
        start = e + 1
    assert start == len(ids)  # the stream ends with <eos>
    return out


def test_augmented_stream_is_95_percent_of_titles_permuted(tiny):
    _, data = tiny
    eos = data.tokenizer.token_to_id(EOS)
    lengths = data.train_title_lengths
    assert int(lengths.sum()) == len(data.train_ids)
    original = _segments(data.train_ids, eos)
    assert [len(s) for s in original] == lengths.tolist()  # one <eos> per title, at its end
    out = augmented_stream(data.train_ids, lengths, torch.Generator().manual_seed(3))
    got = _segments(out, eos)
    assert len(got) == int(len(original) * 0.95)
    assert not collections.Counter(got) - collections.Counter(original)  # sub-multiset
    assert len(out) == sum(len(s) for s in got) < len(data.train_ids)
    where = collections.defaultdict(list)
    for i, s in enumerate(original):
        where[s].append(i)
    order = [where[s].pop() for s in got]
    assert order != sorted(order)  # permuted, not a prefix in the original order
    again = augmented_stream(data.train_ids, lengths, torch.Generator().manual_seed(3))
    other = augmented_stream(data.train_ids, lengths, torch.Generator().manual_seed(4))
    assert torch.equal(out, again) and not torch.equal(out[:200], other[:200])


def test_training_uses_the_augmented_stream(tiny, monkeypatch):
    cfg0, data = tiny
    cfg = cfg0.replace(sequence_augment_prob=1.0)
    spy = Spy(monkeypatch)
    train(cfg, options=opts(max_steps=1), data=data)
    expected = augmented_stream(data.train_ids, data.train_title_lengths,
                                torch.Generator().manual_seed(cfg.seed))
    B, L = cfg.batch_size, cfg.block_size
    assert torch.equal(spy.model_in[0], expected[:B * L].view(B, L))
    assert torch.equal(spy.train_targets[0].view(B, L), expected[1:B * L + 1].view(B, L))
    assert not torch.equal(spy.model_in[0], data.train_ids[:B * L].view(B, L))


# --------------------------------------------------------------------------- tokenizers
def test_vocab_32k_tokenizer_has_32000_entries(tmp_path):
    # 20,000 of the built-in titles reach 32,000 BPE entries (as 13,000 of the larger shared file do)
    cfg = apply(TrainConfig(data=str(HN_CSV), num_titles=20_000), ["vocab_32k"])
    t0 = time.perf_counter()
    data = prepare(cfg, tmp_path)
    seconds = time.perf_counter() - t0
    assert data.vocab_size == 32_000 == data.tokenizer.get_vocab_size()
    assert len(data.tokenizer.get_vocab()) == 32_000
    assert int(data.train_ids.max()) >= 16_000  # the upper half of the vocabulary is used
    print(f"32k tokenizer on 20,000 titles: {seconds:.1f}s")


def _titles(path: str, n: int) -> list[str]:
    opener = gzip.open if str(path).endswith(".gz") else open  # the built-in titles are gzipped
    with opener(path, "rt", newline="", encoding="utf-8") as f:
        return [row["title"].strip() for row, _ in zip(csv.DictReader(f), range(n))]


URLS = [("Show HN: my site https://example.com/a/b?c=1&d=2 is live", "https://example.com/a/b?c=1&d=2"),
        ("https://github.com/x/y-z is great", "https://github.com/x/y-z"),
        ("Ask HN: HTTP://Foo.org/bar_(baz) or not?", "HTTP://Foo.org/bar_(baz)"),
        ("Two links: http://a.io/1 and https://b.io/2", "https://b.io/2")]


@pytest.mark.parametrize("text,url", URLS)
def test_url_pretokenizer_keeps_a_url_whole(text, url):
    url_split = build_tokenizer(TrainConfig(pretokenizer="url_split")).pre_tokenizer
    baseline = build_tokenizer(TrainConfig()).pre_tokenizer
    start = text.index(url)
    end = start + len(url)

    def covering(pieces):
        return [(s, a, b) for s, (a, b) in pieces if a <= start and b >= end]
    pieces = url_split.pre_tokenize_str(text)
    whole = covering(pieces)
    assert len(whole) == 1, pieces
    _, a, b = whole[0]
    assert text[a:b].strip() == url  # the URL, with at most the space before it
    assert [p for _, p in pieces] == sorted(p for _, p in pieces)  # contiguous, in order
    assert "".join(text[a:b] for _, (a, b) in pieces) == text
    assert covering(baseline.pre_tokenize_str(text)) == []  # ByteLevel cuts it apart


def test_url_pretokenizer_is_gpt2_bytelevel_on_ordinary_text(hn_csv):
    url_split = build_tokenizer(TrainConfig(pretokenizer="url_split")).pre_tokenizer
    gpt2 = pre_tokenizers.ByteLevel(add_prefix_space=False)
    titles = [t for t in _titles(hn_csv, 2000) if "://" not in t]
    titles += ["It's 2016, we've   got 3.5 ünïcödé ✓ titles", "a\tb  c ", "  leading"]
    assert len(titles) > 1500
    for t in titles:
        assert url_split.pre_tokenize_str(t) == gpt2.pre_tokenize_str(t), t


# --------------------------------------------------------------------------- precision
def test_bf16_autocast_runs_training_matmuls_in_bf16(tiny, monkeypatch):
    cfg0, data = tiny
    seen = record_linear_dtypes(monkeypatch)
    for precision, train_dtype in (("bf16", torch.bfloat16), ("off", torch.float32)):
        seen.clear()
        evals = []
        train(cfg0.replace(precision=precision), evals.append, opts(max_steps=1), data=data)
        in_train = {d for training, d in seen if training}
        in_eval = {d for training, d in seen if not training}
        assert in_train == {train_dtype} and in_eval == {torch.float32}, precision
        assert math.isfinite(evals[0]["val_loss"]) and math.isfinite(evals[0]["train_loss"])


def test_compile_is_an_execution_option_that_keeps_the_numbers(tiny):
    """torch.compile fuses kernels (last-bit rounding may move) but computes the same training:
    the losses agree to float tolerance, and the run records that it was compiled."""
    cfg0, data = tiny
    cfg = cfg0.replace(evals_per_epoch=8)
    steps = 2 * T.Schedule(cfg, len(data.train_ids)).eval_interval  # evaluations at 1, k, 2k
    eager, compiled = [], []
    train(cfg, eager.append, opts(max_steps=steps), data=data)
    result = train(cfg, compiled.append, opts(max_steps=steps, compile=True), data=data)
    assert result["compile"] is True and len(eager) == 3
    assert [e["step"] for e in compiled] == [e["step"] for e in eager]
    for key in ("val_loss", "train_loss"):
        assert [e[key] for e in compiled] == pytest.approx([e[key] for e in eager], rel=1e-4)
    assert compiled[-1]["val_loss"] != eager[0]["val_loss"]  # it trained


@pytest.mark.parametrize("patch, message", [
    ({"precision": "fp16"}, r"fp16.*CUDA.*bf16"),
    ({"tf32": True}, r"tf32.*CUDA"),
])
def test_cuda_only_switch_on_cpu_is_a_clear_config_error(tiny, monkeypatch, patch, message):
    cfg0, _ = tiny

    def no_data(*a, **k):
        raise AssertionError(f"{patch} on CPU must fail before any data work")
    monkeypatch.setattr(T, "prepare", no_data)
    with pytest.raises(ConfigError, match=message):
        train(cfg0.replace(**patch), options=opts())
    assert cfg0.replace(**patch).identity_hash() != cfg0.identity_hash()  # it changes numerics


# --------------------------------------------------------------------------- monitoring
def test_more_evaluations_do_not_change_the_final_loss(tiny):
    cfg0, data = tiny
    cfg3 = cfg0.replace(evals_per_epoch=3)
    cfg5 = apply(cfg3, ["evals_per_epoch_5"])
    assert cfg0.dropout > 0  # evaluation must not consume the dropout RNG
    r3, r5 = (train(c, options=opts(), data=data) for c in (cfg3, cfg5))
    assert r5["evals"] > r3["evals"]
    assert r3["steps"] == r5["steps"] == r3["max_steps"]
    assert r5["final_val_loss"] == r3["final_val_loss"]
    assert r5["final_val_loss_full"] == r3["final_val_loss_full"]


# --------------------------------------------------------------------------- catalog smoke
SMOKE = {**TINY, "epochs": 7}  # 7 epochs: warmup_cosine's 500 warmup steps fit in the run


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_each_catalog_entry_trains(name, hn_csv):
    base = preset("mainrun").replace(**SMOKE)
    cfg = apply(base, [name])
    patch = CATALOG[name].patch
    for key, value in patch.items():
        assert getattr(cfg, key) == (tuple(value) if isinstance(value, list) else value), key
    if name == "vocab_32k":
        # A 32k BPE needs ~13k titles (test_vocab_32k_tokenizer_has_32000_entries trains one);
        # shrinking vocab_size here would defeat the patch, so only the config is checked.
        assert cfg.vocab_size == 32_000 and cfg.diff(base) == {"vocab_size": 32_000}
        return
    evals = []
    result = train(cfg, evals.append, opts(max_steps=2))
    assert result["steps"] == 2 and result["truncated"] and evals[0]["step"] == 1
    assert math.isfinite(result["final_val_loss"]) and math.isfinite(result["final_val_loss_full"])


# --------------------------------------------------------------------------- divergence
def test_divergence_raises_non_finite_loss(tiny):
    cfg0, data = tiny
    cfg = cfg0.replace(lr=1e6, grad_clip=1e9, evals_per_epoch=43)  # evaluate every 4 steps
    evals = []
    with pytest.raises(NonFiniteLoss, match="non-finite"):
        train(cfg, evals.append, opts(max_steps=40), data=data)
    assert [e["step"] for e in evals] == [1]  # raised at the first evaluation after divergence


def test_non_finite_training_loss_is_reported_with_its_step(tiny, monkeypatch):
    cfg0, data = tiny
    cfg = cfg0.replace(evals_per_epoch=43)
    n = {"train": 0}
    orig = F.cross_entropy

    def nan_at_step_3(logits, target, *a, **k):
        loss = orig(logits, target, *a, **k)
        if torch.is_grad_enabled():
            n["train"] += 1
            if n["train"] == 3:
                return loss * float("nan")
        return loss
    monkeypatch.setattr(F, "cross_entropy", nan_at_step_3)
    evals = []
    with pytest.raises(NonFiniteLoss, match="at step 3"):
        train(cfg, evals.append, opts(max_steps=20), data=data)
    assert [e["step"] for e in evals] == [1] and n["train"] == 4  # raised at the step-4 eval
