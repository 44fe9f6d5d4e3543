"""The split apart from the seed: `split_seed` fixes the titles and the train/validation split
while `seed` varies initialisation, dropout and batch order; its default keeps every identity."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

from ablate.results.report import build_report
from ablate.training.config import TrainConfig, parse_value
from ablate.training.data import cache_key, load_titles

from .conftest import REPO

TINY = {"num_titles": 600, "vocab_size": 300, "d_model": 32, "n_layer": 1, "n_head": 2, "block_size": 32,
        "batch_size": 8, "epochs": 1, "evals_per_epoch": 1}


def test_default_split_seed_keeps_identities_and_the_cache_key():
    assert TrainConfig().split_seed is None and TrainConfig(seed=7).data_seed == 7
    assert TrainConfig(split_seed=None).identity_hash("fp") == TrainConfig().identity_hash("fp")
    assert TrainConfig(split_seed=1).identity_hash("fp") != TrainConfig().identity_hash("fp")
    # the data depend on the split seed alone: seed 2 with split 1 reads seed 1's prepared data
    assert cache_key(TrainConfig(seed=2, split_seed=1), "fp") == cache_key(TrainConfig(seed=1), "fp")
    assert cache_key(TrainConfig(seed=2), "fp") != cache_key(TrainConfig(seed=1), "fp")
    assert parse_value("split_seed", "42") == 42 and parse_value("split_seed", "none") is None


def test_split_seed_fixes_the_titles_and_the_split(hn_csv):
    base = TrainConfig(data=hn_csv, num_titles=400)
    fixed = [load_titles(base.replace(seed=s, split_seed=99)) for s in (1, 2)]
    assert fixed[0] == fixed[1] == load_titles(base.replace(seed=99))
    assert load_titles(base.replace(seed=1))[1] != load_titles(base.replace(seed=2))[1]


def test_split_fixed_matrix_stores_one_validation_text_across_its_seeds(hn_csv, tmp_path):
    matrix = tmp_path / "split.yaml"
    matrix.write_text(f"""
name: split-fixed
base: {{overrides: {json.dumps({**TINY, "split_seed": 1337})}}}
seeds: [1, 2, 3]
design: one-at-a-time
toggles: [sdpa]
execution: {{devices: cpu, jobs_per_device: 2}}
""")
    db = tmp_path / "split.db"
    subprocess.run([sys.executable, "-m", "ablate", "run", str(matrix), "--data", hn_csv, "--db", str(db),
                    "--log-dir", str(tmp_path / "logs")], cwd=tmp_path, check=True, capture_output=True,
                   timeout=600)
    rows = sqlite3.connect(db).execute(
        "SELECT seed, json_extract(result, '$.val_text_sha256'), final_val_loss FROM runs "
        "WHERE status = 'completed'").fetchall()
    assert len(rows) == 6 and {seed for seed, *_ in rows} == {1, 2, 3}
    assert len({sha for _, sha, _ in rows}) == 1  # one validation text for every seed
    assert len({loss for *_, loss in rows}) > 1  # while the seeds still differ
    assert any(line.startswith("Split: fixed") for line in build_report(db, "split-fixed").lines)
