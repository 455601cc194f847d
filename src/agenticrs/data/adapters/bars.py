"""BARS / FuxiCTR CSV splits.

Layout (BARS benchmark, https://openbenchmark.github.io/BARS/ ; FuxiCTR `data/<name>/`): a folder
holding `train.csv`, `valid.csv` and `test.csv` (each optionally gzipped), comma-separated with a
header row; one label column (`label`, or `clk` / `click` in some releases) with 0/1 values and
one column per feature field. The files are plain CSV, so no conversion is needed: the adapter
only describes them. All features are categorical (BARS stores even numeric-looking fields as
tokens) unless the caller names numeric ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agenticrs.data.adapters._common import PathLike
from agenticrs.data.errors import DataError
from agenticrs.data.readers import read_csv_header
from agenticrs.data.spec import DatasetSpec, FieldSpec, NumericTransform, ReaderOptions

LABEL_CANDIDATES = ("label", "clk", "click")
_SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "validation", "val"), "test": ("test",)}


def find_split_files(folder: PathLike) -> dict[str, str]:
    """`{split: file}` for the train/valid/test CSVs of a BARS folder (train required)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("folder not found", file=str(folder), expected="a folder with train/valid/test CSV files")
    found: dict[str, str] = {}
    for split, stems in _SPLIT_NAMES.items():
        hits = [folder / f"{stem}{ext}" for stem in stems for ext in (".csv", ".csv.gz")]
        hits = [h for h in hits if h.is_file()]
        if len(hits) > 1:
            raise DataError(
                f"several files for split '{split}': {[h.name for h in hits]}",
                file=str(folder),
                expected="exactly one file per split",
            )
        if hits:
            found[split] = str(hits[0])
    if "train" not in found:
        raise DataError("no training file", file=str(folder), expected="train.csv or train.csv.gz")
    return found


def read_header(path: PathLike, delimiter: str = ",") -> list[str]:
    """Column names of a CSV file with a header row."""
    return read_csv_header(path, ReaderOptions(delimiter=delimiter, header=True))


def _default_name(folder: Path) -> str:
    """`frappe_nfm/split` -> `frappe_nfm`: a folder called like a split takes its parent's name."""
    return folder.parent.name if "split" in folder.name else folder.name


def bars_spec(
    source: PathLike,
    *,
    label: str | None = None,
    numeric: Sequence[str] = (),
    numeric_transform: NumericTransform = "none",
    group_key: str | None = None,
    min_count: int = 1,
    name: str | None = None,
) -> DatasetSpec:
    """Describe a BARS/FuxiCTR split folder; every non-label column is categorical unless in `numeric`.

    The headers of all splits are checked here so that a missing column is reported before any
    training starts.
    """
    files = find_split_files(source)
    header = read_header(files["train"])
    if label is None:
        label = next((c for c in LABEL_CANDIDATES if c in header), None)
        if label is None:
            raise DataError(
                f"no label column; the header is {header}",
                file=files["train"],
                field="label",
                expected=f"a column named one of {list(LABEL_CANDIDATES)}",
            )
    needed = [label, *numeric] + ([group_key] if group_key else [])
    for split, path in files.items():
        cols = header if split == "train" else read_header(path)
        missing = [c for c in (needed if split == "train" else header) if c not in cols]
        if missing:
            raise DataError(
                f"missing column(s) {missing}; the file has {cols}",
                file=path,
                field=missing[0],
                expected="the label, every named column, and the train split's columns",
            )
    fields = [FieldSpec(name=label, kind="label")]
    for col in header:
        if col == label:
            continue
        if col in numeric:
            fields.append(FieldSpec(name=col, kind="numeric", transform=numeric_transform))
        else:
            fields.append(FieldSpec(name=col, kind="categorical", min_count=min_count))
    return DatasetSpec(
        name=name or _default_name(Path(source).resolve()),
        files={split: [path] for split, path in files.items()},
        reader=ReaderOptions(format="csv", delimiter=",", header=True),
        fields=fields,
        group_key=group_key,
        description=f"BARS/FuxiCTR CSV splits from {Path(source).resolve()}",
    )
