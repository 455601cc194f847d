"""`agenticrs models`: the model zoo with papers, needs and defaults."""

from __future__ import annotations

import typer
from rich.table import Table

from agenticrs.cli.common import console
from agenticrs.models.base import list_models, model_class


def models(verbose: bool = typer.Option(False, "--verbose", "-v", help="show every default hyper-parameter")) -> None:
    """List the registered models."""
    table = Table(title="model zoo")
    for column in ("name", "paper", "needs", "defaults" if verbose else "embedding_dim"):
        table.add_column(column, overflow="fold")
    for name in list_models():
        cls = model_class(name)
        needs = "behaviour sequence + target" if cls.inputs.needs_target_sequence else "fields"
        if cls.inputs.request_centric:
            needs += " (request-centric: uses request ids when the data has them)"
        defaults = cls.default_config().model_dump()
        shown = ", ".join(f"{k}={v}" for k, v in defaults.items()) if verbose else str(defaults.get("embedding_dim"))
        table.add_row(name, cls.paper, needs, shown)
    console.print(table)
