"""Small processed data sets for the model-zoo tests.

`seq_data`: four categorical fields (user_id, item_id, cate_id, city), one numeric column (price),
a behaviour history `hist_item_id` sharing item_id's vocab and a parallel `hist_cate_id` sharing
cate_id's, and a label planted as a known function of two fields:
label = 1 iff USER_SCORE[user] + ITEM_SCORE[item] > 0.
Rows come in requests of `REQUEST_SIZE` candidates that share the user, city and history (the
request-centric layout SORT uses); `request_id` is the request key.
`flat_data`: the same without any sequence (DIN must refuse it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from agenticrs.data.spec import DatasetSpec
from agenticrs.features.batching import iterate_batches
from agenticrs.features.pipeline import ProcessedDataset, process_dataset

ROWS = 2000
N_USERS, N_ITEMS, N_CATES, N_CITIES = 40, 60, 6, 5
MAX_LEN = 8
REQUEST_SIZE = 4
USER_SCORE = np.random.default_rng(101).normal(size=N_USERS)
ITEM_SCORE = np.random.default_rng(202).normal(size=N_ITEMS)


def planted_label(user: np.ndarray, item: np.ndarray) -> np.ndarray:
    return (USER_SCORE[user] + ITEM_SCORE[item] > 0).astype(np.int64)


def _table(rows: int, seed: int, with_sequences: bool) -> pa.Table:
    rng = np.random.default_rng(seed)
    requests = rows // REQUEST_SIZE
    per_request = lambda values: np.repeat(values, REQUEST_SIZE)  # noqa: E731
    user = per_request(rng.integers(0, N_USERS, requests))
    item = rng.integers(0, N_ITEMS, rows)
    columns = {
        "request_id": [f"r{r}" for r in per_request(np.arange(requests))],
        "user_id": [f"u{u}" for u in user],
        "item_id": [f"i{i}" for i in item],
        "cate_id": [f"c{i % N_CATES}" for i in item],
        "city": [f"city{c}" for c in per_request(rng.integers(0, N_CITIES, requests))],
        "price": rng.normal(10.0, 3.0, rows),
        "label": planted_label(user, item),
    }
    if with_sequences:
        lengths = rng.integers(0, MAX_LEN + 3, requests)  # empty, short, full and truncated histories
        hist = [h for n in lengths for h in [rng.integers(0, N_ITEMS, n)] * REQUEST_SIZE]
        columns["hist_item_id"] = [[f"i{i}" for i in h] for h in hist]
        columns["hist_cate_id"] = [[f"c{i % N_CATES}" for i in h] for h in hist]
    return pa.table(columns)


def _spec(name: str, path: Path, with_sequences: bool) -> DatasetSpec:
    fields = [
        {"name": "label", "kind": "label"},
        {"name": "user_id", "kind": "categorical"},
        {"name": "item_id", "kind": "categorical"},
        {"name": "cate_id", "kind": "categorical"},
        {"name": "city", "kind": "categorical"},
        {"name": "price", "kind": "numeric", "transform": "standardize"},
    ]
    if with_sequences:
        fields += [
            {"name": "hist_item_id", "kind": "sequence", "share_vocab_with": "item_id", "max_len": MAX_LEN},
            {
                "name": "hist_cate_id",
                "kind": "sequence",
                "share_vocab_with": "cate_id",
                "parallel_to": "hist_item_id",
                "max_len": MAX_LEN,
            },
        ]
    request_fields = ["user_id", "city"] + (["hist_item_id", "hist_cate_id"] if with_sequences else [])
    return DatasetSpec(
        name=name,
        files={"train": str(path)},
        reader={"format": "parquet"},
        fields=fields,
        group_key="user_id",
        request_key="request_id",
        request_fields=request_fields,
    )


def _build(root: Path, name: str, with_sequences: bool) -> ProcessedDataset:
    path = root / f"{name}.parquet"
    pq.write_table(_table(ROWS, seed=7, with_sequences=with_sequences), path)
    return process_dataset(_spec(name, path, with_sequences), root / "cache")


@pytest.fixture(scope="session")
def seq_data(tmp_path_factory) -> ProcessedDataset:
    return _build(tmp_path_factory.mktemp("zoo_seq"), "zoo_seq", with_sequences=True)


@pytest.fixture(scope="session")
def flat_data(tmp_path_factory) -> ProcessedDataset:
    return _build(tmp_path_factory.mktemp("zoo_flat"), "zoo_flat", with_sequences=False)


def take_batch(dataset: ProcessedDataset, size: int, start: int = 0) -> dict[str, torch.Tensor]:
    """Rows [start, start + size) of the training split as one batch."""
    split = dataset.split("train")
    for i, batch in enumerate(iterate_batches(split, size)):
        if i * size >= start:
            return batch
    raise ValueError("not enough rows")


@pytest.fixture(scope="session")
def batch_of():
    """`batch_of(dataset, size, start=0)`: rows [start, start + size) of the training split."""
    return take_batch


@pytest.fixture(scope="session")
def seq_batch(seq_data) -> dict[str, torch.Tensor]:
    return take_batch(seq_data, 128)
