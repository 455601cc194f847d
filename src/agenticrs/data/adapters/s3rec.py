"""User item sequences in the S3-Rec format (Amazon Beauty/Sports/Toys, Yelp, LastFM releases).

Layout (GitHub aHuiWang/CIKM2020-S3Rec `data/<Name>.txt`, also P5 `sequential_data.txt`): one
user per line, space-separated `user_id item_1 item_2 ... item_n`, items in chronological order,
integer ids (0 free for padding); optionally gzipped. Standard evaluation is leave-one-out: the
last item of each user is the test target, the second-to-last the validation target.

`read_s3rec_sequences` gives the raw sequences (for generative / sequential models);
`convert_s3rec` builds a next-item CTR data set from them: every target position is a positive
sample followed by `negatives_per_positive` uniformly sampled items (seeded, never the target),
all sharing the history of the previous `history_len` items (`hist_item_id`, vocab of `item_id`).
Everything is vectorised over the flattened sequences.
"""

from __future__ import annotations

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
    history_lists,
    iter_lines,
    parse_numbers,
    require_file,
)
from agenticrs.data.errors import DataError
from agenticrs.data.spec import DatasetSpec, FieldSpec

VERSION = 1


def read_s3rec_sequences(path: PathLike) -> tuple[pa.Int64Array, pa.ListArray]:
    """(user ids, their item sequences oldest first) of an S3-Rec file, as int64 Arrow arrays.

    A line without items, a non-integer id or a repeated user raises DataError with the row.
    """
    path = require_file(path)
    users, seqs, all_rows = [], [], []
    for rows, lines in iter_lines(path):
        tokens = pc.split_pattern_regex(lines, r"[ \t]+")
        counts = np.asarray(pc.list_value_length(tokens))
        bad = first_false(counts >= 2)
        if bad is not None:
            raise DataError(
                f"no items in line {lines[bad].as_py()[:80]!r}", file=str(path), row=int(rows[bad]),
                expected="user_id item_1 item_2 ... (space-separated)",
            )  # fmt: skip
        flat = pc.list_flatten(tokens)
        parents = np.asarray(pc.list_parent_indices(tokens))
        ids = parse_numbers(flat, pa.int64(), file=str(path), rows=rows[parents], field="item_id",
                            expected="integer ids")  # fmt: skip
        offsets = np.asarray(tokens.offsets)
        is_user = np.zeros(len(flat), dtype=bool)
        is_user[offsets[:-1]] = True
        users.append(ids.filter(pa.array(is_user)))
        item_offsets = (offsets - np.arange(len(offsets))).astype(np.int32)
        seqs.append(pa.ListArray.from_arrays(pa.array(item_offsets), ids.filter(pa.array(~is_user))))
        all_rows.append(rows)
    user_ids = pa.concat_arrays(users)
    rows = np.concatenate(all_rows)
    first = np.asarray(pc.index_in(user_ids, value_set=user_ids))
    bad = first_false(first == np.arange(len(user_ids)))
    if bad is not None:
        raise DataError(
            f"user {user_ids[bad].as_py()} appears again (first in row {int(rows[first[bad]])})",
            file=str(path), row=int(rows[bad]), field="user_id", expected="one line per user",
        )  # fmt: skip
    return user_ids, pa.concat_arrays(seqs)


