"""SORT's own mechanisms: request-centric attention, local attention, query pruning, QKNorm, the
attention gate, the MoE FFN and next-behaviour pre-training, against their definitions."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agenticrs.models.base import build_model, make_config
from agenticrs.models.layers import batch_key_seq, batch_key_seqlen
from agenticrs.models.sort import (
    GatedAttention,
    MoEFeedForward,
    context_attention_mask,
    plan_tokens,
    request_runs,
)


def _sort(schema, seed=0, **overrides):
    torch.manual_seed(seed)
    model = build_model("sort", schema, config=make_config("sort", overrides, smoke=True))
    nn.init.normal_(model.embedding.embedding.weight, std=0.3)  # visible embeddings
    return model.eval()


def _logits(model, batch):
    with torch.no_grad():
        return model(batch)["logit"]


def _clone(batch):
    return {k: v.clone() for k, v in batch.items()}


# ------------------------------------------------------------------------- request structure
def test_request_runs_are_runs_of_equal_consecutive_ids():
    run_index, first = request_runs(torch.tensor([5, 5, 7, 7, 7, 5, 9]), 7, torch.device("cpu"))
    assert run_index.tolist() == [0, 0, 1, 1, 1, 2, 3]  # a later repeat of 5 is a new run
    assert first.tolist() == [0, 2, 5, 6]
    run_index, first = request_runs(None, 3, torch.device("cpu"))
    assert run_index.tolist() == [0, 1, 2] and first.tolist() == [0, 1, 2]


def test_candidate_score_ignores_other_candidates_but_follows_the_shared_context(seq_data, seq_batch):
    schema = seq_data.schema
    model = _sort(schema)
    assert (seq_batch["request"][:4] == seq_batch["request"][0]).all()
    assert seq_batch["request"][4] != seq_batch["request"][0]
    base = _logits(model, seq_batch)

    # change the candidate fields (item, category, price) of row 1, a candidate of row 0's request
    other = _clone(seq_batch)
    for name in ("item_id", "cate_id"):
        col, vocab = schema.categorical_index(name), schema.categorical[schema.categorical_index(name)].vocab_size
        other["categorical"][1, col] = 3 + (other["categorical"][1, col] - 3 + 1) % (vocab - 3)
    other["numeric"][1, schema.numeric.index("price")] += 2.0
    changed = _logits(model, other)
    assert torch.allclose(changed[0], base[0], rtol=0, atol=1e-6)
    assert torch.allclose(changed[2:], base[2:], rtol=0, atol=1e-6)
    assert (changed[1] - base[1]).abs() > 1e-4

    # change the shared user context of the request (all its rows): every candidate moves
    user = _clone(seq_batch)
    col = schema.categorical_index("user_id")
    user["categorical"][:4, col] = 3 + (user["categorical"][:4, col] - 3 + 1) % (schema.categorical[col].vocab_size - 3)
    assert ((_logits(model, user)[:4] - base[:4]).abs() > 1e-5).all()

    # ... and so does a change of the shared behaviour history alone
    history = _clone(seq_batch)
    items, lengths = seq_batch[batch_key_seq("hist_item_id")], seq_batch[batch_key_seqlen("hist_item_id")]
    full = next(r for r in range(4, len(lengths), 4) if lengths[r] >= 3 and not torch.equal(items[r], items[0]))
    for name in ("hist_item_id", "hist_cate_id"):
        history[batch_key_seq(name)][:4] = seq_batch[batch_key_seq(name)][full]
        history[batch_key_seqlen(name)][:4] = seq_batch[batch_key_seqlen(name)][full]
    assert ((_logits(model, history)[:4] - base[:4]).abs() > 1e-5).all()


def test_request_scores_equal_scores_of_each_candidate_alone(seq_data, seq_batch):
    model = _sort(seq_data.schema)
    together = _logits(model, seq_batch)
    own_requests = {**seq_batch, "request": torch.arange(len(seq_batch["request"]))}
    assert torch.allclose(_logits(model, own_requests), together, rtol=1e-5, atol=1e-6)
    without = {k: v for k, v in seq_batch.items() if k != "request"}
    assert torch.allclose(_logits(model, without), together, rtol=1e-5, atol=1e-6)
    for row in range(6):  # literally one candidate per forward pass
        alone = _logits(model, {k: v[row : row + 1] for k, v in seq_batch.items()})
        assert torch.allclose(alone, together[row : row + 1], rtol=1e-5, atol=1e-6)


def test_context_is_encoded_once_per_request_and_pruned_layers_query_only_candidates(seq_data, seq_batch):
    model = _sort(seq_data.schema)  # smoke: 3 layers, the last 2 pruned
    rows = len(seq_batch["request"])
    requests = len(torch.unique_consecutive(seq_batch["request"]))
    assert requests == rows // 4
    calls: dict[int, list[tuple[int, int]]] = {i: [] for i in range(3)}
    same_context: dict[int, bool] = {}
    for i, block in enumerate(model.blocks):
        block.attention.register_forward_hook(lambda m, args, out, i=i: calls[i].append(tuple(args[0].shape[:2])))
        block.register_forward_hook(lambda m, args, out, i=i: same_context.__setitem__(i, out[0] is args[0]))
    _logits(model, seq_batch)
    context_len = model.context_mask.shape[0]
    candidate_len = model.num_candidate_tokens
    # full layer: the context is attended over once per request, then the candidates of each request
    # (4 rows) together, each row's tokens once
    per_request = rows // requests
    assert calls[0] == [(requests, context_len), (requests, per_request * candidate_len)]
    assert not same_context[0]
    # pruned layers: no context queries and the context is passed on unchanged
    assert calls[1] == [(requests, per_request * candidate_len)] and same_context[1]
    assert calls[2] == [(requests, per_request)] and same_context[2]  # the last layer: only [CLS] is a query


def test_without_request_info_every_sequence_is_context_and_every_field_a_candidate_field(seq_data, seq_batch):
    schema = dataclasses.replace(seq_data.schema, has_request=False, request_fields=())
    plan = plan_tokens(schema)
    assert plan.context_categorical == () and plan.context_numeric == ()
    assert [tuple(s.name for s in g) for g in plan.behaviour_groups] == [("hist_item_id", "hist_cate_id")]
    assert len(plan.candidate_categorical) == 4
    with_requests = plan_tokens(seq_data.schema)
    names = seq_data.schema.categorical_names
    assert [names[i] for i in with_requests.context_categorical] == ["user_id", "city"]
    assert [names[i] for i in with_requests.candidate_categorical] == ["item_id", "cate_id"]
    model = _sort(schema)
    logits = _logits(model, seq_batch)  # the request ids are ignored: each row is its own request
    assert torch.allclose(logits, _logits(model, {**seq_batch, "request": torch.zeros_like(seq_batch["request"])}))


# -------------------------------------------------------------------------- local attention
def _brute_mask(segment, position, window, causal):
    size = len(segment)
    mask = torch.zeros(size, size, dtype=torch.bool)
    for i in range(size):
        for j in range(size):
            if segment[j] == 0:
                mask[i, j] = True
            elif segment[i] == segment[j]:
                delta = position[i] - position[j]
                if causal:
                    mask[i, j] = 0 <= delta and (window <= 0 or delta < window)
                else:
                    mask[i, j] = window <= 0 or abs(delta) < window
    return mask


@pytest.mark.parametrize("window", [0, 1, 2, 3])
@pytest.mark.parametrize("causal", [True, False])
def test_local_attention_mask_matches_its_definition(window, causal):
    segment = [0, 0, 1, 1, 1, 1, 1, 2, 2, 2]  # [CTX], a profile token, two behaviour sequences
    position = [0, 0, 0, 1, 2, 3, 4, 0, 1, 2]
    mask = context_attention_mask(torch.tensor(segment), torch.tensor(position), window, causal)
    assert torch.equal(mask, _brute_mask(segment, position, window, causal))
    assert not mask[:2, 2:].any()  # profile tokens never read the behaviour tokens
    assert not mask[2:7, 7:].any() and not mask[7:, 2:7].any()  # nor one sequence the other


def test_behaviour_tokens_see_only_their_causal_window(seq_data, seq_batch):
    model = _sort(seq_data.schema, num_layers=2, num_pruned_layers=1, local_window=2)
    states = []
    model.blocks[0].register_forward_hook(lambda m, args, out: states.append(out[0]))
    lengths = seq_batch[batch_key_seqlen("hist_item_id")]
    row = int(torch.nonzero(lengths == lengths.max())[0])
    assert lengths[row] >= 6 and row % 4 == 0  # a request's first row with a long history
    batch = _clone(seq_batch)
    vocab = seq_data.schema.categorical[seq_data.schema.categorical_index("item_id")].vocab_size
    batch[batch_key_seq("hist_item_id")][row : row + 4, 2] = 3 + (batch[batch_key_seq("hist_item_id")][row, 2] - 2) % (vocab - 3)
    _logits(model, seq_batch)
    _logits(model, batch)
    request = row // 4
    start = model.num_profile_tokens  # the behaviour tokens follow [CTX] and the request fields
    moved = (states[0][request] - states[1][request]).abs().amax(-1)
    assert (moved[:start] < 1e-6).all()  # profile tokens do not read behaviour tokens
    assert (moved[start : start + 2] < 1e-6).all()  # positions 0, 1: before the change
    assert (moved[start + 2 : start + 4] > 1e-4).all()  # positions 2, 3: within the window
    assert (moved[start + 4 : start + int(lengths[row])] < 1e-6).all()  # positions >= 4: outside it


# ------------------------------------------------------------------------ attention module
def _manual_attention(att: GatedAttention, x, kv, qk_norm: bool, gate: bool):
    heads, dh = att.num_heads, att.head_dim

    def split(t):
        return t.view(t.shape[0], t.shape[1], heads, dh).transpose(1, 2)

    q, k, v = split(x @ att.query.weight.T), split(kv @ att.key.weight.T), split(kv @ att.value.weight.T)
    if qk_norm:
        q = q / q.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() * att.query_norm.weight
        k = k / k.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() * att.key_norm.weight
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(x.shape)
    if gate:
        out = out * torch.sigmoid(x @ att.gate.weight.T + att.gate.bias)
    return out @ att.output.weight.T


@pytest.mark.parametrize("qk_norm", [True, False])
@pytest.mark.parametrize("gate", [True, False])
def test_gated_qknorm_attention_matches_its_formula(qk_norm, gate):
    torch.manual_seed(0)
    att = GatedAttention(8, 2, qk_norm=qk_norm, gate=gate).double()
    with torch.no_grad():
        if qk_norm:
            nn.init.uniform_(att.query_norm.weight, 0.5, 1.5)
            nn.init.uniform_(att.key_norm.weight, 0.5, 1.5)
        if gate:
            nn.init.normal_(att.gate.bias)
    x, kv = torch.randn(3, 4, 8, dtype=torch.float64), torch.randn(3, 5, 8, dtype=torch.float64)
    keys, values = att.keys_values(kv)
    out = att(x, keys, values, torch.ones(3, 1, 1, 5, dtype=torch.bool))
    assert torch.allclose(out, _manual_attention(att, x, kv, qk_norm, gate))


def test_qknorm_makes_attention_blind_to_the_scale_of_queries_and_keys():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    mask = torch.ones(2, 1, 1, 3, dtype=torch.bool)
    for qk_norm in (True, False):
        att = GatedAttention(8, 2, qk_norm=qk_norm).double()
        before = att(x, *att.keys_values(x), mask)
        with torch.no_grad():
            att.query.weight.mul_(7.0)
            att.key.weight.mul_(3.0)
        after = att(x, *att.keys_values(x), mask)
        change = (before - after).abs().max()
        assert change < 1e-5 if qk_norm else change > 1e-2  # (up to the norm's eps)


def test_attention_gate_scales_each_output_channel():
    torch.manual_seed(0)
    gated, plain = GatedAttention(8, 2, gate=True).double(), GatedAttention(8, 2, gate=False).double()
    plain.load_state_dict(gated.state_dict(), strict=False)
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    mask = torch.ones(2, 1, 1, 3, dtype=torch.bool)
    with torch.no_grad():
        nn.init.zeros_(gated.gate.weight)
        nn.init.zeros_(gated.gate.bias)  # sigmoid(0) = 1/2 on every channel
        half = gated(x, *gated.keys_values(x), mask)
        assert torch.allclose(half, 0.5 * plain(x, *plain.keys_values(x), mask))
        gated.gate.bias.fill_(-50.0)  # a closed gate silences the head outputs
        assert gated(x, *gated.keys_values(x), mask).abs().max() < 1e-15


def test_candidate_attention_mask_has_no_candidate_to_candidate_entries(seq_data, seq_batch):
    """The key set of a candidate is its request's context and its own tokens: nothing else."""
    model = _sort(seq_data.schema)
    seen = []
    model.blocks[0].attention.register_forward_hook(lambda m, args, out: seen.append((args[1].shape, args[3])))
    _logits(model, seq_batch)
    (requests, _, num_keys, _), mask = seen[1]
    context_len, tokens = model.context_mask.shape[0], model.num_candidate_tokens
    per_request = len(seq_batch["request"]) // requests
    assert num_keys == context_len + per_request * tokens and mask.shape == (requests, 1, per_request * tokens, num_keys)
    # the context keys: the request's real context tokens, for every query
    lengths = seq_batch[batch_key_seqlen("hist_item_id")][::per_request]
    real = torch.arange(context_len - model.num_profile_tokens)[None, :] < lengths[:, None]
    assert mask[:, 0, :, : model.num_profile_tokens].all()
    assert torch.equal(mask[:, 0, :, model.num_profile_tokens : context_len], real[:, None, :].expand(-1, per_request * tokens, -1))
    # the candidate keys: a block diagonal, each candidate's tokens see its own tokens only
    slot = torch.arange(per_request * tokens) // tokens
    assert torch.equal(mask[:, 0, :, context_len:], (slot[:, None] == slot[None, :]).expand(requests, -1, -1))


