"""MDGR: unmasking schedules, training masks, order-free decoding of a planted item in the stated
number of denoiser passes that never leaves the valid IDs, its left-to-right (prefix) logits, run
reload."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from gr_helpers import make_sids

from agenticrs.gr.base import SequenceData
from agenticrs.gr.models.mdgr import MDGR, MDGRConfig, unmask_counts
from agenticrs.gr.sequences import leave_one_out
from agenticrs.gr.train import SequentialTrainConfig, load_sequential_run, train_sequential
from agenticrs.gr.zoo import build_sequential, list_sequential_models

NUM_ITEMS = 50




def tiny(**overrides: object) -> MDGRConfig:
    base: dict[str, object] = {
        "max_len": 5,
        "d_model": 32,
        "num_encoder_layers": 1,
        "num_decoder_layers": 1,
        "num_heads": 2,
        "head_dim": 16,
        "ffn_dim": 64,
        "dropout": 0.0,
        "num_user_buckets": 7,
        "beam_size": 10,
        "noise": "uniform",
    }
    return MDGRConfig(**{**base, **overrides})


def make_batch(n: int, seed: int, max_len: int = 5) -> dict[str, torch.Tensor]:
    """Random right-aligned histories; target = (last % 50) + 1."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, NUM_ITEMS + 1, (n, max_len), generator=g)
    lengths = torch.randint(1, max_len + 1, (n,), generator=g)
    history = items * (torch.arange(max_len).unsqueeze(0) >= (max_len - lengths).unsqueeze(1))
    return {"history": history, "user": torch.randint(0, 1000, (n,), generator=g), "target": history[:, -1] % NUM_ITEMS + 1}


def test_unmask_schedules() -> None:
    assert unmask_counts(4, 2, "warmup") == [1, 3]
    assert unmask_counts(4, 3, "warmup") == [1, 1, 2]
    assert unmask_counts(4, 3, "linear") == [2, 1, 1]
    assert unmask_counts(4, 1, "cosine") == [4]
    for levels, steps, schedule in itertools.product([3, 4, 5], [1, 2, 3], ["warmup", "linear", "cosine"]):
        counts = unmask_counts(levels, steps, schedule)
        assert len(counts) == steps and sum(counts) == levels and min(counts) >= 1
    with pytest.raises(ValueError, match="steps must lie in 1..3"):
        unmask_counts(3, 4, "linear")
    with pytest.raises(ValueError, match="steps"):
        build_sequential("mdgr", NUM_ITEMS, tiny(steps=4).model_dump(), semantic_ids=make_sids(NUM_ITEMS))


