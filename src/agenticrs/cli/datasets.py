"""`agenticrs datasets`: the registered data sets (CTR and sequence) and whether they are available here."""

from __future__ import annotations

from rich.table import Table

from agenticrs.cli.common import console, friendly_errors
from agenticrs.data.registry import DATASETS, data_root


def _status(requires: str | None, available: bool) -> str:
    if requires is None:
        return "generated"
    return "yes" if available else f"no ({requires} not found)"


@friendly_errors
def datasets() -> None:
    """List the registered data sets of every kind (and where public data is looked for)."""
    from agenticrs.gr.sequences import SEQUENCE_DATASETS  # the GR layer loads only when asked for

    table = Table(title="data sets")
    for column in ("name", "task", "available", "description"):
        table.add_column(column)
    for entry in DATASETS.values():
        table.add_row(entry.name, entry.task, _status(entry.requires, entry.available()), entry.description)
    for seq in SEQUENCE_DATASETS.values():  # for `agenticrs train --task sequential`
        table.add_row(seq.name, seq.task, _status(seq.requires, seq.available()), seq.description)
    console.print(table)
    root = data_root()
    console.print(f"public data root: {root if root else 'not found (set AGENTICRS_DATA_DIR)'}")
    console.print("any dataset-spec YAML file can also be passed as --dataset PATH")
    console.print("'next item (sequences)' data sets are for `agenticrs train --task sequential`")
