"""Sequence loaders, the leave-one-out split, padding and training batches."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from agenticrs.data.errors import DataError
from agenticrs.gr.base import SequenceData
from agenticrs.gr.sequences import (
    SEQUENCE_DATASETS,
    count_next_item_examples,
    leave_one_out,
    load_movielens_sequences,
    load_s3rec,
    next_item_batches,
    pad_histories,
    resolve_sequences,
)


def _data(seqs: dict[int, list[int]], num_items: int = 9) -> SequenceData:
    lengths = [len(s) for s in seqs.values()]
    return SequenceData(
        name="hand", num_items=num_items, users=np.array(list(seqs), dtype=np.int64),
        offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64),
        items=np.array([i for s in seqs.values() for i in s], dtype=np.int64),
    )  # fmt: skip


HAND = {10: [1, 2, 3, 4, 5], 11: [6, 7], 12: [8, 9, 1]}


# --- loaders ------------------------------------------------------------------------------------
def test_load_s3rec_with_attributes(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "Tiny.txt.gz", "wt") as f:
        f.write("1 3 1 2\n2 4 4 5 1\n\n7 2 5\n")
    with gzip.open(tmp_path / "Tiny_item2attributes.json.gz", "wt") as f:
        json.dump({"5": [9], "2": [1, 2], "4": []}, f)
    data = load_s3rec("Tiny", tmp_path)
    assert data.name == "Tiny" and data.num_items == 5
    np.testing.assert_array_equal(data.users, [1, 2, 7])
    np.testing.assert_array_equal(data.offsets, [0, 3, 7, 9])
    np.testing.assert_array_equal(data.items, [3, 1, 2, 4, 4, 5, 1, 2, 5])
    assert data.item_text == {}
    # CSR over item ids 0..5: item 2 -> [1, 2], item 5 -> [9], the rest empty
    np.testing.assert_array_equal(data.attribute_offsets, [0, 0, 0, 2, 2, 2, 3])
    np.testing.assert_array_equal(data.attributes, [1, 2, 9])


def test_load_s3rec_plain_and_errors(tmp_path: Path) -> None:
    (tmp_path / "Plain.txt").write_text("5 1 2\n6 2 3\n")
    data = load_s3rec("Plain", tmp_path, dataset_name="plain")
    assert data.name == "plain" and data.attributes is None and data.num_items == 3
    (tmp_path / "Bad.txt").write_text("5 1 2\n6 0 3\n")
    with pytest.raises(DataError, match=r"Bad\.txt.*item id 0 of user 6"):
        load_s3rec("Bad", tmp_path)
    with pytest.raises(DataError, match="Missing.txt.gz"):
        load_s3rec("Missing", tmp_path)


def test_load_movielens_grouplens(tmp_path: Path) -> None:
    # user 3 rates 42 and 10 at the same time (tie -> item id order), user 1 rates out of order
    (tmp_path / "u.data").write_text("3\t42\t5\t100\n1\t10\t3\t50\n3\t10\t1\t100\n1\t5\t4\t20\n3\t5\t2\t90\n")
    def flags(on: set[int]) -> str:
        return "|".join("1" if i in on else "0" for i in range(19))

    (tmp_path / "u.item").write_bytes(
        (f"5|Toy Story (1995)|01-Jan-1995||http://x|{flags({3, 4, 5})}\n"
         f"10|Caf\xe9 (1996)|01-Jan-1996||http://x|{flags({8})}\n"
         f"42|Heat (1995)|01-Jan-1995||http://x|{flags({})}\n"
         f"77|Unrated (1990)|01-Jan-1990||http://x|{flags({1})}\n").encode("latin-1")
    )  # fmt: skip
    data = load_movielens_sequences(tmp_path)
    assert data.num_items == 3  # 5, 10, 42 -> 1, 2, 3; 77 is never rated
    np.testing.assert_array_equal(data.users, [1, 3])
    np.testing.assert_array_equal(data.offsets, [0, 2, 5])
    np.testing.assert_array_equal(data.items, [1, 2, 1, 2, 3])
    assert data.item_text == {
        1: "Toy Story (1995). Genres: Animation, Children's, Comedy.",
        2: "Caf\xe9 (1996). Genres: Drama.",
        3: "Heat (1995)",
    }


def test_load_movielens_atomic(tmp_path: Path) -> None:
    (tmp_path / "ml.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n2\t7\t4\t30\n2\t3\t4\t10\n2\t9\t1\t20\n"
    )
    (tmp_path / "ml.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "3\tToy Story\t1995\tAnimation Comedy\n7\tHeat\t1995\tAction\n9\tX\t\t\n"
    )
    data = load_movielens_sequences(tmp_path)
    np.testing.assert_array_equal(data.items, [1, 3, 2])
    assert data.item_text == {1: "Toy Story (1995). Genres: Animation, Comedy.", 2: "Heat (1995). Genres: Action.",
                              3: "X"}  # fmt: skip


def test_resolve_sim_tiny(tiny_cache: Path) -> None:
    data = resolve_sequences("sim-tiny", tiny_cache)
    items = pq.read_table(str(next(tiny_cache.glob("generated/sim-tiny-*/items.parquet"))))
    assert data.name == "sim-tiny" and data.num_items == items.num_rows
    assert data.lengths.min() >= 3 and data.items.min() >= 1 and data.items.max() <= data.num_items
    assert len(data.item_text) == data.num_items and all(data.item_text.values())
    assert len(data.attribute_offsets) == data.num_items + 2 and data.attribute_offsets[-1] == len(data.attributes)


def test_resolve_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="unknown sequence data set 'nope'"):
        resolve_sequences("nope", tmp_path)
    monkeypatch.setenv("AGENTICRS_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"amazon_beauty.*not found"):
        resolve_sequences("amazon_beauty", tmp_path)
    assert not SEQUENCE_DATASETS["amazon_beauty"].available()


@pytest.mark.realdata
def test_amazon_beauty_stats() -> None:
    entry = SEQUENCE_DATASETS["amazon_beauty"]
    if not entry.available():
        pytest.skip(f"amazon_beauty not found (looked for {entry.location() or '<no data root>'})")
    data = resolve_sequences("amazon_beauty")
    assert (data.num_users, data.num_items, len(data.items)) == (22_363, 12_101, 198_502)
    assert data.lengths.min() == 5 and data.lengths.max() == 204
    assert data.attribute_offsets is not None and int(data.attributes.max()) == 637
    splits = leave_one_out(data)
    assert len(splits.test) == 22_363 and len(splits.train.items) == 198_502 - 2 * 22_363


# --- leave-one-out, padding, batches ----------------------------------------------------------
def test_leave_one_out_exact() -> None:
    splits = leave_one_out(_data(HAND))
    np.testing.assert_array_equal(splits.train.users, [10, 11, 12])
    np.testing.assert_array_equal(splits.train.offsets, [0, 3, 5, 6])
    np.testing.assert_array_equal(splits.train.items, [1, 2, 3, 6, 7, 8])  # user 11 (2 items) stays whole
    np.testing.assert_array_equal(splits.valid.users, [10, 12])
    np.testing.assert_array_equal(splits.valid.offsets, [0, 3, 4])
    np.testing.assert_array_equal(splits.valid.items, [1, 2, 3, 8])
    np.testing.assert_array_equal(splits.valid.targets, [4, 9])
    np.testing.assert_array_equal(splits.test.users, [10, 12])
    np.testing.assert_array_equal(splits.test.offsets, [0, 4, 6])
    np.testing.assert_array_equal(splits.test.items, [1, 2, 3, 4, 8, 9])
    np.testing.assert_array_equal(splits.test.targets, [5, 1])


def test_timestamps_travel_with_their_items_through_the_split_and_every_batch() -> None:
    data = _data(HAND)
    data.timestamps = data.items * 100 + np.repeat(data.users, data.lengths)  # item i of user u at 100 i + u
    splits = leave_one_out(data)
    np.testing.assert_array_equal(splits.train.timestamps, splits.train.items * 100 + [10, 10, 10, 11, 11, 12])
    test = splits.test
    np.testing.assert_array_equal(test.timestamps, test.items * 100 + [10, 10, 10, 10, 12, 12])
    np.testing.assert_array_equal(test.target_timestamps, test.targets * 100 + [10, 12])
    for examples in (test, test.sample(1, seed=0)):
        batch = next(examples.batches(max_len=3, batch_size=8))
        stamps, history = batch["timestamps"], batch["history"]
        torch.testing.assert_close(stamps, torch.where(history > 0, history * 100 + batch["user"][:, None], 0))
        torch.testing.assert_close(batch["target_timestamp"], batch["target"] * 100 + batch["user"])
    for batch in next_item_batches(splits.train, max_len=4, batch_size=2, seed=0, epoch=0):
        stamps, history = batch["timestamps"], batch["history"]
        torch.testing.assert_close(stamps, torch.where(history > 0, history * 100 + batch["user"][:, None], 0))
        torch.testing.assert_close(batch["target_timestamp"], batch["target"] * 100 + batch["user"])
    assert "timestamps" not in next(leave_one_out(_data(HAND)).test.batches(3, 8))  # order-only data: none


def test_a_sample_of_evaluation_examples_keeps_each_history_with_its_target() -> None:
    test = leave_one_out(_data(HAND)).test  # users 10 ([1, 2, 3, 4] -> 5) and 12 ([8, 9] -> 1)
    assert test.sample(5, seed=0) is test
    seen = set()
    for seed in range(20):
        one = test.sample(1, seed)
        assert len(one) == 1 and one.offsets.tolist() == [0, len(one.items)]
        seen.add((one.users[0], tuple(one.items), one.targets[0]))
        assert one.sample(1, seed) is one
    assert seen == {(10, (1, 2, 3, 4), 5), (12, (8, 9), 1)}
    np.testing.assert_array_equal(test.sample(1, seed=3).items, test.sample(1, seed=3).items)  # seeded


def test_validation_on_a_sample_of_users_leaves_the_test_split_whole() -> None:
    from agenticrs.gr.train import SequentialTask, SequentialTrainConfig

    data = _data({u: [1 + (u + i) % 8 for i in range(4)] for u in range(30)})
    task = SequentialTask(object(), data, SequentialTrainConfig(valid_users=7, max_len=4, seed=1))
    assert task.split_rows("valid") == 7 and task.split_rows("test") == 30
    assert set(task.splits.valid.users) <= set(range(30))
    whole = SequentialTask(object(), data, SequentialTrainConfig(max_len=4))
    assert whole.split_rows("valid") == 30


def test_pad_histories() -> None:
    offsets, items = np.array([0, 3, 3, 7]), np.array([1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(pad_histories(offsets, items, 3), [[1, 2, 3], [0, 0, 0], [5, 6, 7]])
    np.testing.assert_array_equal(
        pad_histories(offsets, items, 5), [[0, 0, 1, 2, 3], [0, 0, 0, 0, 0], [0, 4, 5, 6, 7]]
    )
    batch = next(leave_one_out(_data(HAND)).test.batches(max_len=3, batch_size=8))
    np.testing.assert_array_equal(batch["history"], [[2, 3, 4], [0, 8, 9]])
    np.testing.assert_array_equal(batch["target"], [5, 1])
    np.testing.assert_array_equal(batch["user"], [10, 12])


def test_next_item_batches_shift_and_order() -> None:
    train = leave_one_out(_data(HAND)).train  # [1, 2, 3], [6, 7], [8]
    rows = {}
    for batch in next_item_batches(train, max_len=4, batch_size=1, seed=0, epoch=1):
        assert batch["history"].shape == batch["targets"].shape == (1, 4) and batch["history"].dtype == torch.int64
        assert batch["target"].item() == batch["targets"][0, -1].item()
        rows[batch["user"].item()] = (batch["history"][0].tolist(), batch["targets"][0].tolist())
    assert rows == {10: ([0, 0, 1, 2], [0, 0, 2, 3]), 11: ([0, 0, 0, 6], [0, 0, 0, 7])}  # user 12: 1 item, no example
    (short,) = next_item_batches(train, max_len=1, batch_size=8, seed=0, epoch=1)
    assert sorted(zip(short["history"][:, 0].tolist(), short["targets"][:, 0].tolist())) == [(2, 3), (6, 7)]
    prefixes = next(next_item_batches(train, max_len=2, batch_size=8, seed=0, epoch=1, mode="prefixes"))
    got = sorted(zip(prefixes["user"].tolist(), map(tuple, prefixes["history"].tolist()), prefixes["target"].tolist()))
    assert got == [(10, (0, 1), 2), (10, (1, 2), 3), (11, (0, 6), 7)]
    assert count_next_item_examples(train) == 2 and count_next_item_examples(train, "prefixes") == 3
    # seeded order: the same per (seed, epoch), different across epochs
    many = _data({u: [1, 2, 3, 4] for u in range(50)})

    def order(seed: int, epoch: int) -> list[int]:
        return torch.cat([b["user"] for b in next_item_batches(many, 3, 16, seed, epoch)]).tolist()

    assert order(1, 1) == order(1, 1) != order(1, 2) and sorted(order(1, 2)) == list(range(50))


def test_length_pools_batch_similar_histories_and_keep_every_example_once() -> None:
    rng = np.random.default_rng(0)
    train = leave_one_out(_data({u: list(range(1, 4 + rng.integers(0, 12))) for u in range(200)})).train
    max_len, size = 6, 8

    def examples(pool: int | None, epoch: int = 1) -> list[list[tuple[int, tuple[int, ...], int]]]:
        batches = next_item_batches(train, max_len, size, seed=3, epoch=epoch, mode="prefixes", length_pool=pool)
        return [list(zip(b["user"].tolist(), map(tuple, b["history"].tolist()), b["target"].tolist(), strict=True))
                for b in batches]  # fmt: skip

    def spread(batches: list) -> float:  # mean (max - min) history length within a batch
        return float(np.mean([np.ptp([sum(h != 0 for h in hist) for _, hist, _ in b]) for b in batches]))

    plain, pooled = examples(None), examples(4)
    assert sorted(x for b in plain for x in b) == sorted(x for b in pooled for x in b)  # same examples, once each
    assert len(pooled) == len(plain) and max(map(len, pooled)) == size
    assert spread(pooled) < 0.5 * spread(plain)
    assert examples(4) == pooled != examples(4, epoch=2)  # seeded per (seed, epoch)
    with pytest.raises(ValueError, match="length_pool"):
        next(next_item_batches(train, max_len, size, seed=3, epoch=1, mode="prefixes", length_pool=0))
