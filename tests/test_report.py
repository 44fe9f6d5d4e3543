"""The report, results API, plots and result commands, checked against hand-computed values.

Every database is built through `Store` the way a worker fills it (claim, record_eval, finish or
fail), from matrices that `parse_matrix` expands; the losses are chosen so that every expected
number below can be worked out by hand.
"""

from __future__ import annotations

import io
import json
import math
import shlex

import pandas as pd
import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.training.catalog import build_config
from ablate.execution.matrix import parse_matrix
from ablate.results import report as rp
from ablate.results import frames
from ablate.results.plot import plot_curves, seed_band
from ablate.results.render import effects_display, render, sparkline
from ablate.storage.schema import Eval, Run
from ablate.storage.store import Store
from ablate.training.config import TrainConfig

from .conftest import REPO
from .test_stats import T975

# Every matrix has its own seeds: runs with equal configs are shared across matrices.

OAT = "name: oat\ndesign: one-at-a-time\ntoggles: [sdpa, swiglu, token_masking]\nseeds: [1, 2, 3]\n"
OAT_LOSS = {  # (name, seed) -> final val_loss
    ("baseline", 1): 1.80, ("baseline", 2): 1.82, ("baseline", 3): 1.81,
    ("sdpa", 1): 1.78, ("sdpa", 2): 1.81, ("sdpa", 3): 1.79,
    ("swiglu", 1): 1.79, ("swiglu", 2): 1.84,  # seed 3 fails
    ("token_masking", 1): 1.70, ("token_masking", 2): 1.71, ("token_masking", 3): 1.72,
}
FACTORIAL = ("name: fact\ndesign: factorial\ntoggles: [sdpa, swiglu]\nseeds: [1, 2]\n"
             "base: {overrides: {d_model: 128, n_layer: 2}}\n")
FACT_LOSS = {
    ("baseline", 1): 2.00, ("sdpa", 1): 1.90, ("swiglu", 1): 1.96, ("sdpa+swiglu", 1): 1.80,
    ("baseline", 2): 2.02, ("sdpa", 2): 1.93, ("swiglu", 2): 1.98, ("sdpa+swiglu", 2): 1.82,
}
FRACTIONAL = "name: frac\ndesign: fractional\ntoggles: [sdpa, swiglu, rmsnorm]\nseeds: [11]\n"
FRAC_LOSS = {  # the 4 runs of Sylvester's H4, columns 1..3
    ("baseline", 11): 2.00, ("sdpa+rmsnorm", 11): 1.90, ("swiglu+rmsnorm", 11): 1.95,
    ("sdpa+swiglu", 11): 1.85,
}
LOO = "name: loo\ndesign: leave-one-out\ntoggles: [sdpa, swiglu]\nseeds: [12]\n"
LOO_LOSS = {("baseline", 12): 2.0, ("all", 12): 1.8, ("all-minus-sdpa", 12): 1.9,
            ("all-minus-swiglu", 12): 1.82}
CUMULATIVE = "name: cum\ndesign: cumulative\ntoggles: [sdpa, swiglu, rmsnorm]\nseeds: [13]\n"
CUM_LOSS = {("baseline", 13): 2.0, ("+sdpa", 13): 1.9, ("+sdpa+swiglu", 13): 1.92,
            ("+sdpa+swiglu+rmsnorm", 13): 1.85}
MIXED = "name: mixed\ndesign: one-at-a-time\ntoggles: [sdpa, vocab_32k, url_pretokenizer, rmsnorm]\nseeds: [14]\n"
MIXED_LOSS = {("baseline", 14): 1.80, ("sdpa", 14): 1.79, ("vocab_32k", 14): 1.60,
              ("url_pretokenizer", 14): 1.78, ("rmsnorm", 14): 1.81}
MIXED_FULL = {"baseline": 1.85, "sdpa": 1.84, "vocab_32k": 1.90, "url_pretokenizer": 1.83, "rmsnorm": 1.86}
MIXED_EXTRA = {"vocab_32k": {"eval_coverage": 0.70}, "url_pretokenizer": {"tokenizer_roundtrip": False},
               "rmsnorm": {"val_text_sha256": "other"}}


