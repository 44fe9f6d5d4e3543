"""One answer across experiments (ablate/results/across.py): on the committed results, each
optimization one row, each experiment one column, a cell what the item does there, and the
items the experiments decide both ways said plainly."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.results import across
from ablate.results.report import build_report

from .conftest import REPO

EXPERIMENTS = ["report-cpu", "report-cpu-adamw", "report-cpu-adamw-small", "report-cpu-adamw-stack", "report-cpu-stack"]


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    copy = tmp_path_factory.mktemp("across") / "results.db"
    shutil.copy(REPO / "results.db", copy)
    return copy, [build_report(copy, name) for name in EXPERIMENTS]


def test_one_row_per_item_and_the_bases_that_disagree_are_named(committed):
    _, reports = committed
    table = across.across(reports).set_index("item")
    assert table.index.is_unique and list(table.columns) == [*EXPERIMENTS, "across experiments"]
    measured = {e.lstrip("−") for r in reports for e, v in zip(r.effects["effect"], r.effects["verdict"])
                if v != "no data"}
    assert set(table.index) == measured | {across.WHOLE_STACK}  # every item, once
    for item in ("betas_095", "onecycle_fix", "warmup_cosine_scaled"):  # helps on SGD, hurts on AdamW
        assert table.loc[item, "report-cpu"].verdict == "better"
        assert table.loc[item, "report-cpu-adamw"].verdict == "worse"
        said = table.loc[item, "across experiments"]
        assert said.startswith("opposite: better in report-cpu") and "worse in report-cpu-adamw" in said, said
    assert table.loc["vocab_2x", "across experiments"] == "agrees (better in 5)"
    assert table.loc["sdpa", "report-cpu-adamw-small"] is None  # not measured there: an empty cell


def test_a_removal_reads_as_what_the_item_does_and_the_whole_stack_is_a_row(committed):
    """Leave-one-out measures removing an item: 'removing ema is better' is EMA being worse
    inside the stack, with the sign and interval turned; the stack against its own baseline is
    the 'whole stack' row (report-cpu-adamw-stack: +0.59 worse than its start)."""
    _, reports = committed
    stack = next(r for r in reports if r.experiment == "report-cpu-adamw-stack")
    removal = stack.effects.set_index("effect").loc["−ema"]
    cell = across.cells(stack)["ema"]
    assert removal["verdict"] == "better" and cell.verdict == "worse"
    assert (cell.estimate, cell.lo, cell.hi) == (-removal["estimate"], -removal["ci_hi"], -removal["ci_lo"])
    whole = across.cells(stack)[across.WHOLE_STACK]
    full = stack.ranking.set_index("name").loc["all"]
    assert whole.verdict == "worse" and whole.estimate == full["d_base"] > 0.5 and whole.lo > stack.min_effect
    baseline = stack.values["baseline"]  # per seed, as every other row, so its differences are read too
    assert whole.by_seed == {s: v - baseline[s] for s, v in stack.values["all"].items() if s in baseline}
    assert len(whole.by_seed) >= 3
    one_at_a_time = next(r for r in reports if r.experiment == "report-cpu")
    assert across.WHOLE_STACK not in across.cells(one_at_a_time)  # its stack is an item of its own


def test_report_over_several_experiments_opens_with_the_table_in_every_format(committed, tmp_path):
    db, _ = committed
    args = ["report", "--db", str(db), "-e", "report-cpu", "-e", "report-cpu-adamw"]
    said = {}
    for fmt in ("table", "markdown", "json", "csv"):
        result = CliRunner().invoke(app, [*args, "--format", fmt])
        assert result.exit_code == 0, result.output
        said[fmt] = result.stdout
    data = json.loads(said["json"])
    assert [e["experiment"] for e in data["experiments"]] == ["report-cpu", "report-cpu-adamw"]
    onecycle = {r["experiment"]: r for r in data["across"] if r["item"] == "onecycle_fix"}
    assert onecycle["report-cpu"]["verdict"] == "better" and onecycle["report-cpu-adamw"]["verdict"] == "worse"
    assert onecycle["report-cpu"]["ci_hi"] < 0 < onecycle["report-cpu-adamw"]["ci_lo"]
    rows = list(csv.DictReader(io.StringIO(said["csv"])))
    assert {(r["item"], r["experiment"], r["verdict"]) for r in rows} >= {
        ("onecycle_fix", "report-cpu", "better"), ("onecycle_fix", "report-cpu-adamw", "worse")}
    for fmt, first_report in (("table", "Ranking"), ("markdown", "## report-cpu —")):
        text = said[fmt]
        assert text.index("onecycle_fix") < text.index(first_report)  # the table comes first
        assert "better in report-cpu; worse in report-cpu-adamw" in text
    out = tmp_path / "across.md"
    written = CliRunner().invoke(app, [*args, "--format", "markdown", "--out", str(out)])
    assert written.exit_code == 0 and out.read_text() == said["markdown"]


def test_where_verdicts_differ_the_difference_between_the_effects_is_itself_decided(committed):
    """Two experiments that share seeds: per seed, the item's effect in one minus in the other,
    recomputed here from each run's last evaluation with scipy's t, read against ±δ. On SGD
    onecycle_fix helps and on AdamW it hurts, and the difference is decided; betas_095 is
    'better' in one stack and 'negligible' in the other, yet its effects are alike."""
    from scipy import stats as scipy_stats

    from ablate.results.frames import load_evals

    db, reports = committed
    by_name = {r.experiment: r for r in reports}

    def effect(experiment: str, treated: str, control: str) -> dict:
        r = by_name[experiment]
        evals = load_evals(db, experiment)
        last = evals.sort_values("step").groupby("run_id").tail(1)
        y = {(n, s): v for n, s, v in zip(last["name"], last["seed"], last[r.column])}
        return {s: y[(treated, s)] - y[(control, s)] for (n, s) in y if n == treated and (control, s) in y}

    a = effect("report-cpu", "onecycle_fix", "baseline")
    b = effect("report-cpu-adamw", "onecycle_fix", "baseline")
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
    mean, n = sum(diffs) / len(diffs), len(diffs)
    half = scipy_stats.t.ppf(0.975, n - 1) * scipy_stats.tstd(diffs) / n ** 0.5
    lines = across.differences(across.across(reports), reports)
    said = next(line for line in lines if line.startswith("onecycle_fix: its effect in report-cpu − in report-cpu-adamw ="))
    assert f"= {mean:+.4f} [{mean - half:+.4f}…{mean + half:+.4f}] over {n} shared seeds" in said
    assert said.endswith("the effects differ (beyond ±0.005)") and mean + half < -0.005
    stacks = next(line for line in lines if line.startswith("betas_095: its effect in report-cpu-adamw-stack − in report-cpu-stack"))
    assert stacks.endswith("the effects are alike (within ±0.005)"), stacks
    whole = next(line for line in lines if line.startswith("whole stack: its effect in"))  # SGD's stack helps, AdamW's hurts
    assert whole.endswith("the effects differ (beyond ±0.005)"), whole
    assert not any(line.startswith("vocab_2x") for line in lines)  # agreed everywhere: nothing to tell apart
    for fmt in ("table", "markdown", "json"):
        result = CliRunner().invoke(app, ["report", "--db", str(db), "-e", "report-cpu", "-e", "report-cpu-adamw",
                                          "--format", fmt])
        shown = json.loads(result.stdout)["differences"] if fmt == "json" else " ".join(result.stdout.split())
        assert said in shown, fmt


def test_a_cell_states_the_decided_speed_and_memory_apart(committed):
    """report-cpu-cost's mixed_precision: slower and same memory, each with its interval, as two
    clauses of its cell (they ran together with no separator)."""
    db, _ = committed
    cell = across.cells(build_report(db, "report-cpu-cost"))["mixed_precision"]
    assert re.fullmatch(r"[\d.]+× slower \([\d.]+–[\d.]+×\); same memory \(×[\d.]+, [\d.]+–[\d.]+\)", cell.cost), cell.cost
