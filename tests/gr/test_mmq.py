"""MMQ tokenizer: the orthogonality penalty and the usage gap against hand computations, code usage
on planted clusters (no dead codebook), behaviour-aware fine-tuning (and the usage term that keeps
it from collapsing codes), config errors, save/load reproducing IDs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agenticrs.gr.mmq import MMQ, behaviour_pairs, orthogonality_penalty, usage_gap
from agenticrs.gr.tokenizers import Tokenizer, make_tokenizer, semantic_ids


def planted(n: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two modalities: 'text' (12-d) in 8 clusters, 'collaborative' (6-d) in 4 independent clusters."""
    rng = np.random.default_rng(seed)
    t, c = rng.integers(0, 8, n), rng.integers(0, 4, n)
    text = rng.normal(size=(8, 12)) * 3
    collab = rng.normal(size=(4, 6)) * 3
    x = np.hstack([text[t] + 0.1 * rng.normal(size=(n, 12)), collab[c] + 0.1 * rng.normal(size=(n, 6))])
    return x.astype(np.float32), t, c


SMALL = {"levels": 3, "modality_dims": (12, 6), "shared_levels": 1, "codebook_size": 8, "hidden": 32,
         "latent_dim": 8, "epochs": 12, "batch_size": 64, "kmeans_iters": 10, "behaviour_epochs": 3,
         "behaviour_batch_size": 64}  # fmt: skip


def test_orthogonality_penalty_matches_a_hand_computation() -> None:
    shared = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # rows normalised: e1, e2
    specific = torch.tensor([[3.0, 0.0], [1.0, 1.0]])  # rows normalised: e1, (1, 1)/√2
    # N(Z)ᵀN(Z_sh) = e1 e1ᵀ + (1,1)ᵀ/√2 e2ᵀ = [[1, 1/√2], [0, 1/√2]]: ||·||² = 1 + 1/2 + 1/2 = 2; / B² = 4
    torch.testing.assert_close(orthogonality_penalty([specific], shared), torch.tensor(0.5))
    # two modalities add; a specific latent uncorrelated with the shared one costs nothing
    uncorrelated = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    same_direction = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert orthogonality_penalty([uncorrelated], same_direction).item() == 0.0
    torch.testing.assert_close(orthogonality_penalty([specific, uncorrelated], shared), torch.tensor(0.5 + 0.5))


def test_behaviour_pairs_of_csr_sequences() -> None:
    pairs = behaviour_pairs(np.array([0, 3, 4, 6]), np.array([5, 6, 7, 9, 2, 3]))
    assert pairs.tolist() == [[4, 5], [5, 6], [1, 2]]  # zero-based rows; no pair across users


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="levels must be"):
        make_tokenizer("mmq", levels=3, modality_dims=(12, 6))  # 2 shared + 2 x 1 = 4
    tok = make_tokenizer("mmq", levels=3, modality_dims=(12, 6), shared_levels=1)
    with pytest.raises(ValueError, match="modality_dims"):
        tok.fit(np.zeros((10, 17), dtype=np.float32))
    with pytest.raises(ValueError, match="modality_dims"):
        make_tokenizer("mmq").fit(np.zeros((10, 17), dtype=np.float32))


def test_planted_clusters_use_every_codebook_and_fine_tuning_reloads(tmp_path: Path) -> None:
    x, t, c = planted()
    # behaviour: items of the same collaborative cluster follow each other
    rng = np.random.default_rng(1)
    a = rng.integers(0, len(x), 400)
    b = np.array([rng.choice(np.flatnonzero(c == c[i])) for i in a])
    tok = MMQ(**SMALL).fit(x, behaviour=np.stack([a, b], 1))
    stages = [h.stage for h in tok.history]
    assert stages.count("tokenizer") == 12 and stages.count("behaviour") == 3
    assert tok.history[-1].behaviour < tok.history[-3].behaviour  # the behaviour loss goes down
    stats = tok.stats(x)
    assert stats.vocab_sizes == (8, 8, 8)
    # no dead codebook: each level spreads the items over at least half of its 8 codes
    assert min(stats.usage) >= 0.5 and min(stats.perplexity) > 2.5, stats
    codes = tok.encode(x)
    # the text group's code separates the 8 text clusters (mostly pure), the collaborative one the 4
    for level, truth in ((1, t), (2, c)):
        purity = sum(np.bincount(truth[codes[:, level] == k]).max() for k in np.unique(codes[:, level])) / len(x)
        assert purity > 0.8, (level, purity)
    assert tok.orthogonality(x) < tok.history[0].orth
    sids = semantic_ids(tok, np.vstack([np.zeros((1, 18), np.float32), x]))
    assert len({tuple(r) for r in sids.codes[1:].tolist()}) == len(x)
    loaded = Tokenizer.load(tok.save(tmp_path / "mmq.pt"))
    assert isinstance(loaded, MMQ) and np.array_equal(loaded.encode(x), codes)
    np.testing.assert_allclose(loaded.decode(codes), tok.decode(codes), rtol=0, atol=0)
    # seeded: a second fit gives the same IDs
    assert np.array_equal(MMQ(**SMALL).fit(x, behaviour=np.stack([a, b], 1)).encode(x), codes)


def test_usage_gap_by_hand() -> None:
    k = 4
    assert float(usage_gap(torch.full((5, k), 1 / k))) == pytest.approx(0.0, abs=1e-7)
    one_code = torch.zeros(3, k)
    one_code[:, 2] = 1
    assert float(usage_gap(one_code)) == pytest.approx(np.log(k))
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0]])  # mean (0.5, 0.25, 0.25, 0)
    assert float(usage_gap(probs)) == pytest.approx(np.log(4) - (0.5 * np.log(2) + 2 * 0.25 * np.log(4)))


def test_the_usage_term_keeps_fine_tuning_from_collapsing_a_level() -> None:
    x, _, c = planted()
    rng = np.random.default_rng(1)
    a = rng.integers(0, len(x), 2000)
    group = c % 2  # two behaviour groups: fine-tuning pulls each onto few codes
    b = np.array([rng.choice(np.flatnonzero(group == group[i])) for i in a])
    pairs = np.stack([a, b], 1)
    settings = {**SMALL, "behaviour_epochs": 8, "behaviour_lr": 3e-3}
    plain = MMQ(**settings).fit(x, behaviour=pairs)
    kept = MMQ(**settings, usage_weight=1.0).fit(x, behaviour=pairs)
    assert plain.stats(x).perplexity[0] < 1.5  # the shared level collapses onto one code
    assert kept.stats(x).perplexity[0] > 2.0
    assert kept.history[-1].behaviour < kept.history[-8].behaviour  # and the behaviour loss still falls
