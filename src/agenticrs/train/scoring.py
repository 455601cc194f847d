"""Scoring in-memory rows with a saved CTR run: the run's own encoder, no temporary files.

The Python API (`agenticrs.score`), the simulator's `RunPolicy` and (later) the serving layer
score through `Scorer`, so rows are encoded exactly as the run's training data was: columns are
found by name (any order, extra columns ignored), unseen values go to the OOV id, and a bad value
is a `DataError` naming the row and field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from agenticrs.data.readers import Chunk
from agenticrs.features.batching import model_input_keys
from agenticrs.runtime import resolve_device
from agenticrs.train.run import Run, require_ctr_run


def as_arrow(rows: Any) -> pa.Table:
    """An Arrow table from a pandas DataFrame, an Arrow table / record batch, or a mapping of
    column name -> values (a pandas index is dropped: rows are scored in their order)."""
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if type(rows).__module__.startswith("pandas") and hasattr(rows, "columns"):
        return pa.Table.from_pandas(rows, preserve_index=False)
    if isinstance(rows, Mapping):
        return pa.table({  # NaN is missing, as in a DataFrame
            str(k): v if isinstance(v, pa.Array | pa.ChunkedArray) else pa.array(list(v), from_pandas=True)
            for k, v in rows.items()
        })
    raise TypeError(
        f"cannot score a {type(rows).__name__}: give a pandas DataFrame, a pyarrow Table or RecordBatch, "
        "or a dict of column name -> values"
    )


class Scorer:
    """A loaded CTR run that scores tables: click probability (the run's label) per row, in order."""

    def __init__(self, run_dir: str | Path, device: str | None = None, batch_size: int | None = None) -> None:
        require_ctr_run(run_dir, "score")
        run = Run(run_dir)
        self.run_dir = Path(run_dir)
        self.name = self.run_dir.name
        self.encoder = run.encoder
        self.device = resolve_device(device or run.config.train.device)
        self.model = run.load_model(self.device)
        self.batch_size = batch_size or run.config.train.eval_batch_size

    def score(self, rows: Any, source: str = "<rows>") -> np.ndarray:
        """Probabilities (float32) in row order: (N,) for a single-head model, (N, T) for a
        multi-task one (as `predict`). `source` names the rows in error messages."""
        table = as_arrow(rows)
        if table.num_rows == 0:
            return np.zeros(0, np.float32)
        arrays = self.encoder.transform(self.encoder.parse_chunk(Chunk(file=source, first_row=1, table=table)))
        keys = model_input_keys(arrays)
        parts = []
        self.model.eval()
        with torch.no_grad():
            for start in range(0, table.num_rows, self.batch_size):
                part = {
                    k: torch.from_numpy(np.ascontiguousarray(arrays[k][start : start + self.batch_size])).to(self.device)
                    for k in keys
                }
                parts.append(torch.sigmoid(self.model(part)["logit"].float()).cpu().numpy())
        return np.concatenate(parts).astype(np.float32, copy=False)

    __call__ = score
