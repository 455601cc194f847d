"""The simulator's tables load through the normal data layer for all four tasks, and models
trained on them are measured against the ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from agenticrs.cli.main import app
from agenticrs.data.simulated import TASKS
from agenticrs.data.spec import DatasetSpec
from agenticrs.features.pipeline import process_dataset
from agenticrs.sim import build_world, sim_preset
from agenticrs.sim.environment import Environment, RandomPolicy
from agenticrs.train.config import RunConfig, TrainConfig
from agenticrs.train.policy import RunPolicy
from agenticrs.train.workflow import train_run

HIDDEN = {"p_click", "p_cart", "p_purchase", "gmv", "delay_s", "day"}


@pytest.mark.parametrize("task", TASKS)
def test_every_task_loads_through_the_data_layer(task, tiny_sim, tmp_path):
    spec = DatasetSpec.from_yaml(tiny_sim / f"{task}.yaml")  # the portable spec written beside the tables
    data = process_dataset(spec, tmp_path / "cache")
    assert set(data.splits) == {"train", "valid", "test"}
    assert all(split.rows > 0 for split in data.splits.values())
    fields = {f.name for f in spec.fields}
    assert not (fields & HIDDEN), "true probabilities and outcomes must never be model inputs"
    labels = list(data.schema.labels)
    expected = {"ctr": ["click"], "multi_scenario": ["click", "purchase"], "cvr_delayed": ["purchase", "cart"],
                "sequential": ["label"]}[task]  # fmt: skip
    assert labels == expected
    if task in ("ctr", "multi_scenario", "cvr_delayed"):
        assert data.schema.has_request and "hist_item_id" in data.schema.request_fields
        assert any(s.target == "item_id" for s in data.schema.id_sequences)
    if task == "cvr_delayed":
        assert {"ts", "purchase_ts"} <= set(data.schema.timestamps)


def test_sim_datasets_resolve_by_name(tmp_path):
    from agenticrs.data.registry import resolve_dataset

    spec = resolve_dataset("sim-tiny-multi_scenario", cache_dir=tmp_path)
    assert spec.name == "sim-tiny-multi_scenario" and "scenario" in {f.name for f in spec.fields}
    assert (tmp_path / "generated" / "sim-tiny-seed0" / "meta.json").exists()


@pytest.fixture(scope="module")
def trained_deepfm(tiny_sim, tmp_path_factory):
    spec = DatasetSpec.from_yaml(tiny_sim / "ctr.yaml")
    runs = tmp_path_factory.mktemp("sim_runs")
    train = TrainConfig(epochs=4, batch_size=1024, learning_rate=2e-3, patience=2, seed=1)
    config = RunConfig(dataset=str(tiny_sim / "ctr.yaml"), model="deepfm", train=train,
                       model_params={"embedding_dim": 8, "hidden_units": [64, 32]})  # fmt: skip
    data = process_dataset(spec, runs / "cache")
    return train_run(config, runs, runs / "cache", data=data)


def test_oracle_auc_is_above_a_trained_deepfm(trained_deepfm, tiny_sim):
    meta = json.loads((tiny_sim / "meta.json").read_text())
    oracle = meta["splits"]["impressions_test"]["oracle_auc"]
    deepfm = trained_deepfm.result.test["auc"]
    print(f"test AUC: oracle {oracle:.4f}, DeepFM {deepfm:.4f}")
    assert deepfm > 0.6  # it learned the simulated signal
    assert oracle > deepfm


def test_a_trained_run_serves_as_a_policy_and_beats_random(trained_deepfm):
    world = build_world(sim_preset("tiny", seed=5))  # the world the run was trained on
    env = Environment(world, seed=0, rate_scale=2.0)
    policy = RunPolicy(trained_deepfm.run.folder)
    result = env.ab_test(RandomPolicy(), policy, crn="full")
    clicks = result.comparisons["clicks"]
    print(f"trained DeepFM vs random: click lift {clicks.lift:+.3f} [{clicks.ci_low:+.3f}, {clicks.ci_high:+.3f}]")
    assert clicks.significant and clicks.lift > 0.1


def test_simulate_command_writes_tables_specs_and_a_summary(tmp_path):
    out = tmp_path / "sim"
    result = CliRunner().invoke(app, ["simulate", "--preset", "tiny", "--seed", "2", "--out", str(out), "-q",
                                      "--set", "n_users=200"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "oracle AUC" in result.output
    for task in TASKS:
        assert (out / f"{task}.yaml").exists()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["n_users"] == 200 and meta["config"]["seed"] == 2
    bad = CliRunner().invoke(app, ["simulate", "--preset", "gigantic", "--out", str(out)])
    assert bad.exit_code == 2 and "unknown simulator preset" in bad.output


def test_true_probability_columns_stay_out_of_batches(tiny_sim, tmp_path):
    data = process_dataset(DatasetSpec.from_yaml(tiny_sim / "ctr.yaml"), tmp_path / "cache")
    split = data.split("train")
    assert not any("p_click" in k or "purchase" in k for k in split.keys())
    assert np.asarray(split["request"]).shape == (split.rows,)
