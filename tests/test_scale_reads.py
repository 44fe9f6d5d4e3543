"""A report reads what it shows (issue 35, part 4): of each run's evaluations only the few it
uses, chosen in the database, and nothing of other experiments; and what it says is what it said
when it read every evaluation."""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import closing

import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.results import frames, live
from ablate.results.render import render
from ablate.results.report import build_report, make_report
from ablate.storage.store import Store

from .conftest import REPO
from .test_gpu_script import load_benchmark


def full_report(db, experiment: str) -> str:
    """The report as it was built before: from every evaluation of every run."""
    exp = frames.pick_experiment(db, experiment)
    return render(make_report(exp, frames.load_runs(db, experiment), frames.load_evals(db, experiment)), "json")


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    """Databases built by benchmarks/scale.py's builder: one experiment of 6 runs with 5 or with
    200 evaluations each, alone or beside an experiment of 40 runs × 300 evaluations."""
    scale, work = load_benchmark("scale"), tmp_path_factory.mktemp("scale")
    dbs = {}
    for evals, others in ((5, False), (200, False), (5, True)):
        db = work / f"{evals}-{others}.db"
        if others:
            scale.build(db, "other", 40, 300, work)
        scale.build(db, "measured", 6, evals, work)
        dbs[(evals, others)] = f"sqlite:///{db}"
    return dbs


def rows_read(monkeypatch, db: str, experiment: str) -> int:
    """Rows of evaluations the database hands the report, over every query it makes of them."""
    counted = []
    query = Store.query

    def counting(self, statement):
        rows = query(self, statement)
        if "evals" in re.findall(r"\b(?:FROM|JOIN) (\w+)", str(statement)):
            counted.append(len(rows))
        return rows

    monkeypatch.setattr(Store, "query", counting)
    build_report(db, experiment)
    monkeypatch.setattr(Store, "query", query)
    return sum(counted)


def test_a_report_reads_no_evaluation_of_other_experiments_and_a_few_per_run(scaled, monkeypatch):
    alone = rows_read(monkeypatch, scaled[(5, False)], "measured")
    assert rows_read(monkeypatch, scaled[(5, True)], "measured") == alone  # 12,000 evaluations beside it
    assert rows_read(monkeypatch, scaled[(200, False)], "measured") == alone  # 40x the evaluations per run
    assert 0 < alone <= 6 * 4  # of 6 runs x 5: the last, and the last, lowest and highest loss of each


def test_reading_a_few_evaluations_per_run_says_what_reading_them_all_said(scaled):
    for db in scaled.values():
        assert render(build_report(db, "measured"), "json") == full_report(db, "measured")


@pytest.mark.parametrize("experiment", ["report", "report-cpu", "report-cpu-cost", "report-cpu-adamw-stack", "report-cpu-adamw-small"])
def test_the_shipped_reports_are_unchanged_by_reading_less(experiment):
    """Mainrun's trainer: final and best from the runs, coverage from the last evaluation, the
    speed from every evaluation's throughput; a full-set metric where coverage differs."""
    db = f"sqlite:///{REPO / 'results.db'}"
    assert json.loads(render(build_report(db, experiment), "json")) == json.loads(full_report(db, experiment))


def with_gaps(tmp_path):
    """A small experiment whose metric has a null, a last evaluation without the key, and a
    lowest value early."""
    db = tmp_path / "r.db"
    load_benchmark("scale").build(db, "m", 4, 6, tmp_path)
    with sqlite3.connect(db) as conn:  # a null, a last evaluation without the key, an early lowest
        ids = [r[0] for r in conn.execute("SELECT id FROM evals ORDER BY id")]
        conn.execute("UPDATE evals SET extra = ? WHERE id = ?", (json.dumps({"loss": None}), ids[1]))
        conn.execute("UPDATE evals SET extra = ? WHERE id = ?", (json.dumps({"other": 1}), ids[5]))
        conn.execute("UPDATE evals SET extra = ? WHERE id = ?", (json.dumps({"loss": 0.25}), ids[7]))
    return db


