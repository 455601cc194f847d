"""HSTU: the pointwise-normalised gated attention by hand, relative position and time biases,
causality, gradients, learning a planted next item beyond popularity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agenticrs.gr.base import SequenceData
from agenticrs.gr.models.hstu import HSTU, HSTUBlock, HSTUConfig, time_buckets
from agenticrs.gr.sequences import leave_one_out
from agenticrs.gr.train import SequentialTrainConfig, train_sequential
from agenticrs.gr.zoo import build_sequential, list_sequential_models, sequential_model_class

SMALL = {"dim": 16, "num_blocks": 1, "num_heads": 2, "dropout": 0.0, "max_len": 8}



def planted(users: int, items: int, seed: int = 0) -> SequenceData:
    """Item i is always followed by item i % items + 1 (every item equally popular)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(6, 10, users)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    pos = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    seq = (np.repeat(rng.integers(0, items, users), lengths) + pos) % items + 1
    return SequenceData("planted", items, np.arange(users, dtype=np.int64), offsets, seq.astype(np.int64))


def batch(n: int = 4, length: int = 8, items: int = 30, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    history = torch.randint(1, items + 1, (n, length), generator=g)
    history[0, :3] = 0  # a padded row
    targets = torch.roll(history, -1, 1) * (history != 0)
    stamps = torch.cumsum(torch.randint(1, 5000, (n, length), generator=g), 1)
    return {"history": history, "targets": targets, "target": targets[:, -1], "timestamps": stamps}


def test_registered_with_typed_config() -> None:
    assert "hstu" in list_sequential_models() and sequential_model_class("hstu") is HSTU
    with pytest.raises(ValueError, match="num_time_buckets"):
        build_sequential("hstu", 10, {"num_time_buckets": 0})
    with pytest.raises(ValueError, match="divisible"):
        build_sequential("hstu", 10, {"dim": 10, "num_heads": 3})


def test_pointwise_attention_by_hand() -> None:
    """SiLU(q.k / sqrt(dk) + rab_pos[i - j]) / max_len on the causal mask: no softmax."""
    block = HSTUBlock(HSTUConfig(dim=2, num_heads=1, max_len=4))
    with torch.no_grad():
        block.position_bias.copy_(torch.tensor([[0.5, -1.0, 0.0, 2.0]]))
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).view(1, 1, 3, 2)
    k = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]]).view(1, 1, 3, 2)
    mask = torch.ones(3, 3).tril().unsqueeze(0)
    got = block.attention(q, k, mask, None)[0, 0]
    want = torch.zeros(3, 3)
    bias = [0.5, -1.0, 0.0]
    for i in range(3):
        for j in range(i + 1):
            dot = float(q[0, 0, i] @ k[0, 0, j]) / math.sqrt(2)
            want[i, j] = F.silu(torch.tensor(dot + bias[i - j])) / 4
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got.sum(-1), torch.ones(3))  # pointwise, not a distribution


def test_attention_norm_ablations_by_hand() -> None:
    """`count` divides SiLU by the keys a query sees; `softmax` is a distribution over them."""
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).view(1, 1, 3, 2)
    k = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]]).view(1, 1, 3, 2)
    mask = torch.ones(3, 3).tril().unsqueeze(0)
    mask[0, 2, 0] = 0  # query 2 does not see key 0 (padding)
    dots = (q @ k.transpose(-1, -2))[0, 0] / math.sqrt(2)
    count = HSTUBlock(HSTUConfig(dim=2, num_heads=1, max_len=4, attention_norm="count")).attention(q, k, mask, None)[0, 0]
    want = F.silu(dots) * mask[0] / torch.tensor([[1.0], [2.0], [2.0]])
    torch.testing.assert_close(count, want)
    soft = HSTUBlock(HSTUConfig(dim=2, num_heads=1, max_len=4, attention_norm="softmax")).attention(q, k, mask, None)[0, 0]
    torch.testing.assert_close(soft.sum(-1), torch.ones(3))
    assert soft[2, 0] == 0 and soft[0, 1:].abs().sum() == 0
    torch.testing.assert_close(soft[1, :2], torch.softmax(dots[1, :2], -1))
    empty = torch.zeros(1, 3, 3)  # a padding query that sees no key: zeros, not NaN
    assert HSTUBlock(HSTUConfig(dim=2, num_heads=1, max_len=4, attention_norm="softmax")).attention(
        q, k, empty, None).abs().sum() == 0


@pytest.mark.parametrize("norm", ["count", "softmax"])
def test_attention_norm_ablations_train_without_leakage(norm: str) -> None:
    torch.manual_seed(0)
    model = build_sequential("hstu", 30, {**SMALL, "attention_norm": norm})
    b = batch()
    loss = model.loss(b)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    model.eval()
    h = model.hidden(b["history"])
    history = b["history"].clone()
    history[:, 5] = history[:, 5] % 30 + 1
    torch.testing.assert_close(h[:, :5], model.hidden(history)[:, :5])


