"""The HTML report in a real browser (headless Chromium): every completed configuration and
every effect is on the page, every image loads, the script raises nothing, nothing is fetched
from the network; and the effects plot draws exactly the report's effects."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablate.cli import app
from ablate.results import palette
from ablate.results.frames import list_experiments
from ablate.results.plot import effect_rows, interval_caption, plot_curves, plot_effects
from ablate.results.render import render
from ablate.results.report import build_report

from .conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "results-v1.db"  # 3 experiments, a failed run among them
COMMITTED = REPO / "results.db"
CHECKER = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
window.addEventListener("load", function () {
  document.body.setAttribute("data-check", JSON.stringify({
    errors: window.__errors,
    images: Array.prototype.map.call(document.images, function (i) { return i.naturalWidth; })}));
});
</script>"""


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("CI=true but no Chromium: .ci/run installs Debian's chromium", pytrace=False)
    pytest.skip("no Chromium here (apt-get install chromium)")


def chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu",
                           "--no-first-run", "--enable-logging=stderr", "--v=0", *args],
                          capture_output=True, text=True, timeout=120)


class Tables(HTMLParser):
    """Rows of each table by its kind class, per experiment section; src/href attributes."""

    def __init__(self):
        super().__init__()
        self.rows: dict[tuple[str, str], list[list[str]]] = {}
        self.links: list[str] = []
        self.section = self.table = None
        self.in_body = self.in_cell = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [v for k, v in attrs.items() if k in ("src", "href") and v]
        if tag == "section":
            self.section = attrs.get("id")
        elif tag == "table":
            self.table = (attrs.get("class") or "").split()[-1]
        elif tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows.setdefault((self.section, self.table), []).append([])
        elif tag == "td" and self.in_body:
            self.in_cell = True
            self.rows[(self.section, self.table)][-1].append("")

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_body = False
        elif tag == "td":
            self.in_cell = False

    def handle_data(self, data):
        if self.in_cell:
            self.rows[(self.section, self.table)][-1][-1] += data


def parse(text: str) -> Tables:
    tables = Tables()
    tables.feed(text)
    return tables


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    result = CliRunner().invoke(app, ["report", "--db", str(FIXTURE), "--format", "html", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_the_page_in_chromium_holds_every_run_and_effect_and_loads_every_image(page, tmp_path):
    checked = tmp_path / "checked.html"
    checked.write_text(page.read_text().replace("<head>", "<head>" + CHECKER, 1))
    shot = tmp_path / "report.png"
    assert chromium(f"--screenshot={shot}", "--window-size=1280,2400", checked.as_uri()).returncode == 0
    assert shot.stat().st_size > 10_000
    dumped = chromium("--dump-dom", "--virtual-time-budget=5000", checked.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    check = json.loads(re.search(r'data-check="([^"]*)"', dumped.stdout).group(1).replace("&quot;", '"'))
    assert check["errors"] == [] and "Uncaught" not in dumped.stderr
    assert check["images"] and all(width > 0 for width in check["images"])
    tables = parse(dumped.stdout)
    for name in list_experiments(FIXTURE)["experiment"]:
        report = build_report(FIXTURE, name)
        ranked = report.ranking[report.ranking["rank"].notna()]
        assert [r[1] for r in tables.rows.get((name, "ranking"), [])] == list(ranked["name"]), name
        with_data = report.effects["estimate"].notna()  # those without come last, folded
        assert [r[0] for r in tables.rows.get((name, "effects"), [])] == [
            *report.effects["effect"][with_data], *report.effects["effect"][~with_data]]
        unranked = report.ranking[report.ranking["rank"].isna()]
        assert len(tables.rows.get((name, "pending"), [])) == len(unranked)


def test_the_page_fetches_nothing_from_the_network(page):
    links = parse(page.read_text()).links
    assert links and all(link.startswith(("data:", "#")) for link in links), links
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page.read_text())


def test_sorting_the_ranking_by_a_column_reorders_its_rows(page, tmp_path):
    """The inline script sorts on a header click; without it the page is the same, unsorted."""
    clicked = tmp_path / "clicked.html"
    clicked.write_text(page.read_text().replace("</body>", """<script>
var th = document.querySelector("table.ranking th:nth-child(2)"); th.click(); th.click();
</script></body>"""))
    dumped = chromium("--dump-dom", "--virtual-time-budget=3000", clicked.as_uri())
    for (section, kind), rows in parse(dumped.stdout).rows.items():
        if kind == "ranking":
            names = [r[1] for r in rows]
            assert names == sorted(names, reverse=True), (section, names)


SORT_PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
window.addEventListener("load", function () {
  var firsts = Array.prototype.map.call(document.querySelectorAll("table.sortable"), function (table) {
    table.querySelector("thead th").click();
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[0].textContent.trim(); });
  });
  var colours = {}, cells = {};  // before any sorting: each effects row's verdict colour, and its plot label's
  document.querySelectorAll("section[id]").forEach(function (section) {
    var table = {}, plot = {};
    section.querySelectorAll("table.effects tbody tr").forEach(function (r) {
      var name = r.cells[0].textContent.trim(), heads = {};
      r.closest("table").querySelectorAll("thead th").forEach(function (th, i) { heads[th.textContent.trim()] = i; });
      table[name] = getComputedStyle(r).color;
      cells[section.id + "/" + name] = ["verdict", "speed", "memory"].map(function (h) {
        var cell = r.cells[heads[h]];
        return cell ? [getComputedStyle(cell).color, getComputedStyle(cell).fontWeight] : null;
      });
    });
    section.querySelectorAll("figure svg text").forEach(function (t) {
      var name = t.textContent.trim().split(/\\s+/)[0];
      if (name in table) { plot[name] = getComputedStyle(t).fill; }
    });
    colours[section.id] = {table: table, plot: plot};
  });
  var verdicts = {};
  document.querySelectorAll("nav.toc > ul > li").forEach(function (li) {
    var name = li.querySelector("a").textContent, found = verdicts[name] = {};
    li.querySelectorAll("li[data-verdict]").forEach(function (group) {
      group.querySelectorAll(".effect").forEach(function (e) { found[e.textContent] = group.dataset.verdict; });
    });
  });
  document.body.setAttribute("data-check", JSON.stringify({errors: window.__errors, firsts: firsts,
    width: document.documentElement.scrollWidth, top: document.querySelector("nav.toc").offsetTop,
    verdicts: verdicts, colours: colours, cells: cells}));
});
</script>"""


def rgb(hex_colour: str) -> str:
    """A #rrggbb colour as the browser computes it."""
    return "rgb({}, {}, {})".format(*(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)))


