"""A `Report` (or any results table, or one run) as text: a terminal table, markdown, csv or json.

Rendering only: every number is already in the `Report`, `RunDetail` or frame it is given, and
nothing here reads the database. rich is imported where a terminal table is drawn. A new output
format is a new branch of `render` (and of `render_frame` / `render_run` where it applies).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shlex
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..training.catalog import CATALOG
from ..training.config import TrainConfig, format_value
from ..training.datasource import BUILTIN_PREFIX, local_format
from ..training.params import ParamsConfig
from ..execution.designs import short_name
from ..execution.provenance import describe
from .cost import WORDS as COST_WORDS
from .cost import ratio_text
from .detail import RunDetail, cost_line
from . import palette
from .frames import missing, spreadsheet_safe
from .report import Report
from .stats import FAILS

FORMATS = ("table", "markdown", "csv", "json")
PLAIN_WORDS = {"better": "helps", "worse": "hurts", "negligible": "negligible", "inconclusive": "undecided",
               FAILS: "fails"}
BLOCKS = "▁▂▃▄▅▆▇█"


def _fmt(value: Any, spec: str = ".4f", signed: bool = False) -> str:
    """`spec`, but scientific for a non-zero value it would print as zero: never "-0.0000"."""
    if missing(value):
        return ""
    text = format(value + 0.0, ("+" if signed else "") + spec)
    if value != 0 and not text.strip("+-0.%"):
        text = format(value, ("+" if signed else "") + ".1e")
    return text


def _duration(seconds: float) -> str:
    if missing(seconds):
        return ""
    if seconds < 60:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 3600 else f"{seconds / 3600:.1f}h"


def _si(value: float) -> str:
    if math.isnan(value):
        return ""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def _flags(row: Any, short: bool) -> str:
    marks = [("B", "baseline", row.is_baseline), ("★", "best", row.is_best), ("†", "lost seeds", row.seeds_lost > 0),
             ("✗", "breaks rule", bool(row.breaks_rule)), ("≠", "not like-for-like", bool(row.not_like_for_like))]
    return ("" if short else ", ").join(s if short else word for s, word, on in marks if on)


def ranking_display(report: Report, short: bool) -> pd.DataFrame:
    """The ranked configurations as display strings; `short` abbreviates for the terminal."""
    ranked = report.ranking[report.ranking["rank"].notna()]
    show_toggles = any(r.toggles != r.name.lstrip("+") and not r.is_baseline for r in ranked.itertuples())
    rows = []
    for r in ranked.itertuples():
        row = {"#": f"{r.rank:.0f}", "config": short_name(r.name)}
        if show_toggles or not short:
            row["toggles"] = r.toggles
        row.update({
            "n": _count(r), "final": _fmt(r.final) + (f"±{r.final_sd:.4f}" if r.n > 1 else ""),
            "best@step": f"{r.best:.4f}@{r.best_step:.0f}" if not math.isnan(r.best) else "",
            "Δref": _fmt(r.d_ref, signed=True), "Δref%": _fmt(r.d_ref_pct, ".1f", signed=True) + "%" * (not math.isnan(r.d_ref_pct)),
            "Δbase": _fmt(r.d_base, signed=True) if not r.is_baseline else "0",
            "Δbase interval": _interval(r.d_base_lo, r.d_base_hi) if not r.is_baseline else "",
            "wall": _duration(r.wall_time_s),
            "tok/s": _si(r.tokens_per_s), "flags": _flags(r, short),
        })
        rows.append(row)
    return _drop_empty(pd.DataFrame(rows))


def _count(r: Any) -> str:
    """Completed seeds, and what qualifies them: '7 (3 paired)', '2 (2 lost)', '2 of 4 so far'."""
    text = str(r.n) if r.paired in (r.n, 0) or r.is_baseline else f"{r.n} ({r.paired:.0f} paired)"
    if r.seeds_lost:
        text += f" ({r.seeds_lost:.0f} lost)"
    return text + (f" of {r.n + r.seeds_pending:.0f} so far" if r.seeds_pending else "")


def fit_ranking(frame: pd.DataFrame, width: int, reference_fair: bool) -> pd.DataFrame:
    """The ranking without the columns a `width`-wide terminal cannot show, dropped in order of
    need: the toggles (the names say them), Δref where the reference is unfair, throughput,
    then the rest; never the rank, config, final loss, Δbase or flags."""
    return _fit(frame, width, [["toggles"], *([] if reference_fair else [["Δref", "Δref%"]]), ["tok/s"],
                               ["wall"], ["Δref%"], ["best@step"], ["Δref"], ["n"]])


def fit_effects(frame: pd.DataFrame, width: int, value: str = "loss") -> pd.DataFrame:
    """The effects without the columns a `width`-wide terminal cannot show: the configuration's
    mean `value` (the loss), then n, then the memory and speed verdicts;
    never the effect, its estimate, its interval or its verdict, which is read whole (an
    "inconclusive (~13 seeds)" cut short says nothing)."""
    return _fit(frame, width, [[value], ["n"], ["memory"], ["speed"]])


def _fit(frame: pd.DataFrame, width: int, order: list[list[str]]) -> pd.DataFrame:
    for columns in order:
        if _natural_width(frame) <= width:
            break
        frame = frame.drop(columns=columns, errors="ignore")
    return frame


def _natural_width(frame: pd.DataFrame) -> int:
    """Columns as wide as their widest cell, one space between (as _rich_table draws them)."""
    return sum(max([len(str(c)), *(len(str(v)) for v in frame[c])]) for c in frame.columns) + len(frame.columns)


def _drop_empty(frame: pd.DataFrame) -> pd.DataFrame:
    """Without the columns no row fills (a one-seed matrix has no intervals)."""
    return frame.loc[:, [(frame[c].astype(str) != "").any() for c in frame.columns]] if len(frame) else frame


def unranked_display(report: Report) -> pd.DataFrame:
    pending = report.ranking[report.ranking["rank"].isna()]
    return pd.DataFrame({"config": pending["name"], "seed": pending["seed"].map(lambda s: _fmt(s, ".0f")),
                         "status": pending["status"], "error": pending["error"].fillna("")})


def _interval(lo: float, hi: float) -> str:
    return "" if missing(lo) or math.isnan(lo) else f"{_fmt(lo, signed=True)}…{_fmt(hi, signed=True)}"


def verdict_text(row: Any, budget: int | None = None) -> str:
    """An effects row's verdict in words: a configuration that lost seeds "fails on 2 of 4
    seeds"; an inconclusive one with the seeds it would need (80 % to decide) and whether that is
    past the plan's budget; any with seeds still to run "2 of 4 seeds so far"."""
    verdict, needed = row.verdict, row.seeds_needed
    pending, given = getattr(row, "seeds_pending", 0) or 0, getattr(row, "seeds_given", 0) or 0
    if verdict == FAILS:
        return f"{verdict} on {row.seeds_lost:.0f} of {given:.0f} seeds"
    if verdict == "no data":
        return verdict
    details = []
    if verdict == "inconclusive" and not missing(needed):
        details.append(f"~{needed:.0f} seeds{f', over the {budget}' if budget and needed > budget else ''}")
    if pending:
        details.append(f"{given - pending:.0f} of {given:.0f} seeds so far")
    return f"{verdict} ({'; '.join(details)})" if details else verdict


