"""Cost effects with verdicts (issue 32, part 2): speed and peak memory compared like the loss,
paired by seed, as ratios read off an interval against ±cost_min_effect; and no speed verdict
where the runs were not timed alike (two at a time on one device)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ablate.results.cost import ratio_text

# Each run sleeps t seconds times a jitter that depends on the seed and on the configuration
# (j), so the per-seed ratios spread around 0.3 / 0.2 = 1.5 (their geometric mean: 1.5 × 1.0001).
# The command is a shell and awk, a few milliseconds beside the sleep.
SLEEPER = """\
name: sleeper
trainer:
  command: 'sh -c "sleep $(awk ''BEGIN {{ print {t} * (1 + (({seed} * {j}) % 5) / 40) }}''); echo loss 1.{seed}"'
metric: {name: loss, pattern: 'loss (?P<loss>[0-9.]+)'}
params: {t: 0.2, j: 3}
min_effect: 0.5
cost_min_effect: 0.05
seeds: [1, 2, 3, 4]
design: one-at-a-time
toggles:
  - name: slow
    patch: {t: 0.3, j: 7}
"""


def run_and_report(tmp_path: Path, matrix: str, *extra: str) -> dict:
    (tmp_path / "m.yaml").write_text(matrix)
    env = {k: v for k, v in os.environ.items() if k != "ABLATE_DB"}
    ran = subprocess.run([sys.executable, "-m", "ablate", "run", "m.yaml", "--db", "r.db", *extra], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    report = subprocess.run([sys.executable, "-m", "ablate", "report", "m.yaml", "--db", "r.db", "-f", "json"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    (effect,) = json.loads(report.stdout)["effects"]
    return effect


def test_a_config_that_sleeps_half_as_long_again_is_slower_by_an_interval_holding_1_5(tmp_path):
    effect = run_and_report(tmp_path, SLEEPER)
    assert effect["verdict"] == "negligible"  # the loss: the same on every seed
    assert effect["speed_verdict"] == "slower", effect
    assert effect["speed_lo"] < 1.5 < effect["speed_hi"] and effect["speed_lo"] > 1.05
    assert effect["speed_reason"] == ""


def test_two_runs_at_a_time_on_one_device_give_no_speed_verdict_and_say_why(tmp_path):
    effect = run_and_report(tmp_path, SLEEPER, "--jobs-per-device", "2")
    assert effect["speed_verdict"] == "not comparable"
    assert effect["speed_reason"] == "timed while sharing a device (2 runs at a time)"
    assert math.isnan(effect["speed_lo"] if effect["speed_lo"] is not None else math.nan)
    assert effect["memory_verdict"] in ("same memory", "inconclusive", "less memory", "more memory")


@pytest.mark.parametrize("ratio, lo, hi, verdict, kind, text", [
    (0.76, 0.71, 0.82, "faster", "speed", "1.32× faster (1.22–1.41×)"),
    (1.5, 1.36, 1.65, "slower", "speed", "1.50× slower (1.36–1.65×)"),
    (1.01, 0.98, 1.04, "same speed", "speed", "same speed (time ×1.01, 0.98–1.04)"),
    (4.1, 4.0, 4.2, "more memory", "memory", "more memory (×4.10, 4.00–4.20)"),
    (1.3, math.nan, math.nan, "not comparable", "speed", "not comparable"),
])
def test_a_cost_effect_reads_as_its_verdict_with_the_ratio_and_interval(ratio, lo, hi, verdict, kind, text):
    assert ratio_text(ratio, lo, hi, verdict, kind) == text


def test_exclusive_timing_runs_alone_says_so_and_refuses_packing(tmp_path):
    exclusive = SLEEPER.replace("seeds: [1, 2, 3, 4]", "seeds: [1, 2]") + "execution: {timing: exclusive}\n"
    effect = run_and_report(tmp_path, exclusive)
    assert effect["speed_verdict"] in ("slower", "inconclusive") and effect["speed_reason"] == ""
    env = {k: v for k, v in os.environ.items() if k != "ABLATE_DB"}
    shown = subprocess.run([sys.executable, "-m", "ablate", "report", "m.yaml", "--db", "r.db", "-f", "json"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert any(line.startswith("Timing: timed exclusively") for line in json.loads(shown.stdout)["lines"])
    packed = subprocess.run([sys.executable, "-m", "ablate", "run", "m.yaml", "--db", "r2.db", "--jobs-per-device", "2"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert packed.returncode == 2 and "execution.timing is 'exclusive'" in packed.stderr
    assert not (tmp_path / "r2.db").exists()
    (tmp_path / "m.yaml").write_text(exclusive.replace("{timing: exclusive}", "{timing: exclusive, jobs_per_device: 2}"))
    refused = subprocess.run([sys.executable, "-m", "ablate", "plan", "m.yaml"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "m.yaml: execution" in refused.stderr and "contradicts it" in refused.stderr


@pytest.mark.parametrize("treated_mib, verdict", [(101, "same memory"), (110, "more memory"), (90, "less memory")])
def test_a_cost_measured_alike_on_every_seed_is_read_as_it_is(treated_mib, verdict):
    """Peak memory is deterministic: the same bytes on every seed is an exact measurement, not a
    seed that never reached the trainer (the loss's 'seeds identical'), and a ratio without
    spread is read against ±5 % as it is, not left without a verdict ('no spread')."""
    from ablate.execution.seeds import VerdictPlan
    from ablate.results import report
    from ablate.results.cost import cost_effects

    rows = [{"name": name, "toggles": toggles, "seed": seed, "status": "completed", "position": i,
             "run_id": 10 * i + seed, "res.peak_rss_bytes": mib * 2**20, "res.train_tokens_per_s": 1e4 + 100 * seed + 10 * i}
            for i, (name, toggles, mib) in enumerate([("baseline", "", 100), ("x", "x", treated_mib)])
            for seed in (1, 2, 3)]
    per_run = pd.DataFrame(rows)
    effects = cost_effects(per_run, report._effects_on("one-at-a-time", [], VerdictPlan()), 0.05)
    (row,) = effects.to_dict("records")
    assert row["memory_verdict"] == verdict
    assert row["memory_ratio"] == pytest.approx(treated_mib / 100) == row["memory_lo"] == row["memory_hi"]


def test_the_committed_cost_experiment_judges_each_speed_item_and_draws_loss_against_speed(tmp_path):
    """experiments/report-cpu-cost.yaml, committed: sdpa, mixed_precision and grad_accum each get
    a speed and a memory verdict (timed exclusively, so comparable), and the quality-against-cost
    plot draws them; an experiment timed two at a time has nothing to draw and says so."""
    import shutil

    from ablate.results.frames import ResultsError
    from ablate.results.plot import has_speed, plot_cost
    from ablate.results.report import build_report

    from .conftest import REPO

    db = tmp_path / "results.db"
    shutil.copy(REPO / "results.db", db)
    report = build_report(db, "report-cpu-cost")
    effects = report.effects.set_index("effect")
    assert set(effects.index) == {"sdpa", "mixed_precision", "grad_accum"}
    for item in effects.index:
        speed, memory = effects.loc[item, "speed_verdict"], effects.loc[item, "memory_verdict"]
        assert speed in ("faster", "slower", "same speed", "inconclusive"), (item, speed, effects.loc[item, "speed_reason"])
        assert memory in ("less memory", "more memory", "same memory", "inconclusive"), (item, memory)
    assert any(line.startswith("Timing: timed exclusively") for line in report.lines), report.lines
    png = plot_cost(report, tmp_path / "cost.png")
    assert has_speed(report) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    packed = build_report(db, "report-cpu-adamw")
    assert not has_speed(packed)
    with pytest.raises(ResultsError, match="no effect with a speed interval"):
        plot_cost(packed, tmp_path / "none.png")


def test_speed_is_time_per_token_so_accumulating_two_micro_batches_is_not_twice_as_slow():
    """grad_accum's optimizer step does two micro-batches' work in twice the time: per step it
    would read '2× slower', per token (what a run of the same data costs) it is the same speed."""
    from ablate.results.cost import speed_of

    per_run = pd.DataFrame({"res.step_time_s": [0.1, 0.2], "res.train_tokens_per_s": [10240.0, 10240.0],
                            "cfg.trainer": [None, None], "wall_time_s": [60.0, 60.0]})
    assert speed_of(per_run).tolist() == [1 / 10240, 1 / 10240]


def evals_of(run_id: int, step_ms: list[float], tokens_per_step: int = 1024) -> pd.DataFrame:
    """A built-in run's evaluations at steps 1, 11, 21, …: step 1 took 500 ms (its warm-up), each
    later interval of 10 steps its listed milliseconds per step; tokens_per_s is cumulative over
    training time, as the trainer stores it."""
    steps, seconds = [1], [0.5]
    for ms in step_ms:
        steps.append(steps[-1] + 10)
        seconds.append(seconds[-1] + 10 * ms / 1000)
    tokens = [s * tokens_per_step for s in steps]
    return pd.DataFrame({"run_id": run_id, "step": steps, "tokens_seen": tokens,
                         "tokens_per_s": [t / s for t, s in zip(tokens, seconds)]})


def test_a_burst_of_a_shared_machine_moves_the_speed_of_a_run_little():
    """A run slowed 3x for one of its five intervals (a 2-core VM did that) is read at its steady
    pace: the median of its intervals' time per token, warm-up apart; its mean would be 40 % slower.
    Where a built-in run has too few intervals for a median, every run of the experiment is read
    by its mean alike."""
    from ablate.results.cost import STEADY, speed_of, steady_seconds_per_token

    evals = pd.concat([evals_of(1, [80, 80, 240, 80, 80]), evals_of(2, [100, 100, 100, 100, 100]),
                       evals_of(3, [90])])
    steady = steady_seconds_per_token(evals)
    assert steady.to_dict() == pytest.approx({1: 0.080 / 1024, 2: 0.100 / 1024})  # run 3: one interval
    mean_1 = (0.5 + 10 * (4 * 80 + 240) / 1000) / (51 * 1024)  # what train_tokens_per_s holds, warm-up in
    per_run = pd.DataFrame({"run_id": [1, 2], "res.train_tokens_per_s": [1 / mean_1, 1024 / 0.1],
                            "cfg.trainer": [None, None], "wall_time_s": [60.0, 60.0]})
    per_run[STEADY] = per_run["run_id"].map(steady)
    assert speed_of(per_run).tolist() == pytest.approx([0.080 / 1024, 0.100 / 1024])
    without = per_run.assign(**{STEADY: [0.080 / 1024, math.nan]})  # one run has no median
    assert speed_of(without).tolist() == pytest.approx([mean_1, 0.1 / 1024])
