"""SID-SASRec: items only through their semantic IDs (sum of code embeddings, collision digit
included), SASRec everywhere else; optional per-item rows; learns a planted pattern; the run
reloads with its IDs and reproduces its recommendations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gr_helpers import make_sids
from test_sasrec import SMALL, _batch, planted

from agenticrs.gr.base import SemanticIds
from agenticrs.gr.models.sid_sasrec import SIDSASRec
from agenticrs.gr.sequences import leave_one_out
from agenticrs.gr.train import SequentialTrainConfig, load_sequential_run, train_sequential
from agenticrs.gr.zoo import build_sequential, needs_semantic_ids, sequential_model_class

torch.set_num_threads(1)


def test_items_are_sums_of_their_code_embeddings() -> None:
    torch.manual_seed(0)
    sids = make_sids(30, (4, 4, 4))
    model = build_sequential("sid_sasrec", 30, SMALL, semantic_ids=sids)
    assert isinstance(model, SIDSASRec) and needs_semantic_ids(sequential_model_class("sid_sasrec"))
    assert not hasattr(model, "item")  # no per-item rows: items exist only through their codes
    table = model.item_vectors().detach()
    weight = model.code.weight.detach()
    for item in (1, 7, 30):
        rows = [level * 4 + int(code) for level, code in enumerate(sids.codes[item])]
        torch.testing.assert_close(table[item], weight[rows].sum(0))
    assert table[0].abs().sum() == 0  # padding
    ids = torch.tensor([[0, 3, 9], [30, 30, 1]])
    torch.testing.assert_close(model.embed_items(ids), table[ids])
    assert torch.equal(model.item_embeddings(), table)
    # two items that share a code differ in that position's rows only
    shared = SemanticIds(codes=np.array([[0, 0], [2, 0], [2, 1]]), vocab_sizes=(3, 2))
    small = build_sequential("sid_sasrec", 2, SMALL, semantic_ids=shared)
    vectors = small.item_vectors().detach()
    torch.testing.assert_close(vectors[2] - vectors[1], small.code.weight[4].detach() - small.code.weight[3].detach())
    with pytest.raises(ValueError, match="semantic IDs cover 30 items"):
        build_sequential("sid_sasrec", 31, SMALL, semantic_ids=sids)


@pytest.mark.parametrize("item_id_embedding", [False, True])
def test_gradients_reach_codes_and_optional_item_rows(item_id_embedding: bool) -> None:
    torch.manual_seed(0)
    model = build_sequential("sid_sasrec", 30, {**SMALL, "item_id_embedding": item_id_embedding},
                             semantic_ids=make_sids(30, (4, 4, 4)))  # fmt: skip
    batch = _batch(model, planted(20, 30))
    model.loss(batch).backward()
    names = {name for name, _ in model.named_parameters()}
    assert ("item.weight" in names) == item_id_embedding and "code.weight" in names
    for name, param in model.named_parameters():
        if name != "position.weight":  # short planted rows leave early positions unused
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    if item_id_embedding:
        assert model.item.weight.grad[0].abs().sum() == 0  # the padding row is never trained


def test_learns_planted_pattern_through_the_codes(tmp_path: Path) -> None:
    data = planted(300, 40)
    torch.manual_seed(0)
    sids = make_sids(40, (4, 4, 4), seed=2)
    model = build_sequential("sid_sasrec", 40, SMALL, semantic_ids=sids)
    config = SequentialTrainConfig(epochs=20, batch_size=64, learning_rate=1e-2, patience=2, seed=1, num_threads=1)
    result = train_sequential(model, data, config, run_dir=tmp_path / "run", semantic_ids=sids)
    assert result.test["recall@10"] > 0.9, result.history
    loaded, run_config = load_sequential_run(tmp_path / "run")
    assert run_config.model == "sid_sasrec" and np.array_equal(loaded.sid_codes.numpy(), sids.codes)
    batch = next(leave_one_out(data).test.batches(10, 64))
    model.eval()
    assert torch.equal(loaded.recommend(batch, 10), model.recommend(batch, 10))