def test_the_committed_results_page_fits_1280px_sorts_every_table_and_opens_with_the_verdicts(tmp_path):
    """At a laptop's 1,280×800 window nothing is wider than the page; a header click sorts each
    table by its own column (the first column, ascending: numbers, then text); the contents at
    the top give every experiment's verdicts exactly as `report --format json` does; hovering an
    effect's point shows its numbers; every effect has one colour in its table and its plot,
    a leave-one-out removal as much as any other, and each verdict one colour on the page; a
    speed or memory cell takes its own verdict's colour, and only the loss verdict is bold."""
    db, page = tmp_path / "results.db", tmp_path / "report.html"
    shutil.copy(COMMITTED, db)
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--format", "html", "--out", str(page)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    page.write_text(text.replace("<head>", "<head>" + SORT_PROBE, 1))
    dumped = chromium("--window-size=1280,800", "--dump-dom", "--virtual-time-budget=5000", page.as_uri())
    check = json.loads(re.search(r'data-check="([^"]*)"', dumped.stdout).group(1).replace("&quot;", '"'))
    assert check["errors"] == [] and "Uncaught" not in dumped.stderr
    assert check["width"] <= 1280 and check["top"] < 800
    key = lambda text: (0, float(text), "") if re.fullmatch(r"[+-]?[\d.]+", text) else (1, 0, text)  # noqa: E731
    assert len(check["firsts"]) > 20 and all(col == sorted(col, key=key) for col in check["firsts"])
    hovers = re.findall(r'<g id="effect\d+"><title>([^<]*)</title>', text)  # the effects plots' points
    seen: dict[str, set[str]] = {}
    costs = 0
    for name in list_experiments(db)["experiment"]:
        report = build_report(db, name)
        effects = json.loads(render(report, "json"))["effects"]  # what `report --format json` prints
        assert check["verdicts"][name] == {e["effect"]: e["verdict"] for e in effects}, name
        for e in effects:
            assert e["estimate"] is None or any(h.startswith(f"{e['effect']}: ") for h in hovers), e["effect"]
        if any(e["estimate"] is not None for e in effects):  # the caption states the level drawn
            assert f"Effects of {name}: estimate and interval ({html.escape(interval_caption(report))})" in text
            drawn = check["colours"][name]
            assert len(drawn["plot"]) == sum(e["estimate"] is not None for e in effects) > 0, name
            assert all(drawn["table"][e] == colour for e, colour in drawn["plot"].items()), (name, drawn)
            for e in (e for e in effects if e["estimate"] is not None):  # one colour per verdict
                seen.setdefault(palette.colour(e["verdict"]), set()).add(drawn["table"][e["effect"]])
                verdict, speed, memory = check["cells"][f"{name}/{e['effect']}"]
                assert verdict == [drawn["table"][e["effect"]], "600"]  # the loss verdict: bold, the row's colour
                for cell, kind in ((speed, "speed"), (memory, "memory")):  # a cost: its own verdict's colour
                    if e.get(f"{kind}_verdict"):
                        costs += 1
                        assert cell == [rgb(palette.colour(e[f"{kind}_verdict"])), "400"], (name, e["effect"], kind)
    assert len(seen) >= 4 and all(len(colours) == 1 for colours in seen.values()), seen
    assert costs >= 6  # report-cpu-cost's speed and memory cells at least
    assert check["colours"]["report-cpu-stack"]["plot"]["−ema"] == "rgb(26, 127, 55)"  # removing EMA helps: green


