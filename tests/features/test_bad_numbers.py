"""Infinite and overflowing numbers are caught while the data are encoded, with file, row and field.

Before, `inf`, `-inf` and `1e400` in a numeric field went through processing and training ended in
`scores contains NaN` (or a non-finite loss) after a run directory had been created.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agenticrs.data.errors import DataError
from agenticrs.data.spec import DatasetSpec
from agenticrs.features.pipeline import process_dataset

ROWS = 400
BAD_ROW = 250  # 1-based data row: past the first block of the small-block reader


def _csv(path: Path, price: dict[int, str] | None = None, ints: bool = False) -> str:
    lines = ["click,user,price"]
    for row in range(1, ROWS + 1):
        value = (price or {}).get(row, str(row) if ints else f"{row * 0.25:.2f}")
        lines.append(f"{row % 2},u{row % 7},{value}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _spec(train: str, transform: str = "none", valid: str | None = None, block_size: int = 1 << 20) -> DatasetSpec:
    files = {"train": train, **({"valid": valid} if valid else {})}
    return DatasetSpec.from_dict({
        "name": "bad_numbers",
        "files": files,
        "reader": {"block_size": block_size},
        "fields": [
            {"name": "click", "kind": "label"},
            {"name": "user", "kind": "categorical"},
            {"name": "price", "kind": "numeric", "transform": transform},
        ],
    })


def _error(spec: DatasetSpec, cache: Path) -> DataError:
    with pytest.raises(DataError) as info:
        process_dataset(spec, cache)
    published = [p for p in cache.iterdir() if not p.name.startswith(".")] if cache.exists() else []
    assert published == []  # nothing cached that a later run could train on
    return info.value


@pytest.mark.parametrize("transform", ["none", "log1p", "standardize", "quantile"])
@pytest.mark.parametrize("cell", ["inf", "-inf", "1e400", "-1E400", "Infinity"])
def test_infinite_number_names_file_row_and_field(tmp_path: Path, transform: str, cell: str):
    train = _csv(tmp_path / "train.csv", {BAD_ROW: cell})
    error = _error(_spec(train, transform, block_size=1024), tmp_path / "cache")
    assert (error.file, error.row, error.field) == (train, BAD_ROW, "price")
    assert "not a finite number" in str(error) and "\n" not in str(error)


def test_infinite_number_in_another_split_is_caught_too(tmp_path: Path):
    train = _csv(tmp_path / "train.csv")
    valid = _csv(tmp_path / "valid.csv", {7: "inf"})
    error = _error(_spec(train, "standardize", valid), tmp_path / "cache")
    assert (error.file, error.row, error.field) == (valid, 7, "price")


def test_infinite_number_in_a_text_column_after_the_fast_path_fell_back(tmp_path: Path):
    # "n/a" is not a number, so the reader re-reads as text; `inf` comes later as a string
    train = _csv(tmp_path / "train.csv", {3: "", 300: "-inf"})
    spec = _spec(train, "log1p", block_size=1024)
    spec = spec.model_copy(update={"reader": spec.reader.model_copy(update={"null_values": ["", "n/a"]})})
    error = _error(spec, tmp_path / "cache")
    assert (error.row, error.field) == (300, "price")


def test_infinite_number_in_parquet(tmp_path: Path):
    price = np.arange(ROWS, dtype=np.float64)
    price[BAD_ROW - 1] = np.inf
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"click": np.arange(ROWS) % 2, "user": [f"u{i % 5}" for i in range(ROWS)], "price": price}), path)
    spec = _spec(str(path), "standardize")
    spec = spec.model_copy(update={"reader": spec.reader.model_copy(update={"format": "parquet"})})
    error = _error(spec, tmp_path / "cache")
    assert (error.file, error.row, error.field) == (str(path), BAD_ROW, "price")


@pytest.mark.parametrize(("transform", "cell"), [("none", "1e39"), ("none", "-3e300"), ("standardize", "1e200")])
def test_a_finite_number_too_large_for_the_model_is_named(tmp_path: Path, transform: str, cell: str):
    train = _csv(tmp_path / "train.csv", {BAD_ROW: cell})
    error = _error(_spec(train, transform), tmp_path / "cache")
    assert (error.file, error.row, error.field) == (train, BAD_ROW, "price")
    assert "too large" in str(error)


def test_large_numbers_are_fine_under_log1p_and_quantile(tmp_path: Path):
    train = _csv(tmp_path / "train.csv", {BAD_ROW: "1e300", 3: "-1e300"})
    for transform in ("log1p", "quantile"):
        data = process_dataset(_spec(train, transform), tmp_path / "cache")
        split = data.split("train")
        values = np.asarray(split["numeric"] if transform == "log1p" else split["categorical"], dtype=np.float64)
        assert np.isfinite(values).all()


def test_infinite_element_of_a_numeric_sequence_names_its_row(tmp_path: Path):
    lines = ["click,user,times"] + [f"{i % 2},u{i % 3},{i}|{i + 1}" for i in range(1, 21)]
    lines[12] = "1,u1,5|inf|6"  # data row 12
    path = tmp_path / "train.csv"
    path.write_text("\n".join(lines) + "\n")
    spec = DatasetSpec.from_dict({
        "name": "seq",
        "files": {"train": str(path)},
        "fields": [
            {"name": "click", "kind": "label"},
            {"name": "user", "kind": "categorical"},
            {"name": "times", "kind": "sequence", "element": "numeric", "max_len": 3},
        ],
    })
    error = _error(spec, tmp_path / "cache")
    assert (error.row, error.field) == (12, "times")


def test_missing_cells_stay_missing_values(tmp_path: Path):
    train = _csv(tmp_path / "train.csv", {5: "", 6: "NaN", 7: "NA"})
    data = process_dataset(_spec(train, "standardize"), tmp_path / "cache")
    assert data.encoder.numeric["price"].has_missing
    assert np.isfinite(np.asarray(data.split("train")["numeric"])).all()


def test_an_infinite_label_is_still_a_label_error(tmp_path: Path):
    path = tmp_path / "train.csv"
    path.write_text("click,user,price\n0,u1,1\ninf,u2,2\n")
    error = _error(_spec(str(path)), tmp_path / "cache")
    assert (error.row, error.field) == (2, "click") and "not binary" in str(error)


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_a_missing_or_empty_file_of_any_split_is_named_before_processing(tmp_path: Path, problem: str):
    train = _csv(tmp_path / "train.csv")
    valid = tmp_path / "valid.csv"
    if problem == "empty":
        valid.write_text("")
    with pytest.raises(DataError) as info:
        process_dataset(_spec(train, valid=str(valid)), tmp_path / "cache")
    assert info.value.file == str(valid)
    assert ("not found" if problem == "missing" else "empty") in str(info.value)
