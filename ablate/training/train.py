"""Train one `TrainConfig`: Mainrun's loop (MAINRUN.md §5-9) with the report's switches.

`train(config, on_eval, options)` is the one entry point the runner calls; every evaluation is
handed to `on_eval` as a plain dict the moment it exists, and a plain result dict comes back.
There is no database code here. In the hot path nothing is read back to the host: per-step
losses and gradient norms accumulate in device buffers and are read at evaluation points.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from .checkpoint import CHECKPOINT_FILE, restore_checkpoint, save_checkpoint
from .config import ConfigError, ExecOptions, TrainConfig
from .data import PreparedData, prepare
from .model import GPT
from .peak_rss import high_water_mark_bytes, reset_high_water_mark

EvalCallback = Callable[[dict[str, Any]], None]
SEQUENCE_AUGMENT_KEEP = 0.95  # the report drops 5% of the titles when it augments an epoch


class NonFiniteLoss(FloatingPointError):
    """Training diverged (NaN/inf loss); the run is recorded as failed with this message."""


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def mainrun_val_loss(model: torch.nn.Module, val_ids: torch.Tensor, block_size: int,
                     batch_size: int, val_chars: int) -> torch.Tensor:
    """MAINRUN.md §9, the official metric: summed token loss over non-overlapping windows of
    batch_size*block_size+1 tokens (last partial window dropped) / characters of the text.
    Accumulates in float64 on the device (Mainrun adds float32 sums into a Python float)."""
    span = batch_size * block_size + 1
    total = torch.zeros((), dtype=torch.float64, device=val_ids.device)
    for ptr in range(0, len(val_ids) - span + 1, span):
        window = val_ids[ptr:ptr + span]
        x = window[:-1].view(batch_size, block_size)
        y = window[1:].view(batch_size, block_size)
        logits = model(x)
        total += F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1),
                                 reduction="sum").double()
    return total / val_chars


@torch.no_grad()
def full_val_loss(model: torch.nn.Module, val_ids: torch.Tensor, block_size: int,
                  batch_size: int, val_chars: int) -> torch.Tensor:
    """Every validation target scored exactly once: windows of block_size tokens from 0, the
    last one shorter; / characters of the text. Comparable across batch and block sizes."""
    n_targets = len(val_ids) - 1
    n_full = n_targets // block_size
    total = torch.zeros((), dtype=torch.float64, device=val_ids.device)
    x_all = val_ids[:n_full * block_size].view(n_full, block_size)
    y_all = val_ids[1:n_full * block_size + 1].view(n_full, block_size)
    for i in range(0, n_full, batch_size):
        logits = model(x_all[i:i + batch_size])
        total += F.cross_entropy(logits.flatten(0, 1), y_all[i:i + batch_size].flatten(),
                                 reduction="sum").double()
    if n_full * block_size < n_targets:
        start = n_full * block_size
        logits = model(val_ids[start:n_targets].unsqueeze(0))
        total += F.cross_entropy(logits[0], val_ids[start + 1:], reduction="sum").double()
    return total / val_chars


def eval_coverage(n_val_ids: int, block_size: int, batch_size: int) -> float:
    """Share of the validation targets that Mainrun's evaluation scores."""
    span = batch_size * block_size + 1
    windows = len(range(0, n_val_ids - span + 1, span))
    return windows * batch_size * block_size / max(n_val_ids - 1, 1)


# --------------------------------------------------------------------------- components
def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r} requested but CUDA is not available")
    return device


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """`all`: one group, decay on everything (Mainrun, the report's runs). `grouped`: no decay
    for 1-D parameters — biases and norm weights."""
    params = list(model.parameters())
    if cfg.weight_decay_mode == "all":
        return [{"params": params, "weight_decay": cfg.weight_decay}]
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
    groups = param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr)
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused)


