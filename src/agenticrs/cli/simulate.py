"""`agenticrs simulate`: write the simulator's offline logs and one dataset spec per task."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table

from agenticrs.cli.common import console, friendly_errors, reporter
from agenticrs.config import apply_overrides
from agenticrs.data.simulated import TASKS, write_simulation
from agenticrs.sim.config import PRESETS, SimConfig, sim_preset


@friendly_errors
def simulate(
    preset: str = typer.Option("small", "--preset", "-p", help=f"world size: {', '.join(PRESETS)}"),
    seed: int = typer.Option(0, "--seed", "-s", help="the world and its logs are a function of the seed"),
    out: Path = typer.Option(Path("sim-out"), "--out", "-o", help="folder for the Parquet tables and specs"),
    overrides: list[str] = typer.Option([], "--set", help="override a SimConfig setting, e.g. n_days=21"),
    force: bool = typer.Option(False, "--force", help="regenerate even if OUT holds this config's output"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Simulate an e-commerce world with known ground truth and write its logs (ctr, cvr_delayed,
    sequential and multi_scenario data sets, loadable with `--dataset OUT/<task>.yaml`)."""
    base = sim_preset(preset, seed=seed).model_dump()
    config = SimConfig(**apply_overrides(base, overrides)) if overrides else sim_preset(preset, seed=seed)
    started = time.perf_counter()
    progress = reporter(quiet)
    with progress.task(f"simulate {preset} (seed {seed})", total=config.n_days) as task:
        write_simulation(config, out, name=f"sim-{preset}", progress=lambda done, total: task.advance(1), force=force)
    meta = json.loads((out / "meta.json").read_text())
    table = Table(title=f"simulated world '{preset}' (seed {seed}) -> {out}")
    for column in ("split", "impressions", "CTR", "oracle AUC (click)", "clicks", "CVR | click", "oracle AUC (purchase)"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split in ("train", "valid", "test"):
        imp, clk = meta["splits"][f"impressions_{split}"], meta["splits"][f"clicks_{split}"]
        table.add_row(split, f"{imp['rows']:,}", f"{imp['positive_rate']:.4f}", f"{imp['oracle_auc']:.4f}",
                      f"{clk['rows']:,}", f"{clk['positive_rate']:.4f}", f"{clk['oracle_auc']:.4f}")  # fmt: skip
    console.print(table)
    console.print(f"{meta['requests']:,} requests; generated in {meta['generation_seconds']:.1f} s "
                  f"(total {time.perf_counter() - started:.1f} s)")  # fmt: skip
    console.print("data sets: " + ", ".join(f"{out / (t + '.yaml')}" for t in TASKS))
