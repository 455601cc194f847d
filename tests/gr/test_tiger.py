"""PrefixTrie (exactly the valid IDs, vectorised next-token masks) and TIGER (loss, causality,
trie-constrained beam search, learning a planted next item, save/load)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from gr_helpers import make_sids
from pydantic import ValidationError

from agenticrs.gr.base import SemanticIds
from agenticrs.gr.models.tiger import Tiger, TigerConfig
from agenticrs.gr.trie import PrefixTrie

NUM_ITEMS = 50




def tiny_config(**overrides: object) -> TigerConfig:
    """d 32, 1 + 1 layers, 2 heads x 16, no dropout."""
    base: dict[str, object] = {
        "max_len": 5, "d_model": 32, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
        "head_dim": 16, "ffn_dim": 64, "dropout": 0.0, "num_user_buckets": 7, "beam_size": 10,
    }
    return TigerConfig(**{**base, **overrides})


def make_batch(n: int, seed: int, max_len: int = 5, num_items: int = NUM_ITEMS) -> dict[str, torch.Tensor]:
    """Random right-aligned histories of length 1..max_len; target = (last % num_items) + 1."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, num_items + 1, (n, max_len), generator=g)
    lengths = torch.randint(1, max_len + 1, (n,), generator=g)
    keep = torch.arange(max_len).unsqueeze(0) >= (max_len - lengths).unsqueeze(1)
    history = items * keep
    return {
        "history": history,
        "user": torch.randint(0, 10_000, (n,), generator=g),
        "target": history[:, -1] % num_items + 1,
    }


# ------------------------------------------------------------------------------------------ trie
VOCABS = [(4, 4, 4), (3, 5, 2)]


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("dense", [True, False])
def test_trie_contains_exactly_the_valid_ids(vocab: tuple[int, ...], dense: bool) -> None:
    num_items = min(NUM_ITEMS, int(np.prod(vocab)) - 3)
    sids = make_sids(num_items, vocab)
    trie = PrefixTrie.from_semantic_ids(sids, max_dense_entries=1 << 20 if dense else 0)
    assert trie.dense == [dense] * len(vocab)
    assert torch.equal(trie.valid_codes(), torch.as_tensor(sids.codes[1:]))
    item_of_code = {tuple(c): i for i, c in enumerate(sids.codes[1:].tolist(), start=1)}
    # every code of the space (and out-of-range ones) against the truth
    ranges = [range(-1, v + 1) for v in vocab]
    space = torch.tensor(list(itertools.product(*ranges)))
    expected = torch.tensor([item_of_code.get(tuple(c), 0) for c in space.tolist()])
    assert torch.equal(trie.item_of(space), expected)
    assert torch.equal(trie.contains(space), expected > 0)
    assert int(trie.contains(space).sum()) == num_items
    # arbitrary leading dims; large random codes are rejected
    rand = torch.randint(-(10**6), 10**6, (3, 17, len(vocab)))
    assert not bool(trie.contains(rand).any())
    assert trie.item_of(space.view(2, -1, len(vocab))).shape == (2, space.shape[0] // 2)


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("dense", [True, False])
def test_trie_allowed_next_matches_brute_force(vocab: tuple[int, ...], dense: bool) -> None:
    num_items = min(NUM_ITEMS, int(np.prod(vocab)) - 3)
    sids = make_sids(num_items, vocab, seed=1)
    trie = PrefixTrie.from_semantic_ids(sids, max_dense_entries=1 << 20 if dense else 0)
    valid = [tuple(c) for c in sids.codes[1:].tolist()]
    for length in range(len(vocab)):
        prefixes = list(itertools.product(*[range(-1, v + 1) for v in vocab[:length]]))
        truth = torch.tensor(
            [[any(c[:length] == p and c[length] == nxt for c in valid) for nxt in range(vocab[length])] for p in prefixes]
        )
        got = trie.allowed_next(torch.tensor(prefixes, dtype=torch.long).view(len(prefixes), length))
        assert got.shape == (len(prefixes), vocab[length])
        assert torch.equal(got, truth), length
        assert trie.num_prefixes(length + 1) == len({c[: length + 1] for c in valid})


def test_trie_rejects_duplicate_or_out_of_range_codes() -> None:
    sids = make_sids(NUM_ITEMS)
    codes = sids.codes.copy()
    codes[2] = codes[1]
    with pytest.raises(ValueError, match="not unique"):
        PrefixTrie(codes, sids.vocab_sizes)
    codes = sids.codes.copy()
    codes[3, 1] = 4
    with pytest.raises(ValueError, match="out of range"):
        PrefixTrie(codes, sids.vocab_sizes)


# ----------------------------------------------------------------------------------------- model
def test_config_defaults_are_the_papers() -> None:
    cfg = TigerConfig()
    assert (cfg.d_model, cfg.num_encoder_layers, cfg.num_decoder_layers) == (128, 4, 4)
    assert (cfg.num_heads, cfg.head_dim, cfg.ffn_dim, cfg.dropout) == (6, 64, 1024, 0.1)
    assert (cfg.max_len, cfg.num_user_buckets, cfg.beam_size) == (20, 2000, 20)
    with pytest.raises(ValidationError):
        TigerConfig(nope=1)
    model = Tiger(NUM_ITEMS, cfg, make_sids(NUM_ITEMS))  # 6 x 64 heads on d_model 128 build and run
    assert model.recommend(make_batch(2, seed=0, max_len=20), k=5).shape == (2, 5)


def test_attention_dropout_defaults_to_dropout_and_can_be_switched_off() -> None:
    def rates(model: Tiger) -> set[float]:
        return {m.dropout for m in model.modules() if type(m).__name__ == "_Attention"}

    assert rates(Tiger(NUM_ITEMS, tiny_config(dropout=0.1), make_sids(NUM_ITEMS))) == {0.1}
    model = Tiger(NUM_ITEMS, tiny_config(dropout=0.1, attention_dropout=0.0), make_sids(NUM_ITEMS))
    assert rates(model) == {0.0}
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}  # the rest keeps it


