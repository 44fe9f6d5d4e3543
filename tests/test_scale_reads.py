"""A report reads what it shows (issue 35, part 4): of each run's evaluations only the few it
uses, chosen in the database, and nothing of other experiments; and what it says is what it said
when it read every evaluation."""

from __future__ import annotations

import json
import re

import pytest

from ablate.results import frames
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


def test_an_own_metric_in_extra_keeps_its_last_lowest_and_highest(tmp_path):
    """A null is no value; the last value is the last evaluation that has one, even where later
    ones lack it; the lowest may come early."""
    scale = load_benchmark("scale")
    db = tmp_path / "r.db"
    scale.build(db, "m", 4, 6, tmp_path)
    import sqlite3

    with sqlite3.connect(db) as conn:  # a null, a last evaluation without the key, an early lowest
        ids = [r[0] for r in conn.execute("SELECT id FROM evals ORDER BY id")]
        conn.execute("UPDATE evals SET extra = ? WHERE id = ?", (json.dumps({"loss": None}), ids[1]))
        conn.execute("UPDATE evals SET extra = ? WHERE id = ?", (json.dumps({"other": 1}), ids[5]))
        conn.execute("UPDATE evals SET extra = ? WHERE id = ?", (json.dumps({"loss": 0.25}), ids[7]))
    url = f"sqlite:///{db}"
    assert render(build_report(url, "m"), "json") == full_report(url, "m")
    summary = frames.load_evals(url, "m", summary_of=["extra.loss"])
    assert len(summary) < len(frames.load_evals(url, "m"))
