"""GRC: rewards and GRPO pieces against hand computations, trie-constrained corrections (a valid
draft never becomes an invalid ID), EGRS merge, gradients, and a run (SFT then a GRPO fine-tuning
run through the engine) that reloads and reproduces its recommendations."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from gr_helpers import make_sids

from agenticrs.gr.base import SequenceData
from agenticrs.gr.models.grc import (
    Grc,
    GrcConfig,
    clipped_objective,
    group_advantages,
    kl_k3,
    segment_rewards,
    trajectory_rewards,
    true_flags,
)
from agenticrs.gr.sequences import leave_one_out
from agenticrs.gr.train import SequentialTrainConfig, load_sequential_run, train_sequential

NUM_ITEMS = 40




def tiny(**overrides: object) -> GrcConfig:
    base: dict[str, object] = {
        "max_len": 5, "d_model": 32, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
        "head_dim": 16, "ffn_dim": 64, "dropout": 0.0, "num_user_buckets": 7, "beam_size": 8, "group_size": 4,
    }
    return GrcConfig(**{**base, **overrides})


def make_batch(n: int, seed: int, num_items: int = NUM_ITEMS) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    history = torch.randint(1, num_items + 1, (n, 5), generator=g)
    return {"history": history, "user": torch.randint(0, 100, (n,), generator=g),
            "target": history[:, -1] % num_items + 1}


def test_rewards_match_a_hand_computation() -> None:
    cfg = GrcConfig()  # token 1, hit α 1, improve β 0.5, reflection γ 0.2, invalid 0.5
    target = torch.tensor([[1, 2, 3], [1, 2, 3], [1, 2, 3]])
    draft = torch.tensor([[1, 2, 0], [1, 2, 0], [1, 2, 3]])
    assert true_flags(draft, target).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]]
    reflection = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0], [0, 0, 0, 0]])
    final = torch.tensor([[1, 2, 3], [1, 0, 3], [2, 2, 3]])
    valid = torch.tensor([True, True, False])
    r = trajectory_rewards(draft, reflection, final, target, valid, cfg)
    # 1) corrected a wrong draft, faithful reflection: 1 (all prefixes) + 1 (hit) + 0.5 (improved) + 0.2
    # 2) prefix (1) only right: 1/3; no hit, no improvement; reflection 2 of 4 right: 0.2 * 0.5
    # 3) broke a correct draft into an invalid ID: 0 + 0 + 0.5 * (0 - 1) + 0.2 * 1 - 0.5
    expected = torch.tensor([2.7, 1 / 3 + 0.1, -0.5 + 0.2 - 0.5])
    torch.testing.assert_close(r, expected)


def test_segment_rewards_credit_each_segment_with_its_own_outcome() -> None:
    cfg = GrcConfig()
    target = torch.tensor([[1, 2, 3], [1, 2, 3], [1, 2, 3]])
    draft = torch.tensor([[1, 2, 0], [0, 2, 3], [1, 2, 3]])
    reflection = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
    final = torch.tensor([[1, 2, 3], [1, 0, 3], [2, 2, 3]])
    valid = torch.tensor([True, True, False])
    r = segment_rewards(draft, reflection, final, target, valid, cfg)
    # draft: 2/3 of prefixes | none (first token wrong) | all + hit
    # reflection: 4/4 | flags 1,0,0,1 are true, so 2/4 | 4/4
    # correction: all + hit + 0.5 (fixed a miss) | 1/3 | 0 + 0 − 0.5 (broke a hit) − 0.5 (invalid)
    expected = torch.tensor([[2 / 3, 1.0, 2.5], [0.0, 0.5, 1 / 3], [2.0, 1.0, -1.0]])
    torch.testing.assert_close(r, expected)
    # a group whose drafts all miss at the first token gives the draft tokens no advantage at all,
    # whatever the reflections did (the trajectory reward would give them ±1 from reflection alone)
    group = segment_rewards(torch.tensor([[0, 0, 0], [0, 1, 1]]), torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]]),
                            torch.tensor([[0, 0, 0], [0, 1, 1]]), torch.tensor([[1, 2, 3]]),
                            torch.tensor([True, True]), cfg)  # fmt: skip
    assert group_advantages(group[:, 0]).abs().max() == 0
    trajectory = trajectory_rewards(torch.tensor([[0, 0, 0], [0, 1, 1]]), torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]]),
                                    torch.tensor([[0, 0, 0], [0, 1, 1]]), torch.tensor([[1, 2, 3]]),
                                    torch.tensor([True, True]), cfg)  # fmt: skip
    torch.testing.assert_close(group_advantages(trajectory).abs(), torch.ones(2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("rl_dropout", [True, False])
def test_grpo_without_dropout_scores_exactly_the_sampled_policy(rl_dropout: bool, monkeypatch) -> None:
    """With `rl_dropout: false` the teacher-forced log-probs equal the rollout's (ratio 1), and
    the model's training mode is restored after the loss."""
    from agenticrs.gr.models import grc as grc_module

    gaps = []
    original = grc_module.clipped_objective

    def spy(logp, old_logp, advantages, clip_eps):
        gaps.append((logp - old_logp).abs().max().item())
        return original(logp, old_logp, advantages, clip_eps)

    monkeypatch.setattr(grc_module, "clipped_objective", spy)
    torch.manual_seed(0)
    model = Grc(NUM_ITEMS, tiny(phase="grpo", dropout=0.3, rl_dropout=rl_dropout, credit="segment"),
                make_sids(NUM_ITEMS))  # fmt: skip
    model.train()
    loss = model.loss(make_batch(8, seed=1))
    loss.backward()
    assert model.training and torch.isfinite(loss)
    assert (gaps[0] < 1e-5) if not rl_dropout else (gaps[0] > 1e-3)
    assert dict(model.named_parameters())["head.weight"].grad.abs().sum() > 0


