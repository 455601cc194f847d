"""User item sequences for sequential / generative recommenders: loaders, leave-one-out, batches.

Loaders return `SequenceData` (see `agenticrs.gr.base`): the S3-Rec releases (Amazon Beauty /
Sports, Yelp), MovieLens-100K (GroupLens `u.data`/`u.item` or the RecBole atomic copy) and the
simulator's click sequences. `resolve_sequences(name)` finds a data set registered in
`SEQUENCE_DATASETS` (an `agenticrs.runtime.Registry`, listed by `agenticrs datasets`) under the data
root (`agenticrs.data.registry.data_root`) or generates the simulator's.

The protocol is leave-one-out (`leave_one_out`): per user the last item is the test target, the
second-to-last the validation target, the rest trains. Everything here is vectorised over the
flattened CSR arrays: no per-user Python on the paths that run every epoch.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from agenticrs.data.adapters._common import iter_csv, parse_numbers, split_tokens
from agenticrs.data.adapters.movielens import find_atomic_files
from agenticrs.data.adapters.s3rec import read_s3rec_sequences
from agenticrs.data.errors import DataError
from agenticrs.gr.base import CART, CLICK, EVENT_FIELDS, FAV, PAD, PURCHASE, SeqBatch, SequenceData
from agenticrs.runtime.registry import Registry

PathLike = str | Path
ExampleMode = Literal["sequence", "prefixes"]

# ML-100K `u.genre` order (the 19 flags of `u.item`), used when the folder has no `u.genre`
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


# --- small helpers -----------------------------------------------------------------------------
def _first_existing(folder: Path, names: list[str], what: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{what} not found", file=str(folder / names[0]), expected=" or ".join(names))


def _csr_from_lengths(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _check_items(items: np.ndarray, num_items: int, users: np.ndarray, offsets: np.ndarray, file: str) -> None:
    """Items must lie in 1..num_items (0 is padding); a bad one is reported with its user."""
    bad = np.flatnonzero((items < 1) | (items > num_items))
    if len(bad):
        user = users[np.searchsorted(offsets, bad[0], side="right") - 1]
        raise DataError(
            f"item id {int(items[bad[0]])} of user {int(user)} is out of range", file=file, field="item_id",
            expected=f"item ids 1..{num_items} (0 is reserved for padding)",
        )  # fmt: skip


def _item_text(ids: np.ndarray, texts: pa.Array) -> dict[int, str]:
    return dict(zip(ids.tolist(), texts.to_pylist(), strict=True))


# --- S3-Rec -----------------------------------------------------------------------------------
def _read_attributes(path: Path, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """`{item_id: [attribute_id, ...]}` JSON as a CSR over item ids 0..num_items (missing = empty bag)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf8") as handle:
            bags = json.load(handle)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read JSON ({exc})", file=str(path), expected="{item_id: [attribute ids]}") from None
    if not isinstance(bags, dict):
        raise DataError("not a JSON object", file=str(path), expected="{item_id: [attribute ids]}")
    try:
        keys = np.fromiter(map(int, bags), dtype=np.int64, count=len(bags))
        lengths = np.fromiter(map(len, bags.values()), dtype=np.int64, count=len(bags))
        values = np.fromiter(itertools.chain.from_iterable(bags.values()), dtype=np.int64, count=int(lengths.sum()))
    except (TypeError, ValueError) as exc:
        raise DataError(f"non-integer id ({exc})", file=str(path), expected="integer item and attribute ids") from None
    bad = np.flatnonzero((keys < 1) | (keys > num_items))
    if len(bad):
        raise DataError(f"item id {int(keys[bad[0]])} is out of range", file=str(path), field="item_id",
                        expected=f"ids 1..{num_items}, the items of the sequence file")  # fmt: skip
    order = np.argsort(keys, kind="stable")
    starts = _csr_from_lengths(lengths)[:-1][order]
    counts = np.zeros(num_items + 1, dtype=np.int64)
    counts[keys[order]] = lengths[order]
    offsets = _csr_from_lengths(counts)
    n = lengths[order]
    take = np.repeat(starts - _csr_from_lengths(n)[:-1], n) + np.arange(int(n.sum()))
    return offsets, values[take]


