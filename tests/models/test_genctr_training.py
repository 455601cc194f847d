"""The generative CTR family through the one engine: phases, a planted signal, reload.

A tiny data set with train / valid / test splits whose label is a known function of the user and
the item (plus two noise fields). Pre-training runs inside the run's step budget, its evaluations
do not count for early stopping, each model beats the trivial baseline (a constant, AUC 0.5) on the
test split, and a saved run reloads and reproduces its scores exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from agenticrs.train.config import RunConfig
from agenticrs.train.metrics import compute_metrics
from agenticrs.train.workflow import evaluate_run, train_run

USERS, ITEMS = 30, 40
USER_SCORE = np.random.default_rng(11).normal(size=USERS)
ITEM_SCORE = np.random.default_rng(12).normal(size=ITEMS)


def _table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, USERS, rows), rng.integers(0, ITEMS, rows)
    logit = 2.5 * (USER_SCORE[user] + ITEM_SCORE[item])
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pa.table({
        "label": label, "user": [f"u{u}" for u in user], "item": [f"i{i}" for i in item],
        "noise_a": [f"a{a}" for a in rng.integers(0, 5, rows)], "noise_b": [f"b{b}" for b in rng.integers(0, 7, rows)],
        "price": rng.normal(size=rows),
    })  # fmt: skip


@pytest.fixture(scope="module")
def planted_spec(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("genctr_planted")
    files = {}
    for split, rows, seed in (("train", 2400, 1), ("valid", 600, 2), ("test", 800, 3)):
        pq.write_table(_table(rows, seed), root / f"{split}.parquet")
        files[split] = str(root / f"{split}.parquet")
    spec = {
        "name": "genctr_planted", "files": files, "reader": {"format": "parquet"},
        "fields": [{"name": "label", "kind": "label"}, *({"name": n, "kind": "categorical"} for n in
                   ("user", "item", "noise_a", "noise_b")), {"name": "price", "kind": "numeric", "transform": "standardize"}],
    }  # fmt: skip
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _train(spec: Path, root: Path, model: str, steps: int, **params):
    config = RunConfig.model_validate({
        "dataset": str(spec), "model": model, "smoke": True, "model_params": params,
        "train": {"seed": 3, "batch_size": 128, "max_steps": steps, "epochs": 1000, "eval_every_steps": 20,
                  "patience": 100, "learning_rate": 5e-3, "warmup_steps": 0, "num_threads": 1,
                  "lr_schedule": "constant"},
    })  # fmt: skip
    return train_run(config, root, root / "cache")


def test_pre_training_runs_inside_the_step_budget_and_its_evaluations_do_not_count(planted_spec, tmp_path):
    trained = _train(planted_spec, tmp_path, "dgenctr", 60, pretrain_steps=40)
    history = trained.result.history
    assert trained.result.steps == 60 and trained.result.stopped_by == "step budget"
    assert [r["step"] for r in history] == [20, 40, 60]
    assert [r.get("counts", True) for r in history] == [False, False, True]
    assert not history[0]["improved"] and not history[1]["improved"]
    assert [r["lr"] for r in history] == [5e-3] * 3  # pre-training evaluations never cut a plateau schedule
    assert trained.result.best_step == 60  # the only evaluation that could be selected
    assert int(trained.model.step) == 60 and bool(trained.model.transferred)


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, params",
    [("dgenctr", {"pretrain_steps": 80}), ("dgenctr", {"pretrain_steps": 80, "transfer": "embeddings"}),
     ("sgctr", {}), ("hetegenctr", {"pretrain_steps": 80})],
    ids=["dgenctr", "dgenctr-embeddings", "sgctr", "hetegenctr"],
)  # fmt: skip
def test_learns_a_planted_signal_beyond_the_trivial_baseline_and_reloads_exactly(model, params, planted_spec, tmp_path):
    trained = _train(planted_spec, tmp_path, model, 240, **params)
    test = trained.result.test
    assert test is not None and test["auc"] > 0.75, f"{model}: test AUC {test['auc']:.3f} (a constant scores 0.5)"
    metrics, probs = evaluate_run(trained.run.folder, "test", cache_dir=tmp_path / "cache")
    assert metrics == test  # the reloaded run reproduces its scores exactly
    labels = np.asarray(trained.data.split("test")["labels"][:, 0], dtype=np.float64)
    assert compute_metrics(["auc"], labels, probs.astype(np.float64), None)["auc"] == test["auc"]