def test_loss_shapes_and_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = Tiger(NUM_ITEMS, tiny_config(dropout=0.1), make_sids(NUM_ITEMS))
    batch = make_batch(16, seed=0)
    logits = model.token_logits(batch)
    assert logits.shape == (16, 3, 4)
    loss = model.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert "sid_codes" in model.state_dict()
    assert not any(key.startswith("trie.") for key in model.state_dict())


def test_teacher_forcing_is_causal() -> None:
    """Position t's logits depend on target tokens < t only (not t or later)."""
    torch.manual_seed(0)
    model = Tiger(NUM_ITEMS, tiny_config(), make_sids(NUM_ITEMS)).eval()
    batch = make_batch(64, seed=3)
    base = model.token_logits(batch)
    codes = model.sid_codes
    for t in range(3):
        # another item sharing the first t tokens but differing at t
        other = batch["target"].clone()
        for row, item in enumerate(batch["target"].tolist()):
            same = ((codes[1:, :t] == codes[item, :t]).all(1) & (codes[1:, t] != codes[item, t])).nonzero()
            if len(same):
                other[row] = int(same[0]) + 1
        changed = other != batch["target"]
        assert changed.sum() > 5
        logits = model.token_logits({**batch, "target": other})
        torch.testing.assert_close(logits[:, : t + 1], base[:, : t + 1])
        if t + 1 < 3:  # the next position does see token t
            assert not torch.allclose(logits[changed, t + 1], base[changed, t + 1])


def test_padding_and_batch_composition_do_not_change_outputs() -> None:
    torch.manual_seed(0)
    model = Tiger(NUM_ITEMS, tiny_config(max_len=8), make_sids(NUM_ITEMS)).eval()
    batch = make_batch(12, seed=4)
    base = model.token_logits(batch)
    padded = {**batch, "history": torch.cat([torch.zeros(12, 3, dtype=torch.long), batch["history"]], 1)}
    torch.testing.assert_close(model.token_logits(padded), base)
    alone = {key: value[:1] for key, value in batch.items()}
    torch.testing.assert_close(model.token_logits(alone), base[:1])


