"""Taobao UserBehavior (Alibaba Tianchi data set 649, `UserBehavior.csv`, 2017-11-25 .. 2017-12-03).

Layout: no header, comma-separated `user_id,item_id,category_id,behavior_type,timestamp` with
integer ids, behaviour in {pv, cart, fav, buy} and unix seconds. The conversion makes one sample
per event, with the user's previous events (time order; ties keep file order) as parallel
sequences `hist_item_id` (vocab of `item_id`), `hist_cate_id` (vocab of `cate_id`),
`hist_behavior` (own vocab) and `hist_ts` (numeric), and binary labels `is_buy` / `is_cart` for
the event's own behaviour. Splits are by time: by default the last calendar day (China time) is
test and the day before valid; alternatively the last fractions of events.

`sample="user_item"` (for multi-task conversion models: ESMM, MMoE, PLE) makes one sample per
(user, item) pair instead, at the pair's first event (the user reaching the item's page; its
history: the user's events before it; split by its time), with funnel labels over all of the
pair's events in the log: `is_engage` (carted, favourited or bought), `is_cart` and `is_buy`.
`is_buy` implies `is_engage`, so (`is_engage`, `is_buy`) is a click -> conversion funnel
(`--set model_params.click_label=is_engage`). Ours, not a published protocol: the log has no
impressions, so a page view stands for the exposure and engagement for the click; the labels
look ahead to the log's end (a pair first seen in train may convert on a test day).

The file is read in blocks into compact NumPy columns (ids as int64, behaviour as int8), sorted
once by (user, time), and written chunk by chunk with vectorised history gathering, so memory is
bounded by the compact columns, the sort permutation and one output chunk (roughly 100 bytes per
event: about 10 GB for the full 100M-row file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agenticrs.data.adapters._common import (
    CHUNK_ROWS,
    SPLITS,
    Conversion,
    PathLike,
    as_strings,
    first_false,
    group_positions,
    history_lists,
    iter_csv,
    parse_numbers,
    require_file,
)
from agenticrs.data.errors import DataError
from agenticrs.data.spec import DatasetSpec, FieldSpec

VERSION = 1
COLUMNS = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
BEHAVIORS = ("pv", "cart", "fav", "buy")
SplitBy = Literal["days", "fraction"]
Sample = Literal["event", "user_item"]


def _read(path: Path, block_size: int) -> dict[str, np.ndarray]:
    """The log as compact NumPy columns; a bad id, time or behaviour raises with its row."""
    parts: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}
    behavior_set = pa.array(list(BEHAVIORS))
    for rows, table in iter_csv(path, column_names=list(COLUMNS), block_size=block_size):
        for col in ("user_id", "item_id", "category_id", "timestamp"):
            parsed = parse_numbers(table.column(col), pa.int64(), file=str(path), rows=rows, field=col,
                                   expected="an integer" if col != "timestamp" else "unix seconds")  # fmt: skip
            parts[col].append(np.asarray(parsed))
        raw = table.column("behavior_type").combine_chunks()
        code = pc.index_in(raw, value_set=behavior_set)
        bad = first_false(pc.is_valid(code))
        if bad is not None:
            raise DataError(
                f"unknown behaviour type {raw[bad].as_py()!r}", file=str(path), row=int(rows[bad]),
                field="behavior_type", expected=f"one of {', '.join(BEHAVIORS)}",
            )  # fmt: skip
        parts["behavior_type"].append(np.asarray(code).astype(np.int8))
    return {c: np.concatenate(v) for c, v in parts.items()}


def read_taobao_log(path: PathLike, block_size: int = 16 << 20) -> dict[str, np.ndarray]:
    """The log in file order as NumPy columns (`COLUMNS`; `behavior_type` = index in `BEHAVIORS`)."""
    return _read(require_file(path), block_size)


def _split_masks(
    ts: np.ndarray,
    split_by: SplitBy,
    valid_days: int,
    test_days: int,
    valid_fraction: float,
    test_fraction: float,
    utc_offset_hours: float,
) -> dict[str, np.ndarray]:
    """Boolean masks per split: the last calendar days (local time) or the last fractions of events."""
    if split_by == "days":
        if valid_days < 0 or test_days < 0:
            raise DataError("valid_days and test_days must be >= 0", field="split", expected="day counts")
        day = np.floor_divide(ts + int(utc_offset_hours * 3600), 86_400)
        last = int(day.max())
        test = day > last - test_days
        valid = (day > last - test_days - valid_days) & ~test
    elif split_by == "fraction":
        if valid_fraction < 0 or test_fraction < 0 or valid_fraction + test_fraction >= 1:
            raise DataError("bad split fractions", field="split", expected="valid + test fractions below 1")
        n = len(ts)
        order = np.argsort(ts, kind="stable")
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        n_test = int(round(n * test_fraction))
        n_valid = int(round(n * valid_fraction))
        test = rank >= n - n_test
        valid = (rank >= n - n_test - n_valid) & ~test
    else:
        raise DataError(f"unknown split_by {split_by!r}", field="split_by", expected="'days' or 'fraction'")
    return {"train": ~(test | valid), "valid": valid, "test": test}


def convert_taobao(
    path: PathLike,
    out_dir: PathLike,
    *,
    history_len: int = 50,
    split_by: SplitBy = "days",
    valid_days: int = 1,
    test_days: int = 1,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    utc_offset_hours: float = 8.0,
    name: str = "taobao_userbehavior",
    block_size: int = 16 << 20,
    sample: Sample = "event",
) -> DatasetSpec:
    """Convert a UserBehavior CSV into per-split Parquet files (rows in time order) in `out_dir`:
    one sample per event (`sample="event"`) or per (user, item) pair (`"user_item"`)."""
    path = require_file(path)
    if history_len < 1:
        raise DataError("history_len must be >= 1", field="history_len", expected="a positive length")
    if sample not in ("event", "user_item"):
        raise DataError(f"unknown sample {sample!r}", field="sample", expected="'event' or 'user_item'")
    settings = {
        "adapter": "taobao", "version": VERSION, "history_len": history_len, "split_by": split_by,
        "valid_days": valid_days, "test_days": test_days, "valid_fraction": valid_fraction,
        "test_fraction": test_fraction, "utc_offset_hours": utc_offset_hours, "name": name,
        **({"sample": sample} if sample != "event" else {}),  # event samples keep their earlier cache key
    }  # fmt: skip
    conversion = Conversion(out_dir, [path], settings)
    if conversion.cached is not None:
        return conversion.cached

    log = _read(path, block_size)
    n = len(log["user_id"])
    ts = log["timestamp"]
    order = np.lexsort((np.arange(n), ts, log["user_id"]))  # user, time, file order
    positions = group_positions(log["user_id"][order])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    behavior_names = pa.array(list(BEHAVIORS))
    sorted_item = as_strings(log["item_id"][order])
    sorted_cate = as_strings(log["category_id"][order])
    sorted_beh = behavior_names.take(pa.array(log["behavior_type"][order]))
    sorted_ts = pa.array(ts[order])
    split_settings = (split_by, valid_days, test_days, valid_fraction, test_fraction, utc_offset_hours)
    if sample == "user_item":
        samples, labels = _pair_samples(log, order)
        masks = {}
        for split, mask in _split_masks(ts[samples], *split_settings).items():  # by the samples' times
            masks[split] = np.zeros(n, dtype=bool)
            masks[split][samples[mask]] = True
    else:
        buy, cart, behavior = BEHAVIORS.index("buy"), BEHAVIORS.index("cart"), log["behavior_type"]
        labels = {"is_buy": (behavior == buy).astype(np.int8), "is_cart": (behavior == cart).astype(np.int8)}
        masks = _split_masks(ts, *split_settings)
    time_order = np.argsort(ts, kind="stable")
    label_names = list(labels)
    schema = pa.schema(
        [
            *((label, pa.int8()) for label in label_names), ("user_id", pa.string()), ("item_id", pa.string()),
            ("cate_id", pa.string()), ("timestamp", pa.int64()), ("hist_item_id", pa.list_(pa.string())),
            ("hist_cate_id", pa.list_(pa.string())), ("hist_behavior", pa.list_(pa.string())),
            ("hist_ts", pa.list_(pa.int64())),
        ]
    )  # fmt: skip
    for split in SPLITS:
        rows = time_order[masks[split][time_order]]
        hint = "the log spans too little time for this split (see split_by)"
        with conversion.split(split, schema, path, hint) as sink:
            for start in range(0, len(rows), CHUNK_ROWS):
                r = rows[start : start + CHUNK_ROWS]
                s = rank[r]
                sink.write(
                    pa.table(
                        {
                            **{label: pa.array(values[r]) for label, values in labels.items()},
                            "user_id": as_strings(log["user_id"][r]),
                            "item_id": as_strings(log["item_id"][r]),
                            "cate_id": as_strings(log["category_id"][r]),
                            "timestamp": pa.array(ts[r]),
                            "hist_item_id": history_lists(sorted_item, positions, s, history_len),
                            "hist_cate_id": history_lists(sorted_cate, positions, s, history_len),
                            "hist_behavior": history_lists(sorted_beh, positions, s, history_len),
                            "hist_ts": history_lists(sorted_ts, positions, s, history_len),
                        }
                    )
                )
    seq = {"kind": "sequence", "max_len": history_len}
    return conversion.finish(
        name=name,
        fields=[
            *(FieldSpec(name=label, kind="label") for label in label_names),
            FieldSpec(name="user_id", kind="categorical"),
            FieldSpec(name="item_id", kind="categorical"),
            FieldSpec(name="cate_id", kind="categorical"),
            FieldSpec(name="timestamp", kind="timestamp"),
            FieldSpec(name="hist_item_id", share_vocab_with="item_id", **seq),
            FieldSpec(name="hist_cate_id", share_vocab_with="cate_id", **_parallel(), **seq),
            FieldSpec(name="hist_behavior", **_parallel(), **seq),
            FieldSpec(name="hist_ts", element="numeric", **_parallel(), **seq),
        ],
        group_key="user_id",
        description=f"Taobao UserBehavior {path.name}: one sample per "
        + ("(user, item) pair at its first event" if sample == "user_item" else "event")
        + f", labels {'/'.join(label_names)}, history of the previous {history_len} events",
    )


def _pair_samples(log: dict[str, np.ndarray], order: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The first event of every (user, item) pair (row indices of the log) and, per log row, the
    pair's funnel labels (set on those rows): engaged (cart, fav or buy), carted, bought."""
    user, item = log["user_id"][order], log["item_id"][order]
    offset = int(item.max()) - int(item.min()) + 1
    if int(user.max()) - int(user.min()) < np.iinfo(np.int64).max // offset:
        key = (user - user.min()) * offset + (item - item.min())
        _, first, pair = np.unique(key, return_index=True, return_inverse=True)
    else:  # ids too large for one integer key
        _, first, pair = np.unique(np.stack([user, item], axis=1), axis=0, return_index=True, return_inverse=True)
    pair = pair.reshape(-1)
    behavior = log["behavior_type"][order]
    per_pair = lambda codes: np.bincount(pair, weights=np.isin(behavior, codes), minlength=len(first)) > 0  # noqa: E731
    index = {b: BEHAVIORS.index(b) for b in BEHAVIORS}
    funnel = {
        "is_engage": per_pair([index["cart"], index["fav"], index["buy"]]),
        "is_cart": per_pair([index["cart"]]),
        "is_buy": per_pair([index["buy"]]),
    }
    samples = order[first]  # `order` sorts by (user, time, file order): the first index is the first event
    n = len(order)
    labels = {}
    for name, values in funnel.items():
        labels[name] = np.zeros(n, dtype=np.int8)
        labels[name][samples] = values
    return samples, labels


def _parallel() -> dict[str, str]:
    """`parallel_to=hist_item_id` where the spec supports it (the field is a recent addition)."""
    return {"parallel_to": "hist_item_id"} if "parallel_to" in FieldSpec.model_fields else {}
