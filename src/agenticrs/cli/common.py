"""Shared CLI plumbing: consoles, reporters, error rendering.

Text from outside (data values, file paths, database rows, LLM answers) is never parsed as Rich
markup or emoji codes: both consoles have markup and emoji off, and what the CLI styles itself
it styles with `Text` objects (`styled`). A `[/]` in a CSV value prints as `[/]`.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
import typer.exceptions
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agenticrs.data.errors import DataError
from agenticrs.progress import SILENT, Reporter, RichReporter
from agenticrs.runtime.secrets import is_secret_key

console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False)

F = TypeVar("F", bound=Callable[..., Any])

# exit codes: 2 for bad input or a fault the user can fix (a one-line message), 1 for a bug
EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
# where the full traceback of an unexpected error goes (default: the system's temporary folder)
CRASH_DIR_ENV = "AGENTICRS_CRASH_DIR"
# set to 1 to let an unexpected exception propagate with its traceback (for debugging)
TRACEBACK_ENV = "AGENTICRS_TRACEBACK"
MESSAGE_LIMIT = 400


def _exits() -> tuple[type[BaseException], ...]:
    """The exceptions a command line ends with on purpose (typer's, and click's where installed)."""
    kinds: list[type[BaseException]] = [typer.Exit, typer.Abort, typer.exceptions.TyperException]
    try:
        import click
    except ImportError:  # typer vendors its own click
        return tuple(kinds)
    return (*kinds, click.exceptions.Exit, click.exceptions.Abort, click.ClickException)


PASS_THROUGH = _exits()


def executor_options(what: str) -> tuple[Any, Any, Any]:
    """The `--executor`, `--ray-address` and `--cpus-per-training` options of a command whose
    `what` (learners, runs) train on an executor (`agents/executor.py`)."""
    return (
        typer.Option("local", "--executor", help=f"where {what} train: local (one at a time, here) | ray (Ray tasks, "
                     "side by side)"),
        typer.Option(None, "--ray-address", help="Ray cluster to join (host:6379, ray://host:10001, auto); default: a "
                     "private Ray instance on this machine"),
        typer.Option(1.0, "--cpus-per-training", help=f"Ray: CPUs requested by each of the {what}"),
    )


def reporter(quiet: bool) -> Reporter:
    return SILENT if quiet else RichReporter(err_console)


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line of plain text with styled pieces: `styled("run: ", (str(path), "bold"))`; nothing in it is markup."""
    return Text.assemble(*parts)


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """A message on one line (whitespace runs collapsed), cut at `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _validation_lines(exc: ValidationError) -> list[str]:
    """One line per invalid field: `Model: a.b: what is wrong (got value)`; secrets never shown."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err.get("loc", ()))
        message = err.get("msg", "invalid")
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        got = err.get("input")
        secret = any(is_secret_key(str(part)) for part in err.get("loc", ()))
        shown = ""
        if not secret and isinstance(got, str | int | float | bool) and err.get("type") != "missing":
            shown = f" (got {one_line(repr(got), 60)})"
        where = f"{exc.title}: {loc}" if loc else exc.title
        lines.append(one_line(f"{where}: {message}{shown}"))
    return lines or [one_line(str(exc))]


def known_error_lines(exc: BaseException) -> list[str] | None:
    """The message lines of an error the user can act on, or None for an unexpected one (a bug).

    Known: pydantic validation errors (one line per field), `DataError`/`ValueError`, `KeyError`,
    `OSError` (a missing, unreadable or unwritable file), YAML syntax errors, and knowledge-database
    faults (`KnowledgeStoreError`, or a SQLAlchemy error while a command runs)."""
    if isinstance(exc, ValidationError):
        return _validation_lines(exc)
    if isinstance(exc, DataError | ValueError):
        return [one_line(str(exc))]
    if isinstance(exc, KeyError):
        return [one_line(str(exc.args[0]) if exc.args else "missing key")]
    if isinstance(exc, OSError):
        if exc.strerror and exc.filename is not None:
            return [one_line(f"{exc.strerror}: {exc.filename}")]
        return [one_line(str(exc) or type(exc).__name__)]
    # optional layers: only an error of a module that is loaded can have been raised
    store = sys.modules.get("agenticrs.agents.knowledge.store")
    if store is not None and isinstance(exc, store.KnowledgeStoreError):
        return [one_line(str(exc))]
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is not None and isinstance(exc, sqlalchemy_exc.SQLAlchemyError):
        detail = getattr(exc, "orig", None) or exc
        return [one_line(f"knowledge database error: {detail}")]
    yaml = sys.modules.get("yaml")
    if yaml is not None and isinstance(exc, yaml.YAMLError):
        return [one_line(f"invalid YAML: {exc}")]
    return None


def write_traceback(exc: BaseException) -> Path | None:
    """The full traceback of `exc` in a new file (AGENTICRS_CRASH_DIR or the temp folder); None if unwritable."""
    folder = Path(os.environ.get(CRASH_DIR_ENV) or tempfile.gettempdir())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"agenticrs-error-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt",
                                    dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"agenticrs {' '.join(sys.argv[1:])}\n\n")
            handle.write("".join(traceback.format_exception(exc)))
    except OSError:
        return None
    return Path(name)


def print_error(line: str) -> None:
    err_console.print(styled(("error:", "bold red"), " ", line), soft_wrap=True)


def friendly_errors(fn: F) -> F:
    """The one place that turns an exception into what the user sees; every command is wrapped in it.

    - A known error (see `known_error_lines`: bad input, a missing file, a database fault) prints
      `error: <what is wrong>` (a pydantic validation error: one such line per invalid field) and
      exits with code 2.
    - Any other exception is a bug: it prints one line, `error: unexpected <Type>: <message>`, plus
      the path of a file that holds the full traceback, and exits with code 1, so that scripts
      and the fuzz suite tell bugs (1) from bad input (2). `AGENTICRS_TRACEBACK=1` re-raises it
      instead; `AGENTICRS_CRASH_DIR` chooses the folder of the traceback files.
    - Click's own exits (usage errors, `typer.Exit`, Ctrl-C) pass through unchanged.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PASS_THROUGH:
            raise
        except Exception as exc:
            lines = known_error_lines(exc)
            if lines is not None:
                for line in lines:
                    print_error(line)
                raise typer.Exit(EXIT_USER_ERROR) from None
            if os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0"):
                raise
            where = write_traceback(exc)
            detail = one_line(str(exc), 200)
            message = f"unexpected {type(exc).__name__}" + (f": {detail}" if detail else "")
            message += f" (full traceback: {where})" if where else " (the traceback could not be written)"
            print_error(message)
            raise typer.Exit(EXIT_INTERNAL_ERROR) from None

    wrapper.friendly_errors = True  # type: ignore[attr-defined]
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