def test_time_buckets_by_hand() -> None:
    stamps = torch.tensor([[0, 1, 10, 1000]])
    got = time_buckets(stamps, num_buckets=20)[0, 0]
    # |gap| 0, 1 -> log(1) = 0; 10 -> floor(2.303 / 0.301) = 7; 1000 -> 22, clamped to 19
    assert got.tolist() == [0, 0, 7, 19]


def test_shapes_gradients_and_time_bias() -> None:
    torch.manual_seed(0)
    model = build_sequential("hstu", 30, SMALL)
    b = batch()
    plain = {k: v for k, v in b.items() if k != "timestamps"}
    model.loss(plain).backward()
    assert model.blocks[0].time_bias.grad is None or not model.blocks[0].time_bias.grad.any()
    model.zero_grad()
    loss = model.loss(b)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == [], missing
    model.eval()
    assert model.score_all(plain).shape == (4, 31) and model.recommend(plain, 5).shape == (4, 5)
    with torch.no_grad():
        model.blocks[0].time_bias.normal_()
    assert not torch.allclose(model.score_all(b), model.score_all(plain))  # timestamps change the scores
    assert model.recommend(plain, 30).sort(1).values.tolist() == [list(range(1, 31))] * 4


def test_no_future_leakage() -> None:
    """Changing the item (and time) at position t leaves every earlier state unchanged."""
    torch.manual_seed(1)
    model = build_sequential("hstu", 30, SMALL).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.time_bias.normal_()
    b = batch(seed=3)
    h = model.hidden(b["history"], b["timestamps"])
    history, stamps = b["history"].clone(), b["timestamps"].clone()
    history[:, 5] = history[:, 5] % 30 + 1
    stamps[:, 5:] += 10_000_000
    h2 = model.hidden(history, stamps)
    torch.testing.assert_close(h[:, :5], h2[:, :5])
    assert not torch.allclose(h[:, 5:], h2[:, 5:])


@pytest.mark.parametrize("loss", ["ce", "sampled"])  # sampled softmax: the paper's objective
def test_learns_planted_pattern_beyond_popularity(loss: str) -> None:
    data = planted(300, 40)
    torch.manual_seed(0)
    model = build_sequential("hstu", 40, {**SMALL, "dim": 32, "loss": loss, "num_negatives": 8})
    config = SequentialTrainConfig(epochs=15, batch_size=64, learning_rate=1e-2, patience=2, seed=1, num_threads=1)
    result = train_sequential(model, data, config)
    # most popular training items as the recommendation for everyone
    splits = leave_one_out(data)
    top10 = np.argsort(-np.bincount(splits.train.items, minlength=41)[1:])[:10] + 1
    popularity = float(np.isin(splits.test.targets, top10).mean())
    assert popularity < 0.4 and result.test["recall@10"] > 0.9, (popularity, result.history)


def timed(users: int = 400, items: int = 40, length: int = 10, seed: int = 0) -> SequenceData:
    """Which earlier item comes back depends on time: after two events a minute apart the one
    before last, after two a day apart the one before that."""
    rng = np.random.default_rng(seed)
    seqs, stamps = [], []
    for _ in range(users):
        ts = np.cumsum(np.where(rng.random(length) < 0.5, 60, 86_400))
        x = list(rng.integers(1, items + 1, 3))
        for t in range(3, length):
            x.append(x[t - 2] if ts[t - 1] - ts[t - 2] < 3600 else x[t - 3])
        seqs.append(x)
        stamps.append(ts)
    offsets = np.r_[0, np.cumsum([len(s) for s in seqs])].astype(np.int64)
    return SequenceData("timed", items, np.arange(users, dtype=np.int64), offsets, np.concatenate(seqs).astype(np.int64),
                        timestamps=np.concatenate(stamps).astype(np.int64))  # fmt: skip


def test_the_time_bias_learns_from_the_data_sets_timestamps_through_the_engine() -> None:
    data = timed()
    untimed = SequenceData(data.name, data.num_items, data.users, data.offsets, data.items)
    config = SequentialTrainConfig(epochs=40, batch_size=64, learning_rate=3e-3, patience=10, seed=1, num_threads=1,
                                   ks=[1], monitor="recall@1")  # fmt: skip
    recall = {}
    for name, d in (("timed", data), ("untimed", untimed)):
        torch.manual_seed(0)
        model = build_sequential("hstu", 40, {**SMALL, "dim": 32, "num_blocks": 2, "max_len": 10})
        recall[name] = train_sequential(model, d, config).test["recall@1"]
    # without times the two rules look alike (about 3 in 4 right); with them nearly every target is
    assert recall["timed"] > 0.88 and recall["timed"] > recall["untimed"] + 0.1, recall
