"""`agenticrs datasets`: the registered data sets and whether they are available here."""

from __future__ import annotations

from rich.table import Table

from agenticrs.cli.common import console
from agenticrs.data.registry import DATASETS, data_root


def datasets() -> None:
    """List the registered data sets (and where public data is looked for)."""
    table = Table(title="data sets")
    for column in ("name", "task", "available", "description"):
        table.add_column(column)
    for entry in DATASETS.values():
        if entry.requires is None:
            status = "generated"
        else:
            status = "yes" if entry.available() else f"no ({entry.requires} not found)"
        table.add_row(entry.name, entry.task, status, entry.description)
    console.print(table)
    root = data_root()
    console.print(f"public data root: {root if root else 'not found (set AGENTICRS_DATA_DIR)'}")
    console.print("any dataset-spec YAML file can also be passed as --dataset PATH")