def fill(store: Store, yaml_text: str, losses: dict, *, full: dict | None = None, extra: dict | None = None,
         failed: dict | None = None) -> int:
    """Plan the matrix, then train each run on paper: three evals ending at its final loss.

    val_loss falls 0.2, 0.1, 0 above the final value at steps 10, 20, 30 (best = final, step 30);
    val_loss_full is `full[name]` or final + 0.05; result extras default to coverage 0.96, one
    validation text and a round-tripping tokenizer (`extra` by name, or by (name, seed)). Runs missing from `losses` stay queued unless
    `failed` maps (name, seed) to an error."""
    matrix = parse_matrix(yaml_text)
    exp = store.upsert_experiment(matrix.name, "", yaml_text, matrix.reference, matrix.design)
    planned = matrix.expand()
    ids = store.add_runs(exp, [
        {"hash": p.config.identity_hash(), "name": p.name, "config": p.config.to_dict(),
         "toggles": list(p.toggles), "seed": p.seed, "position": i} for i, p in enumerate(planned)])
    for run_id, p in zip(ids, planned):
        key = (p.name, p.seed)
        if key not in losses and key not in (failed or {}):
            continue
        run = store.claim([run_id], host="test", pid=1, code_version="abc")
        if key in (failed or {}):
            store.record_eval(run_id, run.attempt, {"step": 10, "val_loss": 2.5, "val_loss_full": 2.6})
            store.fail(run_id, run.attempt, failed[key])
            continue
        y = losses[key]
        y_full = (full or {}).get(p.name, y + 0.05)
        for step, up in ((10, 0.2), (20, 0.1), (30, 0.0)):
            store.record_eval(run_id, run.attempt, {
                "step": step, "epoch": step / 30, "val_loss": y + up, "val_loss_full": y_full + up,
                "eval_coverage": 0.96, "train_loss": y + up + 0.1, "lr": 6e-3, "grad_norm": 0.5,
                "tokens_seen": step * 8192, "elapsed_s": step * 1.0, "tokens_per_s": 8192.0,
                "attention_entropy": 2.0})
        store.finish(run_id, run.attempt, {
            "final_val_loss": y, "best_val_loss": y, "best_step": 30, "wall_time_s": 90.0,
            "tokens_per_s": 8192.0, "steps": 30, "max_steps": 30, "truncated": False,
            "final_val_loss_full": y_full, "eval_coverage": 0.96, "val_text_sha256": "same",
            "tokenizer_roundtrip": True, **(extra or {}).get(p.name, {}), **(extra or {}).get(key, {})})
    return exp


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    url = "sqlite:///" + str(tmp_path_factory.mktemp("report") / "results.db")
    with Store(url) as store:
        fill(store, OAT, OAT_LOSS, failed={("swiglu", 3): "CUDA out of memory"})
        fill(store, FACTORIAL, FACT_LOSS)
        fill(store, FRACTIONAL, FRAC_LOSS)
        fill(store, LOO, LOO_LOSS)
        fill(store, CUMULATIVE, CUM_LOSS)
        fill(store, MIXED, MIXED_LOSS, full=MIXED_FULL, extra=MIXED_EXTRA)
    return url


def ci(values: list[float]) -> tuple[float, float]:
    """The direct formula: mean ± t_{0.975,n-1}·sd/√n."""
    s = pd.Series(values)
    half = T975[len(s) - 1] * s.std(ddof=1) / math.sqrt(len(s))
    return s.mean() - half, s.mean() + half


def ranked(report: rp.Report) -> pd.DataFrame:
    return report.ranking[report.ranking["rank"].notna()].set_index("name")


def effect(report: rp.Report, name: str) -> pd.Series:
    return report.effects.set_index("effect").loc[name]


# ------------------------------------------------------------------------------ sparkline


def test_sparkline():
    assert sparkline([3, 2, 1]) == "█▅▁"
    assert sparkline([1.0, float("nan"), 1.0]) == "▄ ▄"
    assert sparkline([]) == ""


# ------------------------------------------------------------------ one-at-a-time, 3 seeds