def test_group_advantages_clip_and_kl_on_hand_examples() -> None:
    adv = group_advantages(torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]]))
    s = math.sqrt(1.25)  # population std of 1..4
    torch.testing.assert_close(adv[0], torch.tensor([-1.5, -0.5, 0.5, 1.5]) / s, atol=1e-5, rtol=0)
    assert adv[1].abs().max() == 0  # an all-equal group teaches nothing
    logp, old = torch.log(torch.tensor([1.5, 1.5, 0.5])), torch.zeros(3)
    surrogate = clipped_objective(logp, old, torch.tensor([1.0, -1.0, -1.0]), clip_eps=0.2)
    torch.testing.assert_close(surrogate, torch.tensor([1.2, -1.5, -0.8]))  # min(ρA, clip(ρ)A)
    assert kl_k3(torch.tensor([-1.0]), torch.tensor([-1.0])).item() == 0
    torch.testing.assert_close(kl_k3(torch.tensor([0.0]), torch.tensor([math.log(0.5)])),
                               torch.tensor([0.5 - math.log(0.5) - 1]))  # fmt: skip


def test_corrections_never_turn_a_valid_draft_into_an_invalid_id() -> None:
    """The code head is biased hard towards an ID that no item has: unconstrained greedy
    correction would emit it; the trie-constrained one always lands on an item."""
    torch.manual_seed(0)
    sids = make_sids(NUM_ITEMS)
    model = Grc(NUM_ITEMS, tiny(reflect_share=1.0), sids).eval()
    valid = {tuple(c) for c in sids.codes[1:].tolist()}
    invalid = next(c for c in itertools.product(range(4), range(4), range(4)) if c not in valid)
    with torch.no_grad():
        for level, code in enumerate(invalid):
            model.head.bias[int(model.code_offsets[level]) + code] += 50.0
    batch = make_batch(16, seed=1)
    out = model.reflect_and_correct(batch, beam_size=8)
    assert bool(out["reflected"].all())  # share 1: every (valid) draft is reflected
    assert bool(model.trie.contains(out["draft_codes"]).all())
    assert bool(model.trie.contains(out["corrections"]).all())
    assert not bool((out["corrections"] == torch.tensor(invalid)).all(-1).any())
    recs = model.recommend(batch, k=8)
    assert bool((recs > 0).all()) and all(len(set(row)) == 8 for row in recs.tolist())
    # sampled GRPO trajectories are constrained too
    memory, mask = model.encode(batch)
    traj = model.rollout(model.memory_kv(memory), mask, n=4)
    assert bool(model.trie.contains(traj["draft"]).all()) and bool(model.trie.contains(traj["correction"]).all())


