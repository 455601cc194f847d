"""The FAISS index: exact neighbours, approximate recall, reload as a run artifact, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agenticrs.retrieval.index import IndexConfig, VectorIndex, neighbour_recall, time_search


def _vectors(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_exact_index_returns_the_brute_force_neighbours_with_item_ids() -> None:
    items, queries = _vectors(200, 8, 0), _vectors(5, 8, 1)
    ids = np.arange(1, 201) * 10
    index = VectorIndex.build(items, ids, IndexConfig(kind="exact"))
    scores, found = index.search(queries, 7)
    brute = np.argsort(-(queries @ items.T), axis=1)[:, :7]
    assert np.array_equal(found, ids[brute])
    assert np.allclose(scores, np.take_along_axis(queries @ items.T, brute, axis=1), atol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_finds_the_exact_neighbours_on_a_small_set(kind: str) -> None:
    items, queries = _vectors(500, 16, 2), _vectors(20, 16, 3)
    exact = VectorIndex.build(items, config=IndexConfig(kind="exact"))
    approx = VectorIndex.build(items, config=IndexConfig(kind=kind, nlist=8, nprobe=8, ef_search=200))
    assert neighbour_recall(exact.search(queries, 10)[1], approx.search(queries, 10)[1]) == 1.0


def test_index_saved_in_a_run_directory_reloads_identically(tmp_path: Path) -> None:
    items, queries = _vectors(300, 12, 4), _vectors(10, 12, 5)
    index = VectorIndex.build(items, np.arange(300) + 1, IndexConfig(kind="hnsw", hnsw_m=8, ef_search=16))
    folder = index.save(tmp_path / "run" / "index")
    loaded = VectorIndex.load(folder)
    assert loaded.config == index.config and loaded.dim == 12 and loaded.size == 300
    for got, want in zip(loaded.search(queries, 5), index.search(queries, 5), strict=True):
        assert np.array_equal(got, want)


def test_cosine_metric_normalises_items_and_queries() -> None:
    items = np.array([[10.0, 0.0], [0.6, 0.8]], np.float32)
    index = VectorIndex.build(items, config=IndexConfig(kind="exact", metric="cosine"))
    _, ids = index.search(np.array([[0.5, 0.6]], np.float32), 1)
    assert ids.tolist() == [[1]]  # by inner product item 0 would win


def test_bad_input_stops_with_a_clear_error(tmp_path: Path) -> None:
    items = _vectors(50, 8, 6)
    index = VectorIndex.build(items, config=IndexConfig(kind="exact"))
    with pytest.raises(ValueError, match="query vectors have dimension 4; the index was built on 8-dimensional"):
        index.search(_vectors(3, 4, 7), 5)
    bad = items.copy()
    bad[[3, 9], 2] = np.nan
    with pytest.raises(ValueError, match=r"item vectors contain NaN or infinite values in 2 row\(s\), e.g. rows \[3, 9\]"):
        VectorIndex.build(bad)
    with pytest.raises(ValueError, match="query vectors contain NaN"):
        index.search(np.full((1, 8), np.inf, np.float32), 5)
    with pytest.raises(ValueError, match="ids must have one entry per vector"):
        VectorIndex.build(items, ids=np.arange(3))
    with pytest.raises(ValueError, match="2-D array"):
        VectorIndex.build(items[0])
    with pytest.raises(FileNotFoundError, match="index.faiss is missing"):
        VectorIndex.load(tmp_path)


def test_neighbour_recall_and_search_timing() -> None:
    assert neighbour_recall(np.array([[1, 2, 3], [4, 5, 6]]), np.array([[3, 2, 9], [7, 8, 9]])) == pytest.approx(2 / 6)
    index = VectorIndex.build(_vectors(100, 4, 8), config=IndexConfig(kind="exact"))
    per_query, ids = time_search(index, _vectors(10, 4, 9), 3)
    assert per_query > 0 and ids.shape == (10, 3)


def test_hnsw_widens_its_beam_to_k() -> None:
    items, queries = _vectors(400, 8, 10), _vectors(5, 8, 11)
    exact = VectorIndex.build(items, config=IndexConfig(kind="exact"))
    narrow = VectorIndex.build(items, config=IndexConfig(kind="hnsw", ef_search=4))
    assert neighbour_recall(exact.search(queries, 100)[1], narrow.search(queries, 100)[1]) > 0.9
