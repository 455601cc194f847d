"""`agenticrs stream`: streaming training with delayed feedback (`agenticrs.train.streaming`).

Replays a click log window by window (pre-training first), trains each method on each window with
the labels it could observe, evaluates on the next window with the eventual labels, and prints the
overall table (with the ceiling of the true probabilities where the data has them) and the table
per segment (ordinary, pre-promotion and promotion days on the simulator).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from agenticrs.cli.common import console, friendly_errors, reporter
from agenticrs.config import apply_overrides, load_yaml
from agenticrs.train.streaming import METHODS, StreamConfig, load_clicks, run_stream


def _rows(results: dict[str, dict], key: str) -> Table:
    table = Table(title=key)
    for column in ("method", "AUC", "logloss", "ECE", "pred/obs", "rows", "extra samples"):
        table.add_column(column, justify="left" if column == "method" else "right")
    ceiling = None
    for name, summary in results.items():
        block = summary["overall"] if key == "overall" else summary["segments"].get(key)
        if block is None:
            continue
        table.add_row(name, *(f"{block.get(m, float('nan')):.4f}" for m in ("auc", "logloss", "ece", "calibration")),
                      f"{block['rows']:,.0f}", f"{summary['samples']['extra_samples']:,}")  # fmt: skip
        if summary.get("ceiling"):
            ceiling = summary["ceiling"]["overall"] if key == "overall" else summary["ceiling"]["segments"].get(key)
    if ceiling:
        table.add_row("ceiling (true p)", *(f"{ceiling.get(m, float('nan')):.4f}" for m in ("auc", "logloss", "ece",
                      "calibration")), f"{ceiling['rows']:,.0f}", "")  # fmt: skip
    return table


@friendly_errors
def stream(
    data: str = typer.Option("sim-small", "--data", "-d", help="sim-<preset>, or a CSV / Parquet file with "
                             "click_ts, conversion_ts and feature columns"),
    methods: str = typer.Option("vanilla,es_dfm", "--methods", "-m",
                                help=f"comma-separated, of: {', '.join(sorted(METHODS))}"),
    window: float = typer.Option(3600.0, "--window", help="window length in seconds"),
    pretrain_days: float = typer.Option(None, "--pretrain-days", help="pre-training period (default: see docs)"),
    pretrain_epochs: int = typer.Option(5, "--pretrain-epochs"),
    config_file: Path = typer.Option(None, "--config", "-c", help="a StreamConfig YAML (its `method` is replaced)"),
    overrides: list[str] = typer.Option([], "--set", help="override a StreamConfig setting, e.g. elapsed_cut_s=1800"),
    out: Path = typer.Option(None, "--out", "-o", help="folder for the runs (one sub-folder per method)"),
    resume: bool = typer.Option(False, "--resume", help="continue the runs in --out where they stopped"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Stream a click log with delayed conversions through delayed-feedback methods and compare them."""
    base = load_yaml(config_file) if config_file else {}
    base.setdefault("input", {})
    base["input"].setdefault("source", data)
    base.setdefault("window_s", window)
    base.setdefault("pretrain_epochs", pretrain_epochs)
    if pretrain_days is not None:
        base.setdefault("pretrain_days", pretrain_days)
    names = [m.strip() for m in methods.split(",") if m.strip()]
    configs = {name: StreamConfig(**apply_overrides({**base, "method": name}, overrides)) for name in names}
    if resume and out is None:
        raise typer.BadParameter("--resume needs --out, the folder of the runs to continue")
    progress = reporter(quiet)
    first = next(iter(configs.values()))
    log = load_clicks(first.input, first.pretrain_days)
    console.print(f"{log.description}; pre-training until {log.pretrain_end / 86400:g} days, windows of {first.window_s:g} s")
    results = {}
    for name, config in configs.items():
        results[name] = run_stream(config, out / name if out else None, resume=resume, reporter=progress, log=log)
    console.print(_rows(results, "overall"))
    segments = dict.fromkeys(s for summary in results.values() for s in summary["segments"])
    for segment in segments:
        console.print(_rows(results, segment))
    if out:
        console.print(f"runs: {out}")