def test_a_configuration_keeps_its_colour_across_an_experiments_plots(tmp_path, monkeypatch):
    """The absolute and the delta curves draw each configuration in one colour."""
    import matplotlib.axes

    drawn: list[tuple[str, object]] = []
    plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, *a, **k: drawn.append(
        (str(k.get("label", "")).split(" (")[0], k.get("color"))) or plot(self, *a, **k))
    plot_curves(COMMITTED, "report-cpu", None, tmp_path / "a.png")
    absolute = dict(drawn)
    drawn.clear()
    plot_curves(COMMITTED, "report-cpu", None, tmp_path / "d.png", delta=True)
    delta = dict(drawn)
    shared = (absolute.keys() & delta.keys()) - {""}
    assert len(shared) == 5 and all(absolute[n] == delta[n] for n in shared)
    assert len(set(map(str, absolute.values()))) == len(absolute)  # and no two alike


def test_the_effects_plot_draws_the_reports_effects(tmp_path):
    """On the committed results: its rows are the report's (json) effects with an estimate,
    sorted by estimate, in PNG and SVG."""
    for name in ("report-cpu", "report-cpu-stack"):
        result = CliRunner().invoke(app, ["report", "--db", str(COMMITTED), "-e", name, "--format", "json"])
        effects = [e for e in json.loads(result.stdout)["effects"] if e["estimate"] is not None]
        rows = effect_rows(build_report(COMMITTED, name))
        assert list(rows["effect"]) == [e["effect"] for e in sorted(effects, key=lambda e: -e["estimate"])]
        assert list(rows["estimate"]) == pytest.approx(sorted(e["estimate"] for e in effects)[::-1],
                                                       abs=1e-9)  # json keeps 10 decimals
        for suffix in ("png", "svg"):
            out = plot_effects(build_report(COMMITTED, name), tmp_path / f"{name}.{suffix}")
            assert out.stat().st_size > 5_000
    svg = (tmp_path / "report-cpu.svg").read_text()
    assert all(e in svg for e in effect_rows(build_report(COMMITTED, "report-cpu"))["effect"])
    # leave-one-out: a row is the removal it names, coloured as its table row is. Removing EMA
    # lowers the loss (verdict "better"): green; removing vocab_2x raises it: red
    stack = (tmp_path / "report-cpu-stack.svg").read_text()
    assert re.search(r"fill: #1a7f37\"[^>]*>−ema</text>", stack) and re.search(r"fill: #b42318\"[^>]*>−vocab_2x</text>", stack)
    assert "each row is the removal it names" in stack and "within ±3δ" in stack


def test_results_md_links_the_effects_plots_it_draws(tmp_path):
    doc = tmp_path / "RESULTS.md"
    shutil.copy(FIXTURE, tmp_path / "results.db")
    result = CliRunner().invoke(app, ["results-md", "--db", str(tmp_path / "results.db"), "--out", str(doc)])
    assert result.exit_code == 0, result.output
    linked = re.findall(r"!\[[^\]]*\]\((results-effects-[\w.-]+\.png)\)", doc.read_text())
    assert linked and all((tmp_path / png).stat().st_size > 5_000 for png in linked)


def test_delta_curves_subtract_the_same_seed_baseline_at_each_step():
    from ablate.results.frames import load_evals
    from ablate.results.plot import minus_baseline

    evals = load_evals(COMMITTED, "report-cpu")
    delta = minus_baseline(evals, "val_loss_full")
    assert "baseline" not in set(delta["name"]) and len(delta) == (evals["name"] != "baseline").sum()
    row = delta[(delta["name"] == "swiglu") & (delta["seed"] == 1338)].iloc[-1]
    pick = lambda name: evals[(evals["name"] == name) & (evals["seed"] == 1338) & (evals["step"] == row["step"])]  # noqa: E731
    expected = pick("swiglu")["val_loss_full"].item() - pick("baseline")["val_loss_full"].item()
    assert row["val_loss_full"] == pytest.approx(expected, rel=1e-12)


def test_a_page_that_cannot_be_written_is_one_error_line(tmp_path):
    for out in (tmp_path / "nodir" / "r.html", tmp_path / "r.txt"):
        result = CliRunner().invoke(app, ["report", "--db", str(FIXTURE), "-f", "html", "--out", str(out)])
        assert result.exit_code == 2 and result.output.startswith("error:"), result.output
