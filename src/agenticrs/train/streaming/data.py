"""The input contract of the streaming protocol: any click log with click and conversion times.

Two sources, one result (`ClickLog`):
- a user's CSV or Parquet file with a click-time column (`click_ts`, seconds), a conversion-time
  column (`conversion_ts`; empty / NaN = no conversion) and feature columns. Columns named in
  `categorical` / `numeric` are the features; by default every other column is categorical, except
  Parquet float columns, which are numeric. Optional: a `segment` column (each click's segment,
  reported separately) and an `oracle_prob` column (true probabilities: the ceiling row);
- the simulator, `sim-<preset>` (its `cvr_delayed` clicks, every split in time order): features
  as its spec, click time `ts`, conversion time `purchase_ts`, segments from its calendar
  (ordinary days, the pre-promotion days, the promotion day; `SimConfig.is_pre_promo`,
  `promo_day`) and the ceiling from its true `p_purchase`.

Bad input stops with a `DataError` naming the file, the row (1-based data row) and the field: a
missing click time, a time that is not a number, a conversion before its click.

Features are encoded with the one `FeatureEncoder`, fitted on the pre-training period's clicks
only (ours: what is known when the stream starts; ids first seen later map to OOV).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from agenticrs.data.errors import DataError
from agenticrs.data.readers import Chunk, iter_chunks, require_file
from agenticrs.data.spec import DatasetSpec, FieldSpec, ReaderOptions
from agenticrs.features.encoder import FeatureEncoder, parse_float
from agenticrs.features.schema import FeatureSchema

DAY_S = 86_400.0
CONVERTED = "__converted"  # the encoder's label column (the stream derives its labels from times)
SIM = re.compile(r"^sim-([a-z]+)$")


class StreamInput(BaseModel):
    """Where the clicks come from and which columns mean what."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="sim-<preset> (the simulator's cvr data) or a CSV / Parquet file")
    click_ts: str = Field(default="click_ts", description="click time column (seconds)")
    conversion_ts: str = Field(default="conversion_ts", description="conversion time column; empty / NaN = none")
    categorical: list[str] | None = Field(default=None, description="categorical feature columns (default: inferred)")
    numeric: list[str] | None = Field(default=None, description="numeric feature columns (default: Parquet floats)")
    segment: str | None = Field(default=None, description="optional column naming each click's segment")
    oracle_prob: str | None = Field(default=None, description="optional column of true conversion probabilities")
    sim_seed: int = Field(default=0, ge=0, description="the simulator's seed (sim-<preset> only)")
    exclude: list[str] = Field(
        default_factory=list, description="feature columns left out (e.g. the simulator's behaviour sequences "
        "hist_item_id, hist_cate_l2, hist_type)")


@dataclass
class ClickLog:
    """Clicks in time order: encoded model inputs, times, segments and the oracle's probabilities."""

    arrays: dict[str, np.ndarray]  # model inputs (`categorical`, `numeric`, `seq/...`), one row per click
    click_ts: np.ndarray  # float64 seconds
    conversion_ts: np.ndarray  # float64, NaN = never converts
    segment: np.ndarray | None  # int codes into `segment_names`
    segment_names: list[str]
    oracle_prob: np.ndarray | None
    schema: FeatureSchema
    encoder: FeatureEncoder
    origin: float  # time 0 of the log's calendar (day 0 starts here)
    pretrain_end: float
    end: float  # the end of the log (exclusive)
    description: str

    @property
    def rows(self) -> int:
        return len(self.click_ts)

    @property
    def converted(self) -> np.ndarray:
        return ~np.isnan(self.conversion_ts)


# ------------------------------------------------------------------------------ time checks
def check_times(chunk: Chunk, click_col: str, conversion_col: str) -> tuple[np.ndarray, np.ndarray]:
    """Click and conversion times of a chunk (float64), or a DataError naming the first bad row."""
    for name in (click_col, conversion_col):
        if name not in chunk.table.column_names:
            raise DataError(f"no column '{name}'", file=chunk.file, field=name,
                            expected=f"a column of times (columns: {', '.join(chunk.table.column_names)})")  # fmt: skip
    column = lambda name: chunk.table.column(name).combine_chunks()  # noqa: E731
    click = parse_float(column(click_col), chunk, FieldSpec(name=click_col, kind="timestamp"))
    conversion = parse_float(column(conversion_col), chunk, FieldSpec(name=conversion_col, kind="timestamp"))
    missing = np.flatnonzero(np.isnan(click))
    if len(missing):
        raise DataError("the click time is missing", file=chunk.file, row=chunk.first_row + int(missing[0]),
                        field=click_col, expected="a click time (seconds) on every row")  # fmt: skip
    early = np.flatnonzero(conversion < click)  # NaN compares False
    if len(early):
        i = int(early[0])
        raise DataError(f"the conversion ({conversion[i]:g}) comes before its click ({click[i]:g})",
                        file=chunk.file, row=chunk.first_row + i, field=conversion_col,
                        expected="a conversion time at or after the click time, or an empty cell")  # fmt: skip
    return click, conversion


def _read(path: Path, fmt: str, columns: list[str] | None) -> list[Chunk]:
    options = ReaderOptions(format=fmt)  # type: ignore[arg-type]
    if columns is None:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            columns = pq.ParquetFile(str(path)).schema_arrow.names
        else:
            from agenticrs.data.readers import read_csv_header

            columns = read_csv_header(path, options)
    return list(iter_chunks(path, options, columns))


def _format(path: Path) -> str:
    suffixes = "".join(path.suffixes).lower()
    if ".parquet" in suffixes or suffixes.endswith(".pq"):
        return "parquet"
    if ".csv" in suffixes or ".tsv" in suffixes or ".txt" in suffixes:
        return "csv"
    raise DataError("unknown file format", file=str(path), expected="a .csv or .parquet file")


# ------------------------------------------------------------------------------ loading
def load_clicks(config: StreamInput, pretrain_days: float | None) -> ClickLog:
    """Read, check, order and encode a click log (the simulator's or a file)."""
    match = SIM.match(config.source)
    if match:
        return _simulated(match.group(1), config, pretrain_days)
    return _from_file(config, pretrain_days)


def _without(fields: list[FieldSpec], exclude: list[str], file: str) -> list[FieldSpec]:
    """The feature fields less `exclude`; a kept field tied to an excluded one is refused."""
    names = {f.name for f in fields}
    unknown = sorted(set(exclude) - names)
    if unknown:
        raise DataError(f"cannot exclude {unknown}: not feature fields", file=file,
                        expected=f"some of {', '.join(sorted(names))}")  # fmt: skip
    kept = [f for f in fields if f.name not in exclude]
    for f in kept:
        tied = {getattr(f, "parallel_to", None), getattr(f, "share_vocab_with", None)} & set(exclude)
        if tied:
            raise DataError(f"field '{f.name}' is tied to the excluded {sorted(tied)}", file=file, field=f.name,
                            expected="exclude it too")  # fmt: skip
    return kept


def _encode(spec_fields: list[FieldSpec], table: pa.Table, file: str, pretrain_rows: int) -> tuple[dict, FeatureEncoder]:
    spec = DatasetSpec(name="stream", files={"train": [file]}, fields=[
        *spec_fields, FieldSpec(name=CONVERTED, kind="label")])  # fmt: skip
    encoder = FeatureEncoder(spec)
    if pretrain_rows < 1:
        raise DataError("the pre-training period holds no click", file=file,
                        expected="clicks before the stream starts (lower pretrain_days)")  # fmt: skip
    encoder.fit([Chunk(file, 1, table.slice(0, pretrain_rows))])
    encoded = encoder.transform(Chunk(file, 1, table))
    inputs = ("categorical", "numeric")
    arrays = {k: np.asarray(v) for k, v in encoded.items() if k in inputs or k.startswith(("seq/", "seqlen/"))}
    return arrays, encoder


def _simulated(preset: str, config: StreamInput, pretrain_days: float | None) -> ClickLog:
    from agenticrs.data.cache import default_cache_root
    from agenticrs.data.simulated import simulated_dataset
    from agenticrs.sim.config import sim_preset

    spec = simulated_dataset(preset, "cvr_delayed", default_cache_root(), seed=config.sim_seed)
    sim = sim_preset(preset, seed=config.sim_seed)
    files = [Path(f) for split in ("train", "valid", "test") for f in spec.files.get(split, [])]
    chunks = [c for f in files for c in _read(f, "parquet", None)]
    table = pa.concat_tables([c.table for c in chunks])
    click = np.concatenate([check_times(c, "ts", "purchase_ts")[0] for c in chunks])
    conversion = np.concatenate([check_times(c, "ts", "purchase_ts")[1] for c in chunks])
    order = np.argsort(click, kind="stable")
    table, click, conversion = table.take(pa.array(order)), click[order], conversion[order]
    days = pretrain_days if pretrain_days is not None else float(sim.promo_day - sim.pre_promo_days)
    pretrain_end = days * DAY_S
    n = int(np.searchsorted(click, pretrain_end, side="left"))
    table = table.append_column(CONVERTED, pa.array((~np.isnan(conversion)).astype(np.int8)))
    fields = [f for f in spec.fields if f.kind in ("categorical", "numeric", "sequence")]
    fields = _without(fields, config.exclude, spec.files["train"][0])
    arrays, encoder = _encode(fields, table, spec.files["train"][0], n)
    day = np.floor(click / DAY_S).astype(np.int64)
    segment = np.where(day == sim.promo_day, 2, np.where(sim.is_pre_promo(day), 1, 0)).astype(np.int8)
    return ClickLog(
        arrays=arrays, click_ts=click, conversion_ts=conversion, segment=segment,
        segment_names=["ordinary", "pre_promo", "promo"],
        oracle_prob=table.column("p_purchase").to_numpy().astype(np.float64), schema=encoder.schema(),
        encoder=encoder, origin=0.0, pretrain_end=pretrain_end, end=float(sim.n_days) * DAY_S,
        description=f"simulator '{preset}' (seed {config.sim_seed}), {len(click):,} clicks over {sim.n_days} days",
    )  # fmt: skip


def _from_file(config: StreamInput, pretrain_days: float | None) -> ClickLog:
    path = require_file(config.source)
    fmt = _format(path)
    chunks = _read(path, fmt, None)
    if not chunks:
        raise DataError("no data rows", file=str(path), expected="at least one click")
    times = [check_times(c, config.click_ts, config.conversion_ts) for c in chunks]
    table = pa.concat_tables([c.table for c in chunks])
    click = np.concatenate([t[0] for t in times])
    conversion = np.concatenate([t[1] for t in times])
    reserved = {config.click_ts, config.conversion_ts, config.segment, config.oracle_prob} - {None}
    for name in [*(config.categorical or []), *(config.numeric or []), *(reserved - {config.click_ts, config.conversion_ts})]:
        if name not in table.column_names:
            raise DataError(f"no column '{name}'", file=str(path), field=name,
                            expected=f"one of the file's columns ({', '.join(table.column_names)})")  # fmt: skip
    oracle = None
    if config.oracle_prob:
        oracle = parse_float(table.column(config.oracle_prob).combine_chunks(), Chunk(str(path), 1, table),
                             FieldSpec(name=config.oracle_prob, kind="numeric"))  # fmt: skip
        bad = np.flatnonzero(~((oracle >= 0) & (oracle <= 1)))
        if len(bad):
            raise DataError(f"{oracle[bad[0]]!r} is not a probability", file=str(path), row=int(bad[0]) + 1,
                            field=config.oracle_prob, expected="a number in [0, 1]")  # fmt: skip
    order = np.argsort(click, kind="stable")
    table, click, conversion = table.take(pa.array(order)), click[order], conversion[order]
    oracle = oracle[order] if oracle is not None else None
    others = [c for c in table.column_names if c not in reserved and c not in config.exclude]
    floats = {c for c in others if pa.types.is_floating(table.column(c).type)}
    numeric = list(config.numeric) if config.numeric is not None else [
        c for c in others if c in floats and c not in (config.categorical or [])]
    categorical = list(config.categorical) if config.categorical is not None else [c for c in others if c not in numeric]
    if not categorical:
        raise DataError("no categorical feature column", file=str(path),
                        expected="at least one categorical column besides the times (models embed categories)")  # fmt: skip
    origin = float(np.floor(click[0] / DAY_S) * DAY_S)
    end = float(click[-1]) + 1.0
    days = pretrain_days if pretrain_days is not None else max(np.floor((end - origin) / DAY_S / 2), 1.0)
    pretrain_end = origin + days * DAY_S
    n = int(np.searchsorted(click, pretrain_end, side="left"))
    table = table.append_column(CONVERTED, pa.array((~np.isnan(conversion)).astype(np.int8)))
    fields = [FieldSpec(name=c, kind="categorical") for c in categorical]
    fields += [FieldSpec(name=c, kind="numeric", transform="standardize") for c in numeric]
    arrays, encoder = _encode(fields, table, str(path), n)
    segment, names = None, []
    if config.segment:
        values = pc.cast(table.column(config.segment), pa.string()).combine_chunks()
        names = sorted({v for v in values.to_pylist() if v is not None})
        codes = pc.index_in(values, value_set=pa.array(names, pa.string())).to_numpy(zero_copy_only=False)
        segment = np.nan_to_num(codes.astype(np.float64), nan=-1).astype(np.int64)
    return ClickLog(
        arrays=arrays, click_ts=click, conversion_ts=conversion, segment=segment, segment_names=names,
        oracle_prob=oracle, schema=encoder.schema(), encoder=encoder, origin=origin, pretrain_end=pretrain_end,
        end=end, description=f"{path.name}: {len(click):,} clicks",
    )  # fmt: skip
