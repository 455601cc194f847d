"""GateSID: semantic IDs from the training split, the maturity gate on a planted case, reload."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from agenticrs.data.spec import DatasetSpec
from agenticrs.features.batching import iterate_batches
from agenticrs.features.pipeline import process_dataset
from agenticrs.models.base import build_model
from agenticrs.train.config import TrainConfig
from agenticrs.train.trainer import Trainer

N_POP, N_RARE, N_CATE = 24, 400, 4
POP_ROWS, RARE_ROWS = 80, 2


def _table(seed: int, with_new: bool) -> pa.Table:
    """Popular items (80 impressions): the click follows the item, not its category. Rare items
    (2 impressions) and new items (none in training): the click follows the category."""
    rng = np.random.default_rng(seed)
    item_bit = np.random.default_rng(0).random(N_POP) < 0.5
    items = np.r_[np.repeat(np.arange(N_POP), POP_ROWS), np.repeat(N_POP + np.arange(N_RARE), RARE_ROWS)]
    if with_new:  # items never in the training split
        items = np.r_[items, np.repeat(N_POP + N_RARE + np.arange(16), 4)]
    n = len(items)
    cate = items % N_CATE
    p = np.where(items < N_POP, np.where(item_bit[np.minimum(items, N_POP - 1)], 0.9, 0.1),
                 np.where(cate < 2, 0.9, 0.1))  # fmt: skip
    hist = [rng.integers(0, N_POP, rng.integers(1, 5)) for _ in range(n)]
    return pa.table({
        "label": (rng.random(n) < p).astype(np.int8),
        "request_id": [f"r{seed}_{r}" for r in range(n)],
        "user_id": [f"u{u}" for u in rng.integers(0, 30, n)],
        "item_id": [f"i{i}" for i in items],
        "cate_id": [f"c{c}" for c in cate],
        "slot": [f"s{s}" for s in rng.integers(0, 3, n)],  # varies within an item: not item content
        "hist_item_id": [[f"i{i}" for i in h] for h in hist],
    })  # fmt: skip


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("gatesid")
    pq.write_table(_table(1, with_new=False), root / "train.parquet")
    pq.write_table(_table(2, with_new=True), root / "valid.parquet")
    spec = DatasetSpec.from_dict({
        "name": "gatesid_planted", "reader": {"format": "parquet"},
        "files": {"train": str(root / "train.parquet"), "valid": str(root / "valid.parquet")},
        "fields": [{"name": "label", "kind": "label"}, {"name": "user_id", "kind": "categorical"},
                   {"name": "item_id", "kind": "categorical"}, {"name": "cate_id", "kind": "categorical"},
                   {"name": "slot", "kind": "categorical"},
                   {"name": "hist_item_id", "kind": "sequence", "share_vocab_with": "item_id", "max_len": 4}],
        "request_key": "request_id", "request_fields": ["user_id"],
    })  # fmt: skip
    return process_dataset(spec, root / "cache")


PARAMS = {
    "embedding_dim": 8,
    "sid_levels": 2,
    "sid_codebook_size": 4,
    "hidden_units": [16],
    "gate_supervision": 0.0,
    "content_in_tower": False,
}


def _train(planted, tmp_path=None):
    torch.manual_seed(0)
    model = build_model("gatesid", planted.schema, PARAMS)
    config = TrainConfig(batch_size=64, learning_rate=1e-2, epochs=2, eval_every_epochs=2, num_threads=1,
                         seed=0)  # fmt: skip
    Trainer(config).fit(model, planted)
    return model.eval()


def _gates(model, planted):
    batch = next(iterate_batches(planted.split("valid"), 100_000, label_index=None))
    with torch.no_grad():
        gate = model(batch)["gate"]
    item = batch["categorical"][:, planted.schema.categorical_index("item_id")]
    impressions = model.item_impressions[item.long()]
    return gate, impressions, batch


def test_prepare_builds_item_sids_from_content(planted):
    model = build_model("gatesid", planted.schema, PARAMS)
    model.prepare(planted.split("train"))
    names = [planted.schema.categorical_names[int(c)] for c in model.content_columns]
    used = dict(zip(names, model.content_used.tolist(), strict=True))
    assert used == {"cate_id": 1.0, "slot": 0.0}  # the item determines its category, not the slot
    # items of one category share their SID; first-level codes separate the 4 categories
    train = planted.split("train")
    cat = np.asarray(train["categorical"])
    item_col, cate_col = (planted.schema.categorical_index(n) for n in ("item_id", "cate_id"))
    codes = model.item_codes[torch.as_tensor(cat[:, item_col].astype(np.int64))].numpy()
    by_cate = {}
    for c, code in zip(cat[:, cate_col], codes, strict=True):
        by_cate.setdefault(int(c), set()).add(tuple(code))
    assert all(len(s) == 1 for s in by_cate.values()) and len({next(iter(s)) for s in by_cate.values()}) == N_CATE
    assert model.item_impressions.max() == POP_ROWS and model.item_impressions[:3].sum() == 0
    # a candidate's SID comes from its row: an unseen (OOV) item of a known category gets that category's SID
    batch = next(iterate_batches(planted.split("valid"), 100_000, label_index=None))
    row_codes = model.encode_sids(batch["categorical"][:, model.content_columns])
    row_cate = batch["categorical"][:, cate_col]
    for c, s in by_cate.items():
        assert {tuple(r) for r in row_codes[row_cate == c].tolist()} == s


def test_gate_learns_maturity_and_run_reproduces(planted, tmp_path):
    model = _train(planted)
    gate, impressions, batch = _gates(model, planted)
    popular, new = gate[impressions >= POP_ROWS].mean(), gate[impressions == 0].mean()
    assert popular > new + 0.1, (float(popular), float(new))
    # reload: same SIDs, statistics and predictions
    path = tmp_path / "gatesid.pt"
    torch.save(model.state_dict(), path)
    torch.manual_seed(5)
    fresh = build_model("gatesid", planted.schema, PARAMS)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(batch)["logit"], model(batch)["logit"])
    # a second run with the same seed reproduces the first
    again = _train(planted)
    with torch.no_grad():
        assert torch.allclose(again(batch)["logit"], model(batch)["logit"], atol=1e-5)


def test_fixed_gates_and_gradients(planted):
    batch = next(iterate_batches(planted.split("train"), 64, label_index=0))
    for gate, value in (("id", 1.0), ("sid", 0.0)):
        model = build_model("gatesid", planted.schema, {**PARAMS, "gate": gate})
        out = model(batch)
        assert out["logit"].shape == (64,) and torch.all(out["gate"] == value)
    model = build_model("gatesid", planted.schema, {**PARAMS, "gate_supervision": 0.01})
    model.prepare(planted.split("train"))
    out = model(batch)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out["logit"], batch["label"]) + out["aux_loss"]
    loss.backward()
    assert model.sid_embedding.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.gate_mlp.parameters())


def test_bad_settings_name_the_field(planted):
    with pytest.raises(ValueError, match="nope"):
        build_model("gatesid", planted.schema, {"content_fields": ["nope"]})
    with pytest.raises(ValueError, match="age_field"):
        build_model("gatesid", planted.schema, {"age_field": "cate_id"})
