"""Mainrun's GPT (MAINRUN.md §6) with the report's architecture switches.

With every switch off, the modules are created in Mainrun's order and initialized the same
way, so the same seed gives the same weights bit for bit. The switches swap one component
each: attention (manual | sdpa), MLP (gelu | swiglu), norm (layernorm | rmsnorm).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from .config import TrainConfig


class RMSNorm(nn.Module):
    """The report's RMSNorm: x / sqrt(mean(x²) + eps) * weight, eps 1e-6."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x / x.pow(2).mean(-1, keepdim=True).add(self.eps).sqrt()


def make_norm(cfg: TrainConfig) -> nn.Module:
    return RMSNorm(cfg.d_model) if cfg.norm == "rmsnorm" else nn.LayerNorm(cfg.d_model)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.head_dim = cfg.d_model // cfg.n_head
        self.use_sdpa = cfg.attention == "sdpa"
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.attn_drop = nn.Dropout(cfg.dropout)
        self.resid_drop = nn.Dropout(cfg.dropout)
        self.register_buffer("tril", torch.tril(torch.ones(cfg.block_size, cfg.block_size)))
        self.record_entropy = False  # set by the trainer around evaluations
        self.entropy: torch.Tensor | None = None  # mean attention entropy (nats), on device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        qkv = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).transpose(1, 3)
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        if self.use_sdpa and not self.record_entropy:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.tril[:T, :T] == 0, float("-inf"))
            att = F.softmax(att, dim=-1)
            if self.record_entropy:
                plogp = torch.where(att > 0, att * att.clamp_min(1e-30).log(), 0.0)
                self.entropy = -plogp.sum(-1).mean()
            att = self.attn_drop(att)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    """Mainrun's MLP: Linear(d, 4d), exact GELU, Linear(4d, d), Dropout."""

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(cfg.d_model, 4 * cfg.d_model),
            nn.GELU(),
            nn.Linear(4 * cfg.d_model, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SwiGLU(nn.Module):
    """The report's SwiGLU: w3(silu(w1 x) * w2 x), hidden int(8/3 d), no biases."""

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        hidden = int(8 / 3 * cfg.d_model)
        self.w1 = nn.Linear(cfg.d_model, hidden, bias=False)
        self.w2 = nn.Linear(cfg.d_model, hidden, bias=False)
        self.w3 = nn.Linear(hidden, cfg.d_model, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w3(F.silu(self.w1(x)) * self.w2(x)))


class Block(nn.Module):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.ln1 = make_norm(cfg)
        self.ln2 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.mlp = SwiGLU(cfg) if cfg.mlp == "swiglu" else MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: TrainConfig, vocab_size: int):
        super().__init__()
        self.token_emb = nn.Embedding(vocab_size, cfg.d_model)
        self.pos_emb = nn.Parameter(torch.zeros(1, cfg.block_size, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = make_norm(cfg)
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        self.apply(self._init_weights)
        self.head.weight = self.token_emb.weight  # tied AFTER init, as Mainrun does

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V); losses are computed by the caller."""
        T = idx.size(1)
        x = self.drop(self.token_emb(idx) + self.pos_emb[:, :T, :])
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def attention_entropy(self, on: bool) -> torch.Tensor | None:
        """Turn entropy recording on/off; when turning off, return the mean over layers."""
        layers = [b.attn for b in self.blocks]
        values = [a.entropy for a in layers if a.entropy is not None]
        for a in layers:
            a.record_entropy, a.entropy = on, None
        return torch.stack(values).mean() if values and not on else None