def test_egrs_reflects_only_the_most_uncertain_beams_and_share_zero_is_tiger() -> None:
    torch.manual_seed(1)
    model = Grc(NUM_ITEMS, tiny(reflect_share=0.25), make_sids(NUM_ITEMS)).eval()
    batch = make_batch(6, seed=2)
    out = model.reflect_and_correct(batch, beam_size=8)
    assert out["reflected"].sum(1).tolist() == [2] * 6  # ceil(0.25 * 8)
    chosen_min = out["entropy"].masked_fill(~out["reflected"], float("inf")).amin(1)
    other_max = out["entropy"].masked_fill(out["reflected"], float("-inf")).amax(1)
    assert bool((chosen_min >= other_max).all())
    scores = out["scores"]
    assert bool((scores[:, 1:] <= scores[:, :-1]).all())
    model.config.merge = "keep_drafts"  # no draft loses score (a correction naming it may only raise it)
    kept = model.reflect_and_correct(batch, beam_size=8)
    for b in range(6):
        merged = dict(zip(kept["items"][b].tolist(), kept["scores"][b].tolist(), strict=True))
        for item, score in zip(kept["draft_items"][b].tolist(), kept["draft_scores"][b].tolist(), strict=True):
            assert merged[item] >= score
    model.config.reflect_share = 0.0
    assert torch.equal(model.recommend(batch, k=5), model.beam_search(batch, 8)[1][:, :5])


@pytest.mark.parametrize("phase", ["sft", "grpo"])
def test_losses_are_finite_and_reach_the_new_parameters(phase: str) -> None:
    torch.manual_seed(2)
    every_segment = {"policy_segments": ["draft", "reflection", "correction"]} if phase == "grpo" else {}
    model = Grc(NUM_ITEMS, tiny(phase=phase, **every_segment), make_sids(NUM_ITEMS))
    loss = model.loss(make_batch(8, seed=3))
    assert torch.isfinite(loss)
    loss.backward()
    for name in ("reflect_head.weight", "grc_embedding.weight", "head.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    if phase == "grpo":
        assert model.last_rewards.shape == (8, 4)
        assert not any(k.startswith("_reference") for k in model.state_dict())  # π_ref is never saved


def planted(users: int, items: int, seed: int = 0) -> SequenceData:
    """Item i is always followed by item i % items + 1."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 9, users)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    pos = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    seq = (np.repeat(rng.integers(0, items, users), lengths) + pos) % items + 1
    return SequenceData("planted", items, np.arange(users, dtype=np.int64), offsets, seq.astype(np.int64))


def test_sft_then_grpo_runs_reload_and_reproduce(tmp_path: Path) -> None:
    data = planted(60, NUM_ITEMS)
    sids = make_sids(NUM_ITEMS)
    torch.manual_seed(0)
    model = Grc(NUM_ITEMS, tiny(), sids)
    cfg = SequentialTrainConfig(epochs=2, batch_size=64, seed=1, ks=[5], monitor="recall@5", learning_rate=3e-3)
    train_sequential(model, data, cfg, run_dir=tmp_path / "sft", semantic_ids=sids)
    model.config.phase = "grpo"  # the fine-tuning run starts from the SFT weights
    rl = cfg.model_copy(update={"epochs": 1, "max_steps": 3, "learning_rate": 1e-4})
    result = train_sequential(model, data, rl, run_dir=tmp_path / "grpo", semantic_ids=sids)
    assert result.steps == 3
    stats = result.history[-1]  # what the sampled groups looked like, recorded beside the loss
    shares = ["train_grpo_hit", "train_grpo_draft_hit", "train_grpo_groups_with_a_hit"]
    shares += [f"train_grpo_{segment}_no_spread" for segment in ("draft", "reflection", "correction")]
    assert all(0.0 <= stats[key] <= 1.0 for key in shares)
    assert stats["train_grpo_hit"] <= stats["train_grpo_groups_with_a_hit"]
    assert model.training_stats() == {}  # read and reset by the engine's evaluation
    loaded, run_config = load_sequential_run(tmp_path / "grpo")
    assert run_config.model == "grc" and loaded.config.phase == "grpo"
    batch = next(leave_one_out(data).test.batches(5, 64))
    model.eval()
    assert torch.equal(loaded.recommend(batch, 5), model.recommend(batch, 5))


def test_a_grpo_run_freezes_its_reference_at_the_weights_it_starts_from() -> None:
    torch.manual_seed(0)
    model = Grc(NUM_ITEMS, tiny(phase="grpo"), make_sids(NUM_ITEMS))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    model.start_fine_tuning()  # the starting run's weights are loaded: π_ref is made now
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # as a checkpoint loaded on resume would change them
    reference = model.reference()
    assert all(torch.equal(reference.state_dict()[k], v) for k, v in start.items())
    sft = Grc(NUM_ITEMS, tiny(), make_sids(NUM_ITEMS))
    sft.start_fine_tuning()
    assert sft.__dict__["_reference"] is None  # an SFT run has no reference policy


def test_policy_segments_limit_the_policy_gradient_and_the_anchor_adds_the_template() -> None:
    """Only the listed segments' tokens are trained by GRPO: the reflection head gets no gradient
    when the reflection is left out, until `sft_anchor` adds the supervised template back."""
    batch = make_batch(8, seed=4)

    def reflect_grad(**settings: object) -> float:
        torch.manual_seed(0)
        model = Grc(NUM_ITEMS, tiny(phase="grpo", **settings), make_sids(NUM_ITEMS))
        model.loss(batch).backward()
        grad = model.reflect_head.weight.grad
        return 0.0 if grad is None else grad.abs().sum().item()

    assert reflect_grad(policy_segments=["draft", "correction"]) == 0
    assert reflect_grad(policy_segments=["reflection"]) > 0
    assert reflect_grad(policy_segments=["correction"], sft_anchor=1.0) > 0
    for wrong in (["drafts"], []):
        with pytest.raises(ValueError):
            tiny(policy_segments=wrong)


def test_rollout_statistics_count_groups_whose_advantages_vanish() -> None:
    """Two histories x two trajectories, L = 2: the first group's trajectories both miss alike (no
    spread, advantage 0), the second's differ (one hits)."""
    model = Grc(NUM_ITEMS, tiny(phase="grpo", credit="trajectory"), make_sids(NUM_ITEMS))
    target = torch.tensor([[[1, 2]], [[3, 4]]])
    codes = torch.tensor([[[0, 0], [0, 0]], [[3, 4], [3, 0]]])
    rewards = torch.tensor([[0.0, 0.0], [2.5, 0.5]])
    groups = {"draft": codes, "correction": codes, "target_codes": target}
    model._note_rollouts({**groups, "rewards": rewards, "credited": rewards.unsqueeze(-1)})
    model._note_rollouts({**groups, "rewards": rewards + 1.0, "credited": rewards.unsqueeze(-1)})
    stats = model.training_stats()
    assert stats == pytest.approx({
        "grpo_reward": 1.25, "grpo_hit": 0.25, "grpo_draft_hit": 0.25, "grpo_groups_with_a_hit": 0.5,
        "grpo_trajectory_no_spread": 0.5,
    })  # fmt: skip
    assert model.training_stats() == {}