def test_one_at_a_time_ranking(db):
    report = rp.build_report(db, "oat")
    table = ranked(report)
    assert list(table.index) == ["token_masking", "sdpa", "baseline", "swiglu"]
    sdpa = table.loc["sdpa"]
    values = [1.78, 1.81, 1.79]
    assert sdpa["final"] == pytest.approx(sum(values) / 3)
    assert sdpa["final_sd"] == pytest.approx(pd.Series(values).std())
    assert "ci_lo" not in table  # one interval level per report: the paired Δbase's, not a row's own
    assert sdpa["d_ref"] == pytest.approx(1.793333 - 1.754, abs=1e-6)
    assert sdpa["d_ref_pct"] == pytest.approx((1.793333 - 1.754) / 1.754 * 100, abs=1e-4)
    assert sdpa["d_base"] == pytest.approx((-0.02 - 0.01 - 0.02) / 3)
    assert (sdpa["d_base_lo"], sdpa["d_base_hi"]) == pytest.approx(ci([-0.02, -0.01, -0.02]), abs=1e-4)
    assert sdpa["best"] == pytest.approx(sdpa["final"]) and sdpa["best_step"] == 30
    assert sdpa["n"] == 3 and sdpa["wall_time_s"] == 90.0
    # swiglu's seed 3 failed: the pair is (1.79 - 1.80, 1.84 - 1.82) on seeds 1 and 2
    assert table.loc["swiglu", "n"] == 2 and table.loc["swiglu", "d_base"] == pytest.approx(0.005)
    assert table.loc["baseline", "is_baseline"] and table.loc["baseline", "d_base"] == 0
    assert table["d_base"].is_monotonic_increasing  # ranked by the paired difference to the baseline


def test_rule_breaking_never_best_and_failed_not_ranked(db):
    report = rp.build_report(db, "oat")
    table = ranked(report)
    assert table.loc["token_masking", "rank"] == 1 and table.loc["token_masking", "breaks_rule"] == "token_masking"
    assert not table.loc["token_masking", "is_best"]
    assert table.loc["sdpa", "is_best"] and table["is_best"].sum() == 1
    failed = report.ranking[report.ranking["rank"].isna()]
    assert failed[["name", "seed", "status", "error"]].values.tolist() == [["swiglu", 3, "failed", "CUDA out of memory"]]
    assert any("token_masking breaks Mainrun's rules" in n for n in report.notes)


def test_one_at_a_time_effects_paired_ci_and_verdict_read_off_it(db):
    report = rp.build_report(db, "oat")
    sdpa = effect(report, "sdpa")
    diffs = [-0.02, -0.01, -0.02]
    assert sdpa["n"] == 3
    assert sdpa["estimate"] == pytest.approx(sum(diffs) / 3)
    assert (sdpa["ci_lo"], sdpa["ci_hi"]) == pytest.approx(ci(diffs), abs=1e-4)
    # it leans to "better" (-0.017 against -0.005) but its 95% interval reaches -0.0023 (one-sided
    # p 0.036 > 0.025): inconclusive, with about how many seeds would decide it
    assert -0.005 < sdpa["ci_hi"] < 0 and 0.025 < sdpa["p"] < 0.05
    assert sdpa["verdict"] == "inconclusive" and sdpa["seeds_needed"] > 3
    swiglu = effect(report, "swiglu")
    assert swiglu["n"] == 2 and (swiglu["ci_lo"], swiglu["ci_hi"]) == pytest.approx(ci([-0.01, 0.02]), abs=1e-4)
    assert swiglu["verdict"] == "fails"  # seed 3 lost (out of memory) against a completed baseline
    p = report.effects["p"].tolist()
    assert len(p) == 3 and all(0 < v < 1 for v in p)
    # the one-sided "better" test by hand for sdpa: (mean + 0.005) / (sd / sqrt(3)), df 2 (closed form)
    t = abs(sum(diffs) / 3 + 0.005) / (pd.Series(diffs).std() / math.sqrt(3))
    assert sdpa["p"] == pytest.approx((1 - t / math.sqrt(t * t + 2)) / 2, abs=1e-9)
    assert "Intervals (Δbase and effects): 95% per comparison, paired by seed" in " ".join(report.lines)
    # a larger smallest effect of interest (--min-effect) calls the same data negligible
    assert effect(rp.build_report(db, "oat", min_effect=0.05), "sdpa")["verdict"] == "negligible"


