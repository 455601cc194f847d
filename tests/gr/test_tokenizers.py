"""Semantic-ID tokenizers: exactness on constructed codebooks, learning, collisions, stats, persistence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agenticrs.gr.base import SemanticIds
from agenticrs.gr.tokenizers import (
    RQVAE,
    ProductQuantizer,
    RQKMeans,
    Tokenizer,
    add_collision_digit,
    code_stats,
    decode_with_codebooks,
    encode_with_codebooks,
    kmeans,
    load_semantic_ids,
    make_tokenizer,
    reassign_collisions,
    save_semantic_ids,
    semantic_ids,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: intra-op threads only add contention (10x slower on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _layered_codebooks(rng: np.random.Generator, levels: int, k: int, d: int) -> list[np.ndarray]:
    """Level l's codewords at scale 100 / 10**l: greedy residual encoding recovers the sum exactly."""
    return [rng.normal(size=(k, d)) * 100.0 / 10**level for level in range(levels)]


def _clusters(rng: np.random.Generator, n: int, d: int, k: int, noise: float = 0.05) -> np.ndarray:
    centers = rng.normal(size=(k, d))
    return (centers[rng.integers(0, k, n)] + noise * rng.normal(size=(n, d))).astype(np.float32)


def test_residual_encode_is_exact_on_sums_of_codewords() -> None:
    rng = np.random.default_rng(0)
    books = _layered_codebooks(rng, levels=3, k=8, d=16)
    codes = rng.integers(0, 8, size=(200, 3))
    x = decode_with_codebooks(codes, books)
    assert np.array_equal(encode_with_codebooks(x, books), codes)
    assert np.abs(decode_with_codebooks(encode_with_codebooks(x, books), books) - x).max() == 0.0

    tokenizer = RQKMeans.from_codebooks(books)
    assert np.array_equal(tokenizer.encode(x), codes)
    stats = tokenizer.stats(x)
    assert stats.relative_error < 1e-10


def test_rq_kmeans_recovers_a_two_level_structure() -> None:
    rng = np.random.default_rng(1)
    books = _layered_codebooks(rng, levels=2, k=4, d=8)
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(4), indexing="ij"), -1).reshape(-1, 2)
    x = decode_with_codebooks(np.repeat(grid, 5, axis=0), books)
    tokenizer = RQKMeans(levels=2, codebook_size=4, seed=3).fit(x)
    stats = tokenizer.stats(x)
    assert stats.relative_error < 1e-10
    assert stats.usage == (1.0, 1.0)
    assert stats.unique_tuples == 16 and stats.max_items_per_tuple == 5 and stats.collision_rate == 1.0


def test_kmeans_and_rq_kmeans_are_deterministic_for_a_seed() -> None:
    x = _clusters(np.random.default_rng(2), 300, 12, 10)
    c1, a1 = kmeans(torch.as_tensor(x), 16, seed=5)
    c2, a2 = kmeans(torch.as_tensor(x), 16, seed=5)
    assert torch.equal(c1, c2) and torch.equal(a1, a2)
    t1, t2 = RQKMeans(levels=2, codebook_size=16, seed=1).fit(x), RQKMeans(levels=2, codebook_size=16, seed=1).fit(x)
    assert np.array_equal(t1.encode(x), t2.encode(x))
    assert all(torch.equal(a, b) for a, b in zip(t1.codebooks, t2.codebooks))


def _small_vae(**overrides: object) -> RQVAE:
    config: dict[str, object] = {"levels": 2, "codebook_size": 16, "hidden": (64, 32), "latent_dim": 8}
    config.update({"epochs": 25, "batch_size": 128, "lr": 3e-3}, **overrides)
    return RQVAE(**config)


def test_rq_vae_loss_decreases_and_uses_its_codebooks() -> None:
    x = _clusters(np.random.default_rng(3), 512, 24, 16, noise=0.1)
    tokenizer = _small_vae().fit(x)
    losses = [h.loss for h in tokenizer.history]
    assert len(losses) == 25
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    stats = tokenizer.stats(x)
    assert stats.usage[0] >= 0.75
    assert stats.relative_error < 0.5
    assert tokenizer.encode(x).shape == (512, 2) and tokenizer.decode(tokenizer.encode(x)).shape == x.shape


def test_rq_vae_dead_code_reset_revives_unused_codes() -> None:
    x = _clusters(np.random.default_rng(4), 400, 16, 12)
    tokenizer = _small_vae(epochs=2).fit(x)
    assert tokenizer.net is not None
    with torch.no_grad():
        tokenizer.net.codebooks[0, :6] = 1e3  # far from every latent: never chosen
    assert not np.isin(tokenizer.encode(x)[:, 0], np.arange(6)).any()
    tokenizer.train(x, epochs=1)
    last = tokenizer.history[-1]
    assert last.dead_reset >= 6 and last.usage[0] <= 10 / 16
    assert tokenizer.net.codebooks[0, :6].abs().max() < 100
    used = np.unique(tokenizer.encode(x)[:, 0])
    assert np.isin(np.arange(6), used).all()  # each reset code is some item's exact residual


def test_rq_vae_is_deterministic_for_a_seed() -> None:
    x = _clusters(np.random.default_rng(5), 256, 16, 8)
    a, b = _small_vae(epochs=3, seed=7).fit(x), _small_vae(epochs=3, seed=7).fit(x)
    assert np.array_equal(a.encode(x), b.encode(x))
    assert [h.loss for h in a.history] == [h.loss for h in b.history]