@pytest.mark.parametrize("beam_size", [None, 5])
def test_beam_search_returns_k_valid_unique_items_best_first(beam_size: int | None) -> None:
    torch.manual_seed(0)
    sids = make_sids(NUM_ITEMS)
    model = Tiger(NUM_ITEMS, tiny_config(), sids).eval()
    batch = make_batch(32, seed=5)
    k = 5
    recs = model.recommend(batch, k=k, beam_size=beam_size)
    assert recs.shape == (32, k) and recs.dtype == torch.long
    assert bool(((recs >= 1) & (recs <= NUM_ITEMS)).all())
    assert all(len(set(row)) == k for row in recs.tolist())
    codes, items, scores = model.beam_search(batch, beam_size or model.config.beam_size)
    assert torch.equal(items[:, :k], recs)
    assert torch.equal(model.trie.item_of(codes), items)  # complete codes are the items' SIDs
    assert torch.isfinite(scores).all() and bool((scores[:, 1:] <= scores[:, :-1]).all())
    # the scores are the sequence log-probabilities under teacher forcing
    rows = torch.arange(32).repeat_interleave(items.shape[1])
    flat = {key: value[rows] for key, value in batch.items()}
    flat["target"] = items.flatten()
    logp = torch.log_softmax(model.token_logits(flat), dim=-1)
    seq = logp.gather(-1, model.sid_codes[flat["target"]].unsqueeze(-1)).squeeze(-1).sum(-1)
    torch.testing.assert_close(seq.view_as(scores), scores, atol=1e-4, rtol=1e-4)


def test_beam_search_with_few_items_and_errors() -> None:
    sids = make_sids(6)
    model = Tiger(6, tiny_config(beam_size=20), sids).eval()
    batch = make_batch(4, seed=6, num_items=6)
    recs = model.recommend(batch, k=6)  # every item, each once
    assert sorted(recs[0].tolist()) == list(range(1, 7))
    with pytest.raises(ValueError):
        model.recommend(batch, k=7)
    with pytest.raises(ValueError):
        Tiger(7, tiny_config(), sids)


def test_save_load_reproduces_recommendations_and_rebuilds_the_trie(tmp_path) -> None:
    torch.manual_seed(0)
    sids = make_sids(NUM_ITEMS)
    model = Tiger(NUM_ITEMS, tiny_config(), sids).eval()
    batch = make_batch(16, seed=7)
    expected = model.recommend(batch, k=5)
    torch.save(model.state_dict(), tmp_path / "tiger.pt")
    # built with other (permuted) semantic IDs and other weights: loading restores both
    perm = np.concatenate([[0], np.random.default_rng(1).permutation(NUM_ITEMS) + 1])
    other = SemanticIds(codes=sids.codes[perm], vocab_sizes=sids.vocab_sizes)
    torch.manual_seed(1)
    loaded = Tiger(NUM_ITEMS, tiny_config(), other).eval()
    assert not torch.equal(loaded.recommend(batch, k=5), expected)
    loaded.load_state_dict(torch.load(tmp_path / "tiger.pt"))
    assert torch.equal(loaded.trie.valid_codes(), torch.as_tensor(sids.codes[1:]))
    assert torch.equal(loaded.recommend(batch, k=5), expected)


def test_learns_a_planted_next_item() -> None:
    """next = (last % 50) + 1: within 300 steps, Recall@1 on new histories > 0.9 (a step bound, not a
    wall-clock one: these machines are shared)."""
    torch.manual_seed(0)
    model = Tiger(NUM_ITEMS, tiny_config(), make_sids(NUM_ITEMS))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(300):
        loss = model.loss(make_batch(128, seed=100 + step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 24 and loss.item() < 0.01:
            break
    model.eval()
    test = make_batch(500, seed=1)
    recs = model.recommend(test, k=5)
    assert (recs[:, 0] == test["target"]).float().mean() > 0.9