# --------------------------------------------------------------------------- other designs


def test_factorial_main_effects_and_interaction(db):
    report = rp.build_report(db, "fact")
    per_seed = {  # (sdpa main, swiglu main, interaction) by hand, per seed
        1: ((1.90 + 1.80) / 2 - (2.00 + 1.96) / 2, (1.96 + 1.80) / 2 - (2.00 + 1.90) / 2,
            (2.00 + 1.80) / 2 - (1.90 + 1.96) / 2),
        2: ((1.93 + 1.82) / 2 - (2.02 + 1.98) / 2, (1.98 + 1.82) / 2 - (2.02 + 1.93) / 2,
            (2.02 + 1.82) / 2 - (1.93 + 1.98) / 2),
    }
    assert per_seed[1] == pytest.approx((-0.13, -0.07, -0.03))
    for i, name in enumerate(["sdpa", "swiglu", "sdpa×swiglu"]):
        row = effect(report, name)
        values = [per_seed[1][i], per_seed[2][i]]
        assert row["estimate"] == pytest.approx(sum(values) / 2)
        assert (row["ci_lo"], row["ci_hi"]) == pytest.approx(ci(values), abs=1e-4)
        assert row["n"] == 2
    assert effect(report, "sdpa×swiglu")["kind"] == "interaction"
    # a reduced-scale base: only the in-matrix baseline is a fair comparison
    assert "not the reference 1.754" in report.lines[0] and "d_model=128" in report.lines[0]


def test_fractional_main_effects_one_seed(db):
    report = rp.build_report(db, "frac")
    assert report.effects["effect"].tolist() == ["sdpa", "swiglu", "rmsnorm"]
    assert report.effects["estimate"].tolist() == pytest.approx([-0.10, -0.05, 0.0], abs=1e-12)
    assert set(report.effects["verdict"]) == {"noise unknown"}
    assert any("noise is unknown" in n for n in report.notes)
    assert any("resolution III" in n for n in report.notes)
    assert "Fair comparisons: the in-matrix baseline and the reference" in report.lines[0]


def test_leave_one_out_costs(db):
    report = rp.build_report(db, "loo")
    costs = report.effects.set_index("effect")["estimate"]
    assert costs.to_dict() == pytest.approx({"−sdpa": 0.1, "−swiglu": 0.02})
    assert effect(report, "−sdpa")["loss"] == pytest.approx(1.9)


def test_cumulative_steps(db):
    report = rp.build_report(db, "cum")
    steps = report.effects.set_index("effect")
    assert list(steps.index) == ["+sdpa", "+swiglu", "+rmsnorm"]
    assert steps["loss"].tolist() == pytest.approx([1.9, 1.92, 1.85])
    assert steps["estimate"].tolist() == pytest.approx([-0.1, 0.02, -0.07])


def test_factors_come_from_the_stored_runs_not_the_matrix_file(tmp_path):
    """Declared order (sdpa, lr, swiglu) is not the runs' order in a factorial, and lr is a
    three-level field factor: the report finds both from the stored runs, without the YAML."""
    yaml_text = "name: fields\ndesign: factorial\ntoggles: [sdpa, {lr: [0.003, 0.012]}, swiglu]\nseeds: [21]\n"
    planned = parse_matrix(yaml_text).expand()
    assert [p.name for p in planned][:3] == ["baseline", "swiglu", "lr=0.003"]
    url = f"sqlite:///{tmp_path / 'fields.db'}"
    with Store(url) as store:
        fill(store, yaml_text, {(p.name, 21): 2.0 - 0.01 * i for i, p in enumerate(planned)})
        with_yaml = rp.build_report(url, "fields").effects
        store.upsert_experiment("fields", "", None, 1.754, "factorial")  # the file text is gone
    effects = rp.build_report(url, "fields").effects
    assert sorted(effects["effect"]) == sorted(["sdpa", "lr: lr=0.003", "lr: lr=0.012", "swiglu", "sdpa×swiglu"])
    assert effects["estimate"].is_monotonic_increasing  # the table reads from the best effect down
    pd.testing.assert_frame_equal(effects, with_yaml)