def load_s3rec(name: str, folder: PathLike, dataset_name: str | None = None) -> SequenceData:
    """`<folder>/<name>.txt[.gz]` sequences and `<name>_item2attributes.json[.gz]` attribute bags (optional).

    Item ids are used as they are (S3-Rec's are contiguous 1..I), `num_items` is the largest one.
    The S3-Rec releases carry no item text, so `item_text` stays empty.
    """
    folder = Path(folder)
    path = _first_existing(folder, [f"{name}.txt.gz", f"{name}.txt"], "S3-Rec sequence file")
    users_arr, seqs = read_s3rec_sequences(path)
    users = np.asarray(users_arr, dtype=np.int64)
    offsets = np.asarray(seqs.offsets, dtype=np.int64)
    items = np.asarray(seqs.values, dtype=np.int64)
    num_items = int(items.max())
    _check_items(items, num_items, users, offsets, str(path))
    attr_offsets = attributes = None
    for candidate in (f"{name}_item2attributes.json.gz", f"{name}_item2attributes.json"):
        if (folder / candidate).is_file():
            attr_offsets, attributes = _read_attributes(folder / candidate, num_items)
            break
    return SequenceData(
        name=dataset_name or name, num_items=num_items, users=users, offsets=offsets, items=items,
        attribute_offsets=attr_offsets, attributes=attributes,
    )  # fmt: skip


# --- MovieLens-100K ---------------------------------------------------------------------------
def _read_table(path: Path, names: list[str] | None, delimiter: str, encoding: str = "utf8") -> tuple[pa.Table, np.ndarray]:
    blocks, rows = [], []
    for r, table in iter_csv(path, column_names=names, delimiter=delimiter, quote_char=False, encoding=encoding):
        blocks.append(table)
        rows.append(r)
    return pa.concat_tables(blocks), np.concatenate(rows)


def _numbers(table: pa.Table, column: str, rows: np.ndarray, path: Path, to: pa.DataType) -> np.ndarray:
    if column not in table.column_names:
        raise DataError(f"no column '{column}' (columns: {table.column_names})", file=str(path), field=column,
                        expected=f"a '{column}' column")  # fmt: skip
    values = parse_numbers(table.column(column), to, file=str(path), rows=rows, field=column,
                           expected="a number")  # fmt: skip
    return np.asarray(values)


def _ml_grouplens(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, pa.Array]:
    """(user, item, timestamp, item ids, item texts) from `u.data` / `u.item`."""
    data_path = folder / "u.data"
    t, rows = _read_table(data_path, ["user_id", "item_id", "rating", "timestamp"], "\t")
    user = _numbers(t, "user_id", rows, data_path, pa.int64())
    item = _numbers(t, "item_id", rows, data_path, pa.int64())
    stamp = _numbers(t, "timestamp", rows, data_path, pa.int64())
    item_path = folder / "u.item"
    flags = [f"g{i}" for i in range(19)]
    m, mrows = _read_table(item_path, ["item_id", "title", "release", "video", "url", *flags], "|", "latin-1")
    ids = _numbers(m, "item_id", mrows, item_path, pa.int64())
    genre_path = folder / "u.genre"
    genres = ML100K_GENRES
    if genre_path.is_file():
        g, grows = _read_table(genre_path, ["name", "index"], "|", "latin-1")
        index = _numbers(g, "index", grows, genre_path, pa.int64())
        genres = tuple(np.asarray(g.column("name").to_pylist(), dtype=object)[np.argsort(index)])
    on = np.stack([_numbers(m, f, mrows, item_path, pa.int8()) for f in flags[: len(genres)]], axis=1).astype(bool)
    names = pa.array(np.asarray(genres, dtype=object)[np.nonzero(on)[1]].tolist(), pa.string())
    genre_lists = pa.ListArray.from_arrays(pa.array(_csr_from_lengths(on.sum(1)).astype(np.int32)), names)
    title = pc.utf8_trim_whitespace(m.column("title").combine_chunks())
    return user, item, stamp, ids, _join_text(title, genre_lists)


def _ml_atomic(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, pa.Array]:
    """The same from RecBole atomic files (`*.inter`, `*.item`; titles without year, `class` genres)."""
    files = find_atomic_files(folder)
    t, rows = _read_table(files["inter"], None, "\t")
    t = t.rename_columns([c.split(":")[0] for c in t.column_names])
    user = _numbers(t, "user_id", rows, files["inter"], pa.int64())
    item = _numbers(t, "item_id", rows, files["inter"], pa.int64())
    stamp = _numbers(t, "timestamp", rows, files["inter"], pa.float64()).astype(np.int64)
    if "item" not in files:
        return user, item, stamp, np.zeros(0, np.int64), pa.array([], pa.string())
    m, mrows = _read_table(files["item"], None, "\t")
    m = m.rename_columns([c.split(":")[0] for c in m.column_names])
    ids = _numbers(m, "item_id", mrows, files["item"], pa.int64())
    if "movie_title" not in m.column_names:
        raise DataError("no column 'movie_title'", file=str(files["item"]), field="movie_title",
                        expected="RecBole ML-100K item columns item_id, movie_title, release_year, class")  # fmt: skip
    title = pc.utf8_trim_whitespace(m.column("movie_title").combine_chunks())
    if "release_year" in m.column_names:
        year = m.column("release_year").combine_chunks()
        with_year = pc.binary_join_element_wise(title, pc.binary_join_element_wise("(", year, ")", ""), " ")
        title = pc.if_else(pc.fill_null(pc.greater(pc.utf8_length(year), 0), False), with_year, title)
    genre_col = m.column("class").combine_chunks() if "class" in m.column_names else pa.nulls(len(ids), pa.string())
    return user, item, stamp, ids, _join_text(title, split_tokens(genre_col, " "))


