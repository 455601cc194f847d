"""The CUDA paths: every model trains through the one engine on a GPU, a GPU run resumes from its
checkpoint, and what a GPU run saved is read back and scored on the CPU. Skipped where there is no
CUDA device (CI has none); `pytest -m cuda` on a GPU machine runs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from agenticrs import api
from agenticrs.models.base import build_model
from agenticrs.train.config import TrainConfig
from agenticrs.train.ctr import CTRTask
from agenticrs.train.engine import Engine
from agenticrs.train.run import CHECKPOINT, Run
from agenticrs.train.trainer import Trainer

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]


class _Crash(Exception):
    pass


class CrashingTask(CTRTask):
    """The CTR task, killed after a given number of steps (a process dying mid-epoch)."""

    def __init__(self, *args, crash_after: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.crash_after, self.done = crash_after, 0

    def loss(self, model, batch):
        if self.done == self.crash_after:
            raise _Crash()
        self.done += 1
        return super().loss(model, batch)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> api.Simulation:
    return api.simulate("tiny", seed=11, out=tmp_path_factory.mktemp("cuda") / "sim11")


@pytest.mark.parametrize("model", api.models("ctr"))
def test_every_ctr_model_trains_on_the_gpu_and_its_run_scores_the_same_on_the_cpu(
    model: str, sim: api.Simulation, tiny_cache: Path, tmp_path: Path
) -> None:
    run = api.train(sim["ctr"], model, train={"max_steps": 12, "eval_every_steps": 6, "device": "cuda"}, seed=1,
                    runs_dir=tmp_path, cache_dir=tiny_cache)  # fmt: skip
    assert run.stopped_by == "step budget" and np.isfinite(run.test["logloss"])
    rows = pd.read_parquet(sim.folder / "impressions_test.parquet")
    scores = api.score(run, rows)  # the saved weights, read on the CPU
    assert np.isfinite(scores).all()
    assert roc_auc_score(rows["click"], scores) == pytest.approx(run.test["auc"], abs=1e-4)


def test_a_gpu_run_resumes_mid_epoch_to_the_uninterrupted_weights(tiny_synthetic, tmp_path: Path) -> None:
    config = TrainConfig(batch_size=512, epochs=2, eval_every_steps=7, checkpoint_every_steps=5, patience=5,
                         eval_batch_size=4096, seed=3, metrics=["auc", "logloss"], device="cuda")  # fmt: skip

    def fresh():
        torch.manual_seed(0)
        return build_model("deepfm", tiny_synthetic.schema, {"dropout": 0.2}, smoke=True)

    whole = fresh()
    expected = Trainer(config).fit(whole, tiny_synthetic, Run.at(tmp_path / "whole"))

    crashed = Run.at(tmp_path / "crashed")
    model = fresh()
    with pytest.raises(_Crash):
        Engine(config).fit(model, CrashingTask(tiny_synthetic, config, model, crash_after=17), crashed)
    assert (crashed.folder / CHECKPOINT).is_file()
    resumed = fresh()
    result = Trainer(config).fit(resumed, tiny_synthetic, crashed, resume=True)
    assert result.steps == expected.steps and result.best_step == expected.best_step
    # GPU embedding backward sums with atomics: equal up to float rounding, not bit for bit
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


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
