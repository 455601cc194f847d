"""The CUDA paths: every model trains through the one engine on a GPU, and what a GPU run saved
is read back and scored on the CPU (a GPU run's resume is the `cuda` case of
`tests/train/test_engine.py::test_resume_mid_epoch_gives_the_same_final_weights`). Skipped where
there is no CUDA device (CI has none); `pytest -m cuda` on a GPU machine runs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from agenticrs import api
from agenticrs.models.base import model_class

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> api.Simulation:
    return api.simulate("tiny", seed=11, out=tmp_path_factory.mktemp("cuda") / "sim11")


@pytest.mark.parametrize("model", api.models("ctr"))
def test_every_ctr_model_trains_on_the_gpu_and_its_run_scores_the_same_on_the_cpu(
    model: str, sim: api.Simulation, tiny_cache: Path, tmp_path: Path
) -> None:
    two_labels = model_class(model).inputs.min_labels > 1  # ESMM: click and purchase of the same impressions
    run = api.train(sim["multi_scenario" if two_labels else "ctr"], model,
                    train={"max_steps": 12, "eval_every_steps": 6, "device": "cuda"}, seed=1,
                    runs_dir=tmp_path, cache_dir=tiny_cache)  # fmt: skip
    assert run.stopped_by == "step budget" and np.isfinite(run.test["logloss"])
    rows = pd.read_parquet(sim.folder / "impressions_test.parquet")
    scores = api.score(run, rows)  # the saved weights, read on the CPU
    assert np.isfinite(scores).all()
    click = scores[:, 0] if scores.ndim == 2 else scores  # a multi-task model: its click head
    expected = run.test["click/auc"] if two_labels else run.test["auc"]
    assert roc_auc_score(rows["click"], click) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("model", ["sasrec", "tiger"])
def test_sequential_models_train_and_recommend_on_the_gpu(model: str, sim: api.Simulation, tiny_cache: Path,
                                                         tmp_path: Path) -> None:  # fmt: skip
    # TIGER's IDs from the items' attribute bags: text IDs would need the MiniLM package, which a
    # bare GPU machine may lack
    tokenizer = {"source": "attributes"} if model == "tiger" else None
    run = api.train(sim.folder, model, train={"epochs": 1, "max_steps_per_epoch": 4, "device": "cuda"}, seed=1,
                    tokenizer=tokenizer, runs_dir=tmp_path, cache_dir=tiny_cache)  # fmt: skip
    assert run.task == "sequential" and 0 <= run.test["recall@10"] <= 1 and run.steps == 4
    assert yaml.safe_load((run.run_dir / "job.yaml").read_text())["train"]["device"] == "cuda"
    lists = api.recommend(run, users=[1, 2], k=5, cache_dir=tiny_cache)
    assert len(lists) == 2 and all(len(items) == 5 for items in lists.values())
