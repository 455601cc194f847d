"""Seeded, vectorised batching from a processed split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from agenticrs.data.cache import SplitArrays, SplitWriter
from agenticrs.features.batching import (
    GROUP,
    LABEL,
    epoch_order,
    iterate_batches,
    model_input_keys,
    num_batches,
)

ROWS = 103


@pytest.fixture
def split(tmp_path: Path) -> SplitArrays:
    writer = SplitWriter(tmp_path / "split")
    for start, n in [(0, 40), (40, 63)]:
        rows = np.arange(start, start + n)
        writer.append(
            {
                "categorical": np.stack([rows, rows + 1000], axis=1).astype(np.int32),
                "numeric": np.stack([rows * 0.5, -rows * 1.0], axis=1).astype(np.float32),
                "seq/hist": np.stack([rows, rows, np.zeros_like(rows)], axis=1).astype(np.int32),
                "seqlen/hist": np.full(n, 2, np.int32),
                "labels": np.stack([rows % 2, (rows + 1) % 2], axis=1).astype(np.float32),
                "group": (rows // 10).astype(np.int64) - 5,
                "ts/time": rows.astype(np.int64) * 60,
                "text/title": pa.array([f"t{r}" for r in rows]),
            }
        )
    writer.close()
    return SplitArrays(tmp_path / "split")


def _rows_of(batches) -> np.ndarray:
    return np.concatenate([b["categorical"][:, 0].numpy() for b in batches])


def test_model_inputs_exclude_labels_time_text_and_group(split):
    assert sorted(model_input_keys(split)) == ["categorical", "numeric", "seq/hist", "seqlen/hist"]


def test_unshuffled_batches_are_in_row_order(split):
    batches = list(iterate_batches(split, 16))
    assert len(batches) == num_batches(ROWS, 16) == 7
    assert [len(b["categorical"]) for b in batches] == [16] * 6 + [7]
    np.testing.assert_array_equal(_rows_of(batches), np.arange(ROWS))
    for b in batches:
        rows = b["categorical"][:, 0].numpy()
        np.testing.assert_array_equal(b["categorical"][:, 1].numpy(), rows + 1000)
        np.testing.assert_array_equal(b["numeric"][:, 0].numpy(), rows * 0.5)
        np.testing.assert_array_equal(b["seq/hist"][:, 0].numpy(), rows)
        np.testing.assert_array_equal(b[LABEL].numpy(), rows % 2)


def test_shuffle_is_a_permutation_with_rows_kept_together(split):
    batches = list(iterate_batches(split, 10, shuffle=True, seed=3, epoch=0, with_groups=True))
    rows = _rows_of(batches)
    assert sorted(rows.tolist()) == list(range(ROWS))  # every row exactly once
    assert not np.array_equal(rows, np.arange(ROWS))
    for b in batches:  # all arrays are gathered with the same index
        r = b["categorical"][:, 0].numpy()
        np.testing.assert_array_equal(b["categorical"][:, 1].numpy(), r + 1000)
        np.testing.assert_array_equal(b["numeric"][:, 1].numpy(), -r.astype(np.float32))
        np.testing.assert_array_equal(b["seq/hist"][:, 1].numpy(), r)
        np.testing.assert_array_equal(b[LABEL].numpy(), r % 2)
        np.testing.assert_array_equal(b[GROUP].numpy(), r // 10 - 5)


def test_same_seed_and_epoch_same_order_other_epoch_or_seed_differs(split):
    a = _rows_of(iterate_batches(split, 8, shuffle=True, seed=7, epoch=2))
    b = _rows_of(iterate_batches(split, 8, shuffle=True, seed=7, epoch=2))
    c = _rows_of(iterate_batches(split, 8, shuffle=True, seed=7, epoch=3))
    d = _rows_of(iterate_batches(split, 8, shuffle=True, seed=8, epoch=2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, d)
    assert sorted(c.tolist()) == sorted(d.tolist()) == list(range(ROWS))
    # the order does not depend on the batch size
    np.testing.assert_array_equal(_rows_of(iterate_batches(split, 50, shuffle=True, seed=7, epoch=2)), a)
    np.testing.assert_array_equal(a, epoch_order(ROWS, 7, 2, True))


def test_epoch_order_is_independent_of_global_random_state():
    np.random.seed(0)
    a = epoch_order(50, 1, 1, True)
    np.random.seed(1)
    torch.manual_seed(5)
    b = epoch_order(50, 1, 1, True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(epoch_order(50, 1, 1, False), np.arange(50))


def test_keys_and_dtypes(split):
    batch = next(iterate_batches(split, 32, with_groups=True))
    assert set(batch) == {"categorical", "numeric", "seq/hist", "seqlen/hist", LABEL, GROUP}
    assert batch["categorical"].dtype == torch.int32 and batch["categorical"].shape == (32, 2)
    assert batch["numeric"].dtype == torch.float32 and batch["numeric"].shape == (32, 2)
    assert batch["seq/hist"].dtype == torch.int32 and batch["seq/hist"].shape == (32, 3)
    assert batch["seqlen/hist"].dtype == torch.int32 and batch["seqlen/hist"].shape == (32,)
    assert batch[LABEL].dtype == torch.float32 and batch[LABEL].shape == (32,)
    assert batch[GROUP].dtype == torch.int64 and batch[GROUP].shape == (32,)
    assert all(t.device.type == "cpu" for t in batch.values())


def test_label_index_selects_the_label(split):
    batch = next(iterate_batches(split, 20, label_index=1))
    rows = batch["categorical"][:, 0].numpy()
    np.testing.assert_array_equal(batch[LABEL].numpy(), (rows + 1) % 2)
    assert LABEL not in next(iterate_batches(split, 20, label_index=None))
    assert GROUP not in next(iterate_batches(split, 20))  # groups only on request


def test_batches_are_writable_copies(split):
    """Tensors do not alias the read-only memory map (an in-place op must not fail or write back)."""
    for shuffle in (False, True):
        batch = next(iterate_batches(split, 10, shuffle=shuffle))
        batch["numeric"].mul_(0)
        batch["categorical"].add_(1)
    assert float(split["numeric"][1, 0]) == 0.5
    assert int(split["categorical"][0, 1]) == 1000


def test_drop_last(split):
    batches = list(iterate_batches(split, 16, shuffle=True, drop_last=True))
    assert len(batches) == num_batches(ROWS, 16, drop_last=True) == 6
    assert all(len(b["categorical"]) == 16 for b in batches)
    rows = _rows_of(batches)
    assert len(set(rows.tolist())) == 96
    assert list(iterate_batches(split, 200, drop_last=True)) == []
    assert len(list(iterate_batches(split, 200))) == 1


def test_num_batches():
    assert num_batches(10, 3) == 4
    assert num_batches(9, 3) == 3
    assert num_batches(10, 3, drop_last=True) == 3
    assert num_batches(0, 3) == 0


def test_split_without_labels_or_groups(tmp_path: Path):
    writer = SplitWriter(tmp_path / "s")
    writer.append({"categorical": np.arange(6, dtype=np.int32)[:, None], "numeric": np.zeros((6, 0), np.float32)})
    writer.close()
    split = SplitArrays(tmp_path / "s")
    batches = list(iterate_batches(split, 4, shuffle=True, with_groups=True))
    assert [set(b) for b in batches] == [{"categorical", "numeric"}] * 2
    assert batches[0]["numeric"].shape == (4, 0)


def test_in_memory_split_gives_the_same_batches(split):
    a = [b["categorical"] for b in iterate_batches(split, 9, shuffle=True, seed=1)]
    split.load_in_memory()
    b = [b["categorical"] for b in iterate_batches(split, 9, shuffle=True, seed=1)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_request_block_order_keeps_requests_contiguous_and_is_a_permutation():
    from agenticrs.features.batching import request_block_order

    requests = np.array([7, 7, 7, 3, 3, 9, 1, 1, 1, 1, 5], dtype=np.int64)
    order = request_block_order(requests, seed=0, epoch=1)
    assert sorted(order.tolist()) == list(range(len(requests)))
    reordered = requests[order]
    runs = [int(reordered[0])] + [int(b) for a, b in zip(reordered[:-1], reordered[1:]) if a != b]
    assert sorted(runs) == [1, 3, 5, 7, 9]  # every request appears as exactly one run
    orders = {tuple(request_block_order(requests, seed=0, epoch=e)) for e in range(6)}
    assert len(orders) > 1  # shuffled differently per epoch
    assert np.array_equal(request_block_order(requests, 3, 4), request_block_order(requests, 3, 4))