# ----------------------------------------------------------------------------------- MoE FFN
def test_moe_output_and_balance_loss_match_their_definitions():
    torch.manual_seed(0)
    moe = MoEFeedForward(4, 3, num_experts=3, top_k=2, shared_expert=True).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    with torch.no_grad():
        out, balance = moe(x)
        probs = torch.softmax(x @ moe.router.weight.T, dim=-1)
        expected = moe.shared(x)
    counts = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for n in range(6):
            chosen = probs[n].argsort(descending=True)[:2]
            weights = probs[n, chosen] / probs[n, chosen].sum()
            for e, w in zip(chosen.tolist(), weights):
                h = x[n]
                y = (F.silu(h @ moe.w_gate[e]) * (h @ moe.w_up[e])) @ moe.w_down[e]
                expected[n] = expected[n] + w * y
                counts[e] += 1
    assert torch.allclose(out, expected)
    assert torch.allclose(balance, 3 * (counts / 12 * probs.mean(0)).sum())


def test_moe_balance_loss_is_one_for_a_uniform_router_and_routes_each_token_alone():
    torch.manual_seed(0)
    moe = MoEFeedForward(4, 3, num_experts=4, top_k=2, shared_expert=False).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    with torch.no_grad():
        nn.init.zeros_(moe.router.weight)
        assert torch.allclose(moe(x)[1], torch.tensor(1.0, dtype=torch.float64))
        nn.init.normal_(moe.router.weight)
        together = moe(x)[0]
        alone = torch.cat([moe(x[i : i + 1])[0] for i in range(5)])  # no capacity limit: no batch effect
        assert torch.allclose(together, alone)


