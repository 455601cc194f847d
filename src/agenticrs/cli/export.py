"""`agenticrs export RUN`: the run's CTR model as ONNX (and int8), checked against the eager model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from agenticrs.cli.common import console, friendly_errors, styled


def _fmt(value: float | None, digits: int = 5) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@friendly_errors
def export(
    run: Path = typer.Argument(..., help="CTR run directory"),
    int8: bool = typer.Option(False, "--int8", help="also write a dynamic int8 model (model.int8.onnx)"),
    db: str = typer.Option(None, "--db", help="knowledge database URL: record the export as an artifact"),
    candidate: int = typer.Option(None, "--candidate", help="candidate id the artifact belongs to (with --db)"),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="processed-data cache (default .cache/agenticrs)"),
    repeats: int = typer.Option(30, "--repeats", min=1, help="calls per batch size in the latency profile"),
) -> None:
    """Export a CTR run to RUN/export/ as ONNX; fails if it differs from the eager model by more than 1e-5."""
    if candidate is not None and not db:
        raise ValueError("--candidate needs --db (the knowledge database to record the export in)")
    from agenticrs.serve.export import export_onnx, record_export

    report = export_onnx(run, quantize=int8, cache_dir=cache_dir, latency_repeats=repeats)
    table = Table(title=f"{report.model} exported with the {report.exporter} exporter (opset {report.opset})")
    sizes = [f"p50/p99 ms @{s}" for s in report.latency.get("torch", {})]
    for column in ("backend", "file MB", "max |Δp| vs torch", "test AUC", *sizes):
        table.add_column(column, justify="left" if column == "backend" else "right")
    rows = [("torch", None, 0.0, report.auc_torch), ("onnx", report.size_bytes, report.parity_max_abs_diff, report.auc_onnx)]
    if report.quantized:
        rows.append(("onnx-int8", report.int8_size_bytes, report.int8_max_abs_diff, report.auc_int8))
    for backend, size, diff, auc in rows:
        latency = report.latency.get(backend, {})
        cells = [f"{v['p50_ms']:.2f}/{v['p99_ms']:.2f}" for v in latency.values()]
        table.add_row(backend, "-" if size is None else f"{size / 1e6:.2f}", f"{diff:.2e}", _fmt(auc), *cells)
    console.print(table)
    if report.auc_change_int8 is not None:
        console.print(f"int8 test AUC change: {report.auc_change_int8:+.5f}")
    console.print(styled("written: ", (str(Path(report.path).parent), "bold")))
    if db:
        from agenticrs.agents.knowledge import KnowledgeStore

        store = KnowledgeStore(db)
        try:
            ids = record_export(store, report, candidate_id=candidate)
        finally:
            store.close()
        console.print(f"recorded as artifact(s) {', '.join(map(str, ids))}")