def test_training_masks_and_gradients() -> None:
    torch.manual_seed(0)
    model = MDGR(NUM_ITEMS, tiny(noise="curriculum", curriculum_steps=1000, full_mask_prob=0.0), make_sids(NUM_ITEMS))
    early, _ = model.sample_masks((4000,), torch.device("cpu"))
    model.train_steps.fill_(1000)
    late, _ = model.sample_masks((4000,), torch.device("cpu"))
    assert early.any(-1).all() and late.any(-1).all()  # at least one masked slot
    assert early.float().mean() < late.float().mean() - 0.05  # the curriculum starts with fewer masks
    model.config.full_mask_prob = 1.0
    assert model.sample_masks((50,), torch.device("cpu"))[0].all()
    model.train()
    loss = model.loss(make_batch(16, seed=0))
    loss.backward()
    assert torch.isfinite(loss) and model.train_steps == 1001
    for name in ("mask_embedding", "head.weight", "decoder_layers.0.self_attn.query.weight", "encoder_layers.0.attn.key.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name


def _consistent_with_some_item(partial: torch.Tensor, codes: torch.Tensor) -> bool:
    known = partial >= 0
    return bool(((codes == partial) | ~known).all(-1).any())


def test_decodes_planted_item_in_stated_passes_within_the_valid_ids() -> None:
    torch.manual_seed(0)
    model = MDGR(NUM_ITEMS, tiny(mask_samples=2), make_sids(NUM_ITEMS))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(150):
        loss = model.loss(make_batch(128, seed=100 + step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    passes = []
    model.decoder_norm.register_forward_hook(lambda *args: passes.append(1))
    test = make_batch(200, seed=1)
    codes = model.sid_codes[1:]
    for steps, schedule, known_after in [(2, "warmup", [1, 3]), (3, "linear", [1, 2, 3]), (1, "linear", [3])]:
        model.config.schedule = schedule
        passes.clear()
        trace: list[torch.Tensor] = []
        _, items, scores = model.beam_search(test, steps=steps, trace=trace)
        assert len(passes) == steps and len(trace) == steps  # the stated number of denoiser passes
        for state, known in zip(trace, known_after, strict=True):
            alive = (state >= 0).any(-1)  # beams cut for want of children hold nothing
            assert alive[:, 0].all() and ((state >= 0).sum(-1)[alive] == known).all()
            for partial in state[:20].flatten(0, 1):  # every partial ID is some item's projection
                assert _consistent_with_some_item(partial, codes)
        assert (items > 0).all() and all(len(set(row.tolist())) == row.numel() for row in items)
        assert (model.trie.item_of(trace[-1]) == items).all()
        hit = (items[:, 0] == test["target"]).float().mean()
        assert hit > 0.8, (steps, schedule, hit)
    recs = model.recommend(test, k=10)
    assert recs.shape == (200, 10) and (recs > 0).all()
    # one pass unmasks every slot at once: the beam is exactly the top of the factorised item score
    _, items, scores = model.beam_search(test, beam_size=10, steps=1)
    top = model.item_scores(test).topk(10, dim=1)
    assert torch.equal(items, top.indices)
    torch.testing.assert_close(scores, top.values)


def test_order_free_and_left_to_right() -> None:
    """Different users may decode different slots first; the ablation always takes slot 0 first."""
    torch.manual_seed(0)
    model = MDGR(NUM_ITEMS, tiny(steps=3, schedule="linear"), make_sids(NUM_ITEMS)).eval()
    trace: list[torch.Tensor] = []
    model.beam_search(make_batch(64, seed=2), trace=trace)
    first = (trace[0] >= 0).float().argmax(-1)[:, 0]
    assert first.unique().numel() > 1
    model.config.confidence = "entropy"
    _, items, _ = model.beam_search(make_batch(64, seed=2))
    assert (items > 0).all() and (model.trie.item_of(model.sid_codes[items]) == items).all()
    model.config.order = "left_to_right"
    trace.clear()
    model.beam_search(make_batch(64, seed=2), trace=trace)
    assert [(t[:, 0] >= 0).sum(-1).unique().tolist() for t in trace] == [[1], [2], [3]]
    assert (trace[0][:, 0, 0] >= 0).all()


def test_digit_last_unmasks_the_collision_digit_after_every_code_slot() -> None:
    """By confidence a beam may take the last slot (the collision digit) first; with `digit_last`
    no pass unmasks it while a code slot is still masked, and the beams stay valid IDs."""
    torch.manual_seed(0)
    model = MDGR(NUM_ITEMS, tiny(steps=3, schedule="linear"), make_sids(NUM_ITEMS)).eval()
    batch = make_batch(64, seed=2)
    trace: list[torch.Tensor] = []
    model.beam_search(batch, trace=trace)
    assert (trace[0][:, 0, -1] >= 0).any()  # untrained: some users unmask the last slot first
    model.config.digit_last = True
    for steps in (2, 3):
        trace.clear()
        _, items, _ = model.beam_search(batch, steps=steps, trace=trace)
        for state in trace[:-1]:  # before the last pass: the digit stays masked in every live beam
            live = (state >= 0).any(-1)
            assert (state[..., -1][live] < 0).all() and ((state[..., :-1] >= 0).sum(-1)[live] > 0).all()
        assert (trace[-1][:, 0] >= 0).all() and (items > 0).all()
        assert (model.trie.item_of(model.sid_codes[items]) == items).all()


def test_prefix_logits_condition_slot_l_on_the_true_slots_before_it() -> None:
    """The left-to-right reading of the denoiser (compared with TIGER's teacher-forced logits):
    slot 0 sees the all-[MASK] state, slot l changes with the codes before it and not after."""
    torch.manual_seed(0)
    model = MDGR(NUM_ITEMS, tiny(), make_sids(NUM_ITEMS)).eval()
    batch = make_batch(8, seed=3)
    logits = model.prefix_logits(batch)
    assert logits.shape == model.token_logits(batch).shape
    torch.testing.assert_close(logits[:, 0], model.token_logits(batch)[:, 0])
    memory, mask = model.encode(batch)
    target = model.sid_codes[batch["target"]]
    for level in range(model.levels):  # each slot against one denoiser pass over its own pattern
        codes = target.clone()
        codes[:, level:] = -1
        alone = model.denoise(codes.unsqueeze(1), model.memory_kv(memory), mask)[:, 0, level]
        torch.testing.assert_close(logits[:, level], alone)
    other = dict(batch, target=batch["target"] % NUM_ITEMS + 1)  # other codes at every slot
    moved = model.prefix_logits(other)
    torch.testing.assert_close(moved[:, 0], logits[:, 0])  # nothing known yet: the same
    assert not torch.allclose(moved[:, 1:], logits[:, 1:])


def planted(users: int, seed: int = 0) -> SequenceData:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 8, users)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    pos = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    seq = (np.repeat(rng.integers(0, NUM_ITEMS, users), lengths) + pos) % NUM_ITEMS + 1
    return SequenceData("planted", NUM_ITEMS, np.arange(users, dtype=np.int64), offsets, seq.astype(np.int64))


def test_run_reload_reproduces_recommendations(tmp_path: Path) -> None:
    assert "mdgr" in list_sequential_models()
    data = planted(40)
    torch.manual_seed(0)
    model = build_sequential("mdgr", NUM_ITEMS, tiny().model_dump(), semantic_ids=make_sids(NUM_ITEMS))
    config = SequentialTrainConfig(epochs=1, batch_size=32, seed=3, ks=[5, 10], monitor="recall@10", num_threads=1)
    train_sequential(model, data, config, run_dir=tmp_path / "run", semantic_ids=make_sids(NUM_ITEMS))
    loaded, run_config = load_sequential_run(tmp_path / "run")
    assert run_config.model == "mdgr" and isinstance(loaded, MDGR) and loaded.config == model.config
    batch = next(leave_one_out(data).test.batches(5, 64))
    model.eval()
    assert torch.equal(loaded.recommend(batch, 10), model.recommend(batch, 10))
    assert loaded.slot_loss.tolist() == model.slot_loss.tolist()


def test_last_pass_dense_merge_matches_the_state_merge() -> None:
    """The last pass ranks whole items densely; it must keep what the general state merge keeps:
    an item reached from two beams at its best score, each row's best `beam` items, best first."""
    model = MDGR(NUM_ITEMS, tiny(), make_sids(NUM_ITEMS))
    g = torch.Generator().manual_seed(0)
    rows, beam, pairs = 6, 5, 400
    row = torch.randint(0, rows - 1, (pairs,), generator=g)  # the last row has no child at all
    item = torch.randint(0, NUM_ITEMS, (pairs,), generator=g)  # duplicates: items reached twice
    child = torch.randn(pairs, generator=g)
    row[:3] = rows - 2  # a row with fewer distinct children than the beam
    row = torch.where((row == rows - 2) & (torch.arange(pairs) >= 3), torch.zeros_like(row), row)
    full = torch.full_like(item, (1 << model.levels) - 1)
    want = model._merge_states(row, full, item, child, rows, beam)
    got = model._merge_final(row, item, child, rows, beam)
    width = want[0].shape[1]
    assert width == beam and got[0].shape == (rows, beam)
    live = torch.isfinite(want[0])
    for mine, ref in zip(got, want, strict=True):
        assert torch.equal(mine[live], ref[live])
    assert torch.isinf(got[0][~live]).all() and live.sum(1).tolist() == [5, 5, 5, 5, 3, 0]
    for r in range(rows):  # the reference by hand: best score per distinct item of the row
        best: dict[int, float] = {}
        for i, c in zip(item[row == r].tolist(), child[row == r].tolist(), strict=True):
            best[i] = max(best.get(i, float("-inf")), c)
        ranked = sorted(best, key=best.get, reverse=True)[:beam]
        assert got[2][r][: len(ranked)].tolist() == ranked
