"""CSMF and the multi-head two-tower: CPP's exact share of L1 mass, ownership and freezing across
the cascade, the adaptive margin, the fusion, the cascade data and evaluation, and training
(learning, resume, reload) through the one engine on a small planted world."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from agenticrs.data.errors import DataError
from agenticrs.models.base import MODELS, list_models
from agenticrs.retrieval.cascade import CascadeData, CascadeLog, cascade_queries, load_cascade
from agenticrs.retrieval.cascade_train import (
    CascadeTask,
    CascadeTrainConfig,
    build_multi_objective,
    evaluate_multi_objective,
    load_multi_objective_run,
    train_csmf,
    train_multi_objective,
)
from agenticrs.retrieval.csmf import CSMF, count_mask, cpp_mask
from agenticrs.retrieval.multi_objective import MultiHeadTwoTower, serving_cost
from agenticrs.retrieval.two_tower import in_batch_softmax_loss
from agenticrs.train.run import run_task

SMALL = {"dim": 8, "hidden": 16, "out_dim": 8, "user_buckets": 64, "max_len": 5, "attribute_buckets": 16,
         "temperature": 0.2}


# ------------------------------------------------------------------------------------------- CPP
def test_cpp_prunes_the_smallest_weights_holding_at_most_the_ratio_of_l1_mass() -> None:
    # |w| sorted: .0625 .125 .1875 .25 .375 1.0 (total 2.0, exact in binary); cumulative .0625 .1875 .375 .625 1.0 2.0
    w = torch.tensor([[0.375, -0.125, 0.25], [-0.0625, 1.0, 0.1875]])
    mask = cpp_mask(w, 0.3125)  # threshold .625: the fourth cumulative sum equals it -> four pruned
    assert mask.tolist() == [[False, True, True], [True, False, True]]
    assert cpp_mask(w, 0.3).sum() == 3  # threshold .6: the fourth (.625) would exceed it


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_cpp_share_is_exact_for_every_layer_of_a_random_network(ratio: float) -> None:
    torch.manual_seed(0)
    for shape in [(64, 32), (1000,), (7, 3, 5)]:
        w = torch.randn(shape) * torch.rand(shape) ** 3  # heavy-tailed magnitudes
        mask = cpp_mask(w, ratio)
        total = float(w.abs().sum())
        pruned = float(w.abs()[mask].sum())
        smallest_kept = float(w.abs()[~mask].min())
        assert pruned <= ratio * total + 1e-9  # never more than the stated share ...
        assert pruned + smallest_kept > ratio * total  # ... and the next weight would exceed it
        assert float(w.abs()[mask].max()) <= smallest_kept  # the pruned ones are the smallest


def test_cpp_only_prunes_eligible_weights_and_count_rule_prunes_a_fixed_share() -> None:
    w = torch.arange(1.0, 11.0)
    eligible = torch.tensor([True] * 5 + [False] * 5)
    mask = cpp_mask(w, 0.5, eligible)  # eligible mass 15: 1+2+3 = 6 <= 7.5, +4 = 10 > 7.5
    assert mask.tolist() == [True, True, True] + [False] * 7
    assert count_mask(w, 0.3).tolist() == [True] * 3 + [False] * 7


# ------------------------------------------------------------------------------ ownership, stages
def _batch(n: int = 6, items: int = 20, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"history": torch.randint(0, items + 1, (n, 5), generator=g), "user": torch.randint(0, 50, (n,), generator=g),
            "target": torch.randperm(items, generator=g)[:n] + 1, "objective": torch.zeros(n, dtype=torch.long)}  # fmt: skip


def _train_steps(model: CSMF, steps: int = 3) -> None:
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05, weight_decay=0.5)
    for i in range(steps):
        optim.zero_grad()
        model.loss(_batch(seed=i)).backward()
        optim.step()


def test_frozen_weights_never_change_in_later_stages_and_each_stage_trains_only_its_own() -> None:
    torch.manual_seed(0)
    model = CSMF(20, CSMF.Config(**SMALL))
    _train_steps(model)
    report = model.prune()
    assert all(r["mass_share"] <= 0.5 + 1e-9 for r in report.values())
    model.eval()
    exposure_vectors = model.user_vectors(_batch(seed=9), 0).detach().clone()
    items_before = model.item_vectors().detach().clone()
    model.train()
    model.advance()
    assert model.current == 1 and not any(p.requires_grad for p in model.item_tower.parameters())
    frozen = {n: model.effective_weights(0)[n].detach().clone() for n in model._names}
    before = {n: model.get_parameter(n).detach().clone() for n in model._names}
    _train_steps(model)  # AdamW's weight decay touches every position of the raw weights
    for name in model._names:
        param, owner = model.get_parameter(name), model.owner(name)
        changed = param.detach() != before[name]
        assert torch.equal(model.effective_weights(0)[name], frozen[name])  # exposure's weights as they were
        assert changed[owner == 1].any() or name.startswith(("user_tower.user.", "user_tower.history."))
    model.eval()
    torch.testing.assert_close(model.user_vectors(_batch(seed=9), 0), exposure_vectors)  # exposure's vectors unchanged
    assert torch.equal(model.item_vectors(), items_before)  # the shared item space is frozen
    owned = model.ownership()
    assert owned["exposure"] + owned["click"] + owned["conversion"] + owned["free"] == sum(p.numel() for p in model.user_tower.parameters())
    assert owned["click"] > 0 and owned["free"] == 0


def test_a_staged_item_tower_keeps_each_objectives_item_vectors_and_scores_the_fusion_exactly() -> None:
    torch.manual_seed(0)
    model = CSMF(20, CSMF.Config(**SMALL, item_tower="staged"))
    assert not model.shared_item_space and any(n.startswith("item_tower.") for n in model._names)
    _train_steps(model)
    model.prune()
    model.eval()
    exposure_items = model.item_vectors(objective=0).detach().clone()
    model.train()
    model.advance()
    assert all(p.requires_grad for p in model.item_tower.parameters())  # the item tower keeps learning, masked
    _train_steps(model)
    model.eval()
    torch.testing.assert_close(model.item_vectors(objective=0), exposure_items)
    assert not torch.allclose(model.item_vectors(objective=1), exposure_items)
    batch, w = _batch(), torch.tensor([0.2, 0.3, 0.5])
    expected = sum(w[o] * (model.user_vectors(batch, o) @ model.item_vectors(objective=o).T) for o in range(3))
    torch.testing.assert_close(model.score_all(batch, weights=w)[:, 1:], expected[:, 1:])
    with pytest.raises(ValueError, match="no single fused query"):
        model.fused_user_vectors(batch, w)
    assert serving_cost(model)["vector_size"] == 3 * SMALL["out_dim"]


def test_the_last_objective_has_no_successor_and_a_reload_keeps_stage_and_owners(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CSMF(20, CSMF.Config(**SMALL))
    model.prune(), model.advance(), model.prune(), model.advance()
    with pytest.raises(ValueError, match="last"):
        model.advance()
    state = model.state_dict()
    again = CSMF(20, CSMF.Config(**SMALL))
    again.load_state_dict(state)
    model.eval(), again.eval()
    assert again.current == 2 and not any(p.requires_grad for p in again.item_tower.parameters())
    batch = _batch()
    for o in range(3):
        torch.testing.assert_close(again.user_vectors(batch, o), model.user_vectors(batch, o))


def test_adaptive_margin_is_larger_for_positives_the_previous_objective_finds_unlikely() -> None:
    torch.manual_seed(0)
    model = CSMF(20, CSMF.Config(**SMALL, margin=0.3))
    model.eval()
    batch = _batch()
    assert model.margin_of(batch, 0) is None  # exposure has no upstream objective
    margin = model.margin_of(batch, 1)
    user = model.user_vectors(batch, 0)
    logits = user @ model.item_vectors(batch["target"]).T / model.config.temperature
    logits = logits - model.log_q[0, batch["target"]][None, :]
    p = torch.softmax(logits, 1).diagonal()
    torch.testing.assert_close(margin, 0.3 * (1 - p))
    easy = CSMF(20, CSMF.Config(**SMALL, margin=0.3, margin_mode="easy"))
    easy.load_state_dict(model.state_dict())
    easy.eval()
    torch.testing.assert_close(easy.margin_of(batch, 1), 0.3 * p)
    # the margin enters as an additive margin on the positive's cosine, before the temperature
    u, v, ids = torch.eye(2), torch.eye(2), torch.tensor([1, 2])
    m = torch.tensor([0.5, 0.0])
    expected = (-(0.5 / 0.5 - math.log(math.exp(0.5 / 0.5) + 1.0)) - (2.0 - math.log(1.0 + math.exp(2.0)))) / 2
    assert float(in_batch_softmax_loss(u, v, ids, 0.5, margin=m)) == pytest.approx(expected, rel=1e-6)


def test_fusion_is_one_query_whose_score_is_the_weighted_sum_of_objective_scores() -> None:
    torch.manual_seed(0)
    for model in (CSMF(20, CSMF.Config(**SMALL)), MultiHeadTwoTower(20, MultiHeadTwoTower.Config(**SMALL))):
        model.eval()
        batch = _batch()
        w = torch.tensor([0.2, 0.3, 0.5])
        items = model.item_vectors()
        expected = sum(w[o] * (model.user_vectors(batch, o) @ items.T) for o in range(3))
        fused = model.score_all(batch, weights=w)
        torch.testing.assert_close(fused[:, 1:], expected[:, 1:])
        assert model.fused_user_vectors(batch, w).shape == (6, SMALL["out_dim"])  # no larger vector
    with pytest.raises(ValueError, match="default"):
        CSMF.Config(fusion={"search": [1, 0, 0]})
    with pytest.raises(ValueError, match="3 non-negative"):
        CSMF.Config(fusion={"default": [1, 0]})
    cost = serving_cost(CSMF(20, CSMF.Config(**SMALL)))
    assert cost["vector_size"] == SMALL["out_dim"]


def test_both_are_multi_objective_retrievers_of_the_one_registry() -> None:
    names = list_models("multi_objective_retrieval")
    assert {"csmf", "multihead_two_tower"} <= set(names) and MODELS.get("csmf") is CSMF
    with pytest.raises(KeyError, match="not a multi-objective retriever"):
        build_multi_objective("two_tower", 10)


# ------------------------------------------------------------------------------------- data
def _write_world(folder: Path, n_users: int = 120, n_items: int = 60, seed: int = 0) -> None:
    """A planted cascade: users of group g are mostly shown items of group g (a personalised
    logging policy: 70%, the rest uniform), click shown items of group g (80%) and buy the clicked
    ones whose id is even. Per split one day."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    groups = 4
    per = n_items // groups
    items = pa.table({"item_id": np.arange(1, n_items + 1), "title": [f"item {i}" for i in range(1, n_items + 1)],
                      "cate_l1": (np.arange(n_items) // per), "cate_l2": np.arange(n_items) % 5,
                      "brand": np.arange(n_items) % 3, "cate_l1_name": ["c"] * n_items, "cate_l2_name": ["s"] * n_items})  # fmt: skip
    pq.write_table(items, folder / "items.parquet")
    user_group = rng.integers(0, groups, n_users + 1)
    for split, rows_per_user, day in (("train", 40, 0), ("valid", 10, 1), ("test", 10, 2)):
        users = np.repeat(np.arange(1, n_users + 1), rows_per_user)
        own = 1 + user_group[users] * per + rng.integers(0, per, len(users))
        shown = np.where(rng.random(len(users)) < 0.7, own, rng.integers(1, n_items + 1, len(users)))
        group_of_item = (shown - 1) // per
        click = ((group_of_item == user_group[users]) & (rng.random(len(users)) < 0.8)).astype(np.int8)
        purchase = (click & (shown % 2 == 0)).astype(np.int8)
        hist = [list(1 + user_group[u] * per + rng.integers(0, per, 3)) for u in users]
        pq.write_table(pa.table({
            "user_id": users, "item_id": shown, "ts": day * 86400 + np.arange(len(users)),
            "scenario": np.where(np.arange(len(users)) % 2, "home_feed", "search"), "hist_item_id": hist,
            "click": click, "purchase": purchase,
        }), folder / f"impressions_{split}.parquet")  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> CascadeData:
    folder = tmp_path_factory.mktemp("cascade")
    _write_world(folder)
    return load_cascade(folder, name="planted")


def test_cascade_levels_histories_and_queries_match_a_hand_built_log() -> None:
    log = CascadeLog(users=np.array([2, 1, 1, 2, 1]), items=np.array([5, 3, 4, 5, 3]), ts=np.array([5, 2, 1, 3, 3]),
                     levels=np.array([0, 1, 2, 1, 0], np.int8), scenario=np.array([0, 1, 0, 1, 1]),
                     hist_offsets=np.array([0, 1, 3, 3, 4, 6]), hist_items=np.array([9, 7, 8, 6, 1, 2]))  # fmt: skip
    np.testing.assert_array_equal(log.histories(np.array([1, 2]), 3), [[0, 7, 8], [0, 0, 0]])
    q = cascade_queries(log, 3)
    np.testing.assert_array_equal(q.users, [1, 2])
    np.testing.assert_array_equal(q.history, [[0, 0, 0], [0, 0, 6]])  # first impression: user 1 at ts 1, user 2 at ts 3
    np.testing.assert_array_equal(q.scenario, [0, 1])
    offsets, items = q.relevant[0]  # exposure: every shown item, distinct
    assert [list(items[offsets[i] : offsets[i + 1]]) for i in range(2)] == [[3, 4], [5]]
    offsets, items = q.relevant[2]  # conversion: user 1 bought item 4
    assert [list(items[offsets[i] : offsets[i + 1]]) for i in range(2)] == [[4], []]
    hits = q.hits(1, np.array([[3, 9], [1, 5]]))  # click: user 1 {3}, user 2 {5}
    np.testing.assert_array_equal(hits.hits, [[True, False], [False, True]])


def test_bad_impression_files_name_the_file_row_and_field(tmp_path: Path) -> None:
    _write_world(tmp_path)
    path = tmp_path / "impressions_valid.parquet"
    table = pq.read_table(path)
    purchase = table.column("purchase").to_numpy().copy()
    row = int(np.flatnonzero(table.column("click").to_numpy() == 0)[0])
    purchase[row] = 1
    pq.write_table(table.set_column(table.schema.get_field_index("purchase"), "purchase", pa.array(purchase)), path)
    with pytest.raises(DataError, match="purchase without a click") as info:
        load_cascade(tmp_path)
    assert info.value.row == row and info.value.field == "purchase" and "impressions_valid" in str(info.value.file)
    pq.write_table(table.drop_columns(["hist_item_id"]), path)
    with pytest.raises(DataError, match="hist_item_id"):
        load_cascade(tmp_path)


# -------------------------------------------------------------------------------------- training
CONFIG = dict(batch_size=64, eval_every_steps=20, patience=5, learning_rate=1e-2, stage_steps=[100, 60, 40],
              recovery_steps=10, recovery_share=0.3, num_threads=1, ks=[5, 10], monitor="set_recall@10")  # fmt: skip


def test_csmf_learns_the_planted_click_and_conversion_signal_resumes_and_reloads(world: CascadeData, tmp_path: Path) -> None:
    config = CascadeTrainConfig(**CONFIG)
    model, result = train_csmf(world, SMALL, config, run_dir=tmp_path / "csmf")
    names = [p.name for p in result.phases]
    assert names == ["exposure", "exposure_recovery", "click", "click_recovery", "conversion"]
    assert result.steps == sum(p.steps for p in result.phases) <= 100 + 10 + 60 + 10 + 40
    # a user's clicks are a quarter of the catalogue (the user's group): random top-10 recall ~ 10 / 60
    assert result.test["click/set_recall@10"] > 0.4
    assert result.test["conversion/set_recall@10"] > 0.4
    # the click stage starts from the recovered exposure model and does not lose what it had
    before, after = result.phases[1].valid, result.phases[2].valid
    assert after["click/set_recall@10"] >= before["click/set_recall@10"] - 0.02
    assert result.ownership["click"] > 0 and result.ownership["conversion"] > 0
    assert run_task(tmp_path / "csmf") == "multi_objective_retrieval"
    reloaded, run_config = load_multi_objective_run(tmp_path / "csmf")
    task = CascadeTask(reloaded, world, config)
    again = evaluate_multi_objective(reloaded, task.queries("test"), world.scenarios, config.metrics)
    assert again == pytest.approx(result.test)
    assert run_config.model == "csmf"
    # resume: every phase is done, so nothing trains again and the result is the same
    _, resumed = train_csmf(world, SMALL, config, run_dir=tmp_path / "csmf", resume=True)
    assert resumed.test == pytest.approx(result.test) and resumed.steps == result.steps


def test_a_csmf_run_killed_between_phases_resumes_to_the_uninterrupted_result(world: CascadeData, tmp_path: Path) -> None:
    config = CascadeTrainConfig(**CONFIG)
    _, whole = train_csmf(world, SMALL, config, run_dir=tmp_path / "whole")
    _, _ = train_csmf(world, SMALL, config, run_dir=tmp_path / "killed")
    import shutil

    for late in ("2_click", "3_click_recovery", "4_conversion"):  # as if killed after the exposure phases
        shutil.rmtree(tmp_path / "killed" / "phases" / late)
    _, resumed = train_csmf(world, SMALL, config, run_dir=tmp_path / "killed", resume=True)
    assert resumed.test == pytest.approx(whole.test)


def test_one_step_budget_covers_every_csmf_phase() -> None:
    config = CascadeTrainConfig(max_steps=700, recovery_steps=50)
    assert config.stage_budgets() == [200, 200, 200] and config.csmf_steps() == 700
    assert CascadeTrainConfig(max_steps=700, accuracy_recovery=False).stage_budgets() == [233, 233, 233]
    with pytest.raises(ValueError, match="beyond max_steps 500"):
        CascadeTrainConfig(max_steps=500, stage_steps=[200, 200, 100], recovery_steps=10)


def test_each_csmf_stage_and_its_recovery_train_at_the_stage_learning_rate(world: CascadeData, tmp_path: Path) -> None:
    rates = [1e-2, 2e-3, 5e-4]
    config = CascadeTrainConfig(**{**CONFIG, "stage_steps": [20, 20, 20], "recovery_steps": 5,
                                   "stage_learning_rates": rates})  # fmt: skip
    train_csmf(world, SMALL, config, run_dir=tmp_path / "csmf")
    expected = {"0_exposure": 1e-2, "1_exposure_recovery": 1e-2, "2_click": 2e-3, "3_click_recovery": 2e-3,
                "4_conversion": 5e-4}  # fmt: skip
    for phase, rate in expected.items():
        lines = (tmp_path / "csmf" / "phases" / phase / "metrics.jsonl").read_text().splitlines()
        lrs = [json.loads(line)["lr"] for line in lines if '"lr"' in line]
        assert lrs and lrs == pytest.approx([rate] * len(lrs)), phase
    with pytest.raises(ValueError, match="stage_learning_rates must be 3 positive rates"):
        CascadeTrainConfig(stage_learning_rates=[1e-3, 1e-3])


def test_multihead_baseline_trains_every_objective_in_one_engine_run(world: CascadeData, tmp_path: Path) -> None:
    config = CascadeTrainConfig(**{**CONFIG, "stage_steps": None, "max_steps": 80})
    model, result = train_multi_objective(world, "multihead_two_tower", SMALL, config, run_dir=tmp_path / "mh")
    assert [p.name for p in result.phases] == ["joint"] and result.steps <= 80
    assert result.test["click/set_recall@10"] > 0.4
    batch = next(CascadeTask(model, world, config).batches(1))
    assert set(batch["objective"].tolist()) == {0, 1, 2}  # one batch of each objective's positives
    with pytest.raises(ValueError, match="train_csmf"):
        train_multi_objective(world, "csmf", SMALL, config)


def test_a_csmf_run_serves_its_fused_query_through_an_index_in_a_simulator_pipeline(tmp_path: Path) -> None:
    from agenticrs.retrieval.baselines import IndexRetriever
    from agenticrs.retrieval.cascade import resolve_cascade
    from agenticrs.retrieval.index import IndexConfig, neighbour_recall
    from agenticrs.retrieval.multi_objective import FusedQuery
    from agenticrs.retrieval.pipeline import RetrieverSource, load_retriever, save_run_index
    from agenticrs.sim import build_world, sim_preset
    from agenticrs.sim.environment import Environment

    data = resolve_cascade("sim-tiny", tmp_path / "cache")
    config = CascadeTrainConfig(**{**CONFIG, "stage_steps": [30, 20, 10], "ks": [10, 50], "monitor": "set_recall@50"})
    train_csmf(data, {**SMALL, "max_len": 30, "fusion": {"default": [0.0, 1.0, 0.0]}}, config, run_dir=tmp_path / "run")
    exact = load_retriever(tmp_path / "run")
    assert isinstance(exact, FusedQuery)
    save_run_index(tmp_path / "run", IndexConfig(kind="exact"))
    ann = load_retriever(tmp_path / "run")
    assert isinstance(ann, IndexRetriever)
    world = build_world(sim_preset("tiny"))
    assert world.n_items == data.num_items
    env = Environment(world, seed=0)
    source = RetrieverSource(ann, k=40, max_len=30)
    batch = env.requests(0, source)
    assert (world.item_launch_day[batch.item] <= env.start_day).all()  # never an item that cannot be shown
    per_request = batch.item.reshape(-1, 40)
    assert (np.diff(np.sort(per_request, axis=1), axis=1) > 0).all()
    # with weights (0, 1, 0) the fused query is the click vector; the exact index returns its top items
    users = np.arange(20)
    query = source.history_batch(users, env.history)
    click_top = torch.topk(exact.model.score_all(query, 1), 10).indices.numpy()
    assert neighbour_recall(click_top, ann.recommend(query, 10).numpy()) > 0.99


def test_the_served_fused_query_equals_the_training_time_fusion() -> None:
    from agenticrs.retrieval.multi_objective import FusedQuery

    torch.manual_seed(0)
    for model in (CSMF(20, CSMF.Config(**SMALL)), MultiHeadTwoTower(20, MultiHeadTwoTower.Config(**SMALL))):
        if isinstance(model, CSMF):
            _train_steps(model)
            model.prune(), model.advance()
            _train_steps(model)
        model.eval()
        served = FusedQuery(model)
        batch = _batch()
        expected = sum(served.weights[o] * model.user_vectors(batch, o) for o in range(3))
        torch.testing.assert_close(served.user_vectors(batch), expected)
        assert (served.towers is not None) == isinstance(model, CSMF)  # CSMF's masks applied once
