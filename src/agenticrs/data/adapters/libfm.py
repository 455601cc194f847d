"""libFM / SVMlight-style text (as used by NFM, AFM and the Frappe / MovieLens-tag CTR sets).

Layout: one sample per line, `label idx:val idx:val ...`, space-separated, label in {-1, 1} or
{0, 1}. In the multi-field CTR releases every line has the same number of features, one per field
in a fixed order, each a *global* feature index (fields occupy disjoint index ranges) with value 1.
The conversion writes Parquet with `label` (0/1) and columns `f0..f{n-1}` (or caller names) holding
the index as a categorical token. Values are kept in numeric `<field>_value` columns, which the
spec lists only for fields where some value differs from 1. Parsing is vectorised with Arrow
compute over blocks of lines; blank lines are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agenticrs.data.adapters._common import (
    Conversion,
    SplitFiles,
    all_sources,
    first_false,
    iter_lines,
    parse_numbers,
    read_first_line,
    split_files,
)
from agenticrs.data.errors import DataError
from agenticrs.data.spec import DatasetSpec, FieldSpec

VERSION = 1


def _schema(names: list[str]) -> pa.Schema:
    return pa.schema(
        [("label", pa.int8())] + [(n, pa.string()) for n in names] + [(f"{n}_value", pa.float64()) for n in names]
    )


def _convert_block(lines: pa.Array, rows: np.ndarray, names: list[str], file: str) -> tuple[pa.Table, np.ndarray]:
    """One block of lines -> columns; also which fields hold a value other than 1."""
    n = len(names)
    tokens = pc.split_pattern_regex(lines, r"[ \t]+")
    counts = np.asarray(pc.list_value_length(tokens))
    bad = first_false(counts == n + 1)
    if bad is not None:
        raise DataError(
            f"{counts[bad] - 1} features in line {lines[bad].as_py()[:80]!r}",
            file=file,
            row=int(rows[bad]),
            expected=f"a label and {n} idx:val features per line",
        )
    flat = pc.list_flatten(tokens)
    base = np.arange(len(lines), dtype=np.int64) * (n + 1)
    label_raw = flat.take(pa.array(base))
    label_num = parse_numbers(label_raw, pa.float64(), file=file, rows=rows, field="label", expected="-1, 0 or 1")
    bad = first_false(pc.is_in(label_num, value_set=pa.array([-1.0, 0.0, 1.0])))
    if bad is not None:
        raise DataError(
            f"bad label value {label_raw[bad].as_py()!r}", file=file, row=int(rows[bad]), field="label",
            expected="-1, 0 or 1",
        )  # fmt: skip
    columns: dict[str, pa.Array] = {"label": pc.cast(pc.greater(label_num, 0.0), pa.int8())}
    non_unit = np.zeros(n, dtype=bool)
    values: dict[str, pa.Array] = {}
    for j, name in enumerate(names):
        feat = flat.take(pa.array(base + 1 + j))
        parts = pc.split_pattern(feat, ":", max_splits=1)
        ok = pc.equal(pc.list_value_length(parts), 2)
        idx = pc.list_element(pc.if_else(ok, parts, pa.scalar(["", ""], pa.list_(pa.string()))), 0)
        ok = pc.and_(ok, pc.match_substring_regex(idx, r"^[0-9]+$"))
        bad = first_false(ok)
        if bad is not None:
            raise DataError(
                f"bad feature token {feat[bad].as_py()!r}", file=file, row=int(rows[bad]), field=name,
                expected="idx:val with a non-negative integer idx",
            )  # fmt: skip
        val = parse_numbers(
            pc.list_element(parts, 1), pa.float64(), file=file, rows=rows, field=name, expected="idx:val with numeric val"
        )
        columns[name] = idx
        values[f"{name}_value"] = val
        non_unit[j] = bool(pc.any(pc.not_equal(val, 1.0)).as_py())
    columns.update(values)
    return pa.table(columns), non_unit


def convert_libfm(
    files: SplitFiles,
    out_dir: str | Path,
    *,
    num_fields: int | None = None,
    field_names: Sequence[str] | None = None,
    name: str = "libfm",
    block_size: int = 16 << 20,
) -> DatasetSpec:
    """Convert libFM files per split to Parquet; the field count is `num_fields`, the length of
    `field_names`, or else that of the first line of the first train file."""
    paths = split_files(files)
    if field_names is not None:
        names = list(field_names)
        if num_fields is not None and num_fields != len(names):
            raise DataError(f"num_fields={num_fields} but {len(names)} field_names", expected="matching counts")
    else:
        if num_fields is None:
            first = read_first_line(paths["train"][0])
            num_fields = len(first.split()) - 1
            if num_fields < 1:
                raise DataError(
                    f"no features in the first line {first!r}", file=str(paths["train"][0]), row=1,
                    expected="label idx:val ...",
                )  # fmt: skip
        names = [f"f{i}" for i in range(num_fields)]
    if len(set(names)) != len(names) or "label" in names:
        raise DataError(f"field names {names} must be distinct and not 'label'", expected="distinct field names")
    settings = {"adapter": "libfm", "version": VERSION, "fields": names, "name": name}
    conversion = Conversion(out_dir, all_sources(paths), settings)
    if conversion.cached is not None:
        return conversion.cached
    non_unit = np.zeros(len(names), dtype=bool)
    for split, split_paths in paths.items():
        with conversion.split(split, _schema(names), split_paths, "the files hold no rows") as sink:
            for path in split_paths:
                for rows, lines in iter_lines(path, block_size=block_size):
                    table, block_non_unit = _convert_block(lines, rows, names, str(path))
                    non_unit |= block_non_unit
                    sink.write(table)
    fields = [FieldSpec(name="label", kind="label")]
    fields += [FieldSpec(name=n, kind="categorical") for n in names]
    fields += [FieldSpec(name=f"{n}_value", kind="numeric") for n, flag in zip(names, non_unit) if flag]
    return conversion.finish(
        name=name,
        fields=fields,
        description=f"libFM lines converted: label 0/1 and {len(names)} feature-index fields",
    )
