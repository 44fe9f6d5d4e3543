"""Matrix files: each design's expansion, and an error that points at the right key for every
way a file can be wrong."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from ablate.execution.matrix import Matrix, MatrixError, PlannedRun, load_matrix, parse_matrix
from ablate.training.catalog import CATALOG, preset

TINY = "base: {overrides: {d_model: 64, n_layer: 2}}\n"
TWO_LEVEL = ["sdpa", "swiglu", "rmsnorm", "ema", "dropout_005", "onecycle_fix", "grad_accum",
             "mixed_precision", "vocab_32k", "url_pretokenizer", "weight_decay_001",
             "evals_per_epoch_5", "grouped_weight_decay", "token_masking", "sequence_augmentation"]


def write(tmp_path: Path, body: str, name: str = "smoke.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def load(tmp_path: Path, body: str) -> Matrix:
    return load_matrix(write(tmp_path, body))


def error(tmp_path: Path, body: str) -> str:
    with pytest.raises(MatrixError) as info:
        load(tmp_path, body)
    message = str(info.value)
    assert all(line.startswith(str(tmp_path / "smoke.yaml") + ": ") for line in message.splitlines())
    return message


def names(runs: list[PlannedRun]) -> list[str]:
    return [r.name for r in runs]


# --- designs ---------------------------------------------------------------------------------

def test_one_at_a_time_applies_each_toggle_alone(tmp_path):
    m = load(tmp_path, """\
        name: smoke
        base: {overrides: {d_model: 64, n_layer: 2}}
        design: one-at-a-time
        toggles:
          - sdpa
          - {name: no_dropout, patch: {dropout: 0.0}, description: "no dropout at all"}
          - {lr: [1.0e-4, 3.0e-4]}
        """)
    runs = m.expand()
    assert names(runs) == ["baseline", "sdpa", "no_dropout", "lr=0.0001", "lr=0.0003"]
    base = preset("mainrun").replace(d_model=64, n_layer=2)
    assert m.base == base and runs[0].config == base and runs[0].toggles == ()
    assert runs[1].config == base.replace(attention="sdpa") and runs[1].toggles == ("sdpa",)
    assert runs[2].config.dropout == 0.0
    assert [r.config.lr for r in runs[3:]] == [1e-4, 3e-4]
    assert m.factors[1].description == "no dropout at all"
    assert m.factors[2].levels[0] == ("lr=0.006", {})
    assert m.warnings == [] and m.seeds == [1337] and m.reference == 1.754


def test_leave_one_out(tmp_path):
    m = load(tmp_path, TINY + "name: loo\ndesign: leave-one-out\ntoggles: [sdpa, swiglu, rmsnorm]\n")
    runs = {r.name: r for r in m.expand()}
    assert list(runs) == ["baseline", "all", "all-minus-sdpa", "all-minus-swiglu", "all-minus-rmsnorm"]
    assert runs["all"].toggles == ("sdpa", "swiglu", "rmsnorm")
    assert runs["all-minus-swiglu"].toggles == ("sdpa", "rmsnorm")
    assert runs["all-minus-swiglu"].config.mlp == "gelu"
    assert runs["all-minus-swiglu"].config.norm == "rmsnorm"


def test_factorial_crosses_every_level(tmp_path):
    m = load(tmp_path, TINY + "name: f\ndesign: factorial\ntoggles: [sdpa, ema, {lr: [1.0e-3, 2.0e-3]}]\n")
    runs = m.expand()
    assert len(runs) == 2 * 2 * 3 and runs[0].name == "baseline"
    assert len(set(names(runs))) == len(runs)
    run = next(r for r in runs if r.name == "sdpa+ema+lr=0.002")
    assert run.toggles == ("sdpa", "ema", "lr=0.002")
    assert (run.config.attention, run.config.ema_decay, run.config.lr) == ("sdpa", 0.999, 0.002)
    assert len({r.config for r in runs}) == len(runs)


@pytest.mark.parametrize("k", range(3, 16))
def test_fractional_is_balanced_orthogonal_and_starts_at_baseline(tmp_path, k):
    toggles = ", ".join(TWO_LEVEL[:k])
    m = load(tmp_path, TINY + f"name: frac\ndesign: fractional\ntoggles: [{toggles}]\n")
    runs = m.expand()
    n = len(runs)
    assert n & (n - 1) == 0 and n >= k + 1 and n // 2 < k + 1  # smallest power of two
    assert runs[0].name == "baseline" and runs[0].config == m.base
    signs = [[-1 if t in r.toggles else 1 for t in TWO_LEVEL[:k]] for r in runs]
    for a in range(k):
        assert sum(row[a] == -1 for row in signs) == n // 2
        for b in range(a + 1, k):
            assert sum(row[a] * row[b] for row in signs) == 0
    on = next(r for r in runs if "sdpa" in r.toggles)
    assert on.config.attention == "sdpa" and on.name == "+".join(on.toggles)


def test_fifteen_toggles_take_sixteen_runs(tmp_path):
    m = load(tmp_path, TINY + f"name: frac\ndesign: fractional\ntoggles: [{', '.join(TWO_LEVEL)}]\n")
    assert len(m.expand()) == 16


def test_cumulative_stacks_in_order(tmp_path):
    m = load(tmp_path, TINY + "name: c\ndesign: cumulative\ntoggles: [sdpa, swiglu, ema]\n")
    runs = m.expand()
    assert names(runs) == ["baseline", "+sdpa", "+sdpa+swiglu", "+sdpa+swiglu+ema"]
    assert runs[2].config.mlp == "swiglu" and runs[2].config.ema_decay == 0.0
    assert runs[3].config.ema_decay == 0.999


def test_list_design_runs_exactly_what_is_listed(tmp_path):
    m = load(tmp_path, """\
        name: picked
        design: list
        toggles: [{name: no_dropout, patch: {dropout: 0.0}}, {lr: [1.0e-3, 2.0e-3]}]
        runs:
          - {name: control, toggles: []}
          - {name: stack, toggles: [swiglu, no_dropout, lr=0.002]}
          - {name: fast, toggles: [sdpa]}
        """)
    runs = {r.name: r for r in m.expand()}
    assert list(runs) == ["control", "stack", "fast"]
    assert runs["control"].config == m.base and runs["control"].toggles == ()
    assert runs["stack"].toggles == ("no_dropout", "lr=0.002", "swiglu")  # declared, then catalog
    assert (runs["stack"].config.mlp, runs["stack"].config.dropout, runs["stack"].config.lr) == \
        ("swiglu", 0.0, 0.002)
    assert runs["fast"].config.attention == "sdpa"


def test_list_design_needs_no_toggles_section(tmp_path):
    m = load(tmp_path, "name: l\ndesign: list\nruns: [{name: one, toggles: [ema]}]\n")
    assert [(r.name, r.config.ema_decay) for r in m.expand()] == [("one", 0.999)]


def test_seeds_replicate_every_row_seed_major(tmp_path):
    m = load(tmp_path, TINY + "name: s\ndesign: one-at-a-time\nseeds: [1, 2, 3]\ntoggles: [sdpa]\n")
    runs = m.expand()
    assert [(r.name, r.seed) for r in runs] == [
        ("baseline", 1), ("sdpa", 1), ("baseline", 2), ("sdpa", 2), ("baseline", 3), ("sdpa", 3)]
    assert all(r.config.seed == r.seed for r in runs)


def test_default_seed_is_the_base_configs(tmp_path):
    m = load(tmp_path, "name: s\ndesign: one-at-a-time\nbase: {overrides: {seed: 7}}\ntoggles: [sdpa]\n")
    assert m.seeds == [7] and {r.seed for r in m.expand()} == {7}


def test_presets_and_metadata(tmp_path):
    m = load(tmp_path, """\
        name: rc
        description: on the report's base
        base: {preset: report-current}
        reference: 1.5
        max_runs: 5
        design: one-at-a-time
        toggles: [block_size]
        execution: {devices: [0, 1], jobs_per_device: 2}
        """)
    assert m.base == preset("report-current") and m.name == "rc" and m.description == "on the report's base"
    assert m.reference == 1.5 and m.max_runs == 5 and m.design == "one-at-a-time"
    assert m.execution.devices == [0, 1] and m.execution.jobs_per_device == 2
    assert [r.config.block_size for r in m.expand()] == [64, 128]  # a real change on this base
    assert m.factors[0].allowed and m.text.startswith("name: rc")


def test_disallowed_catalog_toggle_is_marked(tmp_path):
    m = load(tmp_path, "name: a\ndesign: one-at-a-time\ntoggles: [token_masking, sdpa]\n")
    assert [f.allowed for f in m.factors] == [CATALOG["token_masking"].allowed, True] == [False, True]


def test_data_is_relative_to_the_matrix_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write(tmp_path / "sub", "name: d\ndata: ../titles.csv\ndesign: one-at-a-time\ntoggles: [sdpa]\n")
    m = load_matrix(path)
    assert Path(m.base.data) == (tmp_path / "titles.csv").resolve()
    assert {r.config.data for r in m.expand("other.csv")} == {"other.csv"}
    hub = parse_matrix("name: d\ndata: someone/dataset\ndesign: one-at-a-time\ntoggles: [sdpa]\n")
    assert hub.base.data == "someone/dataset"


@pytest.mark.parametrize("name", ["titles.json", "TITLES.CSV", "titles.Parquet"])
def test_every_data_format_the_loader_reads_is_a_local_file(tmp_path, name):
    """The matrix and the data loader agree on what a local file is (suffix in any case), so a
    file that does not exist yet is still resolved next to the matrix, not taken for a hub id."""
    path = write(tmp_path, f"name: d\ndata: {name}\ndesign: one-at-a-time\ntoggles: [sdpa]\n")
    assert Path(load_matrix(path).base.data) == (tmp_path / name).resolve()


def test_no_op_toggle_is_dropped_with_a_warning(tmp_path):
    m = load(tmp_path, "name: n\ndesign: one-at-a-time\ntoggles: [sdpa, block_size, {dropout: [0.1]}, "
                       "{lr: [6.0e-3, 1.0e-3]}]\n")
    assert names(m.expand()) == ["baseline", "sdpa", "lr=0.001"]  # lr=0.006 is the base value
    assert len(m.warnings) == 2
    assert "smoke.yaml: toggles[1]" in m.warnings[0] and "'block_size'" in m.warnings[0]
    assert "toggles[2]" in m.warnings[1]


def test_no_op_toggle_named_by_a_list_run_is_ignored(tmp_path):
    m = load(tmp_path, "name: n\ndesign: list\nruns: [{name: r, toggles: [block_size, sdpa]}]\n")
    assert [r.toggles for r in m.expand()] == [("sdpa",)]
    assert "runs[0].toggles[0]" in m.warnings[0]


def test_same_value_from_two_toggles_is_fine(tmp_path):
    m = load(tmp_path, "name: ok\ndesign: factorial\ntoggles: [lr_1e4, betas_095]\n")  # both set adamw
    assert m.expand()[-1].config.optimizer == "adamw"


def test_parse_matrix_without_a_file():
    m = parse_matrix("name: x\ndesign: one-at-a-time\ntoggles: [sdpa]\n")
    assert m.path == Path("<matrix>") and len(m.expand()) == 2
    with pytest.raises(MatrixError, match=r"^<matrix>: design: required key is missing"):
        parse_matrix("name: x\ntoggles: [sdpa]\n")


# --- errors ----------------------------------------------------------------------------------

def test_unreadable_file(tmp_path):
    with pytest.raises(MatrixError, match="missing.yaml: cannot read the file"):
        load_matrix(tmp_path / "missing.yaml")


def test_invalid_yaml_reports_the_line(tmp_path):
    message = error(tmp_path, "name: x\ndesign: [one\ntoggles: [sdpa]\n")
    assert "line 3, column 8" in message and "invalid YAML" in message


def test_python_tags_are_refused(tmp_path):
    message = error(tmp_path, "name: !!python/object/apply:os.system ['echo hi']\ndesign: list\n")
    assert "invalid YAML" in message and "python/object" in message


@pytest.mark.parametrize("body, got", [("- a\n- b\n", "list"), ("", "an empty file"), ("3\n", "int")])
def test_top_level_must_be_a_mapping(tmp_path, body, got):
    assert f"(top level): expected a mapping of keys, got {got}" in error(tmp_path, body)


def test_unknown_keys_suggest_the_valid_ones(tmp_path):
    message = error(tmp_path, """\
        name: x
        design: one-at-a-time
        sedds: [1]
        base: {preset: mainrun, overides: {}}
        execution: {device: cpu}
        toggles: [sdpa]
        runs: [{name: a, toggle: []}]
        """)
    assert len(message.splitlines()) == 4  # every problem, one line each
    assert "smoke.yaml: sedds: unknown key (did you mean 'seeds'?); expected one of name," in message
    assert "base.overides: unknown key (did you mean 'overrides'?); expected one of preset, overrides" in message
    assert "execution.device: unknown key (did you mean 'devices'?)" in message
    assert "runs[0].toggle: unknown key (did you mean 'toggles'?)" in message


def test_unknown_toggle_suggests_a_catalog_name(tmp_path):
    message = error(tmp_path, "name: x\ndesign: one-at-a-time\ntoggles: [sdpa, ema, swigl]\n")
    assert "smoke.yaml: toggles[2]: unknown optimization 'swigl' (did you mean 'swiglu'?)" in message
    assert "expected a catalog name" in message


@pytest.mark.parametrize("body, where, expected", [
    ("name: 3\ndesign: list\n", "name", "expected a valid string, got 3"),
    ("name: a b\ndesign: list\n", "name", "expected 1-64 letters"),
    ("name: x\ndesign: factorail\ntoggles: [sdpa]\n", "design", "(did you mean 'factorial'?)"),
    ("name: x\ndesign: list\nruns: [{name: a}]\nseeds: [1, x]\n", "seeds[1]", "expected a valid integer, got 'x'"),
    ("name: x\ndesign: list\nruns: [{name: a}]\nseeds: [1, 1]\n", "seeds", "distinct integers"),
    ("name: x\ndesign: list\nruns: [{name: a}]\nmax_runs: many\n", "max_runs", "expected a valid integer"),
    ("name: x\ndesign: list\nruns: [{name: a}]\nreference: low\n", "reference", "expected a valid number"),
    ("name: x\ndesign: list\nruns: [{name: a}]\nexecution: {devices: gpu}\n", "execution.devices",
     "expected 'auto', 'cpu' or a list of distinct GPU indices, got 'gpu'"),
    ("name: x\ndesign: list\nruns: [{name: a}]\nexecution: {jobs_per_device: 0}\n",
     "execution.jobs_per_device", "expected greater than or equal to 1, got 0"),
    ("name: x\ndesign: list\nruns: [{name: a}]\nbase: {preset: mainrn}\n", "base.preset",
     "unknown preset 'mainrn' (did you mean 'mainrun'?)"),
    ("name: x\ndesign: list\nruns: [{name: a}]\nbase: []\n", "base", "expected a mapping, got []"),
    ("name: x\ndesign: list\nruns: {name: a}\n", "runs", "expected a valid list"),
    ("design: list\nruns: [{name: a}]\n", "name", "required key is missing"),
])
def test_wrong_types_and_values(tmp_path, body, where, expected):
    message = error(tmp_path, body)
    assert f"smoke.yaml: {where}: " in message and expected in message


def test_bad_overrides(tmp_path):
    message = error(tmp_path, "name: x\ndesign: one-at-a-time\ntoggles: [sdpa]\n"
                              "base: {overrides: {dmodel: 64, nlayer: 2}}\n")
    assert "base.overrides.dmodel: unknown config field (did you mean 'd_model'?)" in message
    assert "base.overrides.nlayer: unknown config field (did you mean 'n_layer'?)" in message
    message = error(tmp_path, "name: x\ndesign: one-at-a-time\ntoggles: [sdpa]\n"
                              "base: {overrides: {d_model: big}}\n")
    assert "smoke.yaml: base.overrides.d_model: expected int, got 'big'" in message
    message = error(tmp_path, "name: x\ndesign: one-at-a-time\ntoggles: [sdpa]\n"
                              "base: {overrides: {d_model: 100}}\n")
    assert "smoke.yaml: base.overrides: d_model (100) must be divisible by n_head (8)" in message


def test_bad_inline_patches(tmp_path):
    message = error(tmp_path, """\
        name: x
        design: one-at-a-time
        toggles:
          - {name: a, patch: {dropuot: 0.0}}
          - {name: b, patch: {dropout: 2.0}}
          - {name: c, patch: {lr: 1e-4}}
          - {name: d, pach: {lr: 0.1}}
          - {name: baseline, patch: {lr: 0.1}}
          - {name: e, patch: {}}
        """)
    assert "toggles[0].patch.dropuot: unknown config field (did you mean 'dropout'?)" in message
    assert "toggles[1].patch: dropout must be in [0, 1)" in message
    assert "toggles[2].patch.lr: expected float, got '1e-4' (YAML reads 1e-4 as text; write 1.0e-4)" in message
    assert "toggles[3].pach: unknown key (did you mean 'patch'?)" in message
    assert "toggles[3].patch: required key is missing" in message
    assert "toggles[4].name: 'baseline' is a generated run name" in message
    assert "toggles[5].patch: Dictionary should have at least 1 item" in message


def test_bad_field_factors(tmp_path):
    message = error(tmp_path, """\
        name: x
        design: factorial
        toggles:
          - {lrr: [0.1]}
          - {lr: 0.1}
          - {dropout: [0.2, 1.5]}
          - {n_head: [3]}
          - {weight_decay: [0.1, 0.1]}
          - [sdpa]
        """)
    assert "toggles[0].lrr: unknown config field (did you mean 'lr'?)" in message
    assert "toggles[1].lr: expected a non-empty list of values, got 0.1" in message
    assert "toggles[2].dropout[1]: dropout must be in [0, 1)" in message
    assert "toggles[3].n_head[0]: d_model (512) must be divisible by n_head (3)" in message
    assert "toggles[4].weight_decay[1]: duplicate value 0.1" in message
    assert "toggles[5]: expected a catalog name" in message and "got ['sdpa']" in message


def test_empty_toggle_list(tmp_path):
    assert "smoke.yaml: toggles: expected at least one toggle" in error(
        tmp_path, "name: x\ndesign: factorial\ntoggles: []\n")
    assert "smoke.yaml: toggles: expected at least one toggle" in error(tmp_path, "name: x\ndesign: factorial\n")


def test_only_no_op_toggles(tmp_path):
    assert "toggles: every toggle is a no-op" in error(tmp_path, "name: x\ndesign: factorial\ntoggles: [block_size]\n")


def test_duplicate_toggle_names(tmp_path):
    message = error(tmp_path, "name: x\ndesign: one-at-a-time\ntoggles: [sdpa, ema, "
                              "{name: sdpa, patch: {attention: sdpa}}]\n")
    assert "toggles[2]: duplicate toggle name 'sdpa' (also toggles[0])" in message


@pytest.mark.parametrize("design", ["leave-one-out", "fractional", "cumulative"])
def test_multi_level_factor_in_a_two_level_design(tmp_path, design):
    message = error(tmp_path, f"name: x\ndesign: {design}\ntoggles: [sdpa, {{lr: [1.0e-3, 2.0e-3]}}]\n")
    assert f"toggles[1]: design '{design}' needs two-level toggles" in message
    assert "lr=0.001, lr=0.002" in message


def test_one_valued_field_factor_is_two_level(tmp_path):
    m = load(tmp_path, "name: x\ndesign: fractional\ntoggles: [sdpa, {lr: [1.0e-3]}, ema]\n")
    assert len(m.expand()) == 4


@pytest.mark.parametrize("design, run", [
    ("factorial", "onecycle_fix+warmup_cosine"), ("leave-one-out", "all"), ("cumulative", "+onecycle_fix+warmup_cosine")])
def test_conflicting_toggles(tmp_path, design, run):
    message = error(tmp_path, f"name: x\ndesign: {design}\ntoggles: [onecycle_fix, warmup_cosine, sdpa]\n")
    assert len(message.splitlines()) == 1  # reported once, not once per run
    assert (f"smoke.yaml: toggles[1]: in run '{run}', 'onecycle_fix' sets schedule='onecycle' "
            f"but 'warmup_cosine' sets schedule='warmup_cosine'") in message


def test_conflicting_toggles_in_a_list_run(tmp_path):
    message = error(tmp_path, "name: x\ndesign: list\nruns: [{name: ok, toggles: [sdpa]}, "
                              "{name: clash, toggles: [warmup_cosine, onecycle_fix]}]\n")
    assert ("smoke.yaml: runs[1]: in run 'clash', 'warmup_cosine' sets schedule='warmup_cosine' "
            "but 'onecycle_fix' sets schedule='onecycle'") in message


def test_fractional_conflicts_are_caught_too(tmp_path):
    message = error(tmp_path, "name: x\ndesign: fractional\ntoggles: [onecycle_fix, warmup_cosine, sdpa]\n")
    assert "toggles[1]: in run" in message and "schedule" in message


def test_combination_that_breaks_config_rules(tmp_path):
    message = error(tmp_path, "name: x\ndesign: factorial\ntoggles: [{d_model: [520]}, {n_head: [16]}]\n")
    assert message.endswith("smoke.yaml: toggles: run 'd_model=520+n_head=16': "
                            "d_model (520) must be divisible by n_head (16)")


def test_design_too_large(tmp_path):
    toggles = ", ".join(TWO_LEVEL[:12])
    message = error(tmp_path, f"name: x\ndesign: factorial\nseeds: [1, 2]\nmax_runs: 1000\ntoggles: [{toggles}]\n")
    assert "smoke.yaml: max_runs: design 'factorial' has 4096 runs x 2 seeds = 8192, over the limit of 1000" in message
    thirty = [f"{{name: t{i}, patch: {{num_titles: {100 + i}}}}}" for i in range(40)]
    message = error(tmp_path, f"name: x\ndesign: factorial\ntoggles: [{', '.join(thirty)}]\n")  # not enumerated
    assert f"has {2 ** 40} runs x 1 seeds" in message and "limit of 200" in message


def test_list_design_errors(tmp_path):
    message = error(tmp_path, """\
        name: x
        design: list
        toggles: [{lr: [1.0e-3, 2.0e-3]}, {name: nodrop, patch: {dropout: 0.0}}]
        runs:
          - {name: a, toggles: [nodrp]}
          - {name: b, toggles: [lr]}
          - {name: c, toggles: [lr=0.001, lr=0.002]}
          - {name: d, toggles: [lr=0.5]}
        """)
    assert "runs[0].toggles[0]: unknown toggle 'nodrp' (did you mean 'nodrop'?)" in message
    assert "runs[1].toggles[0]: 'lr' has several levels; name one of 'lr=0.001', 'lr=0.002'" in message
    assert "runs[2].toggles[1]: 'lr=0.002' repeats toggle 'lr'" in message
    assert "runs[3].toggles[0]: unknown toggle 'lr=0.5'" in message


def test_list_design_shape(tmp_path):
    assert "runs[1].name: duplicate run name 'a' (also runs[0])" in error(
        tmp_path, "name: x\ndesign: list\nruns: [{name: a}, {name: a, toggles: [sdpa]}]\n")
    assert "runs: design 'list' needs a non-empty list of runs" in error(tmp_path, "name: x\ndesign: list\n")
    assert "runs: only used by design 'list'" in error(
        tmp_path, "name: x\ndesign: factorial\ntoggles: [sdpa]\nruns: [{name: a}]\n")


def test_a_row_equal_to_an_earlier_one_is_dropped_with_a_warning(tmp_path):
    path = tmp_path / "dup.yaml"
    # grouped_weight_decay already carries weight_decay 0.01: the stack minus weight_decay_001
    # is the whole stack again
    path.write_text("name: dup\ndesign: leave-one-out\n"
                    "toggles: [grouped_weight_decay, weight_decay_001, sdpa]\n")
    matrix = load_matrix(path)
    names = [r.name for r in matrix.expand()]
    assert "all-minus-weight_decay_001" not in names and "all" in names
    assert any("'all-minus-weight_decay_001' is the same configuration as 'all'" in w
               for w in matrix.warnings)


def test_jobs_per_device_defaults_to_four_per_gpu_and_one_per_cpu(tmp_path):
    """Measured on an H200 (BENCHMARKS.md section 8): four full-size runs at a time finish a
    batch of runs fastest; a CPU runs one at a time on all its cores."""
    from ablate.execution.executors import detect_slots

    body = "name: x\ndesign: one-at-a-time\ntoggles: [sdpa]\n"
    assert load(tmp_path, body).execution.jobs_per_device is None  # the matrix did not say
    gpu = detect_slots([0, 1], None)
    assert [(s.device, s.visible) for s in gpu] == [("cuda", "0")] * 4 + [("cuda", "1")] * 4
    cpu = detect_slots("cpu", None)
    assert len(cpu) == 1 and cpu[0].threads == (os.cpu_count() or 1)
    assert len(detect_slots([0], 2)) == 2 and len(detect_slots("cpu", 2)) == 2