def test_beam_groups_are_the_top_beams_and_raise_the_target_among_them() -> None:
    """`group: beam`: a group's drafts are the beam search's top `group_size` beams, best first,
    scored at ratio 1; one GRPO step on histories whose target is the group's fourth beam raises
    that beam's log-probability against the group's best in every history."""
    torch.manual_seed(0)
    model = Grc(NUM_ITEMS, tiny(phase="grpo", group="beam", kl_coef=0.0, reward_improve=0.0),
                make_sids(NUM_ITEMS))  # fmt: skip
    model.eval()
    batch = make_batch(8, seed=5)
    codes, items, _ = model.beam_search(batch, model.config.group_size)
    batch["target"] = items[:, 3].clone()
    memory, mask = model.encode(batch)
    groups = model.sample_groups(batch, model.memory_kv(memory), mask)
    assert torch.equal(groups["draft"], codes)
    assert (groups["credited"][:, 3, 0] == groups["credited"][..., 0].amax(-1)).all()  # the target's beam earns most

    def margin() -> torch.Tensor:  # log π(target beam) − log π(best beam), per history
        with torch.no_grad():
            memory, mask = model.encode(batch)
            logp = model._trajectory_logp(model, model.memory_kv(memory), mask, groups)[..., : model.levels].sum(-1)
        return logp[:, 3] - logp[:, 0]

    before = margin()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    model.loss(batch).backward()
    optimiser.step()
    assert (margin() > before).all()
    with pytest.raises(ValueError, match="group_size"):
        Grc(3, tiny(phase="grpo", group="beam", group_size=4), make_sids(3))