def convert_s3rec(
    path: PathLike,
    out_dir: PathLike,
    *,
    negatives_per_positive: int = 1,
    history_len: int = 50,
    min_history: int = 1,
    seed: int = 2024,
    shuffle_train: bool = True,
    name: str | None = None,
) -> DatasetSpec:
    """Leave-one-out next-item CTR data set from an S3-Rec file, written as Parquet to `out_dir`.

    Targets: last item -> test, second-to-last -> valid, earlier positions with at least
    `min_history` previous items -> train. Negatives are uniform over all items of the file.
    Rows are grouped (positive, then its negatives); train rows are shuffled (seeded) so that
    mini-batches mix users.
    """
    path = require_file(path)
    if negatives_per_positive < 0 or history_len < 1 or min_history < 0:
        raise DataError("negatives_per_positive >= 0, history_len >= 1 and min_history >= 0 are required",
                        expected="valid settings")  # fmt: skip
    name = name or path.name.split(".")[0]
    settings = {
        "adapter": "s3rec", "version": VERSION, "negatives_per_positive": negatives_per_positive,
        "history_len": history_len, "min_history": min_history, "seed": seed, "shuffle_train": shuffle_train,
        "name": name,
    }  # fmt: skip
    conversion = Conversion(out_dir, [path], settings)
    if conversion.cached is not None:
        return conversion.cached

    users, seqs = read_s3rec_sequences(path)
    offsets = np.asarray(seqs.offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    flat_items = seqs.values
    user_of = np.repeat(np.arange(len(users)), lengths)  # user index of each flat position
    pos = np.arange(len(flat_items), dtype=np.int64) - offsets[:-1][user_of]  # position within the user
    n_of = lengths[user_of]
    eligible = pos >= min_history
    targets = {
        "test": np.flatnonzero(eligible & (pos == n_of - 1)),
        "valid": np.flatnonzero(eligible & (pos == n_of - 2)),
        "train": np.flatnonzero(eligible & (pos < n_of - 2)),
    }
    catalogue = np.unique(np.asarray(flat_items))
    if negatives_per_positive and len(catalogue) < 2:
        raise DataError("fewer than two distinct items; cannot sample negatives", file=str(path),
                        expected="at least two items")  # fmt: skip
    item_str = as_strings(flat_items)
    user_str = as_strings(users)
    catalogue_str = as_strings(catalogue)
    rng = np.random.default_rng(seed)
    k = negatives_per_positive
    schema = pa.schema(
        [("label", pa.int8()), ("user_id", pa.string()), ("item_id", pa.string()),
         ("hist_item_id", pa.list_(pa.string()))]
    )  # fmt: skip
    for split in SPLITS:
        tgt = targets[split]
        if split == "train" and shuffle_train:
            tgt = tgt[rng.permutation(len(tgt))]
        with conversion.split(split, schema, path, "sequences need at least 3 items (lower min_history?)") as sink:
            for start in range(0, len(tgt), max(1, CHUNK_ROWS // (k + 1))):
                rows = tgt[start : start + max(1, CHUNK_ROWS // (k + 1))]
                m = len(rows)
                hist = history_lists(item_str, pos, rows, history_len)
                # uniform over the catalogue minus the target: draw from n-1 and skip the target's slot
                tcode = np.searchsorted(catalogue, np.asarray(flat_items)[rows])
                neg = rng.integers(0, max(1, len(catalogue) - 1), size=(m, k))
                neg += neg >= tcode[:, None]
                # one block per positive: [target, neg_1..neg_k]
                item_codes = np.concatenate([tcode[:, None], neg], axis=1).reshape(-1)
                rep = np.repeat(np.arange(m), k + 1)
                sink.write(
                    pa.table(
                        {
                            "label": pa.array(np.tile(np.r_[1, np.zeros(k, dtype=np.int8)], m).astype(np.int8)),
                            "user_id": user_str.take(pa.array(user_of[rows][rep])),
                            "item_id": catalogue_str.take(pa.array(item_codes)),
                            "hist_item_id": hist.take(pa.array(rep)),
                        }
                    )
                )
    return conversion.finish(
        name=name,
        fields=[
            FieldSpec(name="label", kind="label"),
            FieldSpec(name="user_id", kind="categorical"),
            FieldSpec(name="item_id", kind="categorical"),
            FieldSpec(name="hist_item_id", kind="sequence", max_len=history_len, share_vocab_with="item_id"),
        ],
        group_key="user_id",
        description=f"S3-Rec sequences {path.name}: leave-one-out next-item CTR with "
        f"{negatives_per_positive} uniform negative(s) per positive",
    )