def warmup_cosine_lr(step: int, cfg: TrainConfig, max_steps: int) -> float:
    """The report's get_lr: linear warmup to max_lr, cosine to min_lr, then min_lr."""
    if step < cfg.warmup_steps:
        return cfg.max_lr * step / cfg.warmup_steps
    if step < max_steps:
        ratio = (step - cfg.warmup_steps) / (max_steps - cfg.warmup_steps)
        return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.max_lr - cfg.min_lr)
    return cfg.min_lr


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, max_steps: int):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_steps)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.max_lr, total_steps=max_steps, pct_start=cfg.onecycle_pct_start,
            anneal_strategy="cos", div_factor=cfg.onecycle_div_factor,
            final_div_factor=cfg.onecycle_final_div_factor,
            cycle_momentum=cfg.onecycle_cycle_momentum)
    if cfg.warmup_steps >= max_steps:
        raise ConfigError(f"warmup_steps ({cfg.warmup_steps}) must be below the run's "
                          f"{max_steps} optimizer steps")
    for group in opt.param_groups:
        group["lr"] = cfg.max_lr
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine_lr(step, cfg, max_steps) / cfg.max_lr)


class EMA:
    """Shadow weights: shadow ← decay·shadow + (1−decay)·param after every optimizer step.
    `swapped_in()` puts the shadow into the model for the (unchanged) evaluation function."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = list(model.parameters())
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self):
        with torch.no_grad():
            backup = [p.detach().clone() for p in self.params]
            torch._foreach_copy_(self.params, self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, backup)


def mask_tokens(x: torch.Tensor, prob: float, vocab_size: int,
                generator: torch.Generator) -> torch.Tensor:
    """The report's token masking: each input id replaced by a random id with probability p.
    Targets are never touched."""
    mask = torch.rand(x.shape, generator=generator, device=x.device) < prob
    random_ids = torch.randint(0, vocab_size, x.shape, generator=generator, device=x.device)
    return torch.where(mask, random_ids, x)


def augmented_stream(train_ids: torch.Tensor, title_lengths: torch.Tensor,
                     generator: torch.Generator) -> torch.Tensor:
    """The report's sequence augmentation: shuffle the titles, keep the first 95%."""
    n = len(title_lengths)
    keep = torch.randperm(n, generator=generator)[:int(n * SEQUENCE_AUGMENT_KEEP)]
    starts = torch.cumsum(title_lengths, 0) - title_lengths
    lengths = title_lengths[keep]
    out_starts = torch.cumsum(lengths, 0) - lengths
    offsets = torch.repeat_interleave(starts[keep] - out_starts, lengths)
    return train_ids[offsets + torch.arange(len(offsets))]


def autocast_for(cfg: TrainConfig, device: torch.device):
    if cfg.precision == "off":
        return contextlib.nullcontext()
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision 'fp16' needs CUDA (GradScaler); on CPU use 'bf16'")
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_matmul_precision(cfg: TrainConfig, device: torch.device) -> None:
    """TF32 rounds fp32 matmul inputs to a 10-bit mantissa, so it is a config field (part of a
    run's identity), not an execution option; it exists on CUDA only."""
    if cfg.tf32 and device.type != "cuda":
        raise ConfigError("tf32 applies to CUDA matmuls only; on CPU leave it off")
    if device.type == "cuda":  # set both ways: a process may train several configs
        torch.backends.cuda.matmul.fp32_precision = "tf32" if cfg.tf32 else "ieee"


# --------------------------------------------------------------------------- the run
class Schedule:
    """Step arithmetic of MAINRUN.md §5, with optimizer steps of `grad_accum_steps` batches."""

    def __init__(self, cfg: TrainConfig, n_train_ids: int):
        self.batches_per_epoch = n_train_ids // (cfg.block_size * cfg.batch_size)
        self.steps_per_epoch = self.batches_per_epoch // cfg.grad_accum_steps
        self.max_steps = cfg.epochs * self.steps_per_epoch
        self.eval_interval = self.steps_per_epoch // cfg.evals_per_epoch
        if self.eval_interval < 1:
            raise ConfigError(
                f"too little training data: {n_train_ids} tokens give {self.batches_per_epoch} "
                f"batches of {cfg.batch_size}x{cfg.block_size} per epoch, fewer than "
                f"grad_accum_steps x evals_per_epoch = "
                f"{cfg.grad_accum_steps * cfg.evals_per_epoch}; use more num_titles or smaller "
                f"batches")

    def is_eval_step(self, step: int) -> bool:
        return step == 1 or step % self.eval_interval == 0 or step == self.max_steps


