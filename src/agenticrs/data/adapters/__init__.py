"""Adapters: standard public layouts of recommendation data -> a `DatasetSpec` the pipeline reads.

Plain CSV/TSV layouts (BARS, Criteo) only get a spec. Other layouts are converted once into
Parquet in a caller-given `out_dir` (`train/valid/test.parquet`) and reused while the marker
`_conversion.json` there holds the fingerprint of the same source files and settings.

API: every adapter takes its source first (a folder, a file, or `{split: files}`), converting
adapters take `out_dir` second, all settings are keyword-only, and all return a `DatasetSpec`.
"""

from __future__ import annotations

from collections.abc import Callable

from agenticrs.data.adapters.avazu import convert_avazu
from agenticrs.data.adapters.bars import bars_spec
from agenticrs.data.adapters.criteo import criteo_spec
from agenticrs.data.adapters.libfm import convert_libfm
from agenticrs.data.adapters.movielens import convert_movielens_atomic, convert_movielens_dat
from agenticrs.data.adapters.s3rec import convert_s3rec, read_s3rec_sequences
from agenticrs.data.adapters.taobao import convert_taobao
from agenticrs.data.spec import DatasetSpec

ADAPTERS: dict[str, Callable[..., DatasetSpec]] = {
    "bars": bars_spec,
    "criteo": criteo_spec,
    "avazu": convert_avazu,
    "libfm": convert_libfm,
    "movielens_atomic": convert_movielens_atomic,
    "movielens_dat": convert_movielens_dat,
    "s3rec": convert_s3rec,
    "taobao": convert_taobao,
}

__all__ = [
    "ADAPTERS",
    "bars_spec",
    "convert_avazu",
    "convert_libfm",
    "convert_movielens_atomic",
    "convert_movielens_dat",
    "convert_s3rec",
    "convert_taobao",
    "criteo_spec",
    "read_s3rec_sequences",
]
