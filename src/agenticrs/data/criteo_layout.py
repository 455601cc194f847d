"""A generated file in the Criteo layout, for throughput benchmarks and adapter tests.

Criteo's own data cannot be fetched here, but its *shape* is what stresses a CTR pipeline: 39
columns per row, 26 categorical fields whose cardinalities span 4 to ~10^5 with power-law
(Zipf) frequencies, 13 heavy-tailed integer counts with ~20% missing, and hex tokens of 8
characters. The label follows a logistic model of per-value effects, so models have something
real to learn. Generation is vectorised and seeded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from agenticrs.data.adapters.criteo import CATEGORICAL_COLUMNS, NUMERIC_COLUMNS
from agenticrs.runtime.files import atomic_write

# cardinalities of the 26 categorical fields, spread like Criteo's (4 ... ~10^5)
CARDINALITIES = np.unique(np.geomspace(4, 120_000, 26).astype(int)).tolist()
while len(CARDINALITIES) < 26:  # pragma: no cover - geomspace gives 26 distinct values
    CARDINALITIES.append(CARDINALITIES[-1] + 1)


def _zipf_draw(rng: np.random.Generator, cardinality: int, rows: int, exponent: float = 1.1) -> np.ndarray:
    weights = np.arange(1, cardinality + 1, dtype=np.float64) ** -exponent
    cumulative = np.cumsum(weights)
    return np.searchsorted(cumulative, rng.random(rows) * cumulative[-1]).astype(np.int32)


def write_criteo_layout(
    path: str | Path, rows: int, seed: int = 0, world_seed: int = 0, block_rows: int = 250_000
) -> Path:
    """Write `rows` lines of Criteo-layout TSV (no header) to `path`, block by block.

    `world_seed` fixes the vocabularies and the label model (the same across the files of one
    data set); `seed` draws the rows (different per split).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(world_seed)
    vocabularies = []
    effects = []
    for cardinality in CARDINALITIES:
        tokens = rng.integers(0, 2**32, size=cardinality, dtype=np.uint64)
        vocabularies.append(pa.array([f"{t:08x}" for t in tokens.tolist()], pa.string()))
        effects.append(rng.normal(0, 0.6 if cardinality < 1000 else 0.4, size=cardinality))
    numeric_scale = rng.uniform(0.5, 3.0, size=len(NUMERIC_COLUMNS))
    numeric_effect = rng.normal(0, 0.15, size=len(NUMERIC_COLUMNS))
    rng = np.random.default_rng([world_seed, seed, 1])
    options = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    with atomic_write(path) as handle, pacsv.CSVWriter(handle, _schema(), write_options=options) as writer:
        for start in range(0, rows, block_rows):
            n = min(block_rows, rows - start)
            logit = np.full(n, -1.2)
            columns: dict[str, pa.Array] = {}
            for j, name in enumerate(NUMERIC_COLUMNS):
                counts = np.floor(rng.lognormal(numeric_scale[j], 1.2, size=n)).astype(np.int64)
                missing = rng.random(n) < 0.2
                logit += numeric_effect[j] * np.log1p(counts) * ~missing
                columns[name] = pa.array(counts, mask=missing)
            for field, name in enumerate(CATEGORICAL_COLUMNS):
                index = _zipf_draw(rng, CARDINALITIES[field], n)
                logit += effects[field][index]
                missing = rng.random(n) < (0.05 if field % 5 == 0 else 0.0)
                values = pc.take(vocabularies[field], pa.array(index))
                columns[name] = pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), values)
            label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
            table = pa.table({"label": pa.array(label), **columns}, schema=_schema())
            writer.write_table(table)
    return path


def _schema() -> pa.Schema:
    fields = [pa.field("label", pa.int8())]
    fields += [pa.field(c, pa.int64()) for c in NUMERIC_COLUMNS]
    fields += [pa.field(c, pa.string()) for c in CATEGORICAL_COLUMNS]
    return pa.schema(fields)
