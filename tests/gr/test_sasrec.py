"""SASRec, the sequential-model registry and the sequential trainer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gr_helpers import make_sids

from agenticrs.gr.base import SequenceData
from agenticrs.gr.models.sasrec import SASRec, SASRecConfig
from agenticrs.gr.sequences import leave_one_out, next_item_batches
from agenticrs.gr.train import (
    SequentialTrainConfig,
    load_sequential_run,
    train_sequential,
)
from agenticrs.gr.zoo import (
    build_sequential,
    list_sequential_models,
    needs_semantic_ids,
    sequential_model_class,
)

torch.set_num_threads(1)
SMALL = {"dim": 32, "num_blocks": 1, "dropout": 0.0, "max_len": 10}


def planted(users: int, items: int, seed: int = 0) -> SequenceData:
    """Item i is always followed by item i % items + 1; random start and length 6..11."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(6, 12, users)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    pos = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    seq = (np.repeat(rng.integers(0, items, users), lengths) + pos) % items + 1
    return SequenceData("planted", items, np.arange(users, dtype=np.int64), offsets, seq.astype(np.int64))


def _batch(model: SASRec, data: SequenceData) -> dict[str, torch.Tensor]:
    return next(next_item_batches(leave_one_out(data).train, model.config.max_len, 16, 0, 1))


def test_registry_and_config_errors() -> None:
    assert "sasrec" in list_sequential_models() and sequential_model_class("sasrec") is SASRec
    model = build_sequential("sasrec", 30, SMALL)
    assert isinstance(model, SASRec) and model.config.dim == 32 and SASRecConfig().dropout == 0.2
    with pytest.raises(ValueError, match="sasrec.*loss"):
        build_sequential("sasrec", 30, {"loss": "hinge"})
    with pytest.raises(ValueError, match="sasrec.*bogus"):
        build_sequential("sasrec", 30, {"bogus": 1})
    with pytest.raises(KeyError, match="unknown sequential model 'nope'"):
        build_sequential("nope", 30)


@pytest.mark.parametrize("loss", ["ce", "bce", "sampled"])
def test_shapes_and_gradients_reach_every_parameter(loss: str) -> None:
    torch.manual_seed(0)
    data = planted(20, 30)
    model = build_sequential("sasrec", 30, {**SMALL, "num_blocks": 2, "num_heads": 2, "loss": loss, "num_negatives": 8})
    batch = _batch(model, data)
    batch["history"][0] = torch.arange(1, 11)  # one full row, so every position embedding is used
    assert model.hidden(batch["history"]).shape == (16, 10, 32)
    assert model.item_embeddings().shape == (31, 32)
    value = model.loss(batch)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert model.item.weight.grad[0].abs().sum() == 0  # padding row never trained


def test_causal() -> None:
    torch.manual_seed(0)
    model = build_sequential("sasrec", 50, {**SMALL, "num_blocks": 2}).eval()
    history = torch.randint(1, 51, (4, 10))
    changed = history.clone()
    changed[:, 6:] = torch.randint(1, 51, (4, 4))
    with torch.no_grad():
        a, b = model.hidden(history), model.hidden(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])
    # left padding does not change the states of the real items
    padded = torch.cat([torch.zeros(4, 3, dtype=torch.long), history[:, 3:]], 1)
    with torch.no_grad():
        torch.testing.assert_close(model.hidden(padded)[:, 3:], model.hidden(history[:, 3:]))


def test_recommend_unique_valid_and_exclude_history() -> None:
    torch.manual_seed(0)
    model = build_sequential("sasrec", 30, SMALL).eval()
    history = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5], [0, 0, 0, 0, 7]])
    top = model.recommend({"history": history}, 10)
    assert top.shape == (3, 10) and top.min() >= 1 and top.max() <= 30
    assert all(len(set(row.tolist())) == 10 for row in top)
    model.config.exclude_history = True
    top = model.recommend({"history": history}, 30)  # the whole catalogue: history items come last
    for row, hist in zip(top.tolist(), history.tolist(), strict=True):
        seen = {i for i in hist if i}
        assert sorted(row) == list(range(1, 31)) and set(row[-len(seen):]) == seen
    with pytest.raises(ValueError, match="1..30"):
        model.recommend({"history": history}, 31)