# ---------------------------------------------------------------------------- like-for-like


def test_mixed_coverage_defaults_to_full_metric(db):
    report = rp.build_report(db, "mixed")
    assert report.metric == "full" and "eval coverage ranges 70%–96%" in report.lines[1]
    table = ranked(report)
    # a lossy tokenizer or another validation text cannot be ranked by any metric
    assert list(table.index) == ["sdpa", "baseline", "vocab_32k"]
    assert table.loc["sdpa", "final"] == pytest.approx(1.84)
    excluded = report.ranking[report.ranking["rank"].isna()].set_index("name")["error"]
    assert "does not round-trip" in excluded["url_pretokenizer"]
    assert "validation text differs" in excluded["rmsnorm"]
    assert "eval coverage 70% vs baseline 96%" in table.loc["vocab_32k", "not_like_for_like"]
    assert table.loc["vocab_32k", "fair"]  # val_loss_full scores every target
    assert table.loc["sdpa", "is_best"]  # url_pretokenizer is lower but not like-for-like


def test_coverage_gaps_of_several_seeds_make_one_reason(tmp_path):
    url = f"sqlite:///{tmp_path / 'seeds.db'}"
    matrix = "name: seeds\ndesign: one-at-a-time\ntoggles: [vocab_32k]\nseeds: [1, 2]\n"
    losses = {("baseline", 1): 1.80, ("baseline", 2): 1.81, ("vocab_32k", 1): 1.70, ("vocab_32k", 2): 1.71}
    extra = {("vocab_32k", 1): {"eval_coverage": 0.70}, ("vocab_32k", 2): {"eval_coverage": 0.80}}
    with Store(url) as store:
        fill(store, matrix, losses, extra=extra)
    reason = ranked(rp.build_report(url, "seeds")).loc["vocab_32k", "not_like_for_like"]
    assert reason.startswith("eval coverage 70–80% vs baseline 96% over 2 seeds (val_loss_full")
    assert reason.count("eval coverage") == 1


def test_mainrun_metric_flags_coverage_and_changes_metric(db):
    report = rp.build_report(db, "mixed", metric="mainrun")
    table = ranked(report)
    assert report.metric == "mainrun" and "use --metric full" in report.lines[1]
    assert table.index[0] == "vocab_32k" and table.loc["vocab_32k", "final"] == pytest.approx(1.60)
    assert not table.loc["vocab_32k", "fair"] and not table.loc["vocab_32k", "is_best"]
    assert table.loc["sdpa", "is_best"]
    assert any(n.startswith("vocab_32k (-0.2000) looks like a win") and "evaluation windows" in n
               for n in report.notes)


# ------------------------------------------------------------------------------- rendering


def test_render_formats_parse(db):
    report = rp.build_report(db, "oat")
    frame = pd.read_csv(io.StringIO(render(report, "csv")))
    assert set(frame["table"]) == {"ranking", "effects"}
    assert frame.loc[frame["name"] == "sdpa", "final"].iloc[0] == pytest.approx(1.793333, abs=1e-6)
    data = json.loads(render(report, "json"))
    assert data["ranking"][0]["name"] == "token_masking" and data["metric"] == "mainrun"
    assert [e["effect"] for e in data["effects"]] == ["token_masking", "sdpa", "swiglu"]  # by estimate
    assert data["ranking"][0]["rank"] == 1 and isinstance(data["ranking"][0]["rank"], int)
    markdown = render(report, "markdown")
    assert "| # | config | toggles |" in markdown and "breaks rule" in markdown
    table = render(report, "table", width=100)
    assert max(map(len, table.splitlines())) <= 100
    assert "1.7933±0.0153" in table and "Not ranked" in table and "CUDA out of memory" in table


