"""The Python API (`agenticrs.api`): each function against the layer it wraps, and its docstring
examples run as doctests."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from agenticrs import api
from agenticrs.data.errors import DataError
from agenticrs.train.workflow import evaluate_run


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> dict:
    """A tiny simulated world, a CTR run and a sequential run trained on it through the API."""
    folder = tmp_path_factory.mktemp("api")
    sim = api.simulate("tiny", seed=5, out=folder / "sim5")
    ctr = api.train(sim["ctr"], "deepfm", params={"embedding_dim": 4}, train={"max_steps": 8, "eval_every_steps": 4},
                    seed=1, runs_dir=folder / "runs", cache_dir=tiny_cache)
    seq = api.train(folder / "sim5", "sasrec", train={"epochs": 1, "max_steps_per_epoch": 3}, seed=1,
                    runs_dir=folder / "runs", cache_dir=tiny_cache)
    return {"folder": folder, "sim": sim, "ctr": ctr, "seq": seq, "cache": tiny_cache}


def test_simulate_returns_every_task_spec_and_the_oracle(world: dict) -> None:
    sim = world["sim"]
    assert set(sim.specs) == {"ctr", "cvr_delayed", "sequential", "multi_scenario"}
    assert all(path.is_file() for path in sim.specs.values())
    assert 0.5 < sim.meta["splits"]["impressions_test"]["oracle_auc"] < 1
    with pytest.raises(KeyError, match="no task 'ranking'"):
        sim["ranking"]


def test_train_returns_the_run_and_its_metrics(world: dict) -> None:
    ctr = world["ctr"]
    assert ctr.task == "ctr" and ctr.stopped_by == "step budget" and ctr.steps == 8
    assert (ctr.run_dir / "summary.json").is_file() and Path(ctr) == ctr.run_dir  # a TrainedModel is a path
    assert api.evaluate(ctr, cache_dir=world["cache"]) == ctr.test
    seq = world["seq"]
    assert seq.task == "sequential" and set(seq.test) >= {"recall@10", "ndcg@10"}
    assert seq.run_dir.name.startswith("sasrec-sim5-")  # a folder's last part names the run, never a path


def test_score_matches_the_runs_own_predictions_in_any_column_order(world: dict) -> None:
    rows = pd.read_parquet(world["folder"] / "sim5" / "impressions_test.parquet")
    _, expected = evaluate_run(world["ctr"].run_dir, "test", cache_dir=world["cache"])
    scores = api.score(world["ctr"], rows)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-7)
    reversed_columns = rows[rows.columns[::-1]].drop(columns=["click"])
    np.testing.assert_array_equal(api.score(world["ctr"], reversed_columns), scores)
    arrow = pa.Table.from_pandas(rows.head(50), preserve_index=False)
    np.testing.assert_allclose(api.score(world["ctr"], arrow), scores[:50], rtol=1e-6)  # batch size: float noise
    as_dict = {name: rows[name].head(5).tolist() for name in rows.columns}
    np.testing.assert_allclose(api.score(world["ctr"], as_dict), scores[:5], rtol=1e-6)
    assert api.score(world["ctr"], rows.head(0)).shape == (0,)


def test_score_sends_unseen_values_to_oov_and_names_a_missing_field(world: dict) -> None:
    rows = pd.read_parquet(world["folder"] / "sim5" / "impressions_test.parquet").head(20)
    unseen = rows.assign(item_id=10**9)
    assert np.isfinite(api.score(world["ctr"], unseen)).all()
    with pytest.raises(DataError, match="item_id"):
        api.score(world["ctr"], rows.drop(columns=["item_id"]))
    with pytest.raises(TypeError, match="pandas DataFrame"):
        api.score(world["ctr"], [1, 2, 3])


def test_cross_task_mistakes_say_which_function_fits(world: dict) -> None:
    with pytest.raises(ValueError, match="sequential .*run"):
        api.score(world["seq"], {"x": [1]})
    with pytest.raises(ValueError, match="sequential"):
        api.evaluate(world["seq"])
    with pytest.raises(ValueError, match="CTR run.*use `score`"):
        api.recommend(world["ctr"], [1])
    with pytest.raises(ValueError, match="tokenizer settings have no effect"):
        api.train("sim-tiny", "lr", tokenizer={"levels": 2}, runs_dir=world["folder"] / "runs")


def test_recommend_gives_k_unseen_items_per_user(world: dict) -> None:
    top = api.recommend(world["seq"], [1, 2, 3], k=4, cache_dir=world["cache"])
    assert sorted(top) == [1, 2, 3] and all(len(items) == 4 and len(set(items)) == 4 for items in top.values())
    assert api.recommend(world["seq"], 2, k=4, cache_dir=world["cache"]) == {2: top[2]}  # batched = one by one
    with pytest.raises(KeyError, match="user 999999"):
        api.recommend(world["seq"], [999999], cache_dir=world["cache"])


def test_ab_test_finds_the_world_a_run_was_trained_in(world: dict) -> None:
    from agenticrs.sim import build_world, sim_preset

    inferred = api.ab_test("popularity", world["ctr"], days=1)
    explicit = api.ab_test("popularity", world["ctr"], days=1, world=build_world(sim_preset("tiny", seed=5)))
    assert inferred.comparisons["clicks"] == explicit.comparisons["clicks"]
    other = api.ab_test("popularity", world["ctr"], days=1, preset="tiny", seed=6)
    assert other.comparisons["clicks"] != inferred.comparisons["clicks"]
    with pytest.raises(ValueError, match="no world to test in"):
        api.ab_test("popularity", "random")


def test_evolve_records_and_history_reads_it(world: dict, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    summary = api.evolve(world["sim"]["ctr"], candidates=1, db=db, seed=3,
                         settings={"start": {"epochs": 1}, "ensemble_size": 2})
    rows = api.history(db)
    assert [r["round"] for r in rows] == [0, 1] and rows[0]["champion"]
    assert summary.champion_id in {r["id"] for r in rows if r["champion"]}
    store = api.knowledge(db)
    with store.transaction() as tx:
        assert tx.latest_intent().status == "finished"
    store.close()
    with pytest.raises(ValueError, match="start.epochs"):
        api.evolve(world["sim"]["ctr"], candidates=1, db=db, settings={"train": {"epochs": 2}})


def test_models_and_datasets_list_every_task() -> None:
    assert {"deepfm", "sort", "mgdin"} <= set(api.models("ctr")) and {"sasrec", "tiger", "rclrec"} <= set(api.models("sequential"))
    found = api.datasets()
    assert found["sim-tiny"] is True and "amazon_beauty" in found


@pytest.mark.slow
def test_the_docstring_examples_run(tmp_path: Path, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTICRS_CACHE_DIR", str(tiny_cache))
    result = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0