def _join_text(title: pa.Array, genres: pa.ListArray) -> pa.Array:
    """'Title (year). Genres: A, B.' - the same text from either MovieLens layout."""
    joined = pc.binary_join(genres, ", ")
    with_genres = pc.binary_join_element_wise(title, ". Genres: ", joined, ".", "")
    has = pc.greater(pc.list_value_length(genres), 0)
    return pc.if_else(has, with_genres, title)


def load_movielens_sequences(folder: PathLike, name: str = "movielens_100k") -> SequenceData:
    """ML-100K ratings as chronological sequences (GroupLens `u.data` + `u.item`, or RecBole atomic files).

    Every rating counts as an interaction, whatever its value (the usual implicit-feedback reading
    in sequential-recommendation papers). Per user, ratings are ordered by timestamp, ties by
    (original) item id. Items are remapped to 1..I contiguous in order of their original ids, over
    the rated items; item text is 'Title (year). Genres: ...' from `u.item` (or the atomic `.item`).
    """
    folder = Path(folder)
    if (folder / "u.data").is_file():
        user, item, stamp, ids, texts = _ml_grouplens(folder)
    elif folder.is_dir():
        user, item, stamp, ids, texts = _ml_atomic(folder)
    else:
        raise DataError("folder not found", file=str(folder), expected="u.data + u.item, or ml-100k.inter/.item")
    catalogue, item_code = np.unique(item, return_inverse=True)
    order = np.lexsort((item, stamp, user))
    user_ids, counts = np.unique(user[order], return_counts=True)
    known = np.isin(ids, catalogue)  # items nobody rated have no id in 1..I
    text = _item_text(np.searchsorted(catalogue, ids[known]) + 1, texts.filter(pa.array(known)))
    return SequenceData(
        name=name, num_items=len(catalogue), users=user_ids.astype(np.int64), offsets=_csr_from_lengths(counts),
        items=(item_code[order] + 1).astype(np.int64), item_text=text,
    )  # fmt: skip


# --- simulator --------------------------------------------------------------------------------
def _sim_items(out_dir: Path) -> tuple[int, dict[int, str], np.ndarray, np.ndarray]:
    """(num_items, item text, attribute CSR offsets, attribute ids) of a simulator output folder."""
    items_path = out_dir / "items.parquet"
    if not items_path.is_file():
        raise DataError("file not found", file=str(items_path), expected="a simulator output folder")
    table = pq.read_table(str(items_path), columns=["item_id", "title", "cate_l1", "cate_l2", "brand",
                                                     "cate_l1_name", "cate_l2_name"])  # fmt: skip
    ids = table.column("item_id").to_numpy().astype(np.int64)
    num_items = int(ids.max())
    if not np.array_equal(np.sort(ids), np.arange(1, num_items + 1)):
        raise DataError("item ids are not 1..n", file=str(items_path), field="item_id", expected="contiguous ids")
    text = pc.binary_join_element_wise(table.column("title").combine_chunks(), ". Category: ",
                                       table.column("cate_l1_name").combine_chunks(), " > ",
                                       table.column("cate_l2_name").combine_chunks(), "")  # fmt: skip
    cols = [table.column(c).to_numpy().astype(np.int64) for c in ("cate_l1", "cate_l2", "brand")]
    shift = np.cumsum([0] + [int(c.max()) for c in cols[:-1]])
    bags = np.zeros((num_items + 1, 3), dtype=np.int64)
    bags[ids] = np.stack([c + s for c, s in zip(cols, shift, strict=True)], axis=1)
    attr_offsets = np.r_[0, 0, 3 * np.arange(1, num_items + 1)].astype(np.int64)
    return num_items, _item_text(ids, text), attr_offsets, bags[1:].reshape(-1)


def load_sim_sequences(out_dir: PathLike, name: str = "sim") -> SequenceData:
    """The simulator's click sequences (`sequences.txt`, S3-Rec format) and its `items.parquet`.

    `num_items` is the whole catalogue (items never clicked included); item text is the title
    plus the category path; attribute bags are (cate_l1, cate_l2, brand) in one id space
    (cate_l1 first, then cate_l2 and brand shifted past the previous vocabularies).
    """
    out_dir = Path(out_dir)
    num_items, text, attr_offsets, attributes = _sim_items(out_dir)
    path = out_dir / "sequences.txt"
    users_arr, seqs = read_s3rec_sequences(path)
    users = np.asarray(users_arr, dtype=np.int64)
    offsets = np.asarray(seqs.offsets, dtype=np.int64)
    items = np.asarray(seqs.values, dtype=np.int64)
    _check_items(items, num_items, users, offsets, str(path))
    return SequenceData(
        name=name, num_items=num_items, users=users, offsets=offsets, items=items,
        item_text=text, attribute_offsets=attr_offsets, attributes=attributes,
    )  # fmt: skip