def test_product_quantizer_codes_are_independent_per_sub_vector() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    pq = ProductQuantizer(levels=4, codebook_size=8).fit(x)
    codes = pq.encode(x)
    changed = x.copy()
    changed[:, 4:8] = rng.normal(size=(300, 4))
    new = pq.encode(changed)
    assert np.array_equal(new[:, [0, 2, 3]], codes[:, [0, 2, 3]])
    own = ((changed[:, None, 4:8] - pq.codebooks[1].numpy()[None]) ** 2).sum(-1).argmin(1)
    assert np.array_equal(new[:, 1], own)
    assert pq.decode(codes).shape == x.shape


def test_opq_rotation_is_orthogonal_and_round_trips() -> None:
    x = _clusters(np.random.default_rng(7), 300, 12, 20)
    opq = ProductQuantizer(levels=3, codebook_size=8, opq_iters=3).fit(x)
    assert opq.rotation is not None
    assert torch.allclose(opq.rotation @ opq.rotation.T, torch.eye(12), atol=1e-5)
    assert opq.stats(x).relative_error < 1.0


def test_collision_digit_makes_tuples_unique_in_item_order() -> None:
    codes = np.array([[1, 2], [0, 0], [1, 2], [3, 3], [1, 2], [0, 0], [2, 2]])
    extended, vocab = add_collision_digit(codes)
    assert vocab == 3
    assert extended[:, -1].tolist() == [0, 0, 1, 0, 2, 1, 0]
    assert np.array_equal(extended[:, :2], codes)
    assert len(np.unique(extended, axis=0)) == len(codes)

    unique = np.array([[0, 1], [1, 0], [2, 2]])
    extended, vocab = add_collision_digit(unique)
    assert vocab == 1 and extended.shape == (3, 3) and (extended[:, -1] == 0).all()


def test_reassign_collisions_takes_the_nearest_free_code() -> None:
    codes = np.array([[0, 1], [0, 1], [0, 1], [1, 1]])
    distances = np.array([[3.0, 0.0, 1.0, 2.0]] * 4)
    out = reassign_collisions(codes, distances)
    assert out.tolist() == [[0, 1], [0, 2], [0, 3], [1, 1]]
    with pytest.raises(ValueError):
        reassign_collisions(np.zeros((3, 2), dtype=int), np.zeros((3, 2)))


def test_semantic_ids_are_unique_with_padding_row() -> None:
    x = _clusters(np.random.default_rng(8), 120, 8, 6, noise=0.0)  # exact duplicates -> collisions
    embeddings = np.vstack([np.zeros((1, 8), np.float32), x])
    tokenizer = RQKMeans(levels=2, codebook_size=4).fit(x)
    sids = semantic_ids(tokenizer, embeddings)
    assert isinstance(sids, SemanticIds)
    assert sids.codes.shape == (121, 3) and sids.levels == 3 and sids.num_items == 120
    assert (sids.codes[0] == 0).all()
    assert len(np.unique(sids.codes[1:], axis=0)) == 120
    assert sids.vocab_sizes[:2] == (4, 4) and sids.vocab_sizes[2] == sids.codes[1:, 2].max() + 1

    pq = ProductQuantizer(levels=2, codebook_size=64).fit(x)
    sids = semantic_ids(pq, embeddings, collision="reassign")
    assert sids.codes.shape == (121, 2) and sids.vocab_sizes == (64, 64)
    assert len(np.unique(sids.codes[1:], axis=0)) == 120


def test_code_stats_on_a_hand_made_case() -> None:
    codes = np.array([[0, 1], [0, 1], [1, 0], [2, 1]])
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    x_hat = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    stats = code_stats(codes, (4, 2), x, x_hat)
    assert stats.usage == (0.75, 1.0)
    assert stats.perplexity[0] == pytest.approx(2**1.5)
    assert stats.perplexity[1] == pytest.approx(math.exp(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75))))
    assert stats.collision_rate == 0.5 and stats.unique_tuples == 3 and stats.max_items_per_tuple == 2
    assert stats.mse == pytest.approx(1 / 8) and stats.relative_error == pytest.approx(1 / 4)


@pytest.mark.parametrize("kind", ["rq_kmeans", "pq", "rq_vae"])
def test_tokenizer_save_load_round_trip(kind: str, tmp_path) -> None:
    x = _clusters(np.random.default_rng(9), 200, 12, 8)
    overrides = {"rq_vae": {"hidden": (32,), "latent_dim": 6, "epochs": 2, "batch_size": 64}, "pq": {"opq_iters": 1}}
    tokenizer = make_tokenizer(kind, levels=2, codebook_size=8, **overrides.get(kind, {})).fit(x)
    path = tokenizer.save(tmp_path / f"{kind}.pt")
    loaded = Tokenizer.load(path)
    assert type(loaded) is type(tokenizer) and loaded.config == tokenizer.config
    assert np.array_equal(loaded.encode(x), tokenizer.encode(x))
    codes = tokenizer.encode(x)
    assert np.allclose(loaded.decode(codes), tokenizer.decode(codes))
    other = RQVAE if kind != "rq_vae" else RQKMeans
    with pytest.raises(ValueError):
        other.load(path)


def test_semantic_ids_save_load_round_trip(tmp_path) -> None:
    sids = SemanticIds(codes=np.array([[0, 0, 0], [1, 2, 0], [1, 2, 1]]), vocab_sizes=(4, 4, 2))
    loaded = load_semantic_ids(save_semantic_ids(tmp_path / "sids.npz", sids))
    assert np.array_equal(loaded.codes, sids.codes) and loaded.codes.dtype == np.int64
    assert loaded.vocab_sizes == (4, 4, 2)
