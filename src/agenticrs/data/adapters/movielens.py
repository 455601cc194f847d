"""MovieLens ratings as a CTR data set, from RecBole atomic files or the original ML-1M `.dat` files.

Layouts:

* RecBole atomic files (https://recbole.io/docs/user_guide/data/atomic_files.html):
  `<name>.inter`, `<name>.user`, `<name>.item` (optionally `.gz`), tab-separated, header
  `field:type` with type `token`, `token_seq` (space-separated), `float` or `float_seq`.
  ML-100K: inter `user_id item_id rating timestamp`; user `user_id age gender occupation zip_code`;
  item `item_id movie_title release_year class`.
* GroupLens ML-1M (https://files.grouplens.org/datasets/movielens/ml-1m-README.txt), latin-1,
  `::`-separated, no header: `ratings.dat` `UserID::MovieID::Rating::Timestamp`, `users.dat`
  `UserID::Gender::Age::Occupation::Zip-code`, `movies.dat` `MovieID::Title::Genres` with
  `|`-separated genres and the year in the title ("Toy Story (1995)").

Both convert to the same Parquet columns: `label` (rating >= threshold), `user_id`, `item_id`,
`timestamp`, `rating` (kept for reference, not a field), the user features (categorical), the
item features (`movie_title` text, `release_year` categorical, `genres` a list with its own vocab)
and, when `history_len > 0`, `hist_item_id`: the user's previous `history_len` rated items in time
order (ties keep file order), sharing `item_id`'s vocab. Joins use hash lookups
(`pyarrow.compute.index_in`) and histories are built with NumPy index arithmetic: no per-row loops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    first_false,
    group_positions,
    history_lists,
    iter_csv,
    iter_lines,
    parse_numbers,
    split_tokens,
)
from agenticrs.data.errors import DataError
from agenticrs.data.spec import DatasetSpec, FieldSpec

VERSION = 1
SplitMode = Literal["random", "time"]
Kind = Literal["categorical", "numeric", "sequence", "text"]


@dataclass
class _Features:
    """A side table (users or items) keyed by `key`, with a kind per feature column."""

    table: pa.Table
    key: str
    kinds: dict[str, Kind]
    file: str


@dataclass
class _Interactions:
    table: pa.Table  # user_id, item_id (string), rating (float64), timestamp (int64), extra columns
    kinds: dict[str, Kind]  # kinds of the extra columns
    file: str


# --- RecBole atomic ---------------------------------------------------------------------------
def find_atomic_files(source: PathLike) -> dict[str, Path]:
    """`{'inter': path, 'user': path?, 'item': path?}` from a folder (one `*.inter[.gz]`) or a
    path prefix such as `.../ml-100k`."""
    source = Path(source)
    if source.is_dir():
        inters = sorted(source.glob("*.inter")) + sorted(source.glob("*.inter.gz"))
        if len(inters) != 1:
            raise DataError(
                f"{len(inters)} interaction files in the folder",
                file=str(source),
                expected="exactly one <name>.inter or <name>.inter.gz (or pass the path prefix)",
            )
        name = inters[0].name.split(".inter")[0]
        prefix = source / name
    else:
        prefix = source
    found: dict[str, Path] = {}
    for kind in ("inter", "user", "item"):
        for ext in ("", ".gz"):
            path = prefix.parent / f"{prefix.name}.{kind}{ext}"
            if path.is_file():
                found[kind] = path
                break
    if "inter" not in found:
        raise DataError("no interaction file", file=str(prefix), expected=f"{prefix.name}.inter or .inter.gz")
    return found


def _read_atomic(path: Path) -> tuple[pa.Table, dict[str, str], np.ndarray]:
    """A RecBole atomic file as string columns named without their `:type`, the types, row numbers."""
    blocks, rows = [], []
    for r, table in iter_csv(path, delimiter="\t", quote_char=False, null_values=("",)):
        blocks.append(table)
        rows.append(r)
    table = pa.concat_tables(blocks)
    types: dict[str, str] = {}
    names = []
    for col in table.column_names:
        name, sep, typ = col.partition(":")
        if not sep or typ not in ("token", "token_seq", "float", "float_seq"):
            raise DataError(
                f"bad header entry {col!r}", file=str(path), row=0, field=col,
                expected="name:type with type token, token_seq, float or float_seq",
            )  # fmt: skip
        types[name] = typ
        names.append(name)
    return table.rename_columns(names), types, np.concatenate(rows)


def _typed_features(
    table: pa.Table,
    types: Mapping[str, str],
    rows: np.ndarray,
    file: str,
    skip: Sequence[str],
    text_fields: Sequence[str],
    rename: Mapping[str, str],
) -> tuple[dict[str, pa.Array], dict[str, Kind]]:
    """Atomic-file columns -> typed arrays and field kinds (token categorical, float numeric,
    token_seq a list with its own vocab, unless named as text)."""
    columns: dict[str, pa.Array] = {}
    kinds: dict[str, Kind] = {}
    for col in table.column_names:
        if col in skip:
            continue
        values = table.column(col).combine_chunks()
        out_name = rename.get(col, col)
        typ = types[col]
        if col in text_fields or out_name in text_fields:
            columns[out_name], kinds[out_name] = values, "text"
        elif typ == "token":
            columns[out_name], kinds[out_name] = values, "categorical"
        elif typ == "float":
            valid = np.asarray(pc.is_valid(values))  # missing values are allowed, bad ones are not
            parse_numbers(values.filter(pa.array(valid)), pa.float64(), file=file, rows=rows[valid], field=col,
                          expected="a number")  # fmt: skip
            columns[out_name], kinds[out_name] = pc.cast(values, pa.float64()), "numeric"
        elif typ == "token_seq":
            columns[out_name], kinds[out_name] = split_tokens(values, " "), "sequence"
        else:  # float_seq: no standard field kind for numeric lists of features; keep as text
            columns[out_name], kinds[out_name] = values, "text"
    return columns, kinds


def _check_unique(keys: pa.Array, rows: np.ndarray, file: str, field: str) -> None:
    first = np.asarray(pc.index_in(keys, value_set=keys))
    bad = first_false(first == np.arange(len(keys)))
    if bad is not None:
        raise DataError(
            f"duplicate id {keys[bad].as_py()!r} (first seen in row {int(rows[first[bad]])})",
            file=file, row=int(rows[bad]), field=field, expected="one row per id",
        )  # fmt: skip
    if keys.null_count:
        bad = int(np.flatnonzero(np.asarray(keys.is_null()))[0])
        raise DataError("missing id", file=file, row=int(rows[bad]), field=field, expected="an id in every row")


def _load_atomic(
    files: Mapping[str, Path], text_fields: Sequence[str], rename: Mapping[str, str]
) -> tuple[_Interactions, list[_Features]]:
    path = files["inter"]
    table, types, rows = _read_atomic(path)
    required = ["user_id", "item_id", "rating", "timestamp"]
    missing = [c for c in required if c not in types]
    if missing:
        raise DataError(
            f"missing column(s) {missing}; the file has {list(types)}", file=str(path), field=missing[0],
            expected="user_id, item_id, rating and timestamp columns",
        )  # fmt: skip
    for key in ("user_id", "item_id"):
        col = table.column(key).combine_chunks()
        if col.null_count:
            bad = int(np.flatnonzero(np.asarray(col.is_null()))[0])
            raise DataError("missing id", file=str(path), row=int(rows[bad]), field=key, expected="an id in every row")
    rating = parse_numbers(table.column("rating"), pa.float64(), file=str(path), rows=rows, field="rating",
                           expected="a number")  # fmt: skip
    stamp = parse_numbers(table.column("timestamp"), pa.float64(), file=str(path), rows=rows, field="timestamp",
                          expected="unix seconds")  # fmt: skip
    extra, kinds = _typed_features(table, types, rows, str(path), required, text_fields, rename)
    inter = pa.table(
        {
            "user_id": table.column("user_id").combine_chunks(),
            "item_id": table.column("item_id").combine_chunks(),
            "rating": rating,
            "timestamp": pc.cast(pc.floor(stamp), pa.int64()),
            **extra,
        }
    )
    sides = []
    for kind, key in (("user", "user_id"), ("item", "item_id")):
        if kind not in files:
            continue
        side, side_types, side_rows = _read_atomic(files[kind])
        if key not in side_types:
            raise DataError(
                f"missing column '{key}'; the file has {list(side_types)}", file=str(files[kind]), field=key,
                expected=f"a {key} column",
            )  # fmt: skip
        keys = side.column(key).combine_chunks()
        _check_unique(keys, side_rows, str(files[kind]), key)
        cols, side_kinds = _typed_features(side, side_types, side_rows, str(files[kind]), [key], text_fields, rename)
        sides.append(_Features(pa.table({key: keys, **cols}), key, side_kinds, str(files[kind])))
    return _Interactions(inter, kinds, str(path)), sides


# --- ML-1M .dat -------------------------------------------------------------------------------
def _read_dat(path: Path, names: Sequence[str]) -> tuple[dict[str, pa.Array], np.ndarray]:
    """A `::`-separated latin-1 file as string columns, checking the value count of every line."""
    blocks, all_rows = [], []
    for rows, lines in iter_lines(path, encoding="latin-1"):
        parts = pc.split_pattern(lines, "::")
        counts = np.asarray(pc.list_value_length(parts))
        bad = first_false(counts == len(names))
        if bad is not None:
            raise DataError(
                f"{counts[bad]} values in line {lines[bad].as_py()[:80]!r}", file=str(path), row=int(rows[bad]),
                expected=f"{len(names)} values separated by '::' ({'::'.join(names)})",
            )  # fmt: skip
        blocks.append(parts)
        all_rows.append(rows)
    parts = pa.concat_arrays(blocks)
    flat = pc.list_flatten(parts)
    base = np.arange(len(parts), dtype=np.int64) * len(names)
    return {n: flat.take(pa.array(base + j)) for j, n in enumerate(names)}, np.concatenate(all_rows)


def _load_dat(folder: Path) -> tuple[_Interactions, list[_Features]]:
    paths = {n: folder / f"{n}.dat" for n in ("ratings", "users", "movies")}  # checked by the caller
    r, rows = _read_dat(paths["ratings"], ["user_id", "item_id", "rating", "timestamp"])
    f = str(paths["ratings"])
    rating = parse_numbers(r["rating"], pa.float64(), file=f, rows=rows, field="rating", expected="a number")
    stamp = parse_numbers(r["timestamp"], pa.int64(), file=f, rows=rows, field="timestamp", expected="unix seconds")
    inter = pa.table({"user_id": r["user_id"], "item_id": r["item_id"], "rating": rating, "timestamp": stamp})
    u, urows = _read_dat(paths["users"], ["user_id", "gender", "age", "occupation", "zip_code"])
    _check_unique(u["user_id"], urows, str(paths["users"]), "user_id")
    users = _Features(
        pa.table(u), "user_id", {c: "categorical" for c in ("gender", "age", "occupation", "zip_code")},
        str(paths["users"]),
    )  # fmt: skip
    m, mrows = _read_dat(paths["movies"], ["item_id", "title", "genres"])
    _check_unique(m["item_id"], mrows, str(paths["movies"]), "item_id")
    parsed = pc.extract_regex(m["title"], r"^(?P<title>.*) \((?P<year>\d{4})\)$")
    has_year = pc.is_valid(parsed)
    title = pc.if_else(has_year, pc.struct_field(parsed, "title"), m["title"])
    year = pc.if_else(has_year, pc.struct_field(parsed, "year"), pa.scalar(None, pa.string()))
    items = _Features(
        pa.table({"item_id": m["item_id"], "movie_title": title, "release_year": year,
                  "genres": split_tokens(m["genres"], "|")}),
        "item_id", {"movie_title": "text", "release_year": "categorical", "genres": "sequence"},
        str(paths["movies"]),
    )  # fmt: skip
    return _Interactions(inter, {}, f), [users, items]


# --- shared build ------------------------------------------------------------------------------
def _split_order(
    timestamp: np.ndarray, split: SplitMode, fractions: Sequence[float], seed: int
) -> dict[str, np.ndarray]:
    """Row indices per split: a seeded permutation or time order, cut by `fractions`."""
    n = len(timestamp)
    if split == "random":
        order = np.random.default_rng(seed).permutation(n)
    elif split == "time":
        order = np.argsort(timestamp, kind="stable")
    else:
        raise DataError(f"unknown split mode {split!r}", field="split", expected="'random' or 'time'")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"bad split fractions {list(fractions)}", field="fractions",
                        expected="three non-negative fractions (train, valid, test) summing to 1")  # fmt: skip
    n_train = int(round(n * fractions[0]))
    n_valid = int(round(n * fractions[1]))
    return {
        "train": order[:n_train],
        "valid": order[n_train : n_train + n_valid],
        "test": order[n_train + n_valid :],
    }


def _build(
    inter: _Interactions,
    sides: list[_Features],
    conversion: Conversion,
    *,
    threshold: float,
    history_len: int,
    split: SplitMode,
    fractions: Sequence[float],
    seed: int,
    name: str,
    description: str,
) -> DatasetSpec:
    t = inter.table
    n = t.num_rows
    columns: dict[str, pa.Array] = {
        "label": pc.cast(pc.greater_equal(t.column("rating"), threshold), pa.int8()),
        "user_id": t.column("user_id").combine_chunks(),
        "item_id": t.column("item_id").combine_chunks(),
        "timestamp": t.column("timestamp").combine_chunks(),
        "rating": t.column("rating").combine_chunks(),
    }
    kinds: dict[str, Kind] = {}
    for col, kind in inter.kinds.items():
        columns[col], kinds[col] = t.column(col).combine_chunks(), kind
    for side in sides:
        idx = pc.index_in(columns[side.key], value_set=side.table.column(side.key))
        for col, kind in side.kinds.items():
            if col in columns:
                raise DataError(f"column '{col}' appears in two files", file=side.file, field=col,
                                expected="distinct feature names")  # fmt: skip
            columns[col] = side.table.column(col).combine_chunks().take(idx)
            kinds[col] = kind
    table = pa.table(columns)

    positions = order = None
    if history_len > 0:
        user_codes = np.asarray(pc.dictionary_encode(columns["user_id"]).indices)
        stamp = np.asarray(columns["timestamp"])
        order = np.lexsort((np.arange(n), stamp, user_codes))  # by user, then time, then file order
        positions = group_positions(user_codes[order])
        sorted_items = columns["item_id"].take(pa.array(order))
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)

    parts = _split_order(np.asarray(columns["timestamp"]), split, fractions, seed)
    schema = table.schema
    if history_len > 0:
        schema = schema.append(pa.field("hist_item_id", pa.list_(pa.string())))
    for split_name in SPLITS:
        rows = parts[split_name]
        hint = "more interactions or larger fractions are needed"
        with conversion.split(split_name, schema, inter.file, hint) as sink:
            for start in range(0, len(rows), CHUNK_ROWS):
                chunk_rows = rows[start : start + CHUNK_ROWS]
                chunk = table.take(pa.array(chunk_rows))
                if history_len > 0:
                    hist = history_lists(sorted_items, positions, rank[chunk_rows], history_len)
                    chunk = chunk.append_column("hist_item_id", hist)
                sink.write(chunk)

    fields = [
        FieldSpec(name="label", kind="label"),
        FieldSpec(name="user_id", kind="categorical"),
        FieldSpec(name="item_id", kind="categorical"),
        FieldSpec(name="timestamp", kind="timestamp"),
    ]
    for col, kind in kinds.items():
        if kind == "sequence":
            lengths = np.asarray(pc.list_value_length(columns[col]).fill_null(0))
            fields.append(FieldSpec(name=col, kind="sequence", max_len=max(1, int(lengths.max(initial=1)))))
        else:
            fields.append(FieldSpec(name=col, kind=kind))
    if history_len > 0:
        fields.append(
            FieldSpec(name="hist_item_id", kind="sequence", max_len=history_len, share_vocab_with="item_id")
        )
    return conversion.finish(name=name, fields=fields, group_key="user_id", description=description)


def convert_movielens_atomic(
    source: PathLike,
    out_dir: PathLike,
    *,
    threshold: float = 4.0,
    history_len: int = 50,
    split: SplitMode = "random",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 2024,
    text_fields: Sequence[str] = ("movie_title",),
    rename: Mapping[str, str] | None = None,
    name: str | None = None,
) -> DatasetSpec:
    """Convert RecBole atomic files (folder or path prefix) to a CTR data set in `out_dir`.

    `rename` maps atomic column names to field names (default `class` -> `genres`).
    """
    files = find_atomic_files(source)
    rename = dict({"class": "genres"} if rename is None else rename)
    name = name or files["inter"].name.split(".inter")[0]
    settings = {
        "adapter": "movielens_atomic", "version": VERSION, "threshold": threshold, "history_len": history_len,
        "split": split, "fractions": list(fractions), "seed": seed, "text_fields": list(text_fields),
        "rename": rename, "name": name, "files": sorted(files),
    }  # fmt: skip
    conversion = Conversion(out_dir, [files[k] for k in sorted(files)], settings)
    if conversion.cached is not None:
        return conversion.cached
    inter, sides = _load_atomic(files, text_fields, rename)
    return _build(
        inter, sides, conversion, threshold=threshold, history_len=history_len, split=split, fractions=fractions,
        seed=seed, name=name, description=f"MovieLens (RecBole atomic {files['inter'].name}): label = rating >= "
        f"{threshold}",
    )  # fmt: skip


def convert_movielens_dat(
    source: PathLike,
    out_dir: PathLike,
    *,
    threshold: float = 4.0,
    history_len: int = 50,
    split: SplitMode = "random",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 2024,
    name: str = "ml-1m",
) -> DatasetSpec:
    """Convert the original ML-1M folder (`ratings.dat`, `users.dat`, `movies.dat`) like the atomic files."""
    folder = Path(source)
    if not folder.is_dir():
        raise DataError("folder not found", file=str(folder), expected="a folder with ratings/users/movies.dat")
    sources = [folder / f"{n}.dat" for n in ("ratings", "users", "movies")]
    for p in sources:
        if not p.is_file():
            raise DataError("file not found", file=str(p), expected="ratings.dat, users.dat and movies.dat")
    settings = {
        "adapter": "movielens_dat", "version": VERSION, "threshold": threshold, "history_len": history_len,
        "split": split, "fractions": list(fractions), "seed": seed, "name": name,
    }  # fmt: skip
    conversion = Conversion(out_dir, sources, settings)
    if conversion.cached is not None:
        return conversion.cached
    inter, sides = _load_dat(folder)
    return _build(
        inter, sides, conversion, threshold=threshold, history_len=history_len, split=split, fractions=fractions,
        seed=seed, name=name, description=f"MovieLens (GroupLens .dat): label = rating >= {threshold}",
    )  # fmt: skip
