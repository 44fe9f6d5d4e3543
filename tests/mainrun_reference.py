"""An independent, deliberately plain transcription of MAINRUN.md's baseline training run.

It shares no code with `ablate`: its own data loading (one `encode` call on the joined text),
its own model classes and its own loop, written straight from the spec. Tests compare ablate's
trainer against it number for number, and the benchmarks use it as "a plain loop doing the
same work".
"""

from __future__ import annotations

import math
import random
import time

import torch
import torch.nn as nn
from torch.nn import functional as F


def load_ids(path: str, num_titles: int, seed: int, val_frac: float, vocab_size: int):
    from datasets import load_dataset
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    ds = load_dataset("csv", data_files=path, split="train").shuffle(seed=seed)
    titles = [row["title"].strip() for row in ds.take(num_titles)]
    n = int(num_titles * (1 - val_frac))
    train_titles, val_titles = titles[:n], titles[n:]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<unk>"],
                                  show_progress=False)
    tok.train_from_iterator(train_titles + val_titles, trainer)
    train_text = "<eos>".join(train_titles) + "<eos>"
    val_text = "<eos>".join(val_titles) + "<eos>"
    train_ids = torch.tensor(tok.encode(train_text).ids, dtype=torch.long)
    val_ids = torch.tensor(tok.encode(val_text).ids, dtype=torch.long)
    return train_ids, val_ids, len(val_text), tok.get_vocab_size()


class Attn(nn.Module):
    def __init__(self, d, h, block, p):
        super().__init__()
        self.h, self.hd = h, d // h
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.attn_drop, self.resid_drop = nn.Dropout(p), nn.Dropout(p)
        self.register_buffer("tril", torch.tril(torch.ones(block, block)))

    def forward(self, x):
        B, T, C = x.size()
        qkv = self.qkv(x).view(B, T, 3, self.h, self.hd).transpose(1, 3)
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.tril[:T, :T] == 0, float("-inf"))
        att = self.attn_drop(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


class RefBlock(nn.Module):
    def __init__(self, d, h, block, p):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attn(d, h, block, p)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(p))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class RefGPT(nn.Module):
    def __init__(self, V, block, n_layer, n_head, d, p):
        super().__init__()
        self.token_emb = nn.Embedding(V, d)
        self.pos_emb = nn.Parameter(torch.zeros(1, block, d))
        self.drop = nn.Dropout(p)
        self.blocks = nn.ModuleList([RefBlock(d, n_head, block, p) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, V, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.head.weight = self.token_emb.weight

    def forward(self, idx):
        x = self.drop(self.token_emb(idx) + self.pos_emb[:, :idx.size(1)])
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


def run(path, *, num_titles, vocab_size, d_model, n_layer, n_head, block_size=128, batch_size=64,
        dropout=0.1, lr=6e-3, weight_decay=0.0, evals_per_epoch=3, epochs=7, seed=1337,
        val_frac=0.10, max_steps=None, data=None):
    """Returns ({step: val_loss}, parameter count, seconds per training step)."""
    torch.manual_seed(seed)
    random.seed(seed)
    train_ids, val_ids, val_chars, V = data or load_ids(path, num_titles, seed, val_frac, vocab_size)
    batches = len(train_ids) // (block_size * batch_size)
    total = epochs * batches
    eval_interval = batches // evals_per_epoch
    model = RefGPT(V, block_size, n_layer, n_head, d_model, dropout)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)

    def evaluate():
        model.eval()
        span, losses = block_size * batch_size + 1, 0.0
        with torch.no_grad():
            for ptr in range(0, len(val_ids) - span + 1, span):
                w = val_ids[ptr:ptr + span]
                logits = model(w[:-1].view(batch_size, block_size))
                losses += F.cross_entropy(logits.view(-1, logits.size(-1)),
                                          w[1:].view(-1), reduction="sum").item()
        model.train()
        return losses / val_chars

    results, ptr, step, train_seconds = {}, 0, 0, 0.0
    span = block_size * batch_size + 1
    for _epoch in range(epochs):
        for _ in range(batches):
            if max_steps is not None and step >= max_steps:
                return results, n_params, train_seconds / max(step, 1)
            step += 1
            t0 = time.perf_counter()
            if ptr + span >= len(train_ids):
                ptr = 0
            b = train_ids[ptr:ptr + span]
            ptr += block_size * batch_size
            logits = model(b[:-1].view(batch_size, block_size))
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), b[1:].view(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            train_seconds += time.perf_counter() - t0
            if step == 1 or step % eval_interval == 0 or step == total:
                results[step] = evaluate()
    return results, n_params, train_seconds / max(step, 1)
