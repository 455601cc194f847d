"""The generative CTR family's mechanisms (DGenCTR, SGCTR, HeteGenCTR on one backbone), on tiny inputs.

The absorbing schedule's mask rates, the fine-tuning view (label masked, every feature visible),
the sampled-softmax reconstruction loss against a hand computation, HeteGenCTR's difficulty
converging to the log of a planted per-field loss, gradients, SGCTR's refinement and the engine's
phase hooks. Learning and reload tests: `test_genctr_training.py`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from zoo_helpers import smoke_model

from agenticrs.models.gen_backbone import LABEL_MASKED, mask_rate, sampled_softmax_loss
from agenticrs.models.hetegenctr import balance_weights, difficulty_loss

FAMILY = ["dgenctr", "sgctr", "hetegenctr"]


# ------------------------------------------------------------------------------ the schedule
def test_linear_schedule_mask_rates_are_t_over_t_kept_in_the_floor_and_one():
    t = torch.tensor([0, 1, 5, 10, 50, 99, 100])
    rates = mask_rate(t, 100, "linear", minimum=0.1)
    assert torch.allclose(rates, torch.tensor([0.0, 0.1, 0.1, 0.1, 0.5, 0.99, 1.0]))


def test_cosine_schedule_increases_to_one():
    t = torch.arange(0, 101)
    rates = mask_rate(t, 100, "cosine", minimum=0.0)
    assert rates[0] == 0 and math.isclose(float(rates[-1]), 1.0, abs_tol=1e-6)
    assert (rates[1:] >= rates[:-1]).all()
    assert math.isclose(float(rates[50]), 1 - math.cos(math.pi / 4), rel_tol=1e-5)


def test_corruption_masks_each_token_at_the_schedule_rate(seq_data, seq_batch):
    model = smoke_model("dgenctr", seq_data.schema, timesteps=4, min_mask_rate=0.0)
    valid = torch.ones(20_000, 6, dtype=torch.bool)
    t, rate, masked = model.backbone.corrupt(valid, generator=torch.Generator().manual_seed(0))
    assert set(t.tolist()) == {1, 2, 3, 4}
    for step in (1, 2, 3, 4):
        rows = t == step
        assert torch.allclose(rate[rows], torch.tensor(step / 4))
        assert abs(masked[rows].float().mean().item() - step / 4) < 0.02
    padding = valid.clone()
    padding[:, 0] = False
    assert not model.backbone.corrupt(padding)[2][:, 0].any()  # padding is never a masked token


# ------------------------------------------------------------------------------ the views
def _spy(model):
    seen = []
    original = model.backbone.encode

    def encode(values, valid, feature_masked, label_state, t, *rest):
        seen.append((feature_masked.clone(), label_state.clone(), t.clone()))
        return original(values, valid, feature_masked, label_state, t, *rest)

    model.backbone.encode = encode
    return seen


@pytest.mark.parametrize("name", FAMILY)
def test_fine_tuning_and_inference_mask_the_label_and_show_every_feature(name, seq_data, seq_batch):
    model = smoke_model(name, seq_data.schema, pretrain_steps=3, generative_weight=0.0, refine_rounds=0) \
        if name == "sgctr" else smoke_model(name, seq_data.schema, pretrain_steps=3, generative_weight=0.0)
    seen = _spy(model)
    model.train()
    model.begin_step(4)  # the first fine-tuning step
    model(seq_batch)
    model.eval()
    with torch.no_grad():
        model(seq_batch)
    assert len(seen) == 2
    for feature_masked, label_state, t in seen:
        assert not feature_masked.any()
        assert (label_state == LABEL_MASKED).all()
        assert (t == 0).all()


def test_pre_training_masks_the_label_on_some_rows_and_scores_only_those(seq_data, seq_batch):
    model = smoke_model("dgenctr", seq_data.schema, pretrain_steps=3)
    seen = _spy(model)
    model.train()
    model.begin_step(2)
    torch.manual_seed(0)
    out = model(seq_batch)
    feature_masked, label_state, t = seen[0]
    assert feature_masked.any() and (t >= 1).all()
    masked_label = label_state == LABEL_MASKED
    assert torch.equal(out["label_mask"], masked_label)
    assert 0 < masked_label.float().mean() < 1
    visible = ~masked_label  # a visible label token shows the row's own label
    assert torch.equal(label_state[visible], seq_batch["label"][visible].long())
    assert "aux_loss" in out and out["aux_loss"] > 0


# ------------------------------------------------------------------------------ the loss
def test_sampled_softmax_loss_matches_a_hand_computation():
    tau = 0.5
    predicted = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]], [[3.0, 4.0]]])  # (B=3, N=1, d=2)
    targets = torch.tensor([[[2.0, 0.0]], [[1.0, 1.0]], [[0.0, 1.0]]])
    ids = torch.tensor([[7], [8], [7]])  # rows 0 and 2 hold the same value: not each other's negative
    valid = torch.ones(3, 1, dtype=torch.bool)
    loss = sampled_softmax_loss(predicted, targets, ids, valid, tau, num_negatives=3)
    s = 1 / math.sqrt(2)
    # cosines of each row's prediction with the candidates' values (rows 0, 1, 2)
    cos = [[1.0, s, 0.0], [0.0, s, 1.0], [0.6, 0.7 * s * 2, 0.8]]
    allowed = [[0, 1], [1, 0, 2], [2, 1]]  # own value first, then the differing in-batch values
    for b in range(3):
        logits = [cos[b][c] / tau for c in allowed[b]]
        expected = math.log(sum(math.exp(x) for x in logits)) - logits[0]
        assert math.isclose(float(loss[b, 0]), expected, rel_tol=1e-5), b
    capped = sampled_softmax_loss(predicted, targets, ids, valid, tau, num_negatives=1)  # negatives: row 0 only
    assert math.isclose(float(capped[1, 0]), math.log(math.exp(cos[1][1] / tau) + math.exp(cos[1][0] / tau)) - cos[1][1] / tau,
                        rel_tol=1e-5)  # fmt: skip
    assert math.isclose(float(capped[0, 0]), 0.0, abs_tol=1e-6)  # its only candidate is itself


def test_pooled_values_are_compared_by_vector():
    predicted = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    targets = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])  # two empty-free pooled tokens that are equal
    ids = torch.full((2, 1), -1)
    loss = sampled_softmax_loss(predicted, targets, ids, torch.ones(2, 1, dtype=torch.bool), 0.1, 8)
    assert torch.allclose(loss, torch.zeros(2, 1), atol=1e-6)


# ------------------------------------------------------------------------------ HeteGenCTR
def test_difficulty_converges_to_the_log_of_a_planted_field_loss():
    planted = torch.tensor([0.2, 1.0, 3.0, 9.0])
    s = torch.zeros(4, requires_grad=True)
    optimizer = torch.optim.Adam([s], lr=0.05)
    for _ in range(1500):
        optimizer.zero_grad()
        noisy = planted * (1 + 0.1 * torch.randn(4))  # a mini-batch estimate of E[L_k]
        difficulty_loss(s, noisy).backward()
        optimizer.step()
    assert torch.allclose(s.detach(), planted.log(), atol=0.08), s


def test_balance_weights_follow_the_difficulty_in_the_chosen_direction():
    s = torch.log(torch.tensor([1.0, 2.0, 4.0]))
    proportional = balance_weights(s, "proportional")
    inverse = balance_weights(s, "inverse")
    assert torch.allclose(proportional, 3 * torch.tensor([1.0, 2.0, 4.0]) / 7)
    assert torch.allclose(inverse, 3 * torch.tensor([4.0, 2.0, 1.0]) / 7)
    assert not proportional.requires_grad


def test_hetegenctr_difficulties_learn_only_from_their_own_objective(seq_data, seq_batch):
    model = smoke_model("hetegenctr", seq_data.schema, pretrain_steps=3)
    model.train()
    model.begin_step(1)
    torch.manual_seed(1)
    out = model(seq_batch)
    out["aux_loss"].backward()
    # d/ds_k of mean_k [exp(-s_k) L_k + s_k] at s = 0 is (1 - L_k) / K over the fields present
    field_loss = torch.tensor(model.last_stats["field_loss"])
    grad = model.log_difficulty.grad
    assert torch.allclose(grad[: len(field_loss)], (1 - field_loss) / len(field_loss), atol=1e-5)


def test_difficulty_attention_biases_keys_and_scales_queries(seq_data, seq_batch):
    model = smoke_model("hetegenctr", seq_data.schema)
    with torch.no_grad():
        model.log_difficulty.copy_(torch.linspace(-1, 1, len(model.log_difficulty)))
    bias, scale = model.attention_terms()
    s = model.log_difficulty.detach()
    relative = s - s.exp().mean().log()
    assert torch.allclose(bias[:-1], relative[model.backbone.token_field]) and bias[-1] == 0
    assert torch.allclose(scale, torch.exp(0.5 * bias))
    plain = smoke_model("hetegenctr", seq_data.schema, difficulty_attention=False)
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    with torch.no_grad():
        assert not torch.allclose(model(seq_batch)["logit"], plain(seq_batch)["logit"])


# ------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("name", FAMILY)
def test_pre_training_gradients_reach_the_generator_and_the_label_head(name, seq_data, seq_batch):
    model = smoke_model(name, seq_data.schema, pretrain_steps=3)
    model.train()
    model.begin_step(1)
    out = model(seq_batch)
    label = seq_batch["label"]
    mask = out.get("label_mask", torch.ones_like(label, dtype=torch.bool))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out["logit"][mask], label[mask])
    (bce + out["aux_loss"]).backward()
    for pname in ("backbone.head_w1", "backbone.head_w2", "backbone.mask_embedding", "backbone.label_head.weight",
                  "backbone.values.weight", "backbone.blocks.0.qkv.weight"):  # fmt: skip
        grad = dict(model.named_parameters())[pname].grad
        assert grad is not None and grad.abs().sum() > 0 and torch.isfinite(grad).all(), pname


@pytest.mark.parametrize("sequences", ["pooled", "tokenised"])
def test_sequences_pooled_or_tokenised(sequences, seq_data, seq_batch):
    model = smoke_model("dgenctr", seq_data.schema, sequences=sequences, sequence_tokens=3)
    values, ids, valid = model.backbone.tokens(seq_batch)
    fields = len(seq_data.schema.categorical) + len(seq_data.schema.numeric)
    per_seq = 1 if sequences == "pooled" else 3
    assert values.shape[1] == fields + per_seq * len(seq_data.schema.id_sequences)
    lengths = seq_batch["seqlen/hist_item_id"]
    if sequences == "tokenised":  # the 3 most recent elements; fewer for short histories
        assert torch.equal(valid[:, fields : fields + 3].sum(1), lengths.clamp_max(3))
    else:
        assert torch.equal(valid[:, fields], lengths > 0)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(seq_batch)["logit"]).all()


# ------------------------------------------------------------------------------ SGCTR
def test_sgctr_refines_the_least_plausible_share_of_each_row(seq_data, seq_batch):
    model = smoke_model("sgctr", seq_data.schema, refine_rounds=1, refine_share=0.3, blend=0.0)
    model.prepare(seq_data.split("train"))
    model.eval()
    with torch.no_grad():
        values, ids, valid = model.backbone.tokens(seq_batch)
        refined = model.refine(values, ids, valid)
        confidence, _ = model.confidences(values, ids, valid)
    changed = (refined != values).any(-1)
    expected = torch.ceil(valid.sum(1).float() * 0.3)
    assert torch.equal(changed.sum(1).float(), expected)
    lowest = confidence.masked_fill(~valid, float("inf")).argmin(1)
    assert changed[torch.arange(len(lowest)), lowest].all()
    assert torch.allclose(refined.norm(dim=-1), values.norm(dim=-1), atol=1e-5)  # rescaled to e_k's norm
    assert (confidence > 0).all() and (confidence <= 1).all()


def test_sgctr_without_rounds_is_the_plain_pass(seq_data, seq_batch):
    model = smoke_model("sgctr", seq_data.schema, refine_rounds=0).eval()
    with torch.no_grad():
        assert torch.equal(model(seq_batch)["logit"], model.backbone.label_logit(model.clean(seq_batch)[0]))


# ------------------------------------------------------------------------------ phases
def test_embeddings_only_transfer_reinitialises_everything_but_the_value_tables(seq_data):
    model = smoke_model("dgenctr", seq_data.schema, pretrain_steps=2, transfer="embeddings")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.begin_step(2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if k not in ("step",))
    model.begin_step(3)  # the switch
    after = model.state_dict()
    assert torch.equal(after["backbone.values.weight"], before["backbone.values.weight"])
    assert not torch.equal(after["backbone.blocks.0.qkv.weight"], before["backbone.blocks.0.qkv.weight"])
    assert not torch.equal(after["backbone.label_head.weight"], before["backbone.label_head.weight"])
    snapshot = {k: v.clone() for k, v in after.items()}
    model.begin_step(4)  # once only (the flag is saved with the weights, so a resumed run keeps it)
    assert all(torch.equal(snapshot[k], v) for k, v in model.state_dict().items() if k != "step")
    assert bool(model.transferred)
    assert not model.evaluation_counts(2) and model.evaluation_counts(3)


def test_numeric_columns_are_bucketised_at_training_quantiles(seq_data):
    model = smoke_model("dgenctr", seq_data.schema, numeric_bins=4)
    model.prepare(seq_data.split("train"))
    price = np.asarray(seq_data.split("train")["numeric"])[:, 0]
    assert np.allclose(model.backbone.numeric_edges[0].numpy(), np.quantile(price, [0.25, 0.5, 0.75]), atol=1e-5)
