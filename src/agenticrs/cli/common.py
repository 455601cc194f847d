"""Shared CLI plumbing: consoles, reporters, error rendering."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from agenticrs.data.errors import DataError
from agenticrs.progress import SILENT, Reporter, RichReporter

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def reporter(quiet: bool) -> Reporter:
    return SILENT if quiet else RichReporter(err_console)


def friendly_errors(fn: F) -> F:
    """Known user errors print one clear line and exit 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (DataError, ValueError, KeyError, FileNotFoundError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            err_console.print(f"[bold red]error:[/] {message}")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def metrics_table(title: str, rows: dict[str, dict[str, float] | None]) -> Table:
    names: list[str] = []
    for values in rows.values():
        for k in values or {}:
            if k not in names:
                names.append(k)
    splits = [split for split, values in rows.items() if values]
    value = lambda split, name: f"{(rows[split] or {}).get(name, float('nan')):.5f}"  # noqa: E731
    # many metrics (a multi-task run: one set per label) read better as one row per metric
    by_metric = len(names) > 6
    corner, columns, row_keys = ("metric", splits, names) if by_metric else ("split", names, splits)
    table = Table(title=title)
    table.add_column(corner)
    for column in columns:
        table.add_column(column, justify="right")
    for key in row_keys:
        table.add_row(key, *[value(c, key) if by_metric else value(key, c) for c in columns])
    return table