def test_model_returns_a_finite_moe_aux_loss_and_spreads_tokens_over_experts(seq_data, seq_batch):
    model = _sort(seq_data.schema).train()
    routed = []
    for block in model.blocks:
        block.ffn.register_forward_hook(
            lambda m, args, out: routed.append(torch.bincount(m.route(args[0])[1].flatten(), minlength=m.num_experts))
        )
    out = model(seq_batch)
    assert out["aux_loss"].dim() == 0 and torch.isfinite(out["aux_loss"])
    assert 0 < float(out["aux_loss"].detach()) <= 0.01 * 4  # weight 1e-2 times a balance loss in [1, E]
    assert all((counts > 0).all() for counts in routed)  # every expert of every layer sees tokens
    dense = _sort(seq_data.schema, num_experts=0).train()
    assert "aux_loss" not in dense(seq_batch)


# --------------------------------------------------------------------- generative pre-training
def test_generative_head_exists_only_when_its_loss_is_on(seq_data):
    assert _sort(seq_data.schema).generative_head is None
    assert _sort(seq_data.schema, generative_weight=0.5).generative_head is not None
    with pytest.raises(ValueError, match="causal"):
        make_config("sort", {"generative_weight": 0.5, "causal_behaviour": False})


def test_next_behaviour_loss_matches_its_definition_and_trains_the_head(seq_data, seq_batch):
    model = _sort(seq_data.schema, generative_weight=0.5, moe_aux_weight=0.0)
    captured = {}
    model.blocks[0].register_forward_hook(lambda m, args, out: captured.__setitem__("context", out[0]))
    with torch.no_grad():
        model(seq_batch)
    assert "aux_loss" not in model(seq_batch)  # eval: no pre-training loss
    context = captured["context"]
    ids, lengths = seq_batch[batch_key_seq("hist_item_id")][::4], seq_batch[batch_key_seqlen("hist_item_id")][::4]
    start, offset = model.num_profile_tokens, model.embedding.sequence_offset(model.plan.behaviour_groups[0][0])
    states, targets = [], []
    for r in range(len(ids)):
        for t in range(int(min(lengths[r], ids.shape[1])) - 1):
            states.append(context[r, start + t])
            targets.append(int(ids[r, t + 1]))
    items = sorted(set(targets))
    with torch.no_grad():
        table = model.embedding.embedding.weight[torch.tensor(items) + offset]
        logits = model.generative_head(torch.stack(states)) @ table.T
        expected = F.cross_entropy(logits, torch.tensor([items.index(t) for t in targets]))
        first_rows = torch.arange(0, len(seq_batch["request"]), 4)
        valid = torch.ones(context.shape[:2], dtype=torch.bool)
        valid[:, start:] = torch.arange(context.shape[1] - start) < lengths[:, None]
        assert torch.allclose(model.generative_loss(seq_batch, first_rows, context, valid), expected, atol=1e-6)
    model.train()
    out = model(seq_batch)
    assert torch.allclose(out["aux_loss"], 0.5 * expected, rtol=1e-4)
    out["aux_loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.generative_head.parameters())


def test_flatten_readout_reads_every_candidate_token_and_stays_request_exact(seq_data, seq_batch):
    model = _sort(seq_data.schema, readout="flatten", head_batch_norm=True)
    width = model.config.model_dim * model.num_candidate_tokens
    assert model.head.net[0].in_features == width and model.num_candidate_tokens > 1
    together = _logits(model, seq_batch)
    for row in range(4):  # still one candidate's score whatever else is in its request
        alone = _logits(model, {k: v[row : row + 1] for k, v in seq_batch.items()})
        assert torch.allclose(alone, together[row : row + 1], rtol=1e-4, atol=1e-5)
    model.train()
    loss = F.binary_cross_entropy_with_logits(model(seq_batch)["logit"], seq_batch["label"])
    loss.backward()
    # the field tokens reach the head directly: the last block's FFN gets gradient from them
    assert model.field_embedding.grad.abs().sum() > 0
