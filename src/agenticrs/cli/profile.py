"""`agenticrs profile`: AutoFeature's per-field profile of a data set and its leakage check,
printed and stored in the knowledge layer (one row per data snapshot and label)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from agenticrs.cli.common import console, friendly_errors, reporter, styled
from agenticrs.cli.evolve import DB_OPTION


def profile_table(profile: object) -> Table:
    """One row per field; a flagged field in red with its reason."""
    from agenticrs.agents.autofeature.profile import DatasetProfile

    assert isinstance(profile, DatasetProfile)
    windows = list(profile.settings.get("windows") or [])
    if profile.settings.get("time_field"):
        windows.append("train_late")
    split = profile.settings.get("auc_split", "valid")
    split = split if split in ("valid", "test") else "held-out"  # a data set without later splits
    table = Table(title=f"{profile.dataset}: {len(profile.fields)} fields against '{profile.label}' "
                        f"({profile.rows:,} train rows)")  # fmt: skip
    table.add_column("field", no_wrap=True)
    table.add_column("kind")
    for name in ("cardinality", "coverage", "missing", "MI nats", "NMI", f"AUC {split}"):
        table.add_column(name, justify="right")
    for name in windows:
        table.add_column(f"PSI {name}", justify="right")
    table.add_column("leak", ratio=1)
    for f in profile.fields:
        cells = [f"{f.cardinality:,}", f"{f.coverage:.3f}", f"{f.missing_rate:.3f}", f"{f.mutual_information:.4f}",
                 f"{f.normalised_mi:.3f}", "-" if math.isnan(f.auc) else f"{f.auc:.3f}"]  # fmt: skip
        cells += [f"{f.psi[w]:.3f}" if w in f.psi else "-" for w in windows]
        table.add_row(Text(f.name), Text(f.kind), *(Text(c) for c in cells), Text(f.leak or ""),
                      style="red" if f.leak else None)  # fmt: skip
    return table


@friendly_errors
def profile(
    dataset: str = typer.Option(..., "--dataset", "-d", help="registered data set name or dataset-spec YAML"),
    label: str = typer.Option(None, "--label", help="label to profile against (default: the data set's first)"),
    db: str = DB_OPTION,
    json_path: Path = typer.Option(None, "--json", help="also write the profile as JSON here"),
    max_rows: int = typer.Option(200_000, "--max-rows", min=1, help="rows sampled from each split"),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="processed-data cache (default .cache/agenticrs)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Profile every field of a data set (cardinality, coverage, MI with the label, AUC, drift)
    and flag leaks; the profile is stored in the knowledge layer, and profiling the same data
    again shows the stored one."""
    from agenticrs.agents.autofeature.profile import (
        data_fingerprint,
        profile_dataset,
        record_profile,
        resolve_label,
        stored_profile,
    )
    from agenticrs.agents.knowledge import KnowledgeStore
    from agenticrs.train.workflow import load_data

    data = load_data(dataset, cache_dir, reporter(quiet))
    label_name, _ = resolve_label(data, label)  # a bad --label is an error before the database is touched
    fingerprint = data_fingerprint(data)
    store = KnowledgeStore(db)
    try:
        found = stored_profile(store, fingerprint, label_name, data.spec.name)
        if found is not None:
            row_id, result = found
            note = f"stored profile #{row_id} of this data snapshot (not recomputed; settings: " \
                   f"max_rows={result.settings.get('max_rows')})"
        else:
            result = profile_dataset(data, label_name, max_rows=max_rows)
            row_id = record_profile(store, result, fingerprint)
            note = f"profile #{row_id} stored"
    finally:
        store.close()
    console.print(profile_table(result))
    leaks = result.leaks
    if leaks:
        console.print(styled(("leaks: ", "bold red"), ", ".join(f.name for f in leaks)))
    else:
        console.print("leaks: none flagged")
    console.print(f"{note} in {store.display} (fingerprint {fingerprint})")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"id": row_id, "fingerprint": fingerprint, **result.to_dict()}, indent=1))
        console.print(f"JSON: {json_path}")
