"""Live progress for long steps (processing, training, evaluation), rendered with rich.

Library code reports through a `Progress`-like object it is given; the default is silent so that
tests and embedding applications stay quiet. The CLI passes a rich one.

Descriptions, status fields and log lines carry text from outside (file paths, field names, data
values); they are rendered as plain text, never parsed as Rich markup or emoji codes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class Task(Protocol):
    def advance(self, amount: float = 1, **fields: object) -> None: ...

    def update(self, **fields: object) -> None: ...


class Reporter(Protocol):
    def task(self, description: str, total: float | None = None) -> contextmanager[Task]: ...

    def log(self, message: str) -> None: ...


class _SilentTask:
    def advance(self, amount: float = 1, **fields: object) -> None:
        pass

    def update(self, **fields: object) -> None:
        pass


class SilentReporter:
    """Reports nothing."""

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Task]:
        yield _SilentTask()

    def log(self, message: str) -> None:
        pass


class _RichTask:
    def __init__(self, progress: Progress, task_id: int) -> None:
        self.progress = progress
        self.task_id = task_id

    def advance(self, amount: float = 1, **fields: object) -> None:
        self.progress.update(self.task_id, advance=amount, **self._status(fields))

    def update(self, **fields: object) -> None:
        kwargs = {k: fields.pop(k) for k in ("total", "completed", "description") if k in fields}
        self.progress.update(self.task_id, **kwargs, **self._status(fields))

    @staticmethod
    def _status(fields: dict) -> dict:
        if not fields:
            return {}
        text = "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        return {"status": text}


class RichReporter:
    """A rich progress bar per step, with live status text (loss, metrics, rows/s)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, markup=False, emoji=False)

    def log(self, message: str) -> None:
        """A line that stays (e.g. an epoch's validation metrics); plain text, whatever it holds."""
        self.console.print(Text(str(message)))

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Task]:
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}", markup=False),
            console=self.console,
            transient=False,
            refresh_per_second=4,
        )
        with progress:
            task_id = progress.add_task(description, total=total, status="")
            yield _RichTask(progress, task_id)


SILENT = SilentReporter()
