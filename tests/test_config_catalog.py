"""TrainConfig is Mainrun's baseline; the catalog and presets are exactly the report's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from ablate.training import catalog
from ablate.training.catalog import CATALOG, PRESETS, apply, preset
from ablate.training.config import HUB_DATASET, ConfigError, TrainConfig
from ablate.training.model import GPT

REPORT = Path(__file__).resolve().parents[2] / "shared" / "seed" / "optimization-report.md"

# MAINRUN.md, "Hyperparameters (baseline values)": the table, value for value.
MAINRUN_TABLE = dict(block_size=128, batch_size=64, vocab_size=16000, n_layer=6, n_head=8,
                     d_model=512, dropout=0.1, lr=6e-3, weight_decay=0.0, evals_per_epoch=3,
                     epochs=7, seed=1337, num_titles=100000, val_frac=0.10)
# Every switch in its Mainrun position (MAINRUN.md §3, §6-8).
SWITCHES_OFF = dict(optimizer="sgd", schedule="cosine", attention="manual", mlp="gelu",
                    norm="layernorm", precision="off", ema_decay=0.0, token_mask_prob=0.0,
                    sequence_augment_prob=0.0, grad_accum_steps=1, weight_decay_mode="all",
                    pretokenizer="bytelevel", grad_clip=1.0, data=HUB_DATASET)

REQUIRED_NAMES = {"onecycle_fix", "sdpa", "swiglu", "rmsnorm", "grouped_weight_decay",
                  "grad_accum", "mixed_precision", "vocab_32k", "url_pretokenizer", "block_size",
                  "dropout_005", "weight_decay_001", "lr_1e4", "betas_095", "evals_per_epoch_5",
                  "ema", "warmup_cosine", "token_masking", "sequence_augmentation"}


# --------------------------------------------------------------------------- defaults
def test_defaults_are_mainrun_table_exactly():
    cfg = TrainConfig()
    for name, value in MAINRUN_TABLE.items():
        got = getattr(cfg, name)
        assert got == value and type(got) is type(value), (name, got, value)


def test_defaults_have_every_switch_off():
    cfg = TrainConfig()
    for name, value in SWITCHES_OFF.items():
        assert getattr(cfg, name) == value, (name, getattr(cfg, name))
    assert preset("mainrun") == cfg and cfg.diff() == {}


# --------------------------------------------------------------------------- (de)serialization
@pytest.mark.parametrize("cfg", [
    TrainConfig(),
    preset("report-current"),
    preset("report-best"),
    apply(TrainConfig(), ["sdpa", "swiglu", "rmsnorm", "ema", "betas_095", "grad_accum"]),
], ids=["mainrun", "report-current", "report-best", "stack"])
def test_round_trip_through_json(cfg):
    d = cfg.to_dict()
    text = json.dumps(d)  # JSON-able as is
    back = TrainConfig.from_dict(json.loads(text))
    assert back == cfg
    assert back.identity_hash() == cfg.identity_hash()
    assert isinstance(back.betas, tuple) and isinstance(d["betas"], list)
    assert set(d) == {f for f in TrainConfig.__dataclass_fields__}


def test_identity_hash_is_canonical():
    base = TrainConfig()
    assert TrainConfig(lr=1).identity_hash() == TrainConfig(lr=1.0).identity_hash()
    assert TrainConfig(weight_decay=0).identity_hash() == base.identity_hash()
    assert isinstance(TrainConfig(lr=1).lr, float)
    as_list = TrainConfig.from_dict({"betas": [0.9, 0.95]})
    as_tuple = TrainConfig(betas=(0.9, 0.95))
    ints = TrainConfig(betas=[0, 0])
    assert as_list == as_tuple and as_list.identity_hash() == as_tuple.identity_hash()
    assert ints.betas == (0.0, 0.0) and ints.identity_hash() == TrainConfig(betas=(0.0, 0.0)).identity_hash()
    assert base.identity_hash() == TrainConfig().identity_hash()  # stable across instances
    # any real change changes it
    assert base.replace(lr=6.0001e-3).identity_hash() != base.identity_hash()
    assert base.replace(attention="sdpa").identity_hash() != base.identity_hash()
    # the data path is replaced by the data's fingerprint when one is given
    a = TrainConfig(data="/x/a.csv").identity_hash("sha256:abc")
    b = TrainConfig(data="/y/b.csv").identity_hash("sha256:abc")
    assert a == b != TrainConfig(data="/x/a.csv").identity_hash()


def test_unknown_key_suggests_the_real_field():
    with pytest.raises(ConfigError, match=r"unknown field 'dropuot'.*did you mean 'dropout'"):
        TrainConfig.from_dict({"dropuot": 0.1})
    with pytest.raises(ConfigError, match=r"did you mean 'n_layer'"):
        TrainConfig().replace(n_layers=4)


@pytest.mark.parametrize("field,value", [
    ("n_layer", "6"), ("n_layer", 6.0), ("n_layer", True), ("dropout", "0.1"),
    ("attention", "flash"), ("betas", (0.9,)), ("onecycle_cycle_momentum", 1),
])
def test_wrong_type_names_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({field: value})
    assert field in str(err.value) and repr(value) in str(err.value)


def test_invalid_values_are_rejected_with_a_reason():
    with pytest.raises(ConfigError, match="divisible"):
        TrainConfig(d_model=100, n_head=8)
    with pytest.raises(ConfigError, match="dropout"):
        TrainConfig(dropout=1.0)


# --------------------------------------------------------------------------- catalog
def test_catalog_has_the_report_items():
    assert REQUIRED_NAMES <= set(CATALOG)
    assert all(name == o.name for name, o in CATALOG.items())
    report = REPORT.read_text() if REPORT.is_file() else None
    for o in CATALOG.values():
        assert o.description.strip() and o.section.strip(), o.name
        m = re.match(r"(\d)\.", o.section)
        assert m and 1 <= int(m.group(1)) <= 7, o.section
        if report is not None:
            assert re.search(rf"^### {m.group(1)}\. ", report, re.M), o.section


@pytest.mark.parametrize("name", sorted(REQUIRED_NAMES))
def test_each_patch_changes_mainrun_except_block_size(name):
    opt = CATALOG[name]
    assert opt.patch
    base = preset("mainrun")
    patched = apply(base, [name])
    for key, value in opt.patch.items():
        assert getattr(patched, key) == (tuple(value) if isinstance(value, list) else value)
    if name == "block_size":  # the report's "increase from 64": already Mainrun's 128
        assert patched == base and "no-op" in opt.note
        assert apply(preset("report-current"), [name]).block_size == 128 != \
            preset("report-current").block_size
    else:
        assert patched != base and patched.diff(base), name


def test_rules_and_metric_flags():
    not_allowed = {n for n, o in CATALOG.items() if not o.allowed}
    assert not_allowed == {"token_masking", "sequence_augmentation"}
    for name in not_allowed:
        assert "augment" in CATALOG[name].breaks_rule  # Mainrun: augmenting data not allowed
    assert all(o.breaks_rule == "" for o in CATALOG.values() if o.allowed)
    flagged = {n for n, o in CATALOG.items() if o.changes_metric}
    assert flagged == {"block_size", "vocab_32k", "url_pretokenizer"}


def test_catalog_entry_with_unknown_field_is_rejected():
    with pytest.raises(ConfigError, match="did you mean 'dropout'"):
        catalog.Optimization("bad", "d", "5. x", {"dropot": 0.0})


def test_lookup_and_preset_unknown_names():
    with pytest.raises(ConfigError, match="did you mean 'swiglu'"):
        catalog.lookup("swigl")
    with pytest.raises(ConfigError, match="did you mean 'report-best'"):
        preset("report_best")


# --------------------------------------------------------------------------- presets
# max_lr 1e-3, final_div 1e4 and cycle_momentum are the report's values AND our defaults.
REPORT_CURRENT_DIFF = dict(block_size=64, dropout=0.05, optimizer="adamw", lr=1e-4,
                           weight_decay=0.01, schedule="onecycle", onecycle_pct_start=0.5,
                           onecycle_div_factor=10.0)


def test_report_current_preset_matches_report_setups():
    cfg = preset("report-current")
    assert cfg.diff() == REPORT_CURRENT_DIFF  # everything else is Mainrun's baseline
    assert cfg.max_lr == 1e-3
    assert cfg.weight_decay_mode == "all"  # one group: decay on every parameter
    assert cfg.betas == (0.9, 0.999)  # PyTorch's AdamW defaults
    assert cfg.onecycle_final_div_factor == 1e4 and cfg.onecycle_cycle_momentum is True
    assert cfg.grad_clip == 1.0 and cfg.evals_per_epoch == 3 and cfg.batch_size == 64
    assert (cfg.attention, cfg.mlp, cfg.norm) == ("manual", "gelu", "layernorm")


def test_report_best_preset_matches_report_setups():
    cfg = preset("report-best")
    expected = {**REPORT_CURRENT_DIFF, "max_lr": 5e-4, "onecycle_pct_start": 0.15}
    del expected["onecycle_div_factor"]  # 25: PyTorch's default, which is also ours
    assert cfg.diff() == expected
    assert cfg.onecycle_div_factor == 25.0 and cfg.onecycle_final_div_factor == 1e4
    assert cfg.diff(preset("report-current")) == {"max_lr": 5e-4, "onecycle_pct_start": 0.15,
                                                  "onecycle_div_factor": 25.0}
    assert set(PRESETS) >= {"mainrun", "report-current", "report-best"}


def test_report_current_parameter_count():
    torch.manual_seed(0)
    assert GPT(preset("report-current"), 16_000).num_params() == 27_140_096


# --------------------------------------------------------------------------- apply
def test_apply_rejects_conflicting_patches():
    # both set `schedule`, to onecycle and to warmup_cosine
    with pytest.raises(ConfigError, match=r"'onecycle_fix'.*'warmup_cosine'.*'schedule'"):
        apply(TrainConfig(), ["onecycle_fix", "warmup_cosine"])


def test_apply_accepts_equal_values():
    cfg = apply(TrainConfig(), ["lr_1e4", "betas_095", "onecycle_fix"])  # all set optimizer=adamw
    assert cfg.optimizer == "adamw" and cfg.lr == 1e-4 and cfg.betas == (0.9, 0.95)
    assert cfg.schedule == "onecycle" and cfg.max_lr == 5e-4
    # grouped_weight_decay and weight_decay_001 both set weight_decay 0.01: no conflict
    assert apply(TrainConfig(), ["grouped_weight_decay", "weight_decay_001"]).weight_decay == 0.01
    assert apply(TrainConfig(), []) == TrainConfig()


def test_identity_of_the_baseline_is_pinned():
    """Only non-default fields, the data and the seed make a run's identity: a new switch added
    in its off position must not turn every stored run into a new one (this value must never
    change)."""
    assert TrainConfig().identity_hash("sha256:abc") == "9e5ebdd0d153d1ae"
    assert TrainConfig(lr=1e-3, seed=1).identity_hash("sha256:abc") == "f97a85e48487174c"
    assert TrainConfig(seed=1).identity_hash("sha256:abc") != TrainConfig().identity_hash("sha256:abc")
