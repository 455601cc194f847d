"""Avazu click-through-rate CSV (Kaggle "Click-Through Rate Prediction", 2014).

Layout: comma-separated with a header `id,click,hour,C1,banner_pos,site_id,site_domain,
site_category,app_id,app_domain,app_category,device_id,device_ip,device_model,device_type,
device_conn_type,C14,...,C21`; `click` is 0/1 and `hour` is `YYMMDDHH` (UTC, 2014). The raw
`hour` is a near-unique token that does not generalise across days, so the conversion replaces it
with `hour_of_day`, `weekday` (0 = Monday) and `is_weekend`, drops the row `id`, and writes
Parquet block by block (bounded memory, vectorised).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agenticrs.data.adapters._common import Conversion, SplitFiles, all_sources, first_false, iter_csv, split_files
from agenticrs.data.errors import DataError
from agenticrs.data.spec import DatasetSpec, FieldSpec

VERSION = 1
LABEL = "click"
RAW_FEATURES = [
    "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
    "device_id", "device_ip", "device_model", "device_type", "device_conn_type",
    *[f"C{i}" for i in range(14, 22)],
]  # fmt: skip
DERIVED = ["hour_of_day", "weekday", "is_weekend"]
INPUT_COLUMNS = ["id", LABEL, "hour", *RAW_FEATURES]


def _convert_block(table: pa.Table, rows: np.ndarray, file: str) -> pa.Table:
    click = table.column(LABEL).combine_chunks()
    bad = first_false(pc.is_in(click, value_set=pa.array(["0", "1"])))
    if bad is not None:
        raise DataError(
            f"bad label value {click[bad].as_py()!r}", file=file, row=int(rows[bad]), field=LABEL, expected="0 or 1"
        )
    hour = table.column("hour").combine_chunks()
    stamp = pc.strptime(pc.binary_join_element_wise("20", hour, ""), format="%Y%m%d%H", unit="s", error_is_null=True)
    ok = pc.and_(pc.equal(pc.utf8_length(hour), 8), pc.is_valid(stamp))
    bad = first_false(ok)
    if bad is not None:
        raise DataError(
            f"bad hour {hour[bad].as_py()!r}", file=file, row=int(rows[bad]), field="hour", expected="YYMMDDHH"
        )
    weekday = pc.day_of_week(stamp)  # Monday = 0
    columns = {LABEL: pc.cast(click, pa.int8())}
    columns.update({c: table.column(c).combine_chunks() for c in RAW_FEATURES})
    columns["hour_of_day"] = pc.cast(pc.hour(stamp), pa.string())
    columns["weekday"] = pc.cast(weekday, pa.string())
    columns["is_weekend"] = pc.cast(pc.cast(pc.greater_equal(weekday, 5), pa.int8()), pa.string())
    return pa.table(columns)


def _schema() -> pa.Schema:
    return pa.schema([(LABEL, pa.int8())] + [(c, pa.string()) for c in RAW_FEATURES + DERIVED])


def convert_avazu(
    files: SplitFiles,
    out_dir: str | Path,
    *,
    min_count: int = 1,
    name: str = "avazu",
    block_size: int = 16 << 20,
) -> DatasetSpec:
    """Convert Avazu CSV files per split to Parquet (`<split>.parquet` in `out_dir`), reusing a
    finished conversion of the same files and settings."""
    paths = split_files(files)
    settings = {"adapter": "avazu", "version": VERSION, "min_count": min_count, "name": name}
    conversion = Conversion(out_dir, all_sources(paths), settings)
    if conversion.cached is not None:
        return conversion.cached
    for split, split_paths in paths.items():
        with conversion.split(split, _schema(), split_paths, "the files hold no rows") as sink:
            for path in split_paths:
                for rows, table in iter_csv(path, columns=INPUT_COLUMNS, block_size=block_size):
                    sink.write(_convert_block(table, rows, str(path)))
    fields = [FieldSpec(name=LABEL, kind="label")]
    fields += [FieldSpec(name=c, kind="categorical", min_count=min_count) for c in RAW_FEATURES + DERIVED]
    return conversion.finish(
        name=name,
        fields=fields,
        description="Avazu CTR: 21 categorical fields plus hour_of_day/weekday/is_weekend derived from `hour`",
    )
