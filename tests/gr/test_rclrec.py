"""RCLRec (curriculum selection, decoder prefix, loss, runs that reload) and the multi-behaviour
sequence data it trains on (conversion-target split, simulator events, Taobao UserBehavior)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from agenticrs.gr.base import CART, CLICK, FAV, NUM_BEHAVIOURS, PURCHASE, SemanticIds, SequenceData
from agenticrs.gr.models.rclrec import RCLRec, RCLRecConfig, select_curriculum
from agenticrs.gr.sequences import (
    conversion_split,
    leave_one_out,
    load_taobao_sequences,
    next_item_batches,
    resolve_sequences,
)
from agenticrs.gr.train import load_sequential_run
from agenticrs.gr.workflow import SequentialJob, run_sequential_job

TINY = {"max_len": 8, "d_model": 16, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
        "head_dim": 8, "ffn_dim": 32, "dropout": 0.0, "num_user_buckets": 5, "beam_size": 6}  # fmt: skip



def _sids() -> SemanticIds:
    # items 1..8: first code = "category" (items 1-4: 0, 5-6: 1, 7-8: 2)
    codes = np.array([[0, 0], [0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1], [2, 0], [2, 1]])
    return SemanticIds(codes=codes, vocab_sizes=(3, 4))


def test_curriculum_walks_back_over_related_intent_events() -> None:
    sids = torch.as_tensor(_sids().codes)
    # oldest ... newest; anchor (target) = item 4 (category 0)
    history = torch.tensor([[1, 5, 2, 3, 7, 2, 6, 4]])
    kinds = torch.tensor([[CLICK, CLICK, PURCHASE, CART, CLICK, FAV, CLICK, CLICK]])
    allowed = torch.zeros(NUM_BEHAVIOURS, dtype=torch.bool)
    allowed[[CLICK, CART, FAV]] = True
    args = (history, kinds, sids[history], sids[torch.tensor([4])], allowed)
    # walking back: 4 (click, cat 0) kept, 6 other category, 2 (fav) kept, 7 other, 3 (cart) kept -> K = 3 reached
    assert select_curriculum(*args, size=3, window=50, prefix=1).tolist() == [[3, 2, 4]]
    # the purchase of item 2 is not a curriculum behaviour: with K = 5 the walk reaches item 1 instead
    assert select_curriculum(*args, size=5, window=50, prefix=1).tolist() == [[0, 1, 3, 2, 4]]
    # a window of the last 4 events: only 2 and 4 are related within it (right-aligned, PAD on the left)
    assert select_curriculum(*args, size=3, window=4, prefix=1).tolist() == [[0, 2, 4]]
    # a longer shared prefix: only item 4 itself shares both codes
    assert select_curriculum(*args, size=3, window=50, prefix=2).tolist() == [[0, 0, 4]]
    assert select_curriculum(*args, size=0, window=50, prefix=1).shape == (1, 0)


def _model(**overrides: object) -> RCLRec:
    torch.manual_seed(0)
    return RCLRec(8, RCLRecConfig(**{**TINY, **overrides}), _sids())


def _batch() -> dict[str, torch.Tensor]:
    return {
        "history": torch.tensor([[0, 1, 5, 2, 3, 7, 2, 4], [0, 0, 0, 0, 0, 0, 6, 8]]),
        "history_behaviour": torch.tensor([[0, CLICK, CLICK, PURCHASE, CART, CLICK, FAV, CART],
                                           [0, 0, 0, 0, 0, 0, CLICK, CLICK]]),  # fmt: skip
        "user": torch.tensor([3, 9]),
        "target": torch.tensor([4, 7]),
        "target_behaviour": torch.tensor([PURCHASE, CLICK]),
    }


def test_prefix_layout_and_anchor() -> None:
    model = _model()
    batch = _batch()
    items = model.curriculum(batch, torch.tensor([4, 0]))  # second row: no anchor
    assert items.tolist() == [[3, 2, 4], [0, 0, 0]]
    tokens, positions = model.prefix_tokens(items)
    start, sep = model.code_token_start, model.sep_token
    code = lambda item, level: start + int(model.code_offsets[level]) + int(model.sid_codes[item, level])  # noqa: E731
    assert tokens[0].tolist() == [1, code(3, 0), code(3, 1), code(2, 0), code(2, 1), code(4, 0), code(4, 1), sep]
    assert tokens[1].tolist() == [0] * 7 + [1] and positions[0].tolist() == list(range(8))
    assert positions[1, -1] == 0
    # inference anchor: the most recent cart (item 4), else the most recent click (row 2: item 8)
    assert model.anchors(batch).tolist() == [4, 8]


def test_loss_gradients_and_ablations() -> None:
    batch = _batch()
    model = _model()
    loss = model.loss(batch)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert model.token_embedding.weight.grad[model.sep_token].abs().sum() > 0  # SEP is read by the prefix
    # no curriculum: the loss is TIGER's mean token cross-entropy of the plain decoder pass
    plain = _model(curriculum_size=0)
    memory, mask = plain.encode(batch)
    kv = plain.memory_kv(memory)
    bos = torch.ones(2, 1, dtype=torch.long)
    logp, _ = plain.target_log_probs(bos, torch.zeros_like(bos), batch["target"], batch["target_behaviour"], kv, mask)
    assert torch.allclose(plain.loss(batch), -logp.sum() / 4)
    # the curriculum and its quality weighting change the loss
    fixed = _model(quality_weighting=False)
    assert not torch.allclose(fixed.loss(batch), model.loss(batch))


@pytest.mark.parametrize("prefix", ["anchor", "none"])
def test_beam_search_returns_valid_unique_items(prefix: str) -> None:
    model = _model(inference_prefix=prefix).eval()
    recs = model.recommend(_batch(), k=5)
    assert recs.shape == (2, 5) and all(len(set(r)) == 5 and min(r) >= 1 and max(r) <= 8 for r in recs.tolist())
    # scores are those of the decoded items: the first beam is the best
    _, items, scores = model.beam_search(_batch(), 6)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])


def _multi_behaviour_data(users: int = 60, seed: int = 0) -> SequenceData:
    """Per user: browse clicks, then click -> cart -> purchase of one item, a few times."""
    rng = np.random.default_rng(seed)
    items, kinds, lengths = [], [], []
    for _ in range(users):
        seq_i, seq_k = [], []
        for _ in range(3):
            for item in rng.integers(1, 31, 2):
                seq_i.append(int(item))
                seq_k.append(CLICK)
            bought = int(rng.integers(1, 31))
            seq_i += [bought, bought, bought]
            seq_k += [CLICK, CART, PURCHASE]
        items += seq_i
        kinds += seq_k
        lengths.append(len(seq_i))
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return SequenceData(
        name="planted-mb", num_items=30, users=np.arange(1, users + 1, dtype=np.int64), offsets=offsets,
        items=np.asarray(items, np.int64), behaviours=np.asarray(kinds, np.int64),
        attribute_offsets=np.r_[0, np.arange(31)].astype(np.int64), attributes=np.arange(30, dtype=np.int64) % 5,
    )  # fmt: skip


def test_conversion_split_and_batches_carry_behaviours() -> None:
    data = _multi_behaviour_data(users=2)
    splits = conversion_split(data)
    # per user 15 events, purchases at positions 4, 9, 14: valid target = 9, test target = 14
    assert len(splits.valid) == len(splits.test) == 2
    assert np.all(splits.test.target_behaviours == PURCHASE) and np.all(np.diff(splits.test.offsets) == 14)
    assert np.all(np.diff(splits.valid.offsets) == 9) and np.all(np.diff(splits.train.offsets) == 9)
    assert np.array_equal(splits.train.behaviours, data.behaviours[np.r_[0:9, 15:24]])
    batch = next(splits.test.batches(max_len=20, batch_size=2))
    assert batch["history_behaviour"][0, -3:].tolist() == [CLICK, CLICK, CART]
    assert batch["target_behaviour"].tolist() == [PURCHASE] * 2
    train = next(next_item_batches(splits.train, 5, 4, seed=0, epoch=0, mode="prefixes"))
    assert train["history_behaviour"].shape == (4, 5) and train["target_behaviour"].shape == (4,)
    # leave-one-out keeps the behaviours too; data without them has none in its batches
    assert leave_one_out(data).test.target_behaviours is not None
    bare = SequenceData("bare", 30, data.users, data.offsets, data.items)
    assert "history_behaviour" not in next(leave_one_out(bare).test.batches(5, 2))
    with pytest.raises(ValueError, match="behaviour"):
        conversion_split(bare)


def test_rclrec_run_trains_and_reloads_exactly(tmp_path: Path) -> None:
    data = _multi_behaviour_data()
    job = SequentialJob(
        dataset="planted-mb", model="rclrec", model_params=TINY,
        train={"epochs": 1, "max_steps_per_epoch": 8, "batch_size": 64, "seed": 1, "targets": "conversion"},
        tokenizer={"source": "attributes", "levels": 2, "codebook_size": 4, "attribute_dim": 4},
    )  # fmt: skip
    folder, result = run_sequential_job(job, tmp_path, tmp_path / "cache", data=data)
    assert {"recall@10", "ndcg@10"} <= set(result.test)
    model, config = load_sequential_run(folder)
    assert config.train.targets == "conversion" and isinstance(model, RCLRec)
    batch = next(conversion_split(data).test.batches(8, 60))
    first = model.recommend(batch, 5)
    again, _ = load_sequential_run(folder)
    assert torch.equal(again.recommend(batch, 5), first)
    # a second run with the same seed reproduces the test metrics
    _, result2 = run_sequential_job(job, tmp_path, tmp_path / "cache", data=data)
    assert result2.test == result.test


def test_simulator_events_as_behaviour_sequences(tiny_cache: Path) -> None:
    data = resolve_sequences("sim-tiny-behaviours", tiny_cache)
    clicks = resolve_sequences("sim-tiny", tiny_cache)
    assert data.behaviours is not None and set(np.unique(data.behaviours)) == {CLICK, CART, PURCHASE}
    assert (data.behaviours == CLICK).sum() >= len(clicks.items)  # users with < 3 clicks may still have 3 events
    assert len(conversion_split(data).test) > 0
    # every event's time travels with it: non-decreasing within each user
    assert data.timestamps is not None and len(data.timestamps) == len(data.items)
    user_of = np.repeat(np.arange(data.num_users), data.lengths)
    steps = np.diff(data.timestamps)[user_of[1:] == user_of[:-1]]
    assert (steps >= 0).all() and (steps > 0).any()


@pytest.mark.realdata
def test_taobao_userbehavior_sample() -> None:
    folder = Path(os.environ.get("AGENTICRS_DATA_DIR", "../shared/data")) / "taobao_userbehavior_sample"
    if not folder.is_dir():
        pytest.skip("Taobao UserBehavior sample not present")
    data = load_taobao_sequences(folder)
    # 4,321 rows: pv 3,926, cart 190, fav 128, buy 77 (the sample's README); 43 users
    assert np.bincount(data.behaviours, minlength=5)[1:].tolist() == [3926, 190, 128, 77]
    assert data.num_users == 43 and data.num_items == 3276 and data.attributes is not None
    assert data.timestamps.min() == 1505117799 and data.timestamps.max() == 1512316753  # the README's range
