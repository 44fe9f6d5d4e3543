"""The report as one self-contained HTML page: what the terminal report says, plus the plots and,
per configuration, its config diff against the baseline and the command that reproduces it.

The page opens with the decision: a contents list that gives each experiment's verdicts, finished
experiments first. It fits a laptop's width: a table wider than the page scrolls inside its own
box. Self-contained means no network: the CSS is inline, the plots are embedded as data URIs, and
the few lines of script (click a column header to sort) are inline too; the page reads the same
without them. Every piece of text from the database is escaped.
"""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..execution.provenance import describe
from . import across, frames, palette
from .plot import has_speed, interval_caption, plot_cost, plot_curves, plot_effects
from ..storage.schema import plain
from .render import PLAIN_WORDS, command_for, effects_display, ranking_display, unranked_display
from .detail import against_baseline, baseline_rows, truncated_at
from .frames import missing
from .report import Report, build_report

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 76rem; color: #1d232b;
       padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 2px solid #d7dde4; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-variant-numeric: tabular-nums; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #e3e7ec; text-align: right;
         white-space: nowrap; }
th { background: #f3f5f8; } table.sortable th { cursor: pointer; user-select: none; }
.text { text-align: left; } .scroll { overflow-x: auto; max-width: 100%; }
tr.best td { background: #e9f7ec; } tr.baseline td { background: #eaf2fb; }
tr.breaks td { color: #a1261b; }
.lines p { margin: .2rem 0; color: #3c4654; } figure { margin: 1rem 0; }
img, figure svg { max-width: 100%; height: auto; border: 1px solid #e3e7ec; }
details { margin: .3rem 0; } summary { cursor: pointer; }
code, pre { background: #f3f5f8; padding: .15rem .3rem; border-radius: 3px; white-space: pre-wrap;
            overflow-wrap: anywhere; }
td.verdict { font-weight: 600; }
.toc li { margin: .3rem 0; } .toc ul ul { margin: .1rem 0; padding-left: 1.2rem; }
.notes li { margin: .2rem 0; }
""" + palette.css() + "\n"

SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, column) {  // the column within its table
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var down = th.dataset.order !== "asc";
      th.dataset.order = down ? "asc" : "desc";
      function key(row) {
        var text = row.cells[column].textContent.trim();  // "1.2345±0.01", "-3.2%", "222k"
        var number = Number(text.split(/[±@…–]/)[0].replace(/[%kMG]$/, ""));
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
});
"""


def render_html(db: Any, experiments: list[str] | None = None, metric: str | None = None,
                min_effect: float | None = None) -> str:
    """One page for the named experiments (default: every experiment in the database), finished
    ones first, each listed with its verdicts at the top."""
    listed = frames.list_experiments(db).set_index("experiment")
    names = experiments or listed.index.tolist()
    if not names:
        raise frames.ResultsError("the database holds no experiment yet")
    names = sorted(names, key=lambda n: n in listed.index and listed.at[n, "completed"] < listed.at[n, "runs"])
    reports = {name: build_report(db, name, metric, min_effect) for name in names}
    sections = [experiment_section(db, report) for report in reports.values()]
    title = "ablate report: " + ", ".join(names)
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\">"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{_e(title)}</h1>{_contents(reports, listed)}{_across(list(reports.values()))}{''.join(sections)}"
            f"<script>{SORT_SCRIPT}</script></body></html>\n")


def _contents(reports: dict[str, Report], listed: pd.DataFrame) -> str:
    """The table of contents, which is also the decision: each experiment's verdicts."""
    items = []
    for name, report in reports.items():
        done = (f", {listed.at[name, 'completed']} of {listed.at[name, 'runs']} runs completed"
                if name in listed.index else "")
        items.append(f"<li><a href=\"#{_e(name)}\">{_e(name)}</a> — {_e(report.design)}{_e(done)}"
                     f"{'. ' + _e(report.effects_title) if len(report.effects) else ''}{_verdicts(report)}</li>")
    return f"<nav class=\"toc\"><h2>Contents and verdicts</h2><ul>{''.join(items)}</ul></nav>"


def _across(reports: list[Report]) -> str:
    """Several experiments: what each item does in each (across.py), a cell coloured by its verdict."""
    measured = [r for r in reports if len(r.effects) and (r.effects["verdict"] != "no data").any()]
    if len(measured) < 2:
        return ""
    table = across.across(measured)
    shown = across.display(table, long=True)
    head = "".join(f"<th class=\"text\">{_e(c)}</th>" for c in shown.columns)
    rows = []
    for (_, cells), (_, texts) in zip(table.iterrows(), shown.iterrows()):
        tds = [f"<td class=\"text {palette.css_class(c.verdict) if isinstance(c, across.Cell) else ''}\">{_e(t)}</td>"
               for c, t in zip(cells, texts)]
        rows.append("<tr>" + "".join(tds) + "</tr>")
    lines = [*across.what_cells_mean(measured),
             *(f"decided both ways: {line}" for line in across.disagreements(table)),
             *(f"difference: {line}" for line in across.differences(table, measured))]
    return (f"<section id=\"across\"><h2>Across experiments: what each item does in each</h2><ul>"
            + "".join(f"<li>{_e(line)}</li>" for line in lines) + "</ul><div class=\"scroll\"><table class=\"sortable "
            f"across\"><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div></section>")


def _verdicts(report: Report) -> str:
    """The effects grouped by the verdict the statistics gave them, in the report's order, each
    with what its verdict says beyond the word (an inconclusive one: the seeds it would take)."""
    groups: dict[str, list[str]] = {}
    shown = effects_display(report)["verdict"] if len(report.effects) else []  # "inconclusive (~13 seeds)"
    for effect, verdict, text in zip(report.effects["effect"], report.effects["verdict"], shown):
        groups.setdefault(verdict, []).append(f"<span class=\"effect\">{_e(effect)}</span>"
                                              + _e(text.removeprefix(verdict)))
    return "<ul>" + "".join(
        f"<li class=\"{palette.css_class(verdict)}\" data-verdict=\"{_e(verdict)}\"><b>{_e(PLAIN_WORDS.get(verdict, verdict))}</b>: "
        + ", ".join(effects) + "</li>" for verdict, effects in groups.items()) + "</ul>" if groups else ""


def experiment_section(db: Any, report: Report, static: bool = True) -> str:
    """One experiment as the page shows it; not `static` (the live view, which draws its own
    curves from JSON and shows a configuration's config and command on its run's page), the same
    text and tables without the figures and the configurations' details."""
    name = report.experiment
    runs = frames.load_runs(db, name)
    parts = [f"<section id=\"{_e(name)}\"><h2>{_e(report.experiment)}</h2>",
             f"<p>{_e(report.design)}, {len(report.seeds)} seed(s), ranked by "
             f"{_e(report.ranked_by)}.</p>", _provenance(runs),
             "<div class=\"lines\">" + "".join(f"<p>{_e(line)}</p>" for line in report.lines) + "</div>"]
    ranked = report.ranking[report.ranking["rank"].notna()]
    if len(ranked):
        classes = ["best" if r.is_best else "baseline" if r.is_baseline else
                   "breaks" if r.breaks_rule else "" for r in ranked.itertuples()]
        parts += ["<h3>Ranking</h3>", *_ranking(report, classes)]
    else:
        parts.append("<p>No completed runs yet.</p>")
    pending = unranked_display(report)
    if len(pending):
        counts = pending["status"].value_counts()
        parts.append(f"<details><summary>Not ranked: {len(pending)} run(s) ("
                     + _e(", ".join(f"{n} {status}" for status, n in counts.items()))
                     + f")</summary>{_table(pending, 'pending')}</details>")
    if len(report.effects):
        shown, with_data = effects_display(report), report.effects["estimate"].notna().to_numpy()
        classes = [palette.css_class(v) for v in report.effects["verdict"]]
        parts += [f"<h3>{_e(report.effects_title)}</h3>",
                  _table(shown[with_data], "effects", [c for c, d in zip(classes, with_data) if d],
                         _verdict_cells(report.effects[with_data]))
                  if with_data.any() else ""]
        if not with_data.all():
            parts.append(f"<details><summary>{(~with_data).sum()} effect(s) without data yet</summary>"
                         f"{_table(shown[~with_data], 'effects')}</details>")
        if with_data.any() and static:
            parts.append(_figure(lambda out: plot_effects(report, out), f"Effects of {report.experiment}: "
                                 f"estimate and interval ({interval_caption(report)}); hover a point for its numbers",
                                 svg=True))
        if has_speed(report) and static:
            parts.append(_figure(lambda out: plot_cost(report, out), f"{report.experiment}: each effect's Δloss "
                                 f"against its speed-up, both with intervals ({interval_caption(report)})"))
    if static and report.column in (finals := frames.load_evals(db, name, summary_of=[report.column])) \
            and finals[report.column].notna().any():
        parts.append(_figure(lambda out: plot_curves(db, name, None, out, report.metric, loaded=(report, finals)),
                             f"{report.experiment}: {report.ranked_by} by step"))
        if ranked["is_baseline"].any() and len(ranked) > 1:  # curves that separate
            parts.append(_figure(lambda out: plot_curves(db, name, None, out, report.metric, delta=True,
                                                         loaded=(report, finals)),
                                 f"{report.experiment}: {report.ranked_by} minus the same-seed baseline"))
    if report.notes:
        parts.append("<h3>Notes</h3><ul class=\"notes\">"
                     + "".join(f"<li>{_e(n)}</li>" for n in report.notes) + "</ul>")
    if static:
        parts += ["<h3>Configurations</h3>", _configurations(runs, ranked)]
    parts.append("</section>")
    return "".join(parts)


def _ranking(report: Report, classes: list[str]) -> list[str]:
    """The ranking table without the columns that say nothing: Δref where the lines above call
    it unfair, toggles that only repeat the names; in leave-one-out the stack is said once above
    it, not on every row."""
    frame = ranking_display(report, short=False)
    if not report.reference_fair:
        frame = frame.drop(columns=["Δref", "Δref%"], errors="ignore")
    ranked = report.ranking[report.ranking["rank"].notna()]
    stack = ""
    if report.design == "leave-one-out" and "toggles" in frame:
        full = report.ranking["toggles"].map(lambda t: len(str(t).split("+"))).idxmax()
        stack = (f"<p>The stack ({_e(report.ranking.at[full, 'name'])}): {_e(report.ranking.at[full, 'toggles'])}; "
                 "each other row removes the item its name says.</p>")
    if stack or "toggles" in frame and all(t in ("", n) for t, n in zip(ranked["toggles"], ranked["name"])):
        frame = frame.drop(columns="toggles")
    return [stack, _table(frame, "ranking", classes)]


def _provenance(runs: pd.DataFrame) -> str:
    """Which data (or trainer), code, environment, devices and seeds produced the experiment's
    completed runs."""
    done = runs[runs["status"] == "completed"]

    def listed(values, sep: str = ", ") -> str:
        return sep.join(sorted({str(v) for v in values if not missing(v)})) or "—"
    trainers = [t for t in done.get("cfg.trainer", []) if isinstance(t, dict)]
    if trainers:  # your own trainer: what ran, and the inputs hashed into its identity
        first = {"trainer": listed(t.get("command") or t.get("entry") for t in trainers),
                 "inputs": listed(", ".join(t.get("inputs") or []) for t in trainers)}
    else:
        first = {"data": listed(f"{Path(str(d)).name} ({str(f)[:19]})" for d, f in
                                zip(done.get("cfg.data", []), done.get("res.data_fingerprint", [""] * len(done))))}
    environments = [describe(e) for e in done.get("res.environment", []) if isinstance(e, dict)]
    rows = {**first, "code version": listed(done["code_version"]),
            "environment" if len(set(environments)) < 2 else f"environments ({len(set(environments))})":
            listed(environments, "; "),
            "device": listed(done["device"]), "seeds": listed(runs["seed"].map(
                lambda s: "" if missing(s) else f"{s:.0f}")),
            "runs": f"{len(done)} completed of {len(runs)}"}
    return ("<div class=\"scroll\"><table class=\"provenance\">" + "".join(
        f"<tr><th class=\"text\">{_e(k)}</th><td class=\"text\">{_e(v)}</td></tr>" for k, v in rows.items())
        + "</table></div>")


def _configurations(runs: pd.DataFrame, ranked: pd.DataFrame) -> str:
    """Per ranked configuration: its config diff against the baseline and its command (plain
    dicts and strings: a page may list 10,000, and a frame per configuration took a minute)."""
    out = []
    first = runs[runs["status"] == "completed"].sort_values("seed", kind="stable").drop_duplicates("name")
    first = {row["name"]: row for row in first.to_dict("records")}
    base = baseline_rows(runs)  # once, not once per configuration
    for name in ranked["name"]:
        if name not in first:
            continue
        config, diff, label = against_baseline(runs, first[name], base)
        rows = [[field, "" if missing(v) else str(v), "" if missing(b) else str(b)] for field, v, b in diff]
        body = _rows_table(["field", "value", label], rows, "diff") if rows else "<p>Same config as the baseline.</p>"
        out.append(f"<details><summary>{_e(name)}</summary>{body}<p>Reproduce (seed "
                   f"{_e(plain(first[name]['seed']))}):</p>"
                   f"<pre>{_e(command_for(config, truncated_at(first[name]), _device(first[name])))}</pre></details>")
    return "".join(out) or "<p>None completed yet.</p>"


def _device(run: dict) -> str | None:
    """The device a run of the load_runs() frame ran on, as stored ("cpu (2 threads)"), or None."""
    return None if missing(run.get("device")) else str(run["device"])


def _verdict_cells(effects: pd.DataFrame) -> dict[str, list[str]]:
    """The effects table's verdict cells: the loss verdict in bold (its row takes its colour),
    each cost cell in the colour of its own verdict, not the loss's."""
    cells = {"verdict": ["verdict"] * len(effects)}
    for kind in ("speed", "memory"):
        if f"{kind}_verdict" in effects:
            cells[kind] = [palette.css_class(v) if isinstance(v, str) else "" for v in effects[f"{kind}_verdict"]]
    return cells


def _table(frame: pd.DataFrame, kind: str, row_classes: list[str] | None = None,
           cell_classes: dict[str, list[str]] | None = None) -> str:
    """A sortable table in its own scrolling box (see `_rows_table`) of a frame's rows."""
    return _rows_table(list(frame.columns), frame.itertuples(index=False, name=None), kind, row_classes, cell_classes)


def _rows_table(columns: list, rows: Iterable, kind: str, row_classes: list[str] | None = None,
                cell_classes: dict[str, list[str]] | None = None) -> str:
    """A sortable table in its own scrolling box; a column of text (header too) is left-aligned;
    `cell_classes` gives a column's cells classes of their own, row by row."""
    rows = [list(row) for row in rows]
    text = ["text" if not all(_numeric(row[i]) for row in rows) else "" for i in range(len(columns))]
    head = "".join(f"<th{_class(a)}>{_e(c)}</th>" for a, c in zip(text, columns))
    own = [(cell_classes or {}).get(c) for c in columns]
    body = []
    for i, row in enumerate(rows):
        css = _class(row_classes[i] if row_classes else "")
        body.append(f"<tr{css}>" + "".join(f"<td{_class(a, cells[i] if cells else '')}>{_e(v)}</td>"
                                           for a, cells, v in zip(text, own, row)) + "</tr>")
    return (f"<div class=\"scroll\"><table class=\"sortable {kind}\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _figure(draw, caption: str, svg: bool = False) -> str:
    """A plot drawn to a temporary file and embedded: a PNG as a data URI, or an SVG inline, so
    that hovering its points shows their values."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(draw(Path(tmp) / ("plot.svg" if svg else "plot.png")))
        if svg:
            text = path.read_text(encoding="utf-8")
            picture = f"<div role=\"img\" aria-label=\"{_e(caption)}\">{text[text.index('<svg'):]}</div>"
        else:
            data = base64.b64encode(path.read_bytes()).decode()
            picture = f"<img alt=\"{_e(caption)}\" src=\"data:image/png;base64,{data}\">"
    return f"<figure>{picture}<figcaption>{_e(caption)}</figcaption></figure>"


def _numeric(value: Any) -> bool:
    """Whether a cell reads as a number ("1.2345±0.01", "-3.2%", "222k", "30s", blank)."""
    text = str(value).strip().rstrip("%skMGh").replace("±", "").replace("@", "")
    try:
        float(text.split("…")[0].split("–")[0] or "0")
        return True
    except ValueError:
        return False


def _class(*names: str) -> str:
    joined = " ".join(n for n in names if n)
    return f" class=\"{joined}\"" if joined else ""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))
