"""The `ablate` command line: thin wrappers over the library."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console

from . import catalog
from .config import ConfigError, ExecOptions, TrainConfig, parse_value

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Ablation matrices for small language models: which changes help?")
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def build_config(preset: str, toggles: list[str], sets: list[str], data: str | None) -> TrainConfig:
    cfg = catalog.apply(catalog.preset(preset), toggles)
    changes = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE")
        name, value = item.split("=", 1)
        changes[name.strip()] = parse_value(name.strip(), value.strip())
    if data:
        changes["data"] = data
    return cfg.replace(**changes)


@app.command()
def train(
    set_: Annotated[list[str], typer.Option("--set", help="FIELD=VALUE config override")] = [],
    toggle: Annotated[list[str], typer.Option(help="catalog optimization to apply")] = [],
    preset: Annotated[str, typer.Option(help="base preset: " + ", ".join(catalog.PRESETS))] = "mainrun",
    data: Annotated[Optional[str], typer.Option(help="local csv/parquet/jsonl with a 'title' column")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="stop after N optimizer steps (run marked truncated)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per evaluation on stdout")] = False,
) -> None:
    """Train one configuration (no database)."""
    from .train import train as run_training  # torch import only for commands that train

    try:
        cfg = build_config(preset, toggle, set_, data)
    except ConfigError as e:
        fail(str(e))
    options = ExecOptions(device=device, compile=compile, max_steps=max_steps)

    def on_eval(m: dict) -> None:
        if as_json:
            row = {k: v for k, v in m.items() if k != "step_metrics"}
            sys.stdout.write(json.dumps(row) + "\n")
            sys.stdout.flush()
        else:
            err.print(f"step {m['step']:>5}  val_loss {m['val_loss']:.6f}  "
                      f"full {m['val_loss_full']:.6f}  train {m['train_loss']:.4f}  "
                      f"lr {m['lr']:.2e}  {m['tokens_per_s']:,.0f} tok/s", highlight=False)

    try:
        result = run_training(cfg, on_eval, options)
    except (ConfigError, RuntimeError) as e:
        fail(str(e), code=1)
    err.print(f"final val_loss {result['final_val_loss']:.6f} (best {result['best_val_loss']:.6f} "
                  f"at step {result['best_step']}), {result['param_count']:,} parameters, "
              f"{result['wall_time_s']:.1f}s on {result['device']}"
              + (" [truncated]" if result["truncated"] else ""), highlight=False)


@app.command("catalog")
def show_catalog() -> None:
    """List the report's optimizations and the base presets."""
    from rich.table import Table

    table = Table(title="Optimizations (seed/optimization-report.md)")
    for col in ("name", "section", "patch", "Mainrun rules"):
        table.add_column(col)
    for o in catalog.CATALOG.values():
        rule = "allowed" if o.allowed else f"[red]breaks: {o.breaks_rule}[/]"
        if o.changes_metric:
            rule += "\n[yellow]changes the metric[/]"
        table.add_row(o.name, o.section, json.dumps(o.patch), rule)
    Console().print(table)
    for name, note in catalog.PRESET_NOTES.items():
        Console().print(f"[bold]{name}[/]: {note}", highlight=False)