def effects_display(report: Report) -> pd.DataFrame:
    """The effects: each estimate (± its paired sd), its interval at the report's one level and
    the verdict read off that interval."""
    e = report.effects
    return pd.DataFrame({
        "effect": e["effect"], "n": e["n"].astype(str),
        "loss": e["loss"].map(_fmt),
        "estimate": [_fmt(r.estimate, signed=True) + (f"±{_fmt(r.sd)}" if not math.isnan(r.sd) else "")
                     for r in e.itertuples()],
        "interval": [_interval(r.ci_lo, r.ci_hi) for r in e.itertuples()],
        "verdict": [verdict_text(r, report.budget) for r in e.itertuples()],
        "speed": cost_cells(e, "speed"), "memory": cost_cells(e, "memory"),
    }).rename(columns={"loss": value_heading(report)}).pipe(_drop_empty)


def cost_cells(effects: pd.DataFrame, kind: str, decided: bool = False) -> list[str]:
    """Each effect's cost of `kind` in words ('1.31× faster (1.22–1.40×)'); "" where not measured
    (or, `decided`, where its verdict is not one of the cost's own words)."""
    if f"{kind}_verdict" not in effects:
        return [""] * len(effects)
    rows = effects[[f"{kind}_ratio", f"{kind}_lo", f"{kind}_hi", f"{kind}_verdict"]].itertuples(index=False)
    return ["" if not isinstance(v, str) or (decided and v not in COST_WORDS[kind].values())
            else ratio_text(r, lo, hi, v, kind) for r, lo, hi, v in rows]


