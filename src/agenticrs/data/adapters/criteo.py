"""Criteo display-advertising TSV (Kaggle 2014 challenge `train.txt`, Criteo 1TB day files).

Layout: no header, tab-separated, 40 columns per line: `label` (0/1), `I1`..`I13` integer
counts (may be empty; a few are negative, e.g. I2 >= -3), `C1`..`C26` hashed categorical
tokens (8 hex chars, may be empty). The generic reader reads this directly, so the adapter only
describes it; empty cells become nulls (missing) through the reader's null values.
"""

from __future__ import annotations

from pathlib import Path

from agenticrs.data.adapters._common import SplitFiles, read_first_line, split_files
from agenticrs.data.errors import DataError
from agenticrs.data.spec import DatasetSpec, FieldSpec, NumericTransform, ReaderOptions

NUMERIC_COLUMNS = [f"I{i}" for i in range(1, 14)]
CATEGORICAL_COLUMNS = [f"C{i}" for i in range(1, 27)]
COLUMNS = ["label", *NUMERIC_COLUMNS, *CATEGORICAL_COLUMNS]


def criteo_spec(
    files: SplitFiles,
    *,
    transform: NumericTransform = "log1p",
    min_count: int = 1,
    hash_buckets: int | None = None,
    name: str = "criteo",
) -> DatasetSpec:
    """Describe Criteo TSV files per split; the first line of each file is checked for 40 columns.

    The check catches the common mistake of passing the unlabeled Kaggle `test.txt` (39 columns).
    """
    paths = split_files(files)
    for split_paths in paths.values():
        for path in split_paths:
            line = read_first_line(path)
            n = line.count("\t") + 1
            if n != len(COLUMNS):
                raise DataError(
                    f"{n} tab-separated values in the first line",
                    file=str(path),
                    row=1,
                    expected=f"{len(COLUMNS)} values: label, I1..I13, C1..C26 (the unlabeled test file has 39)",
                )
    fields = [FieldSpec(name="label", kind="label")]
    fields += [FieldSpec(name=c, kind="numeric", transform=transform) for c in NUMERIC_COLUMNS]
    # hash_buckets: each categorical field hashes into N ids (no vocabulary pass; a table of N rows)
    fields += [FieldSpec(name=c, kind="categorical", min_count=min_count, hash_buckets=hash_buckets)
               for c in CATEGORICAL_COLUMNS]
    return DatasetSpec(
        name=name,
        files={split: [str(Path(p).resolve()) for p in ps] for split, ps in paths.items()},
        reader=ReaderOptions(format="csv", delimiter="\t", header=False, column_names=list(COLUMNS)),
        fields=fields,
        description="Criteo TSV: label, 13 integer features (I1..I13), 26 hashed categorical features (C1..C26)",
    )