def _grouped(user: np.ndarray, item: np.ndarray, behaviour: np.ndarray, ts: np.ndarray, min_length: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Events sorted by user (then as given) -> (users, offsets, items, behaviours, timestamps) of
    the users with at least `min_length` events."""
    if len(user) == 0:
        empty = np.zeros(0, np.int64)
        return empty, np.zeros(1, np.int64), empty, empty, empty
    users, counts = np.unique(user, return_counts=True)
    keep = counts >= min_length
    rows = np.repeat(keep, counts)
    return (users[keep].astype(np.int64), _csr_from_lengths(counts[keep]), item[rows].astype(np.int64),
            behaviour[rows].astype(np.int64), ts[rows].astype(np.int64))  # fmt: skip


# the simulator's behaviour codes (`agenticrs.sim.world`: click 1, cart 2, purchase 3) -> ours
_SIM_BEHAVIOURS = np.array([0, CLICK, CART, PURCHASE], dtype=np.int64)


def load_sim_behaviour_sequences(out_dir: PathLike, name: str = "sim-behaviours", min_length: int = 3) -> SequenceData:
    """Every behaviour of the simulator (`events.parquet`: clicks, carts and purchases, in time
    order per user) as multi-behaviour sequences, with the items of `load_sim_sequences`. A
    purchase or cart repeats the item of the click it follows (its own event, at its own time)."""
    out_dir = Path(out_dir)
    num_items, text, attr_offsets, attributes = _sim_items(out_dir)
    path = out_dir / "events.parquet"
    if not path.is_file():
        raise DataError("file not found", file=str(path), expected="a simulator output folder with events.parquet")
    events = pq.read_table(str(path), columns=["user_id", "item_id", "behaviour", "ts"])
    user = events.column("user_id").to_numpy().astype(np.int64)
    item = events.column("item_id").to_numpy().astype(np.int64)
    kind = events.column("behaviour").to_numpy().astype(np.int64)
    ts = events.column("ts").to_numpy().astype(np.int64)
    if len(kind) and (kind.min() < 1 or kind.max() > 3):
        raise DataError("unknown behaviour code", file=str(path), field="behaviour", expected="1 click, 2 cart, 3 purchase")
    order = np.lexsort((ts, user))
    users, offsets, items, behaviours, stamps = _grouped(user[order], item[order], _SIM_BEHAVIOURS[kind[order]],
                                                         ts[order], min_length)  # fmt: skip
    _check_items(items, num_items, users, offsets, str(path))
    return SequenceData(
        name=name, num_items=num_items, users=users, offsets=offsets, items=items, item_text=text,
        attribute_offsets=attr_offsets, attributes=attributes, behaviours=behaviours, timestamps=stamps,
    )  # fmt: skip


# Taobao UserBehavior behaviour names (`agenticrs.data.adapters.taobao.BEHAVIORS` order) -> ours
_TAOBAO_BEHAVIOURS = np.array([CLICK, CART, FAV, PURCHASE], dtype=np.int64)  # pv, cart, fav, buy


def load_taobao_sequences(folder: PathLike, name: str = "taobao_userbehavior", min_length: int = 3) -> SequenceData:
    """Taobao UserBehavior (`UserBehavior*.csv`: user, item, category, pv|cart|fav|buy, unix time)
    as multi-behaviour sequences: a page view is a click. Per user, events in time order (ties in
    file order); items remapped to 1..I in order of their original ids; each item's attribute bag
    is its category (the file's category ids remapped to 0..C-1), so the tokenizer reads
    `source=attributes`. The log has no item text."""
    from agenticrs.data.adapters.taobao import read_taobao_log

    folder = Path(folder)
    path = folder if folder.is_file() else _first_existing(
        folder, sorted(p.name for p in folder.glob("UserBehavior*.csv")) or ["UserBehavior.csv"], "Taobao UserBehavior log")
    log = read_taobao_log(path)
    catalogue, item_code = np.unique(log["item_id"], return_inverse=True)
    order = np.lexsort((np.arange(len(item_code)), log["timestamp"], log["user_id"]))
    users, offsets, items, behaviours, stamps = _grouped(
        log["user_id"][order], item_code[order] + 1, _TAOBAO_BEHAVIOURS[log["behavior_type"][order]],
        log["timestamp"][order], min_length)  # fmt: skip
    num_items = len(catalogue)
    category = np.zeros(num_items + 1, dtype=np.int64)
    category[item_code + 1] = log["category_id"]
    _, category[1:] = np.unique(category[1:], return_inverse=True)
    return SequenceData(
        name=name, num_items=num_items, users=users, offsets=offsets, items=items, behaviours=behaviours,
        timestamps=stamps, attribute_offsets=np.r_[0, np.arange(num_items + 1)].astype(np.int64),
        attributes=category[1:],
    )  # fmt: skip


# --- registry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SequenceDatasetEntry:
    name: str
    description: str
    load: Callable[[Path], SequenceData]  # cache dir -> data
    requires: str | None = None  # folder under the data root; None: generated
    task: str = "next item (sequences)"  # what `agenticrs datasets` shows beside the CTR data sets

    def location(self) -> Path | None:
        from agenticrs.data.registry import data_root

        root = data_root()
        return root / self.requires if root is not None and self.requires is not None else None

    def available(self) -> bool:
        if self.requires is None:
            return True
        location = self.location()
        return location is not None and location.is_dir()


def _public(folder: str, name: str, read: Callable[[Path], SequenceData]) -> Callable[[Path], SequenceData]:
    def load(cache_dir: Path) -> SequenceData:
        from agenticrs.data.registry import data_root

        root = data_root()
        if root is None or not (root / folder).is_dir():
            where = str(root / folder) if root is not None else f"<data root>/{folder}"
            raise DataError(
                f"sequence data set '{name}' needs the folder {where}, which was not found", file=where,
                expected="AGENTICRS_DATA_DIR pointing at the folder of public data sets (../shared/data)",
            )  # fmt: skip
        return read(root / folder)

    return load


def _simulated(preset: str) -> Callable[[Path], SequenceData]:
    def load(cache_dir: Path) -> SequenceData:
        from agenticrs.data.simulated import simulated_dataset

        spec = simulated_dataset(preset, "sequential", cache_dir)
        # the sequential task's Parquet lives in <out_dir>/sequential/; the raw files in <out_dir>
        out_dir = Path(spec.files["train"][0]).parent.parent
        return load_sim_sequences(out_dir, name=f"sim-{preset}")

    return load


def _simulated_behaviours(preset: str) -> Callable[[Path], SequenceData]:
    def load(cache_dir: Path) -> SequenceData:
        from agenticrs.data.simulated import simulated_dataset

        spec = simulated_dataset(preset, "sequential", cache_dir)
        out_dir = Path(spec.files["train"][0]).parent.parent
        return load_sim_behaviour_sequences(out_dir, name=f"sim-{preset}-behaviours")

    return load


def _sim_entries() -> list[SequenceDatasetEntry]:
    from agenticrs.sim.config import PRESETS

    return [
        *(SequenceDatasetEntry(f"sim-{p}", f"simulator preset '{p}': click sequences, titles, categories",
                               _simulated(p)) for p in PRESETS),
        *(SequenceDatasetEntry(f"sim-{p}-behaviours", f"simulator preset '{p}': click, cart and purchase sequences",
                               _simulated_behaviours(p), task="next item (multi-behaviour sequences)")
          for p in PRESETS),
    ]  # fmt: skip


SEQUENCE_DATASETS: Registry[SequenceDatasetEntry] = Registry("sequence data set")


def register_sequences(entry: SequenceDatasetEntry) -> SequenceDatasetEntry:
    """Make a sequence data set available by its name (to `resolve_sequences` and `agenticrs datasets`)."""
    return SEQUENCE_DATASETS.register(entry.name, entry)


for _entry in [
    SequenceDatasetEntry(
        "amazon_beauty", "Amazon 2014 Beauty 5-core (S3-Rec): 22,363 users, 12,101 items",
        _public("amazon_beauty", "amazon_beauty", lambda f: load_s3rec("Beauty", f, "amazon_beauty")),
        requires="amazon_beauty",
    ),
    SequenceDatasetEntry(
        "amazon_sports", "Amazon 2014 Sports and Outdoors 5-core (S3-Rec): 35,598 users, 18,357 items",
        _public("amazon_sports", "amazon_sports", lambda f: load_s3rec("Sports_and_Outdoors", f, "amazon_sports")),
        requires="amazon_sports",
    ),
    SequenceDatasetEntry(
        "yelp", "Yelp 5-core (S3-Rec): 30,431 users, 20,033 items",
        _public("yelp", "yelp", lambda f: load_s3rec("Yelp", f, "yelp")), requires="yelp",
    ),
    SequenceDatasetEntry(
        "taobao_userbehavior_sample", "Taobao UserBehavior rows (a 4,321-row real sample): pv/cart/fav/buy sequences",
        _public("taobao_userbehavior_sample", "taobao_userbehavior_sample",
                lambda f: load_taobao_sequences(f, "taobao_userbehavior_sample")),
        requires="taobao_userbehavior_sample", task="next item (multi-behaviour sequences)",
    ),
    SequenceDatasetEntry(
        "movielens_100k", "MovieLens-100K, every rating an interaction, titles + genres as item text",
        _public("movielens_100k", "movielens_100k", load_movielens_sequences), requires="movielens_100k",
    ),
    *_sim_entries(),
]:  # fmt: skip
    register_sequences(_entry)


def resolve_sequences(name: str, cache_dir: PathLike | None = None) -> SequenceData:
    """A registered sequence data set by name (real data from the data root; `sim-*` generated into the
    cache), or the click sequences of a simulator output folder given by its path (or a spec in it)."""
    from agenticrs.data.cache import default_cache_root

    if name not in SEQUENCE_DATASETS:
        path = Path(name)
        if path.exists():  # a simulator output folder (`agenticrs simulate --out DIR`) or one of its task specs
            folder = path if path.is_dir() else path.parent
            return load_sim_sequences(folder, name=str(folder.resolve()))  # the name finds it again
        raise DataError(f"unknown sequence data set '{name}'",
                        expected=f"one of {sorted(SEQUENCE_DATASETS)} or a simulator output folder")
    cache_root = Path(cache_dir) if cache_dir else default_cache_root()
    return SEQUENCE_DATASETS[name].load(cache_root)


# --- leave-one-out ----------------------------------------------------------------------------
@dataclass
class EvalExamples:
    """Evaluation examples: each user's history (CSR, oldest first) and the item to predict; with
    multi-behaviour (timed) data also the history's behaviours (timestamps) and the target's."""

    users: np.ndarray  # (N,) int64
    offsets: np.ndarray  # (N + 1,) int64
    items: np.ndarray  # flat histories
    targets: np.ndarray  # (N,) int64
    behaviours: np.ndarray | None = None  # flat, parallel to items
    target_behaviours: np.ndarray | None = None  # (N,)
    timestamps: np.ndarray | None = None  # flat, parallel to items
    target_timestamps: np.ndarray | None = None  # (N,)

    def _events(self) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
        """(field, flat history values, target values) of every per-event array present."""
        return [(name, getattr(self, name), getattr(self, f"target_{name}")) for name in EVENT_FIELDS
                if getattr(self, name) is not None]  # fmt: skip

    def __len__(self) -> int:
        return len(self.users)

    def sample(self, n: int, seed: int) -> EvalExamples:
        """`n` examples drawn without replacement (a seeded, fixed sample), in their order; all
        of them when there are no more than `n`."""
        if n >= len(self):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return self.subset(keep)

    def subset(self, keep: np.ndarray) -> EvalExamples:
        """The examples at positions `keep` (sorted), as new CSR arrays."""
        lengths = np.diff(self.offsets)[keep]
        starts = self.offsets[keep]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(self.offsets.dtype)
        flat = np.repeat(starts - offsets[:-1], lengths) + np.arange(int(offsets[-1]))
        events = {}
        for name, values, targets in self._events():
            events[name] = values[flat]
            events[f"target_{name}"] = None if targets is None else targets[keep]
        return EvalExamples(self.users[keep], offsets, self.items[flat], self.targets[keep], **events)

    def batches(self, max_len: int, batch_size: int) -> Iterator[SeqBatch]:
        """`history` (B, max_len) right-aligned, `target` (B,), `user` (B,), in example order;
        `history_behaviour` / `target_behaviour` with multi-behaviour data, `timestamps` /
        `target_timestamp` with timed data (`EVENT_FIELDS`)."""
        for start in range(0, len(self), batch_size):
            end = min(start + batch_size, len(self))
            offsets = self.offsets[start : end + 1]
            history = pad_histories(offsets - offsets[0], self.items[offsets[0] : offsets[-1]], max_len)
            batch = {"history": torch.from_numpy(history), "target": torch.from_numpy(self.targets[start:end]),
                     "user": torch.from_numpy(self.users[start:end])}  # fmt: skip
            for name, values, targets in self._events():
                history_key, target_key = EVENT_FIELDS[name]
                batch[history_key] = torch.from_numpy(
                    pad_histories(offsets - offsets[0], values[offsets[0] : offsets[-1]], max_len))
                if targets is not None:
                    batch[target_key] = torch.from_numpy(targets[start:end])
            yield batch


@dataclass
class LOOSplits:
    train: SequenceData  # every user's training part (users with < 3 items: the whole sequence)
    valid: EvalExamples  # history = all but the last two, target = the second-to-last
    test: EvalExamples  # history = all but the last, target = the last


def _prefixes(offsets: np.ndarray, items: np.ndarray, take: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first `take[u]` items of every sequence, as a new CSR."""
    new_offsets = _csr_from_lengths(take)
    idx = np.repeat(offsets[:-1] - new_offsets[:-1], take) + np.arange(int(new_offsets[-1]), dtype=np.int64)
    return new_offsets, items[idx]


def _split_at(data: SequenceData, sub: np.ndarray, train_take: np.ndarray, valid_at: np.ndarray,
              test_at: np.ndarray) -> LOOSplits:  # fmt: skip
    """Training part = the first `train_take[u]` events of every user; for the users `sub`, a
    validation example whose target is the event at flat position `valid_at` (history: the
    user's events before it) and a test example at `test_at`."""
    offsets = np.asarray(data.offsets, dtype=np.int64)
    items = np.asarray(data.items, dtype=np.int64)
    events = {name: np.asarray(getattr(data, name), dtype=np.int64) for name in EVENT_FIELDS
              if getattr(data, name) is not None}  # fmt: skip
    train_offsets, train_items = _prefixes(offsets, items, train_take)
    train_events = {name: _prefixes(offsets, values, train_take)[1] for name, values in events.items()}
    train = dataclasses.replace(data, offsets=train_offsets, items=train_items, **train_events)
    starts = offsets[:-1][sub]

    def examples(target_at: np.ndarray) -> EvalExamples:
        n_hist = target_at - starts
        hist_offsets = _csr_from_lengths(n_hist)
        idx = np.repeat(starts - hist_offsets[:-1], n_hist) + np.arange(int(hist_offsets[-1]), dtype=np.int64)
        per_event = {}
        for name, values in events.items():
            per_event[name], per_event[f"target_{name}"] = values[idx], values[target_at]
        return EvalExamples(users=data.users[sub].astype(np.int64), offsets=hist_offsets, items=items[idx],
                            targets=items[target_at], **per_event)  # fmt: skip

    return LOOSplits(train=train, valid=examples(valid_at), test=examples(test_at))


def leave_one_out(data: SequenceData) -> LOOSplits:
    """The standard split. Users with fewer than 3 items cannot give both a validation and a test
    target: they stay whole in the training part and have no evaluation example."""
    offsets = np.asarray(data.offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    evaluable = lengths >= 3
    sub = np.flatnonzero(evaluable)
    ends = offsets[1:][sub]
    return _split_at(data, sub, np.where(evaluable, lengths - 2, lengths), ends - 2, ends - 1)


def conversion_split(data: SequenceData, behaviour: int = PURCHASE) -> LOOSplits:
    """Leave-one-out on conversion targets (multi-behaviour data): per user, the last event of
    type `behaviour` (a purchase) is the test target and the one before it the validation target,
    each with every event (of any type) before it as history; the training part is every event
    before the validation target. Users with fewer than two such events, or none before the
    first, stay whole in the training part and have no evaluation example."""
    if data.behaviours is None:
        raise ValueError(f"data set '{data.name}' has no behaviour types: conversion targets need multi-behaviour "
                         "sequences (e.g. sim-<preset>-behaviours, taobao_userbehavior)")  # fmt: skip
    offsets = np.asarray(data.offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    is_conv = np.asarray(data.behaviours) == behaviour
    user_of = np.repeat(np.arange(len(lengths)), lengths)
    conv = np.flatnonzero(is_conv)
    count = np.bincount(user_of[conv], minlength=len(lengths))
    last = np.full(len(lengths), -1, dtype=np.int64)
    last[user_of[conv]] = conv  # flat positions in order: the last write per user wins
    is_conv_not_last = is_conv.copy()
    is_conv_not_last[last[last >= 0]] = False
    second = np.full(len(lengths), -1, dtype=np.int64)
    rest = np.flatnonzero(is_conv_not_last)
    second[user_of[rest]] = rest
    evaluable = (count >= 2) & (second > offsets[:-1])
    sub = np.flatnonzero(evaluable)
    train_take = np.where(evaluable, second - offsets[:-1], lengths)
    return _split_at(data, sub, train_take, second[sub], last[sub])


# --- padding and training batches -------------------------------------------------------------
def _pad_windows(ends: np.ndarray, lengths: np.ndarray, items: np.ndarray, max_len: int) -> np.ndarray:
    """Row r = items[ends[r] - lengths[r] : ends[r]], keeping the last `max_len`, right-aligned."""
    n = np.minimum(lengths, max_len).astype(np.int64)
    out = np.zeros((len(n), max_len), dtype=np.int64)
    total = int(n.sum())
    if total == 0:
        return out
    within = np.arange(total, dtype=np.int64) - np.repeat(_csr_from_lengths(n)[:-1], n)
    rows = np.repeat(np.arange(len(n)), n)
    out[rows, max_len - np.repeat(n, n) + within] = items[np.repeat(ends - n, n) + within]
    return out


def pad_histories(offsets: np.ndarray, items: np.ndarray, max_len: int) -> np.ndarray:
    """(N, max_len) int64: each sequence's last `max_len` items, most recent last, zeros on the left."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    offsets = np.asarray(offsets, dtype=np.int64)
    return _pad_windows(offsets[1:], np.diff(offsets), np.asarray(items, dtype=np.int64), max_len)


def count_next_item_examples(train_part: SequenceData, mode: ExampleMode = "sequence") -> int:
    """How many examples `next_item_batches` yields per epoch."""
    lengths = np.diff(np.asarray(train_part.offsets, dtype=np.int64))
    if mode == "sequence":
        return int((lengths >= 2).sum())
    return int(np.maximum(lengths - 1, 0).sum())


def next_item_batches(
    train_part: SequenceData,
    max_len: int,
    batch_size: int,
    seed: int,
    epoch: int,
    mode: ExampleMode = "sequence",
    length_pool: int | None = None,
) -> Iterator[SeqBatch]:
    """Training batches in a seeded order that differs per epoch (`default_rng([seed, epoch])`).

    mode "sequence" (SASRec): one example per user, the last `max_len + 1` items of its training
    part: `history` (B, L) = items[:-1] and `targets` (B, L) = items[1:] (0 where the history is
    padding), so every position predicts its next item. Earlier items of longer sequences are
    not seen (as in SASRec). Users with fewer than 2 training items give no example.
    mode "prefixes" (TIGER): one example per (user, position >= 1), history = the up to `max_len`
    items before it; `targets` is then the shifted window ending at that position.
    Both give `target` (B,) = the last target and `user` (B,); multi-behaviour data also
    `history_behaviour` (B, L) and `target_behaviour` (B,) (the target event's type), timed data
    `timestamps` (B, L) and `target_timestamp` (B,) (`EVENT_FIELDS`).
    `length_pool` = P batches similar history lengths: the shuffled examples are cut into pools of
    P x batch_size, each pool is sorted by history length and cut into batches, and the batches
    are shuffled. Models that trim all-padding columns (TIGER) then compute on far fewer tokens
    (Amazon Beauty: 27 instead of 81 encoder tokens per example on average), while every example
    is still seen once per epoch in a seeded order.
    """
    if max_len < 1 or batch_size < 1:
        raise ValueError("max_len and batch_size must be >= 1")
    offsets = np.asarray(train_part.offsets, dtype=np.int64)
    items = np.asarray(train_part.items, dtype=np.int64)
    lengths = np.diff(offsets)
    if mode == "sequence":
        rows = np.flatnonzero(lengths >= 2)
        ends, window, users = offsets[1:][rows], lengths[rows], train_part.users[rows]
    elif mode == "prefixes":
        user_of = np.repeat(np.arange(len(lengths)), lengths)
        pos = np.arange(len(items), dtype=np.int64) - offsets[:-1][user_of]
        flat = np.flatnonzero(pos >= 1)
        ends, window, users = flat + 1, pos[flat] + 1, train_part.users[user_of[flat]]
    else:
        raise ValueError(f"unknown example mode {mode!r}; expected 'sequence' or 'prefixes'")
    padded = _pad_windows(ends, window, items, max_len + 1)
    history, targets = padded[:, :-1], padded[:, 1:].copy()
    targets[history == PAD] = PAD
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(ends))
    starts = np.arange(0, len(order), batch_size)
    if length_pool is not None:
        if length_pool < 1:
            raise ValueError(f"length_pool must be >= 1, got {length_pool}")
        pool = np.arange(len(order)) // (length_pool * batch_size)
        order = order[np.lexsort((np.minimum(window[order] - 1, max_len), pool))]
        starts = rng.permutation(starts)
    history_t, targets_t = torch.from_numpy(history), torch.from_numpy(targets)
    users_t = torch.from_numpy(np.asarray(users, dtype=np.int64))
    events = {keys: torch.from_numpy(_pad_windows(ends, window, np.asarray(getattr(train_part, name), np.int64),
                                                  max_len + 1))
              for name, keys in EVENT_FIELDS.items() if getattr(train_part, name) is not None}  # fmt: skip
    for start in starts:
        idx = torch.from_numpy(order[start : start + batch_size])
        batch_targets = targets_t[idx]
        batch = {"history": history_t[idx], "targets": batch_targets, "target": batch_targets[:, -1],
                 "user": users_t[idx]}  # fmt: skip
        for (history_key, target_key), values in events.items():
            rows = values[idx]
            batch[history_key], batch[target_key] = rows[:, :-1], rows[:, -1]
        yield batch