TRAINING_PEAK = "the run's process, while training (its data prepared)"


def warm_up() -> None:
    """Called by a warm worker (`python -m ablate.execution.job --serve`) before its run arrives: the
    import torch does when the first optimizer is built (torch._dynamo, about a second)."""
    import torch._dynamo  # noqa: F401


def train(config: TrainConfig | dict, on_eval: EvalCallback | None = None,
          options: ExecOptions | None = None, data: PreparedData | None = None,
          on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train `config`; call `on_eval(metrics)` at every evaluation and `on_step(step)` as each
    optimizer step is issued (progress; no host sync); return the run's result."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    opts = options or ExecOptions()
    device = resolve_device(opts.device)
    autocast = autocast_for(cfg, device)  # validates precision vs device before any work
    set_matmul_precision(cfg, device)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    t_start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # this run's peak, in a reused process too

    torch.manual_seed(cfg.seed)  # MAINRUN.md §1: seeds first
    random.seed(cfg.seed)
    data = data or prepare(cfg, opts.cache_dir)
    # CPU: the peak from here is training's, whether this run trained the tokenizer or not
    rss_reset = device.type == "cpu" and reset_high_water_mark()
    sched = Schedule(cfg, len(data.train_ids))
    train_ids = data.train_ids.to(device)
    val_ids = data.val_ids.to(device)

    model = GPT(cfg, data.vocab_size).to(device)
    n_params = model.num_params()
    opt = make_optimizer(model, cfg, device)
    scheduler = make_scheduler(opt, cfg, sched.max_steps)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
    if opts.compile:  # dropout must draw eager's random numbers, or compiling changes the run
        from torch._inductor import config as inductor_config

        inductor_config.fallback_random = True
    forward = torch.compile(model) if opts.compile else model
    aug_gen = torch.Generator(device="cpu").manual_seed(cfg.seed)  # sequence augmentation
    mask_gen = (torch.Generator(device=device).manual_seed(cfg.seed)
                if cfg.token_mask_prob > 0 else None)

    coverage = eval_coverage(len(val_ids), cfg.block_size, cfg.batch_size)
    # What each evaluation scored, so a comparison can check it is like for like (issue: the
    # metric can be gamed by scoring fewer tokens or a different text).
    eval_identity = {k: data.info[k] for k in
                     ("val_tokens", "val_chars", "val_text_sha256", "tokenizer_roundtrip")}
    stop_at = min(sched.max_steps, opts.max_steps or sched.max_steps)
    step_loss = torch.zeros(stop_at, device=device)
    step_norm = torch.zeros(stop_at, device=device)
    step_lr: list[float] = []
    tokens_per_step = cfg.grad_accum_steps * cfg.batch_size * cfg.block_size
    span = cfg.batch_size * cfg.block_size + 1
    params = list(model.parameters())

    stateful = {"model": model, "optimizer": opt, "scheduler": scheduler, "scaler": scaler,
                "aug_gen": aug_gen, "mask_gen": mask_gen}
    evals: list[dict[str, Any]] = []
    stream, ptr, step, train_time, elapsed0 = train_ids, 0, 0, 0.0, 0.0
    first_step_s = None  # step 1 alone (evaluated right after): warm-up, compilation included
    checkpoint = Path(opts.checkpoint_dir) / CHECKPOINT_FILE if opts.checkpoint_dir else None
    if opts.resume and checkpoint and checkpoint.exists():
        # everything a step depends on comes back, so the run continues exactly
        position = restore_checkpoint(checkpoint, cfg, stateful, ema, device)
        evals, step, ptr, train_time = (position["evals"], position["step"], position["ptr"],
                                        position["train_time"])
        stream = train_ids if position["stream"] is None else position["stream"].to(device)
        elapsed0 = evals[-1]["elapsed_s"]
        step_lr.extend([math.nan] * step)
        for metrics in evals:  # the consumer sees the whole run, restored part included
            if on_eval:
                on_eval(metrics)
    resumed_from_step = last_eval_step = step
    t_resume = time.perf_counter()
    t_train0 = t_resume - elapsed0
    first_epoch, done_in_epoch = step // sched.steps_per_epoch + 1, step % sched.steps_per_epoch
    model.train()
    for epoch in range(first_epoch, cfg.epochs + 1):
        if cfg.sequence_augment_prob > 0 and not (epoch == first_epoch and done_in_epoch):
            new = (augmented_stream(data.train_ids, data.train_title_lengths, aug_gen).to(device)
                   if random.random() < cfg.sequence_augment_prob else train_ids)
            if new is not stream:
                stream, ptr = new, 0
        for _ in range(sched.steps_per_epoch - (done_in_epoch if epoch == first_epoch else 0)):
            if step >= stop_at:
                break
            step += 1
            opt.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), device=device)
            for _micro in range(cfg.grad_accum_steps):
                if ptr + span >= len(stream):
                    ptr = 0
                batch = stream[ptr:ptr + span]
                ptr += cfg.batch_size * cfg.block_size
                x = batch[:-1].view(cfg.batch_size, cfg.block_size)
                y = batch[1:].view(cfg.batch_size, cfg.block_size)
                if mask_gen is not None:
                    x = mask_tokens(x, cfg.token_mask_prob, data.vocab_size, mask_gen)
                with autocast:
                    logits = forward(x)
                    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
                if cfg.grad_accum_steps > 1:
                    loss = loss / cfg.grad_accum_steps
                (scaler.scale(loss) if scaler else loss).backward()
                loss_sum += loss.detach()
            if scaler:
                scaler.unscale_(opt)
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            step_lr.append(opt.param_groups[0]["lr"])
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            scheduler.step()
            if ema:
                ema.update()
            step_loss[step - 1] = loss_sum
            step_norm[step - 1] = norm
            if on_step:
                on_step(step)

            if sched.is_eval_step(step) or step == stop_at:  # a truncated run: its last step too
                losses = step_loss[last_eval_step:step].tolist()  # the one host sync
                norms = step_norm[last_eval_step:step].tolist()
                train_time += time.perf_counter() - t_resume
                if step == 1:
                    first_step_s = train_time
                if not all(map(math.isfinite, losses)):
                    bad = next(i for i, v in enumerate(losses) if not math.isfinite(v))
                    raise NonFiniteLoss(f"non-finite training loss {losses[bad]} at step "
                                        f"{last_eval_step + bad + 1}")
                metrics = _evaluate(model, ema, cfg, data, val_ids)
                if not math.isfinite(metrics["val_loss"]):
                    raise NonFiniteLoss(f"non-finite validation loss at step {step}")
                metrics.update(
                    step=step, max_steps=sched.max_steps, epoch=epoch,
                    train_loss=sum(losses) / len(losses), lr=step_lr[-1], grad_norm=norms[-1],
                    tokens_seen=step * tokens_per_step, elapsed_s=time.perf_counter() - t_train0,
                    tokens_per_s=step * tokens_per_step / train_time, eval_coverage=coverage,
                    **eval_identity,
                    step_metrics=[{"step": last_eval_step + i + 1, "train_loss": l, "lr": r,
                                   "grad_norm": g} for i, (l, r, g) in enumerate(
                                       zip(losses, step_lr[last_eval_step:step], norms))]
                    if opts.step_metrics else [])
                evals.append(metrics)
                if checkpoint:
                    save_checkpoint(checkpoint, cfg, stateful, ema, {
                        "step": step, "ptr": ptr, "epoch": epoch, "evals": evals,
                        "train_time": train_time,
                        "stream": None if stream is train_ids else stream.cpu()})
                if on_eval:
                    on_eval(metrics)
                last_eval_step, t_resume = step, time.perf_counter()

    final = evals[-1]
    best = min(evals, key=lambda e: e["val_loss"])
    return {**_cost(step, train_time, first_step_s, tokens_per_step, device, rss_reset),
        "final_val_loss": final["val_loss"], "final_val_loss_full": final["val_loss_full"],
        "best_val_loss": best["val_loss"], "best_step": best["step"],
        "param_count": n_params, "steps": step, "max_steps": sched.max_steps,
        "truncated": step < sched.max_steps, "evals": len(evals),
        "wall_time_s": time.perf_counter() - t_start, "train_time_s": train_time,
        "tokens_per_s": final["tokens_per_s"], "device": _device_name(device),
        "compile": opts.compile,  # an execution option: not in the identity, so recorded here
        "eval_coverage": coverage, "resumed_from_step": resumed_from_step, **data.info,
    }