def test_at_100_columns_every_verdict_is_whole_and_comes_before_the_ranking(tmp_path):
    """On the committed results, `ablate report` in a 100-column terminal: each effect's line
    ends with its whole verdict ("inconclusive (~13 seeds)", never "inconclusive (~1"); other
    columns make room."""
    db = tmp_path / "results.db"
    db.write_bytes((REPO / "results.db").read_bytes())
    for name in frames.list_experiments(db)["experiment"]:
        out = CliRunner().invoke(app, ["report", "--db", str(db), "-e", name], env={"COLUMNS": "100"}).output
        lines = out.splitlines()
        assert max(map(len, lines)) <= 100
        shown = effects_display(rp.build_report(db, name))
        costs = [" ".join(cells) for cells in zip(*(shown[c] for c in ("speed", "memory") if c in shown))] \
            or [""] * len(shown)
        for effect, verdict, cost in zip(shown["effect"], shown["verdict"], costs):
            row = next(line for line in lines if line.startswith(effect[:8]) and verdict in line)
            after = row.split(verdict, 1)[1].strip()  # only the cost columns, where they fit
            assert after == "" or " ".join(cost.split()).startswith(" ".join(after.split())), (name, row)
            assert "Ranking" not in lines or lines.index(row) < lines.index("Ranking")


def test_report_reads_hundreds_of_runs(tmp_path):
    """330 runs, 30 seeds each: every comparison pairs all 30 (its speed is benchmarks/run.py's
    `report` section, measured against the bare imports, not asserted here)."""
    toggles = ["sdpa", "swiglu", "rmsnorm", "grad_accum", "dropout_005", "ema", "evals_per_epoch_5",
               "weight_decay_001", "grouped_weight_decay", "lr_1e4"]
    yaml_text = (f"name: big\ndesign: one-at-a-time\ntoggles: [{', '.join(toggles)}]\n"
                 f"seeds: [{', '.join(map(str, range(30)))}]\nmax_runs: 400\n")
    url = f"sqlite:///{tmp_path / 'big.db'}"
    with Store(url) as store:
        fill(store, yaml_text, {})  # plans 330 queued runs; complete them in one transaction
        def complete(session):
            for i, run in enumerate(session.query(Run)):
                run.status, run.attempt, run.final_val_loss = "completed", 1, 1.8 + (i % 7) / 100
                run.best_val_loss, run.best_step, run.result = run.final_val_loss, 30, {"eval_coverage": 0.96}
                session.add_all(Eval(run_id=run.id, attempt=1, step=s, val_loss=2.0, val_loss_full=2.0,
                                     eval_coverage=0.96, created_at=run.created_at) for s in (10, 20, 30))
        store._write(complete)
    report = rp.build_report(url, "big")
    assert "big" in render(report, "table")
    assert ranked(report)["n"].eq(30).all() and len(report.effects) == len(toggles)


def test_seed_band_interpolates_seeds_onto_the_steps_all_of_them_reach():
    evals = pd.DataFrame({"run_id": [1, 1, 1, 2, 2, 2], "step": [1, 10, 20, 1, 12, 24],
                          "val_loss": [3.0, 2.0, 1.0, 3.2, 2.2, 1.0]})
    band = seed_band(evals, "val_loss")
    assert list(band.index) == [1, 10, 12, 20]  # 24: run 1 never gets there
    # run 2 at step 10: 3.2 + (2.2 - 3.2) * 9/11; run 1 at step 12: 2.0 - 1.0 * 2/10
    assert band.loc[10, "mean"] == pytest.approx((2.0 + 3.2 - 9 / 11) / 2)
    assert band.loc[12, "min"] == pytest.approx(1.8) and band.loc[12, "max"] == pytest.approx(2.2)
    assert band.loc[1].tolist() == pytest.approx([3.1, 3.0, 3.2])


