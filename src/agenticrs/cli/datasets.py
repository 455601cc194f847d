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

    rows = [(e.name, e.task, _status(e.requires, e.available()), e.description) for e in DATASETS.values()]
    # and the sequence data sets, for `agenticrs train --task sequential`
    rows += [(s.name, s.task, _status(s.requires, s.available()), s.description) for s in SEQUENCE_DATASETS.values()]
    table = Table(title="data sets")
    # names are what one types: never cut or folded (at 80 columns the description wraps instead)
    table.add_column("name", no_wrap=True, min_width=max(len(r[0]) for r in rows))
    table.add_column("task", overflow="fold")
    table.add_column("available", overflow="fold")
    table.add_column("description", ratio=1)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    root = data_root()
    console.print(f"public data root: {root if root else 'not found (set AGENTICRS_DATA_DIR)'}")
    console.print("any dataset-spec YAML file can also be passed as --dataset PATH")
    console.print("'next item (sequences)' data sets are for `agenticrs train --task sequential`")