def _cost(steps: int, train_time: float, first_step_s: float | None, tokens_per_step: int,
          device: torch.device, rss_reset: bool) -> dict[str, Any]:
    """Speed over the optimizer steps after the first (its warm-up and compilation apart;
    evaluation and data preparation are never in train_time), and the peak memory of training
    (CUDA's allocation; on CPU the process's resident memory since its data was prepared)."""
    steady = steps - 1 if first_step_s is not None else steps  # a resumed run: no step 1 here
    steady_s = train_time - (first_step_s or 0.0)
    cost: dict[str, Any] = {"warmup_s": first_step_s}
    if steady > 0 and steady_s > 0:
        cost.update(step_time_s=steady_s / steady, train_tokens_per_s=steady * tokens_per_step / steady_s)
    if device.type == "cuda":
        cost["peak_cuda_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
    elif rss_reset and (peak := high_water_mark_bytes()) is not None:
        cost.update(peak_rss_bytes=peak, peak_rss_of=TRAINING_PEAK)
    return cost


def _evaluate(model: GPT, ema: EMA | None, cfg: TrainConfig, data: PreparedData,
              val_ids: torch.Tensor) -> dict[str, Any]:
    """The same evaluation for every config; with EMA it sees the shadow weights."""
    model.eval()
    with ema.swapped_in() if ema else contextlib.nullcontext():
        val_loss = mainrun_val_loss(model, val_ids, cfg.block_size, cfg.batch_size,
                                    data.val_chars)
        val_full = full_val_loss(model, val_ids, cfg.block_size, cfg.batch_size, data.val_chars)
        entropy = attention_entropy(model, val_ids, cfg.block_size)
    model.train()
    return {"val_loss": val_loss.item(), "val_loss_full": val_full.item(),
            "attention_entropy": entropy}


@torch.no_grad()
def attention_entropy(model: GPT, val_ids: torch.Tensor, block_size: int, rows: int = 8) -> float:
    """Mean entropy (nats) of the attention distributions on the first validation rows."""
    n = min(rows, (len(val_ids) - 1) // block_size)
    if n == 0:
        return float("nan")
    model.attention_entropy(True)
    model(val_ids[:n * block_size].view(n, block_size))
    return model.attention_entropy(False).item()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


# ------------------------------------------------------ data for executors that ship it (Ray)


def data_key(config: dict) -> str:
    """Configs with the same key train on the same prepared data (the tokenizer cache key)."""
    from .data import cache_key, fingerprint

    cfg = TrainConfig.from_dict(config)
    return cache_key(cfg, fingerprint(cfg.data))


def prepare_data(config: dict, options: ExecOptions | None = None) -> PreparedData:
    """What `train(..., data=)` takes: prepared once on a Ray driver, shared by its workers."""
    return prepare(TrainConfig.from_dict(config), (options or ExecOptions()).cache_dir)