def value_heading(report: Report) -> str:
    """The effects table's column of each configuration's mean value: "loss" for Mainrun's,
    your own trainer's metric by name."""
    return "loss" if report.mainrun else report.ranked_by



def _rich_table(frame: pd.DataFrame, styles: list[str] | None = None,
                flexible: Iterable[str] = ("config", "effect", "error", "name", "field")) -> Any:
    """A borderless rich table: flexible text columns shrink with an ellipsis, numbers never wrap."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=0)
    for column in frame.columns:
        widest = max([len(str(column)), *(len(str(v)) for v in frame[column])])
        wraps = column == "error"  # reasons are read in full; everything else stays one line
        table.add_column(str(column), no_wrap=not wraps, overflow="fold" if wraps else "ellipsis",
                         min_width=min(widest, 8) if column in flexible else widest)
    for i, row in enumerate(frame.itertuples(index=False)):
        table.add_row(*(str(v) for v in row), style=styles[i] if styles else None)
    return table


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipes table for pull requests: `|` and line breaks escaped, and a text cell that a
    spreadsheet would read as a formula (`=cmd|...`, `+x`, `@x`, `+1+cmd|...`) quoted; a signed
    number stays as it is (`+0.0378`, `-0.7086…-0.6183`, `-0.66±0.01`, `-0.1058 [-0.11…-0.10], better (n=3)`)."""
    def cell(v: Any) -> str:
        text = str(v).replace("|", "\\|").replace("\n", " ")
        number = re.match(r"[+-](\d[\d.,]*|\.\d+)([eE][+-]?\d+)?%?([\s…±\]]|$)", text) and not re.search(r"[|!]", str(v))
        return "'" + text if re.match(r"[=@\t\r]|[+-].", text) and not number else text
    lines = ["| " + " | ".join(map(cell, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _capture(renderables: list, width: int, color: bool) -> str:
    """Print renderables to a string: plain text, or with ANSI colours for a terminal."""
    from rich.console import Console

    from rich.text import Text

    console = Console(file=io.StringIO(), width=width, force_terminal=color, no_color=not color,
                      markup=False, highlight=False, emoji=False, soft_wrap=False)
    for item in renderables:  # text, table cells included, is printed as is (never markup); (text, style) pairs styled
        if isinstance(item, tuple):
            item = Text(*item)
        console.print(Text(item) if isinstance(item, str) else item)
    return console.file.getvalue()


COUNTS = ("rank", "n", "seeds", "paired", "best_step")  # integers in JSON (a median step may not be one)


def _records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records", default_handler=str))


def verdict_summary(report: Report) -> list[tuple[str, str]]:
    """The decision in plain words, one (verdict, line) per group, in the order helps, hurts, no
    effect, undecided, no verdict: 'helps: onecycle_fix (-0.5182), lr_1e4 (-0.1643)', each with
    its decided cost verdicts ('sdpa (+0.0001; 1.31× faster; same memory)'). A change is
    what its row measures: in leave-one-out, `−ema` is "removing ema"."""
    groups: dict[str, list[str]] = {}
    first: dict[str, str] = {}
    costs = zip(cost_cells(report.effects, "speed", True), cost_cells(report.effects, "memory", True))
    for r, cost in zip(report.effects.itertuples(), costs):
        if r.verdict == "no data":
            continue
        word = PLAIN_WORDS.get(r.verdict, "no verdict")
        if r.verdict in ("inconclusive", FAILS) or r.seeds_pending:
            detail = verdict_text(r, report.budget).removeprefix(r.verdict).strip(" ()")
            detail = ", ".join(filter(None, [_fmt(r.estimate, signed=True) * (r.verdict not in ("inconclusive", FAILS)), detail]))
        elif word == "no verdict":
            detail = r.verdict
        else:
            detail = _fmt(r.estimate, signed=True)
        change = f"removing {r.effect[1:]}" if report.design == "leave-one-out" and r.effect.startswith("−") else r.effect
        detail = "; ".join(filter(None, [detail, *(c.split(" (")[0] for c in cost)]))
        groups.setdefault(word, []).append(f"{change} ({detail})")
        first.setdefault(word, r.verdict)
    order = [*PLAIN_WORDS.values(), "no verdict"]
    label = {"negligible": f"negligible (within ±{report.min_effect:g})"}
    return [(first[w], f"{label.get(w, w)}: " + ", ".join(groups[w])) for w in order if w in groups]


def render(report: Report, format: str = "table", width: int = 100, color: bool = False) -> str:
    """The report as a terminal table (rich), markdown, csv (ranking then effects) or json."""
    if format == "csv":  # one frame; every row carries what qualifies its numbers
        both = pd.concat([report.ranking.assign(table="ranking"), report.effects.assign(table="effects")],
                         ignore_index=True)
        both = both.assign(min_effect=report.min_effect, interval=report.level.describe(),
                           after_data=" ".join(report.after_data))
        return spreadsheet_safe(both[["table", *(c for c in both.columns if c != "table")]]).to_csv(index=False)
    if format == "json":
        head = {k: getattr(report, k) for k in ("experiment", "design", "metric", "reference", "seeds",
                                                  "lines", "effects_title", "notes", "min_effect", "after_data",
                                                  "looks_taken")}
        head["interval"] = report.level.describe()
        ranking = report.ranking.astype({c: "Int64" for c in COUNTS if c in report.ranking
                                         and (report.ranking[c].dropna() % 1 == 0).all()})
        return json.dumps({**head, "ranking": _records(ranking), "effects": _records(report.effects)},
                          indent=2, default=str)
    title = (f"{report.experiment} — {report.design}, {len(report.seeds)} seed(s), "
             f"ranked by {report.ranked_by}")
    ranked = report.ranking[report.ranking["rank"].notna()]
    pending, effects = unranked_display(report), effects_display(report)
    summary = verdict_summary(report)
    if format == "markdown":
        parts = [f"## {title}", "\n".join(f"- **{line.split(':', 1)[0]}**:{line.split(':', 1)[1]}" for _, line in summary),
                 *report.lines,
                 markdown_table(ranking_display(report, short=False)) if len(ranked) else "No completed runs yet."]
        if len(pending):
            parts += ["**Not ranked**", markdown_table(pending)]
        if len(effects):
            parts += [f"**{report.effects_title}**", markdown_table(effects)]
        parts.append("\n".join(f"- {note}" for note in report.notes))
        return "\n\n".join(parts) + "\n"
    if format != "table":
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    styles = ["bold green" if r.is_best else "cyan" if r.is_baseline else "red" if r.breaks_rule else ""
              for r in ranked.itertuples()]
    parts: list = [(title, "bold"), *((line, palette.colour(v)) for v, line in summary), *report.lines]
    if len(effects):  # the answer first, each verdict whole and coloured by what it says
        parts += [(report.effects_title, "bold"), _rich_table(fit_effects(effects, width, value_heading(report)), styles=[
            palette.colour(v) for v in report.effects["verdict"]])]
    parts += [("Ranking", "bold"),
              _rich_table(fit_ranking(ranking_display(report, True), width, report.reference_fair), styles=styles),
              "B baseline  ★ best rule-abiding  ✗ breaks Mainrun's rules  ≠ not like-for-like  † lost seeds (see notes)"
              if report.mainrun else "B baseline  ★ best  † lost seeds (see notes)"
              ] if len(ranked) else ["No completed runs yet."]
    if len(pending):
        parts += [("Not ranked", "bold"), _rich_table(pending)]
    parts += [f"• {note}" for note in report.notes]
    return _capture(parts, width, color)


def render_frame(frame: pd.DataFrame, format: str = "table", title: str | None = None,
                 width: int = 100, color: bool = False) -> str:
    """Any results table (runs, evals) in one of FORMATS."""
    if format == "csv":
        return spreadsheet_safe(frame).to_csv(index=False)
    if format == "json":
        return json.dumps(_records(frame), indent=2)
    shown = frame.map(_cell)
    if format == "markdown":
        return (f"**{title}**\n\n" if title else "") + markdown_table(shown) + "\n"
    if format != "table":
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    return _capture([(title, "bold")] * bool(title) + [_rich_table(shown)], width, color)


def runs_display(runs: pd.DataFrame) -> pd.DataFrame:
    """The columns of a load_runs() frame worth a terminal line, with short headers."""
    columns = {"run_id": "id", "experiment": "experiment", "name": "name", "seed": "seed", "status": "status",
               "final_val_loss": "final val_loss", "res.final_val_loss_full": "final val_loss_full",
               "best_val_loss": "best", "best_step": "@step", "wall_time_s": "wall", "error": "error"}
    if runs["experiment"].nunique() <= 1:
        columns.pop("experiment")
    own = [c for c in runs.columns if c.startswith("final ")]  # your own trainer's metric (frames)
    if own and runs["final_val_loss"].isna().all():
        for mainrun_only in ("final_val_loss", "res.final_val_loss_full", "best_val_loss", "best_step"):
            columns.pop(mainrun_only)
    columns = {**{k: v for k, v in columns.items() if k not in ("wall_time_s", "error")},
               **{c: c for c in own}, "wall_time_s": "wall", "error": "error"}
    shown = runs.assign(wall_time_s=runs["wall_time_s"].map(_duration), best_step=runs["best_step"].astype("Int64"))
    return shown[[c for c in columns if c in runs]].rename(columns=columns)


def _cell(value: Any) -> str:
    """Compact text for one value: 4 decimals, scientific when tiny, thousands when large."""
    if missing(value):
        return ""
    if isinstance(value, (float, np.floating)):
        if value != 0 and abs(value) < 0.01:
            return f"{value:.2e}"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}"
    return str(value)


def render_run(detail: RunDetail, format: str = "table", width: int = 100, color: bool = False) -> str:
    """A run's header, config diff and evaluations; csv is the evaluations alone."""
    if format == "csv":
        return spreadsheet_safe(detail.evals).to_csv(index=False)
    if format == "json":
        return json.dumps({"run": detail.run, "config_diff": _records(detail.config_diff),
                           "evals": _records(detail.evals)}, indent=2, default=str)
    r = detail.run
    header = [f"{r['name']} (run {r['run_id']}, {r['hash']}, seed {r['seed']}) in {r['experiment']}: {r['status']}"]
    if r["error"]:
        header.append(f"error: {r['error']}")
    if r["final_val_loss"] is not None:
        header.append(f"final val_loss {r['final_val_loss']:.4f}, best {r['best_val_loss']:.4f} "
                      f"at step {r['best_step']}")
    if cost := cost_line(r):
        header.append(cost)
    if isinstance(r.get("environment"), dict):
        header.append(f"environment: {describe(r['environment'])}")
    own = isinstance(detail.config, ParamsConfig)  # your trainer's metrics: whatever it reported
    if detail.values:
        header.append(f"{detail.config.metric if own else 'val_loss'} {sparkline(detail.values)}")
    evals = _eval_cells(detail.evals.rename(columns=lambda c: c.removeprefix("extra.")), exact=True) if own else \
        _eval_cells(detail.evals.drop(columns=[c for c in detail.evals.columns if c.startswith("extra.")]))
    evals = _drop_empty(evals) if own else evals
    if format == "markdown":
        return "\n\n".join([*header, "**Config vs " + detail.config_diff.columns[-1] + "**",
                            markdown_table(detail.config_diff.map(_cell)),
                            "**Evaluations**", markdown_table(evals)]) + "\n"
    if format != "table":
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    short = evals.rename(columns={"epoch": "ep", "val_loss": "val", "val_loss_full": "full",
                                  "eval_coverage": "cov", "train_loss": "train", "grad_norm": "gnorm",
                                  "tokens_seen": "tokens", "elapsed_s": "time", "tokens_per_s": "tok/s"})
    return _capture([*header, ("Config vs " + detail.config_diff.columns[-1], "bold"),
                     _rich_table(detail.config_diff.map(_cell)), ("Evaluations", "bold"),
                     _rich_table(short)], width, color)


_EVAL_FORMATS = {"step": "{:.0f}", "epoch": "{:g}", "val_loss": "{:.4f}", "val_loss_full": "{:.4f}",
                 "eval_coverage": "{:.1%}", "train_loss": "{:.4f}", "lr": "{:.2e}", "grad_norm": "{:.4f}",
                 "tokens_seen": "{:,.0f}", "elapsed_s": "{:.1f}s", "tokens_per_s": "{:,.0f}"}


def _eval_cells(evals: pd.DataFrame, exact: bool = False) -> pd.DataFrame:
    """Evaluations as text, one number format per column (epochs as integers, times in seconds);
    `exact`: your own script's values as it printed them (2540.93, not 2,541), each the shortest
    text that reads back as the stored number."""
    def text(v: Any, column: str) -> str:
        if missing(v):
            return ""
        if column in _EVAL_FORMATS:
            return _EVAL_FORMATS[column].format(v)
        return repr(float(v)).removesuffix(".0") if exact and isinstance(v, (float, np.floating)) else _cell(v)
    return evals.apply(lambda column: column.map(lambda v: text(v, column.name)))


def as_command(detail: RunDetail) -> str:
    """An `ablate train` command line that reproduces the run (see `command_for`)."""
    return command_for(detail.config, detail.truncated_at, detail.run.get("device"))


def command_for(config: TrainConfig | ParamsConfig, truncated_at: int | None = None, device: str | None = None) -> str:
    """An `ablate train` command line that reproduces a run of this config: --data as stored (an
    absolute path, so the line works from any directory), --set for each field that differs from
    the default (the defaults are Mainrun's baseline), --max-steps when the run was truncated, and
    the `device` it ran on ("cpu (2 threads)": --device cpu --threads 2, for a CPU's sums depend on
    its thread count; a GPU's: --device cuda). A run of your own trainer: its command (or entry
    point), run in its directory."""
    if isinstance(config, ParamsConfig):
        try:
            line = config.by_hand()
        except ValueError as e:  # a template a merged database holds that no run could fill in
            return f"# its command cannot be shown: {e}"
        return f"cd {shlex.quote(os.path.abspath(config.workdir))} && {line}"
    words = ["ablate", "train", "--data", config.data]
    missing_here = local_format(config.data) is not None and not config.data.startswith(BUILTIN_PREFIX) \
        and not os.path.exists(config.data)
    for name, value in config.diff().items():
        if name != "data":
            words += ["--set", f"{name}={format_value(value)}"]
    if truncated_at is not None:
        words += ["--max-steps", str(truncated_at)]
    if device and (cpu := re.fullmatch(r"cpu \((\d+) threads?\)", device)):
        words += ["--device", "cpu", "--threads", cpu.group(1)]
    elif device:
        words += ["--device", "cuda"]
    if missing_here:  # a database from another machine: say what to pass, above a line that still runs
        return (f"# {config.data} is not on this machine: pass --data a copy of it (`ablate plan MATRIX "
                f"--data FILE` lists this run completed when FILE holds the same titles)\n{shlex.join(words)}")
    return shlex.join(words)


def sparkline(values: Iterable[float]) -> str:
    """One block character per value, scaled from the lowest to the highest; blank for nan."""
    vals = [float(v) for v in values]
    finite = [v for v in vals if math.isfinite(v)]
    if not finite:
        return " " * len(vals)
    lo, span = min(finite), max(finite) - min(finite)
    top = len(BLOCKS) - 1
    return "".join(" " if not math.isfinite(v) else BLOCKS[round((v - lo) / span * top) if span else top // 2]
                   for v in vals)


def catalog_frame() -> pd.DataFrame:
    """The report's optimizations, one row each, for csv/json/markdown."""
    return pd.DataFrame([{"name": o.name, "section": o.section, "patch": json.dumps(o.patch),
                          "allowed": o.allowed, "breaks_rule": o.breaks_rule or "",
                          "changes_metric": o.changes_metric or ""} for o in CATALOG.values()])


def catalog_table() -> Any:
    """The catalog as a rich table that wraps, never cuts: a name (typed, so never split) over
    its section, a patch one field per line as `--set` takes it, Mainrun's rules."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Optimizations (seed/optimization-report.md)", box=box.SIMPLE_HEAD, show_lines=True)
    table.add_column("name, section", min_width=max(map(len, CATALOG)))
    table.add_column("patch", no_wrap=True)
    table.add_column("Mainrun rules")
    for o in CATALOG.values():
        rule = Text("allowed") if o.allowed else Text(f"breaks: {o.breaks_rule}", style="red")
        if o.changes_metric:
            rule.append("\nchanges the metric", style="yellow")
        patch = "\n".join(f"{k}={format_value(v)}" for k, v in o.patch.items())
        table.add_row(Text.assemble((o.name, "bold"), "\n", (o.section, "dim")), patch, rule)
    return table