def test_an_own_metric_in_extra_keeps_its_last_lowest_and_highest(tmp_path):
    url = f"sqlite:///{with_gaps(tmp_path)}"
    assert render(build_report(url, "m"), "json") == full_report(url, "m")
    summary = frames.load_evals(url, "m", summary_of=["extra.loss"])
    assert len(summary) < len(frames.load_evals(url, "m"))


def test_on_postgresql_too(tmp_path, pg_url):
    """The window functions and the JSON number test in PostgreSQL's dialect: the database
    merged in, as a cluster's would be, reports as it reads in full."""
    merged = CliRunner().invoke(app, ["db", "merge", str(with_gaps(tmp_path)), "--db", pg_url])
    assert merged.exit_code == 0, merged.output
    said = render(build_report(pg_url, "m"), "json")
    assert said == full_report(pg_url, "m") and [r["n"] for r in json.loads(said)["ranking"]] == [2, 2]
    first = live.progress(pg_url, "m")
    assert len(first["points"]) == 4 * 6 - 2 and first["version"] == live.version(pg_url, "m")


def test_the_live_view_first_loads_a_few_points_per_run_its_last_among_them(scaled, monkeypatch):
    """Chosen in the database: evenly spread, counted back from each run's last evaluation."""
    monkeypatch.setattr(live, "MAX_TOTAL", 120)  # 6 runs: 20 points each
    first = live.progress(scaled[(200, False)], "measured")
    steps: dict = {}
    for run_id, step, _ in first["points"]:
        steps.setdefault(run_id, []).append(step)
    assert len(steps) == 6 and all(sorted(s) == list(range(10, 201, 10)) for s in steps.values())
    with closing(sqlite3.connect(scaled[(200, False)].removeprefix("sqlite:///"))) as conn:
        assert first["last_id"] == conn.execute("SELECT max(id) FROM evals").fetchone()[0]  # though thinned
    again = live.progress(scaled[(200, False)], "measured", since=first["last_id"], known=first["version"])
    assert again["unchanged"] and again["points"] == []


def test_a_run_without_a_value_of_the_metric_keeps_its_last_evaluation(tmp_path):
    """A run whose every evaluation lacks the metric (its script printed no such line) still
    gives the report its last evaluation, as reading every one did."""
    db = tmp_path / "r.db"
    load_benchmark("scale").build(db, "m", 4, 5, tmp_path)
    with sqlite3.connect(db) as conn:
        first = conn.execute("SELECT min(run_id) FROM evals").fetchone()[0]
        conn.execute("UPDATE evals SET extra = ? WHERE run_id = ?", (json.dumps({"other": 1}), first))
    url = f"sqlite:///{db}"
    summary = frames.load_evals(url, "m", summary_of=["extra.loss"])
    assert summary.loc[summary["run_id"] == first, "step"].tolist() == [5]
    assert render(build_report(url, "m"), "json") == full_report(url, "m")


def test_the_html_page_reads_the_drawn_curves_thinned_and_nothing_else(scaled, monkeypatch, tmp_path):
    """The curves: the drawn configurations' runs only (the baseline and the best few), each at
    most CURVE_POINTS evaluations, evenly spread and ending at its last."""
    from ablate.results import plot
    from ablate.results.html import render_html

    monkeypatch.setattr(frames, "CURVE_POINTS", 20)
    drawn: list = []
    load = frames.load_evals

    def recording(*args, **kwargs):
        frame = load(*args, **kwargs)
        if kwargs.get("curve_of"):
            drawn.append(frame)
        return frame

    monkeypatch.setattr(frames, "load_evals", recording)
    page = render_html(scaled[(200, False)], ["measured"])
    assert len(drawn) == 2 and "by step" in page  # the curves and the curves minus the baseline
    for frame in drawn:
        assert 0 < frame["run_id"].nunique() <= 2 * (plot.TOP + 1)
        for _, run in frame.groupby("run_id"):
            assert len(run) == 20 and run["step"].max() == 200 and run["step"].diff().dropna().eq(10).all()
