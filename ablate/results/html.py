"""The report as one self-contained HTML page: what the terminal report says, plus the plots and,
per configuration, its config diff against the baseline and the command that reproduces it.

Self-contained means no network: the CSS is inline, the plots are embedded as data URIs, and the
few lines of script (click a column header to sort) are inline too; the page reads the same
without them. Every piece of text from the database is escaped.
"""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from . import frames
from .plot import interval_caption, plot_curves, plot_effects
from .render import as_command, effects_display, ranking_display, unranked_display
from .detail import missing, run_detail
from .report import build_report

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 76rem; color: #1d232b;
       padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 2px solid #d7dde4; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-variant-numeric: tabular-nums; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #e3e7ec; text-align: right;
         white-space: nowrap; }
th { background: #f3f5f8; cursor: pointer; user-select: none; }
td:first-child, th:first-child, td.text { text-align: left; }
tr.best td { background: #e9f7ec; } tr.baseline td { background: #eaf2fb; }
tr.breaks td { color: #a1261b; }
.lines p { margin: .2rem 0; color: #3c4654; } figure { margin: 1rem 0; }
img { max-width: 100%; border: 1px solid #e3e7ec; }
details { margin: .3rem 0; } summary { cursor: pointer; }
code, pre { background: #f3f5f8; padding: .15rem .3rem; border-radius: 3px; white-space: pre-wrap; }
.notes li { margin: .2rem 0; }
"""

SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th, column) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var down = th.dataset.order !== "asc";
    th.dataset.order = down ? "asc" : "desc";
    function key(row) {
      var text = row.cells[column].textContent.trim();  // "1.2345±0.01", "-3.2%", "222k"
      var number = Number(text.split(/[±@…–]/)[0].replace(/[%k]$/, ""));
      return text === "" || isNaN(number) ? text : number;
    }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      var c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
      return down ? c : -c;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def render_html(db: Any, experiments: list[str] | None = None, metric: str | None = None,
                min_effect: float | None = None) -> str:
    """One page for the named experiments (default: every experiment in the database)."""
    names = experiments or frames.list_experiments(db)["experiment"].tolist()
    if not names:
        raise frames.ResultsError("the database holds no experiment yet")
    sections = [_experiment_section(db, name, metric, min_effect) for name in names]
    title = "ablate report: " + ", ".join(names)
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{_e(title)}</h1>{''.join(sections)}<script>{SORT_SCRIPT}</script></body></html>\n")


def _experiment_section(db: Any, name: str, metric: str | None, min_effect: float | None) -> str:
    report = build_report(db, name, metric, min_effect)
    runs, evals = frames.load_runs(db, name), frames.load_evals(db, name)
    parts = [f"<section id=\"{_e(name)}\"><h2>{_e(report.experiment)}</h2>",
             f"<p>{_e(report.design)}, {len(report.seeds)} seed(s), ranked by "
             f"{_e(report.ranked_by)}.</p>", _provenance(runs),
             "<div class=\"lines\">" + "".join(f"<p>{_e(line)}</p>" for line in report.lines) + "</div>"]
    ranked = report.ranking[report.ranking["rank"].notna()]
    if len(ranked):
        classes = ["best" if r.is_best else "baseline" if r.is_baseline else
                   "breaks" if r.breaks_rule else "" for r in ranked.itertuples()]
        parts += ["<h3>Ranking</h3>", _table(ranking_display(report, short=False), "ranking", classes)]
    else:
        parts.append("<p>No completed runs yet.</p>")
    pending = unranked_display(report)
    if len(pending):
        parts += ["<h3>Not ranked</h3>", _table(pending, "pending")]
    if len(report.effects):
        parts += [f"<h3>{_e(report.effects_title)}</h3>",
                  _table(effects_display(report), "effects")]
        if report.effects["estimate"].notna().any():
            parts.append(_figure(lambda out: plot_effects(report, out),
                                 f"Effects of {report.experiment}: estimate and interval ({interval_caption(report)})"))
    metric = report.column
    if metric in evals and not evals.dropna(subset=[metric]).empty:
        parts.append(_figure(lambda out: plot_curves(db, name, None, out, report.metric),
                             f"{report.experiment}: {report.ranked_by} by step"))
        if ranked["is_baseline"].any() and len(ranked) > 1:  # curves that separate
            parts.append(_figure(lambda out: plot_curves(db, name, None, out, report.metric, delta=True),
                                 f"{report.experiment}: {report.ranked_by} minus the same-seed baseline"))
    if report.notes:
        parts.append("<h3>Notes</h3><ul class=\"notes\">"
                     + "".join(f"<li>{_e(n)}</li>" for n in report.notes) + "</ul>")
    parts += ["<h3>Configurations</h3>", _configurations(runs, evals, ranked), "</section>"]
    return "".join(parts)


def _provenance(runs: pd.DataFrame) -> str:
    """Which data, code, devices and seeds produced the experiment's completed runs."""
    done = runs[runs["status"] == "completed"]

    def listed(values) -> str:
        return ", ".join(sorted({str(v) for v in values if not missing(v)})) or "—"
    data = [f"{Path(str(d)).name} ({str(f)[:19]})" for d, f in
            zip(done.get("cfg.data", []), done.get("res.data_fingerprint", [""] * len(done)))]
    rows = {"data": listed(data), "code version": listed(done["code_version"]),
            "device": listed(done["device"]), "seeds": listed(runs["seed"].map(
                lambda s: "" if missing(s) else f"{s:.0f}")),
            "runs": f"{len(done)} completed of {len(runs)}"}
    return ("<table class=\"provenance\">" + "".join(
        f"<tr><th>{_e(k)}</th><td class=\"text\">{_e(v)}</td></tr>" for k, v in rows.items())
        + "</table>")


def _configurations(runs: pd.DataFrame, evals: pd.DataFrame, ranked: pd.DataFrame) -> str:
    """Per ranked configuration: its config diff against the baseline and its command."""
    out = []
    for name in ranked["name"]:
        mine = runs[(runs["name"] == name) & (runs["status"] == "completed")]
        if mine.empty:
            continue
        detail = run_detail(runs, evals, mine.sort_values("seed").iloc[0])
        diff = detail.config_diff
        body = _table(diff.map(lambda v: "" if missing(v) else str(v)), "diff") if len(diff) else \
            "<p>Same config as the baseline.</p>"
        out.append(f"<details><summary>{_e(name)}</summary>{body}<p>Reproduce (seed "
                   f"{_e(detail.run['seed'])}):</p><pre>{_e(as_command(detail))}</pre></details>")
    return "".join(out) or "<p>None completed yet.</p>"


def _table(frame: pd.DataFrame, kind: str, row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for i, row in enumerate(frame.itertuples(index=False)):
        css = f" class=\"{row_classes[i]}\"" if row_classes and row_classes[i] else ""
        rows.append(f"<tr{css}>" + "".join(f"<td{_align(v)}>{_e(v)}</td>" for v in row) + "</tr>")
    return (f"<table class=\"sortable {kind}\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _figure(draw, caption: str) -> str:
    """A plot drawn to a temporary PNG, embedded as a data URI."""
    with tempfile.TemporaryDirectory() as tmp:
        path = draw(Path(tmp) / "plot.png")
        data = base64.b64encode(Path(path).read_bytes()).decode()
    return (f"<figure><img alt=\"{_e(caption)}\" src=\"data:image/png;base64,{data}\">"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _align(value: Any) -> str:
    """Numbers right-aligned (the stylesheet's default), text left."""
    text = str(value).strip().rstrip("%sk").replace("±", "").replace("@", "")
    try:
        float(text.split("…")[0].split("–")[0] or "0")
        return ""
    except ValueError:
        return " class=\"text\""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))