def test_sampled_softmax_matches_a_hand_computation_and_the_full_softmax_at_k_ge_items() -> None:
    torch.manual_seed(0)
    model = build_sequential("sasrec", 6, {**SMALL, "loss": "sampled", "num_negatives": 4})
    h, y = torch.randn(3, 32), torch.tensor([1, 2, 6])
    torch.manual_seed(7)
    got = model._sampled_softmax(h, y)
    torch.manual_seed(7)
    neg = torch.randint(1, 7, (4,))
    expected, table = 0.0, model.item.weight.detach()
    for row in range(3):
        pos = float(h[row] @ table[y[row]])
        negs = [float(h[row] @ table[j]) + np.log(6 / 4) for j in neg if j != y[row]]
        expected += -(pos - np.log(np.exp(pos) + np.exp(negs).sum())) / 3
    assert float(got) == pytest.approx(expected, rel=1e-5)
    full = build_sequential("sasrec", 6, {**SMALL, "loss": "ce"})
    full.load_state_dict(model.state_dict())
    model.config.num_negatives = 6  # K >= I: the full softmax
    batch = _batch(model, planted(20, 6))
    torch.testing.assert_close(model.loss(batch), full.loss(batch))


@pytest.mark.parametrize("loss", ["ce", "bce", "sampled"])
def test_learns_planted_pattern(loss: str) -> None:
    model = build_sequential("sasrec", 40, {**SMALL, "loss": loss, "num_negatives": 8})
    config = SequentialTrainConfig(epochs=20, batch_size=64, learning_rate=1e-2, patience=2, seed=1, num_threads=1)
    result = train_sequential(model, planted(300, 40), config)
    assert result.test["recall@10"] > 0.9, result.history
    assert len(result.epoch_seconds) == result.epochs_run and result.best_epoch >= 1


def test_run_directory_round_trip(tmp_path: Path) -> None:
    data = planted(60, 25, seed=3)
    torch.manual_seed(0)  # initial weights are the caller's; the trainer seeds everything after
    model = build_sequential("sasrec", 25, {**SMALL, "dropout": 0.1})
    config = SequentialTrainConfig(epochs=2, batch_size=32, seed=5, ks=[5, 10], monitor="recall@10")
    result = train_sequential(model, data, config, run_dir=tmp_path / "run")
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "weights.pt", "metrics.jsonl", "summary.json"}
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((run / "summary.json").read_text())["test"] == result.test
    loaded, run_config = load_sequential_run(run)
    assert run_config.model == "sasrec" and run_config.num_items == 25 and run_config.dataset == "planted"
    assert run_config.train == config and loaded.config == model.config
    batch = next(leave_one_out(data).test.batches(10, 64))
    model.eval()
    torch.testing.assert_close(loaded.recommend(batch, 10), model.recommend(batch, 10), rtol=0, atol=0)
    # seeded: the same initial weights and config train to the same metrics
    torch.manual_seed(0)
    again = train_sequential(build_sequential("sasrec", 25, {**SMALL, "dropout": 0.1}), data, config)
    assert again.test == result.test and again.valid == result.valid


# the semantic-ID models on a tiny 4x4x4 ID space: decoder, denoiser (its running slot loss and
# step counter are buffers) and dropout all in the state that must come back
_SID_PARAMS = {"max_len": 5, "d_model": 32, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
               "head_dim": 16, "ffn_dim": 64, "dropout": 0.1}
RESUMABLE = {
    "sasrec": {**SMALL, "dropout": 0.1, "loss": "bce"},
    "hstu": {**SMALL, "dropout": 0.1, "loss": "bce"},
    "tiger": _SID_PARAMS,
    "mdgr": _SID_PARAMS,
}


@pytest.mark.parametrize("name", list(RESUMABLE))
def test_sequential_training_resumes_mid_epoch_exactly(name: str, tmp_path: Path) -> None:
    """The sequential task on the one engine: a run killed mid-epoch resumes to the same weights
    (sampled negatives, dropout, MDGR's masks and the cosine schedule continue from the
    checkpointed state), so a benchmark resumed from its checkpoint is the uninterrupted run."""
    from agenticrs.gr.train import SequentialTask
    from agenticrs.train.engine import Engine
    from agenticrs.train.run import Run

    data = planted(120, 25, seed=4)
    sids = make_sids(25) if needs_semantic_ids(sequential_model_class(name)) else None
    config = SequentialTrainConfig(epochs=2, batch_size=16, seed=5, eval_every_steps=4, patience=10,
                                   lr_schedule="cosine", warmup_steps=3)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_sequential(name, 25, RESUMABLE[name], semantic_ids=sids)

    whole = fresh()
    expected = train_sequential(whole, data, config, run_dir=tmp_path / "whole", semantic_ids=sids)

    class Crash(Exception):
        pass

    class Dying(SequentialTask):
        done = 0

        def loss(self, model, batch):
            if Dying.done == 6:
                raise Crash()
            Dying.done += 1
            return super().loss(model, batch)

    model = fresh()
    with pytest.raises(Crash):
        Engine(config).fit(model, Dying(model, data, config), Run.at(tmp_path / "crashed"))
    resumed = fresh()
    result = train_sequential(resumed, data, config, run_dir=tmp_path / "crashed", resume=True, semantic_ids=sids)
    assert result.steps == expected.steps and result.test == expected.test
    for (key, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), key
