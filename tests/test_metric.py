"""Comparisons that cannot be gamed: val_loss_full, eval_coverage and like-for-like flags."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F
from typer.testing import CliRunner

from ablate.cli import app
from ablate.training.config import ExecOptions, TrainConfig
from ablate.training.data import prepare
from ablate.training.model import GPT
from ablate.training.train import train

from .conftest import TINY
from .test_runner import ablate, query, write_matrix


def direct_full_loss(model: GPT, ids: torch.Tensor, block_size: int, val_chars: int) -> float:
    """The definition, target by target: target j (1..N-1) is predicted from the tokens since
    the start of its block-aligned window, ids[(j-1)//T*T : j]."""
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, block_size):
            context = ids[start:min(start + block_size, len(ids) - 1)]
            log_probs = F.log_softmax(model(context.unsqueeze(0))[0].double(), dim=-1)
            for i in range(len(context)):
                total -= log_probs[i, ids[start + i + 1]].item()
    return total / val_chars


def direct_coverage(n_ids: int, block_size: int, batch_size: int) -> float:
    span = batch_size * block_size + 1
    scored = sum(batch_size * block_size for start in range(0, n_ids - span + 1, span))
    return scored / (n_ids - 1)


@pytest.mark.parametrize("batch_size, block_size", [(4, 16), (16, 16), (4, 40), (16, 40)])
def test_val_loss_full_matches_the_definition_target_by_target(hn_csv, tmp_path, batch_size, block_size):
    cfg = TrainConfig(**{**TINY, "num_titles": 600, "vocab_size": 400, "batch_size": batch_size,
                         "block_size": block_size, "seed": 11})
    evals = []
    train(cfg, evals.append, ExecOptions(max_steps=1, checkpoint_dir=str(tmp_path)))
    data = prepare(cfg)
    model = GPT(cfg, data.vocab_size)
    model.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"])
    model.eval()
    expected = direct_full_loss(model, data.val_ids, block_size, data.val_chars)
    assert evals[0]["val_loss_full"] == pytest.approx(expected, rel=1e-6)
    assert evals[0]["eval_coverage"] == pytest.approx(
        direct_coverage(len(data.val_ids), block_size, batch_size), rel=1e-12)
    assert evals[0]["val_tokens"] == len(data.val_ids) and evals[0]["val_chars"] == data.val_chars


def test_baseline_tokenizer_round_trips_and_lowercasing_does_not(hn_csv):
    base = TrainConfig(**TINY)
    assert prepare(base).tokenizer_roundtrip
    assert prepare(base.replace(pretokenizer="url_split")).tokenizer_roundtrip
    lower = prepare(base.replace(tokenizer_lowercase=True))
    assert not lower.tokenizer_roundtrip
    assert lower.val_text_sha256 == prepare(base).val_text_sha256  # same text, lossy tokens


def test_metric_artifacts_are_flagged_and_not_ranked_by(tmp_path, hn_csv):
    toggles = ("\n  - {name: big_batch, patch: {batch_size: 256}}"
               "\n  - {name: lowercase, patch: {tokenizer_lowercase: true}}")
    matrix = write_matrix(tmp_path, "artifacts", toggles)
    db = tmp_path / "r.db"
    done = ablate("run", str(matrix), db=db, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # batch 256 scores no validation window at all on this data: Mainrun's number is 0
    assert query(db, "select final_val_loss from runs where name='big_batch'") == [(0.0,)]
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["metric"] == "full"  # mixed coverage: ranked by every target, and says so
    assert any("coverage" in line for line in report["lines"])
    rows = {r["name"]: r for r in report["ranking"]}
    # batch 256: flagged, ranked by val_loss_full (which scores every target), never by the 0.0
    assert "coverage" in rows["big_batch"]["not_like_for_like"] and rows["big_batch"]["rank"]
    assert rows["big_batch"]["final"] == pytest.approx(
        query(db, "select val_loss_full from evals e join runs r on r.id=e.run_id "
                  "where r.name='big_batch' order by step desc limit 1")[0][0])
    # lowercasing: no metric can undo a lossy tokenizer, so it is not ranked at all
    assert rows["lowercase"]["rank"] is None and "round-trip" in rows["lowercase"]["error"]
    assert not rows["lowercase"]["is_best"] and not rows["big_batch"]["is_best"]
    verdicts = {e["effect"]: e["verdict"] for e in report["effects"]}
    assert verdicts["lowercase"] == "not like-for-like"
