"""CDNet's mechanisms: top-K core-behaviour selection, the fine view seeing only the core, the coarse
view seeing the whole history, the interest distribution and the fusion variants."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from zoo_helpers import visible_smoke_model

from agenticrs.models.base import IncompatibleDataError, build_model, make_config
from agenticrs.models.cdnet import masked_softmax, select_core_behaviours

ITEM, CATE = "seq/hist_item_id", "seq/hist_cate_id"
LENGTH = "seqlen/hist_item_id"
PLANTED_ITEM = 10  # encoded id of the candidate's item, planted in some history positions
PLANTED_POSITIONS = [1, 4, 6]


def _smoke(schema, seed=0, **overrides):
    return visible_smoke_model("cdnet", schema, seed, **overrides)


def _clone(batch):
    return {k: v.clone() for k, v in batch.items()}


def _planted(seq_data, seq_batch, **overrides):
    """A model whose relevance is the plain dot product of [item; cate] embeddings, the candidate item
    a unit-norm vector far larger than every other embedding, and full-length histories holding that
    item at PLANTED_POSITIONS only (other rows keep their own history and candidate)."""
    overrides = {"input_norm": "none", **overrides}  # the planted norms must survive
    model = _smoke(seq_data.schema, top_k=len(PLANTED_POSITIONS), **overrides)
    embedding = model.embedding
    item_row = embedding.sequence_offset(seq_data.schema.sequence("hist_item_id")) + PLANTED_ITEM
    with torch.no_grad():
        nn.init.normal_(embedding.embedding.weight, std=0.01)
        embedding.embedding.weight[item_row] = 0.5  # norm 1 at width 4
        scorer = model.blocks[0].scorer
        scorer.query.weight.copy_(torch.eye(scorer.query.in_features))
        scorer.key.weight.copy_(torch.eye(scorer.key.in_features))
    batch = _clone(seq_batch)
    full = torch.nonzero(batch[LENGTH] == 8).squeeze(1)
    assert len(full) >= 4
    item_col = seq_data.schema.categorical_index("item_id")
    batch["categorical"][full, item_col] = PLANTED_ITEM
    history = batch[ITEM][full]
    history[history == PLANTED_ITEM] = PLANTED_ITEM + 1
    history[:, PLANTED_POSITIONS] = PLANTED_ITEM
    batch[ITEM][full] = history
    return model, batch, full


# --------------------------------------------------------------------------------- selection
def test_select_core_behaviours_takes_the_top_scores_and_never_padding():
    scores = torch.tensor(
        [
            [0.1, 3.0, -1.0, 2.0, 0.5, 9.0],  # position 5 is padding with the highest score
            [5.0, 1.0, 7.0, 0.0, 0.0, 0.0],  # two real positions only, K = 3
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # empty history
        ]
    )
    mask = torch.arange(6).unsqueeze(0) < torch.tensor([[5], [2], [0]])
    selection = select_core_behaviours(scores, mask, 3)
    assert set(selection.indices[0].tolist()) == {1, 3, 4}
    assert selection.valid[0].all()
    assert set(selection.indices[1][selection.valid[1]].tolist()) == {0, 1}
    assert selection.valid[1].sum() == 2 and not selection.valid[2].any()
    # padded slots get weight exactly 0; real slots' weights are the softmax of their scores
    assert torch.equal(selection.weights[~selection.valid], torch.zeros(int((~selection.valid).sum())))
    expected = torch.softmax(torch.tensor([0.5, 2.0, 3.0]), 0)
    assert torch.allclose(selection.weights[0].sort().values, expected, atol=1e-6)
    assert torch.allclose(selection.weights[1].sum(), torch.tensor(1.0))
    # K at least the history length: every real position is kept, nothing else
    everything = select_core_behaviours(scores, mask, 50)
    assert everything.indices.shape == (3, 6)
    for row in range(3):
        kept = everything.indices[row][everything.valid[row]]
        assert sorted(kept.tolist()) == torch.nonzero(mask[row]).squeeze(1).tolist()


def test_masked_softmax_is_zero_off_the_mask_and_on_empty_rows():
    scores = torch.tensor([[1.0, 2.0, 50.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    weights = masked_softmax(scores, mask)
    assert torch.allclose(weights[0], torch.tensor([1.0, math.e, 0.0]) / (1 + math.e))
    assert torch.equal(weights[1], torch.zeros(3))


def test_cdnet_selects_exactly_the_planted_relevant_behaviours(seq_data, seq_batch):
    model, batch, full = _planted(seq_data, seq_batch)
    with torch.no_grad():
        views = model.views(batch)
    selection = views.selections[0]
    assert selection.indices.shape == (len(batch["label"]), 3)
    for row in full.tolist():
        assert sorted(selection.indices[row].tolist()) == PLANTED_POSITIONS
    # never a padded position: rows shorter than K keep exactly their real positions
    lengths = batch[LENGTH].long()
    for row in range(len(lengths)):
        chosen = selection.indices[row][selection.valid[row]]
        assert (chosen < lengths[row]).all()
        assert len(chosen) == min(3, int(lengths[row]))


def test_cdnet_fine_view_ignores_non_core_behaviours_but_the_coarse_view_sees_them(seq_data, seq_batch):
    model, batch, full = _planted(seq_data, seq_batch)
    altered = _clone(batch)
    rows, outside = full[:, None], torch.tensor([p for p in range(8) if p not in PLANTED_POSITIONS])
    items = 3 + (altered[ITEM][rows, outside] - 3 + 1) % 60  # another item at every non-core position
    altered[ITEM][rows, outside] = torch.where(items == PLANTED_ITEM, items + 1, items)
    altered[CATE][rows, outside] = 3 + (altered[CATE][rows, outside] - 3 + 1) % 6
    assert not torch.equal(altered[ITEM], batch[ITEM])
    with torch.no_grad():
        before, after = model.views(batch), model.views(altered)
    assert torch.equal(after.selections[0].indices[full], before.selections[0].indices[full])
    assert torch.allclose(after.fine, before.fine, atol=1e-6)
    changed = (after.dist[full] - before.dist[full]).abs().amax(dim=1)
    assert (changed > 1e-4).all()
    # a core behaviour, by contrast, does move the fine view
    core = _clone(batch)
    core[CATE][full, PLANTED_POSITIONS[0]] = 3 + (core[CATE][full, PLANTED_POSITIONS[0]] - 3 + 1) % 6
    with torch.no_grad():
        moved = model.views(core)
    assert ((moved.fine[full] - before.fine[full]).abs().amax(dim=1) > 1e-5).all()


def test_cdnet_gradients_reach_the_relevance_scorer_through_the_soft_weights(seq_data, seq_batch):
    model = _smoke(seq_data.schema)
    views = model.views(seq_batch)
    views.fine.pow(2).sum().backward()  # the fine view alone: the scorer enters only via the weights
    scorer = model.blocks[0].scorer
    assert scorer.query.weight.grad.abs().sum() > 0
    assert scorer.key.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- distribution
def test_cdnet_theta_is_a_distribution_over_the_real_positions(seq_data, seq_batch):
    model = _smoke(seq_data.schema)
    with torch.no_grad():
        theta = model.views(seq_batch).theta[0]
        assert theta.shape == (len(seq_batch["label"]), 4)
        assert torch.allclose(theta.sum(1), torch.ones(len(theta)), atol=1e-6)
        assert (theta >= 0).all()
        # by hand: the mean soft assignment over the real positions (uniform for an empty history)
        embedded = model.embedding(seq_batch)
        raw = torch.cat([embedded.sequences["hist_item_id"], embedded.sequences["hist_cate_id"]], dim=-1)
        pi = model.blocks[0].prototypes.assignment(model.blocks[0].project(raw))
        lengths = seq_batch[LENGTH].long()
        assert (lengths == 0).any() and (lengths < 8).any()
        for row in range(len(lengths)):
            n = int(lengths[row])
            expected = pi[row, :n].mean(0) if n else torch.full((4,), 0.25)
            assert torch.allclose(theta[row], expected, atol=1e-6)
        # padding ids do not change the distribution, nor anything else
        padded = torch.arange(8).unsqueeze(0) >= lengths.unsqueeze(1)
        altered = _clone(seq_batch)
        altered[ITEM] = torch.where(padded, torch.full_like(altered[ITEM], 7), altered[ITEM])
        altered[CATE] = torch.where(padded, torch.full_like(altered[CATE], 5), altered[CATE])
        assert torch.equal(model.views(altered).theta[0], theta)
        assert torch.equal(model(altered)["logit"], model(seq_batch)["logit"])


def test_cdnet_diversity_loss_is_the_entropy_gap_of_the_mean_distribution(seq_data, seq_batch):
    model = _smoke(seq_data.schema)
    with torch.no_grad():
        out, views = model(seq_batch), model.views(seq_batch)
        has = seq_batch[LENGTH] > 0
        mean = views.theta[0][has].mean(0)
        expected = 1e-3 * (math.log(4) + (mean * mean.log()).sum())
        assert torch.allclose(out["aux_loss"], expected, atol=1e-9)
        assert out["aux_loss"] >= 0
    assert "aux_loss" not in _smoke(seq_data.schema, diversity_weight=0.0)(seq_batch)
    assert "aux_loss" not in _smoke(seq_data.schema, distribution="categories")(seq_batch)


def test_cdnet_category_distribution_depends_on_the_histogram_only(seq_data, seq_batch):
    model = _smoke(seq_data.schema, distribution="categories")
    assert model.distribution_sequences == ["hist_cate_id"]
    lengths = seq_batch[LENGTH].long()
    # reversing each real history keeps its category histogram: the coarse view is unchanged
    reversed_batch = _clone(seq_batch)
    position = torch.arange(8).unsqueeze(0).expand(len(lengths), -1)
    source = torch.where(position < lengths[:, None], lengths[:, None] - 1 - position, position)
    for key in (ITEM, CATE):
        reversed_batch[key] = seq_batch[key].gather(1, source)
    with torch.no_grad():
        views = model.views(seq_batch)
        assert torch.allclose(model.views(reversed_batch).dist, views.dist, atol=1e-6)
        # by hand, one row: cross-attention over the distinct categories with a log-count bias
        row = int(torch.nonzero(lengths >= 5)[0])
        embedded = model.embedding(seq_batch)
        cates = seq_batch[CATE][row, : lengths[row]]
        distinct, counts = cates.unique(return_counts=True)
        offset = model.embedding.sequence_offset(seq_data.schema.sequence("hist_cate_id"))
        values = model.embedding.embedding.weight[distinct.long() + offset]
        slot = model.embedding.sequence_slot(seq_data.schema.sequence("hist_cate_id"))
        values = model.embedding.normalize([values[None]], [torch.full((len(values),), slot)])[0][0]
        context = model.embedding.num_fields
        queries = embedded.fields[row] + model.context_type[:context]
        attention = model.blocks[0].attention
        scores = attention.query(queries) @ attention.key(values).T / math.sqrt(4) + counts.log()
        attended = torch.softmax(scores, -1) @ attention.value(values)
        summary = (counts[:, None] * values).sum(0) / counts.sum()
        assert torch.allclose(views.dist[row], torch.cat([attended.mean(0), summary]), atol=1e-5)
        # an empty history gives a zero coarse view
        empty = lengths == 0
        assert torch.equal(views.dist[empty], torch.zeros_like(views.dist[empty]))


@pytest.mark.parametrize("overrides", [{"fusion": "gate"}, {"distribution": "categories"}])
def test_cdnet_variants_train_every_parameter(overrides, seq_data, seq_batch):
    model = _smoke(seq_data.schema, **overrides).train()
    out = model(seq_batch)
    loss = nn.functional.binary_cross_entropy_with_logits(out["logit"], seq_batch["label"])
    (loss + out.get("aux_loss", 0.0)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    if "fusion" in overrides:
        assert model.gate is not None and model.gate.in_features == 4 * 2 + 2 * 4


def test_cdnet_configs_and_refusal(seq_data, flat_data):
    default = build_model("cdnet", seq_data.schema)
    assert default.config.top_k == 16 and default.config.num_prototypes == 16
    assert len(default.layers) == 2 and default.config.fusion == "concat"
    # v_fine (16 * 2) + v_dist (2 * 16) + context (4 categorical + 1 numeric fields of 16)
    assert default.mlp_ceiling_spec() == (32 + 32 + 5 * 16, [512, 256, 128])
    with pytest.raises(ValueError, match="divisible by num_heads"):
        make_config("cdnet", {"embedding_dim": 5})
    with pytest.raises(IncompatibleDataError, match="cdnet.*behaviour sequence"):
        build_model("cdnet", flat_data.schema)