def test_plot_curves_writes_png(db, tmp_path):
    out = plot_curves(db, "oat", out=tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(frames.ResultsError, match="no evaluations for nope"):
        plot_curves(db, "oat", runs=["nope"], out=tmp_path / "x.png")


# ------------------------------------------------------------------------------ results API


def test_load_runs_and_evals(db):
    runs = frames.load_runs(db, "oat")
    assert len(runs) == 12 and runs["toggles"].iloc[0] == ""
    assert {"cfg.d_model", "cfg.seed", "res.val_text_sha256", "res.final_val_loss_full"} <= set(runs.columns)
    assert runs.loc[runs["name"] == "swiglu", "status"].tolist() == ["completed", "completed", "failed"]
    evals = frames.load_evals(db, "oat", runs=["sdpa"])
    assert len(evals) == 9 and set(evals["name"]) == {"sdpa"}
    assert evals["extra.attention_entropy"].eq(2.0).all()
    with pytest.raises(frames.ResultsError, match="unknown experiment 'nope'"):
        frames.load_runs(db, "nope")


# ------------------------------------------------------------------------------------- CLI

cli = CliRunner()


def invoke(*args: str):
    return cli.invoke(app, list(args))


def test_cli_report_selection_and_formats(db, tmp_path):
    ambiguous = invoke("report", "--db", db)
    assert ambiguous.exit_code == 2 and "several experiments" in ambiguous.output and "oat" in ambiguous.output
    matrix = tmp_path / "m.yaml"
    matrix.write_text(OAT)
    table = invoke("report", str(matrix), "--db", db)
    assert table.exit_code == 0, table.output
    assert "Fair comparisons" in table.output and "★" in table.output
    csv = invoke("report", "-e", "mixed", "--db", db, "--metric", "mainrun", "--format", "csv")
    frame = pd.read_csv(io.StringIO(csv.stdout))
    assert frame.loc[frame["table"] == "ranking", "name"].iloc[0] == "vocab_32k"
    data = json.loads(invoke("report", "-e", "mixed", "--db", db, "--format", "json").stdout)
    assert data["metric"] == "full"
    bad = invoke("report", "-e", "oat", "--db", db, "--metric", "nope")
    assert bad.exit_code == 2 and "--metric 'nope'" in bad.output


def test_cli_runs_filters(db):
    failed = json.loads(invoke("runs", "-e", "oat", "--status", "failed", "--db", db, "-f", "json").stdout)
    assert [(r["name"], r["seed"], r["error"]) for r in failed] == [("swiglu", 3, "CUDA out of memory")]
    sdpa = pd.read_csv(io.StringIO(invoke("runs", "--toggle", "sdpa", "-e", "mixed", "--db", db, "-f", "csv").stdout))
    assert sdpa["name"].tolist() == ["sdpa"]
    assert invoke("runs", "--all", "--db", db, "-f", "markdown").stdout.startswith("**")
    several = invoke("runs", "--db", db)  # as report: several experiments, pick one
    assert several.exit_code == 2 and "several experiments (" in several.output
    assert "pick one with --experiment NAME or the matrix file" in " ".join(several.output.split())


def test_cli_runs_takes_the_matrix_file_as_report_does(db, tmp_path, monkeypatch):
    """The matrix names the experiment and, through its `db:`, the database (issue 37)."""
    monkeypatch.delenv("ABLATE_DB", raising=False)  # which would come before the matrix's db:
    matrix = tmp_path / "oat.yaml"
    matrix.write_text(OAT + f"db: {db}\n")
    by_matrix = invoke("runs", str(matrix), "-f", "json")
    assert by_matrix.exit_code == 0, by_matrix.output
    by_name = invoke("runs", "-e", "oat", "--db", db, "-f", "json")
    assert json.loads(by_matrix.stdout) == json.loads(by_name.stdout) and len(json.loads(by_name.stdout)) == 12


def test_cli_show_and_as_command_round_trip(db):
    runs = frames.load_runs(db, "fact")
    row = runs[(runs["name"] == "sdpa+swiglu") & (runs["seed"] == 2)].iloc[0]
    shown = invoke("show", str(row["run_id"]), "--db", db)
    assert shown.exit_code == 0, shown.output
    assert "attention" in shown.output and "Evaluations" in shown.output and "█" in shown.output
    ambiguous = invoke("show", "sdpa", "-e", "fact", "--db", db)
    assert ambiguous.exit_code == 2 and "matches 2 runs" in ambiguous.output
    by_hash = json.loads(invoke("show", row["hash"][:8], "--db", db, "-f", "json").stdout)
    assert by_hash["run"]["run_id"] == row["run_id"] and len(by_hash["evals"]) == 3
    assert {d["field"] for d in by_hash["config_diff"]} == {"attention", "mlp"}  # same-seed baseline
    command = invoke("show", str(row["run_id"]), "--db", db, "--as-command").stdout.strip()
    words = shlex.split(command)
    assert words[:2] == ["ablate", "train"]
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    data = words[words.index("--data") + 1]
    with Store(db, create=False) as store:
        stored = store.run(int(row["run_id"])).config
    assert build_config("mainrun", [], sets, data) == TrainConfig.from_dict(stored)
    assert "--set n_layer=2" in command and "--set d_model=128" in command
    failed = invoke("show", "swiglu", "-e", "oat", "--db", db)
    assert failed.exit_code == 2  # three seeds share the name
    failed_id = frames.find_run(frames.load_runs(db, "oat").query("status == 'failed'"), "swiglu")["run_id"]
    out = invoke("show", str(failed_id), "--db", db).output
    assert "failed" in out and "CUDA out of memory" in out


def test_cli_plot_and_export(db, tmp_path):
    png = tmp_path / "c.png"
    assert invoke("plot", "-e", "cum", "--db", db, "--out", str(png)).exit_code == 0 and png.is_file()
    csv = tmp_path / "evals.csv"
    assert invoke("export", "--to", str(csv), "-e", "oat", "--what", "evals", "--db", db).exit_code == 0
    assert len(pd.read_csv(csv)) == 11 * 3 + 1
    pytest.importorskip("pyarrow")
    parquet = tmp_path / "runs.parquet"
    assert invoke("export", "--to", str(parquet), "--db", db).exit_code == 0
    assert len(pd.read_parquet(parquet)) == len(frames.load_runs(db))


def test_cli_errors_are_one_line(db, tmp_path):
    for args, message in [
        (("report", "--db", str(tmp_path / "missing.db")), "no results database"),
        (("report", "-e", "nope", "--db", db), "unknown experiment 'nope'"),
        (("show", "99999", "--db", db), "no run '99999'"),
        (("export", "--to", str(tmp_path / "x.txt"), "--db", db), "expected a .csv or .parquet"),
    ]:
        result = invoke(*args)
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_seeds_without_a_same_seed_baseline_are_not_compared_with_another_seeds_text(tmp_path):
    """Seeds until decided in a leave-one-out design add seeds to `all` and `all − X`, not to the
    baseline. With a split that follows the seed, those seeds validate on their own text: that is
    no reason to unrank the configuration, whose baseline seeds share the text."""
    yaml_text = "name: loo2\ndesign: leave-one-out\ntoggles: [sdpa, swiglu]\nseeds: [1, 2, 3, 4]\n"
    losses = {("baseline", s): 2.0 for s in (1, 2, 3)}
    losses |= {(n, s): 1.9 for n in ("all", "all-minus-sdpa", "all-minus-swiglu") for s in (1, 2, 3, 4)}
    extra = {(n, s): {"val_text_sha256": f"text-{s}"} for n in ("baseline", "all", "all-minus-sdpa",
                                                               "all-minus-swiglu") for s in (1, 2, 3, 4)}
    url = f"sqlite:///{tmp_path / 'loo2.db'}"
    with Store(url) as store:
        fill(store, yaml_text, losses, extra=extra)
    report = rp.build_report(url, "loo2")
    assert report.ranking["rank"].notna().sum() == 4, report.ranking[["name", "error"]]
    extra[("all", 2)] = {"val_text_sha256": "edited"}  # a same-seed mismatch still unranks
    url = f"sqlite:///{tmp_path / 'loo3.db'}"
    with Store(url) as store:
        fill(store, yaml_text.replace("loo2", "loo3"), losses, extra=extra)
    unranked = rp.build_report(url, "loo3").ranking.set_index("name")["rank"]
    assert math.isnan(unranked["all"]) and unranked.notna().sum() == 3
