"""Cards of every task: multi-task CTR claims on funnel metrics, streaming delayed-feedback methods,
and sequential models whose semantic IDs come from another arm's run. Each trains through its task's
one training path; validation names the field when a card asks for what its task cannot give."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.paper.card import CardError, load_card, parse_card
from agenticrs.agents.paper.reproduce import arm_order, reproduce


@pytest.fixture
def store(tmp_path):
    store = KnowledgeStore(str(tmp_path / "k.db"))
    yield store
    store.close()


def reproduce_two_arms(raw: dict, store, tmp_path):
    """Reproduce a two-arm card; its result and its runs by arm (both trained, none failed)."""
    result = reproduce(parse_card(raw), store, tmp_path / "runs", tmp_path / "cache")
    assert result.failed == 0 and result.trained == 2, result.lessons
    with store.transaction() as tx:
        return result, {r.arm: r for r in tx.reproduction_runs(result.reproduction_id)}


def card_file(tmp_path, raw: dict):
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


STREAM = {
    "name": "toy-stream", "task": "streaming",
    "claim": {"statement": "ES-DFM beats vanilla", "baseline": "vanilla"},
    "model": {"name": "es_dfm"}, "baselines": [{"name": "vanilla"}],
    "datasets": [{"dataset": "sim-tiny", "protocol": {"train": {"batch_size": 256, "num_threads": 1}}}],
    "seeds": [0],
}  # fmt: skip


_SMALL_SEQ = {"epochs": 1, "max_steps_per_epoch": 5, "batch_size": 64, "num_threads": 1, "valid_users": 32}
TOY_TIGER = {
    "name": "toy-tiger", "task": "sequential",
    "claim": {"statement": "TIGER beats SASRec", "baseline": "sasrec", "metric": "recall@10"},
    "model": {"name": "tiger", "params": {"d_model": 16, "num_encoder_layers": 1, "num_decoder_layers": 1,
                                          "num_heads": 2, "head_dim": 8, "ffn_dim": 32, "beam_size": 10},
              "train": _SMALL_SEQ, "tokenizer": {"collaborative_arm": "sasrec", "levels": 2, "codebook_size": 8}},
    "baselines": [{"name": "sasrec", "params": {"dim": 16, "num_blocks": 1}, "train": _SMALL_SEQ}],
    "datasets": [{"dataset": "sim-tiny", "protocol": {"step_budget": None}}],
    "seeds": [1],
}  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"baselines": [{"name": "vanilla"}, {"name": "fnx"}]},
         r"baselines\.1\.name: unknown method 'fnx'; known streaming methods: .*fnw"),
        ({"claim": {"statement": "x", "baseline": "vanilla", "metric": "ndcg@10"}},
         r"claim\.metric: a streaming reproduction does not report 'ndcg@10'"),
        ({"claim": {"statement": "x", "baseline": "vanilla", "metric": "logloss", "direction": "higher"}},
         r"claim: .*'logloss' is better lower, not higher"),
        ({"claim": {"statement": "x", "baseline": "vanilla", "metric": "auk"}}, r"claim: .*auk"),
        ({"datasets": [{"dataset": "frappe"}]}, r"datasets\.0\.dataset: unknown data set 'frappe'; known streaming data sets"),
        ({"model": {"name": "es_dfm", "params": {"elapsed_cut_s": -1}}}, r"arm es_dfm: params\.elapsed_cut_s"),
        ({"model": {"name": "es_dfm", "tokenizer": {"levels": 2}}}, r"model\.tokenizer: only sequential cards"),
    ],
)  # fmt: skip
def test_a_card_asking_what_its_task_cannot_give_is_refused_naming_the_field(tmp_path, changes, message):
    with pytest.raises(CardError, match=message) as info:
        load_card(card_file(tmp_path, {**STREAM, **changes}))
    assert "card.yaml" in str(info.value)


def test_a_sequential_card_checks_the_arm_its_semantic_ids_come_from(tmp_path):
    raw = {"name": "toy-seq", "task": "sequential", "claim": {"statement": "x", "baseline": "sasrec", "metric": "recall@10"},
           "model": {"name": "tiger", "tokenizer": {"collaborative_arm": "sasrek"}}, "baselines": [{"name": "sasrec"}],
           "datasets": [{"dataset": "sim-tiny"}]}  # fmt: skip
    with pytest.raises(CardError, match=r"model\.tokenizer\.collaborative_arm: 'sasrek' is not another arm"):
        load_card(card_file(tmp_path, raw))
    raw["model"]["tokenizer"] = {"collaborative_arm": "sasrec"}
    card = parse_card(raw)
    # the method comes first, except that TIGER needs SASRec's run of the same seed
    assert [(role, arm.name) for role, arm in arm_order(card, card.datasets[0])] == [("baseline", "sasrec"), ("method", "tiger")]


THREE_ARMS = {
    "name": "toy-three", "task": "sequential",
    "claim": {"statement": "HSTU beats SASRec", "baseline": "sasrec", "metric": "recall@10"},
    "model": {"name": "hstu", "params": {"dim": 16, "num_blocks": 1}, "train": _SMALL_SEQ},
    "baselines": [{"name": "sasrec", "params": {"dim": 16, "num_blocks": 1}, "train": _SMALL_SEQ},
                  {"name": "tiger", "train": _SMALL_SEQ, "tokenizer": {"collaborative_arm": "sasrec"}}],
    "datasets": [{"dataset": "sim-tiny", "protocol": {"step_budget": None}, "arms": ["hstu", "sasrec"]}],
    "seeds": [1],
}  # fmt: skip


@pytest.mark.parametrize(
    ("arms", "message"),
    [
        (["hstu", "sasrec", "gru4rec"], r"datasets\.0\.arms names \['gru4rec'\], which are not arms of the card"),
        (["sasrec", "tiger"], r"datasets\.0\.arms must include the method 'hstu'"),
        (["hstu", "tiger"], r"datasets\.0\.arms must include the claim's baseline 'sasrec'"),
    ],
)
def test_a_trial_names_the_arms_it_trains_and_cannot_leave_out_what_the_verdict_needs(tmp_path, arms, message):
    raw = {**THREE_ARMS, "datasets": [{**THREE_ARMS["datasets"][0], "arms": arms}]}
    with pytest.raises(CardError, match=message):
        load_card(card_file(tmp_path, raw))
    # an arm whose IDs come from another arm's run needs that run on the same data set
    raw["claim"] = {**raw["claim"], "baseline": "tiger"}
    raw["datasets"] = [{**THREE_ARMS["datasets"][0], "arms": ["hstu", "tiger"]}]
    with pytest.raises(CardError, match=r"datasets\.0\.arms: tiger builds its semantic IDs on sasrec's run"):
        load_card(card_file(tmp_path, raw))


def test_an_arm_a_trial_leaves_out_is_neither_trained_nor_judged(tmp_path, store):
    card = load_card(card_file(tmp_path, THREE_ARMS))
    assert [(role, arm.name) for role, arm in arm_order(card, card.datasets[0])] == [("method", "hstu"), ("baseline", "sasrec")]
    result, runs = reproduce_two_arms(THREE_ARMS, store, tmp_path)
    assert set(runs) == {"hstu", "sasrec"}  # no TIGER run, and no SASRec run kept only for TIGER's IDs
    (row,) = result.verdicts
    assert row["baseline"] == "sasrec" and row["claim"] and row["n"] == 1
    assert row["mean"] == pytest.approx(runs["hstu"].metrics["recall@10"] - runs["sasrec"].metrics["recall@10"])


def test_one_model_is_two_arms_and_a_multi_task_claim_is_judged_on_its_funnel_metric(tmp_path, store):
    raw = {
        "name": "toy-mmoe", "claim": {"statement": "MMoE beats a shared bottom on CVR", "baseline": "shared_bottom",
                                      "metric": "cvr_auc"},
        "model": {"name": "mmoe", "params": {"num_experts": 2, "expert_units": [16], "tower_units": [8]}},
        "baselines": [{"name": "shared_bottom", "model": "mmoe", "params": {"num_experts": 1, "expert_units": [16],
                                                                           "tower_units": [8]}}],
        "datasets": [{"dataset": "sim-tiny-multi_scenario", "protocol": {
            "step_budget": 6, "eval_every_steps": 3, "train": {"batch_size": 512, "num_threads": 1, "monitor": "ctcvr_auc",
                                                               "conversion_labels": ["click", "purchase"]}}}],
        "seeds": [1, 2],
    }  # fmt: skip
    result = reproduce(parse_card(raw), store, tmp_path / "runs", tmp_path / "cache")
    assert result.failed == 0 and result.trained == 4
    (row,) = result.verdicts
    assert row["baseline"] == "shared_bottom" and row["metric"] == "cvr_auc" and row["n"] == 2
    with store.transaction() as tx:
        runs = tx.reproduction_runs(result.reproduction_id)
        by_arm = {(r.arm, r.seed): r for r in runs}
    for seed in (1, 2):
        shared = by_arm[("shared_bottom", seed)]
        assert shared.config["model"] == "mmoe" and shared.config["model_params"]["num_experts"] == 1
        assert 0.0 < shared.metrics["cvr_auc"] < 1.0 and "ctcvr_auc" in shared.metrics
        assert by_arm[("mmoe", seed)].config["model_params"]["num_experts"] == 2
    # the paired effect is the mean of the per-seed cvr_auc differences
    diffs = [by_arm[("mmoe", s)].metrics["cvr_auc"] - by_arm[("shared_bottom", s)].metrics["cvr_auc"] for s in (1, 2)]
    assert row["mean"] == pytest.approx(sum(diffs) / 2)


def test_a_streaming_card_runs_its_methods_over_the_click_stream(tmp_path, store):
    raw = {**STREAM, "datasets": [{"dataset": "sim-tiny", "protocol": {"train": {"batch_size": 256, "num_threads": 1}}}]}
    raw["model"] = {"name": "es_dfm", "params": {"pretrain_epochs": 1, "max_windows": 3}}
    raw["baselines"] = [{"name": "vanilla", "params": {"pretrain_epochs": 1, "max_windows": 3}}]
    result, runs = reproduce_two_arms(raw, store, tmp_path)
    for arm in ("es_dfm", "vanilla"):
        metrics = runs[arm].metrics
        assert 0.0 < metrics["auc"] < 1.0 and metrics["logloss"] > 0 and metrics["windows"] == 3
        assert runs[arm].config["train"]["seed"] == 0 and "max_steps" not in runs[arm].config["train"]
    assert runs["vanilla"].metrics["extra_samples"] == 0  # ES-DFM's duplicates are counted; vanilla has none
    (row,) = result.verdicts
    assert row["n"] == 1 and row["mean"] == pytest.approx(runs["es_dfm"].metrics["auc"] - runs["vanilla"].metrics["auc"])


def test_a_multi_objective_retrieval_card_trains_csmf_and_its_baseline_under_one_budget(tmp_path, store):
    small = {"dim": 8, "hidden": 16, "out_dim": 8, "user_buckets": 512}
    raw = {
        "name": "toy-csmf", "task": "multi_objective_retrieval",
        "claim": {"statement": "CSMF beats the multi-head two-tower", "baseline": "multihead_two_tower",
                  "metric": "click/set_recall@50"},
        "model": {"name": "csmf", "params": small, "train": {"stage_steps": [20, 10, 10], "recovery_steps": 5}},
        "baselines": [{"name": "multihead_two_tower", "params": small}],
        "datasets": [{"dataset": "sim-tiny", "protocol": {"step_budget": 50, "eval_every_steps": 10,
                                                          "train": {"batch_size": 128, "num_threads": 1}}}],
        "seeds": [1],
    }  # fmt: skip
    result, runs = reproduce_two_arms(raw, store, tmp_path)
    assert runs["csmf"].metrics["steps"] <= 50 and runs["multihead_two_tower"].metrics["steps"] <= 50
    assert 0.0 < runs["csmf"].metrics["click/set_recall@50"] <= 1.0
    (row,) = result.verdicts
    assert row["mean"] == pytest.approx(runs["csmf"].metrics["click/set_recall@50"]
                                        - runs["multihead_two_tower"].metrics["click/set_recall@50"])
    over = {**raw, "model": {**raw["model"], "train": {"stage_steps": [40, 10, 10], "recovery_steps": 5}}}
    with pytest.raises(CardError, match="beyond max_steps 50"):
        load_card(card_file(tmp_path, over))


def test_a_sequential_card_builds_tigers_ids_on_the_same_seeds_sasrec_run(tmp_path, store):
    raw = TOY_TIGER
    result, runs = reproduce_two_arms(raw, store, tmp_path)
    assert runs["sasrec"].id < runs["tiger"].id  # SASRec trained first
    job = yaml.safe_load((Path(runs["tiger"].run_path) / "job.yaml").read_text())
    assert job["tokenizer"]["source"] == "collaborative" and job["tokenizer"]["collaborative_run"] == runs["sasrec"].run_path
    assert runs["tiger"].config["tokenizer"] == {"collaborative_arm": "sasrec", "levels": 2, "codebook_size": 8}
    for arm in ("tiger", "sasrec"):
        assert 0.0 <= runs[arm].metrics["recall@10"] <= 1.0 and "ndcg@10" in runs[arm].metrics


def test_cmdcms_card_is_judged_on_the_delayed_head_of_its_pre_promotion_runs(tmp_path, store):
    """The shipped CM-DCM card on its registered data set (`sim-promo-prepromo`), shrunk to a few
    steps: both arms train through `train_run` on the pre-promotion labels and the claim is read from
    each run's delayed-conversion head (`y_del/auc`)."""
    from agenticrs.agents.paper.card import resolve_card
    from agenticrs.agents.paper.reproduce import ReproduceOptions

    result = reproduce(resolve_card("cmdcm"), store, tmp_path / "runs", None,
                       options=ReproduceOptions(step_budget=6, seeds=1))  # fmt: skip
    assert result.failed == 0 and result.trained == 2, result.lessons
    with store.transaction() as tx:
        runs = {r.arm: r for r in tx.reproduction_runs(result.reproduction_id)}
    for arm in ("cmdcm", "mmoe"):
        metrics = runs[arm].metrics
        assert 0.0 < metrics["y_del/auc"] < 1.0 and "y_dir/auc" in metrics and "y_atc/auc" in metrics
        assert runs[arm].config["model"] == arm


def test_finished_benchmark_runs_of_exactly_an_arms_job_are_adopted_not_retrained(tmp_path, store):
    """`adopt_runs`: a reproduction in another knowledge database (as a benchmark's run folders are
    to a card) reads back each run whose job is exactly the arm's; an arm whose settings differ, or
    whose IDs would come from another SASRec run, trains."""
    raw = TOY_TIGER
    first, trained = reproduce_two_arms(raw, store, tmp_path / "first")
    folders = tmp_path / "first" / "runs" / "reproduce" / "toy-tiger"
    other = KnowledgeStore(str(tmp_path / "other.db"))
    try:
        events: list[str] = []
        second = reproduce(parse_card(raw), other, tmp_path / "second", tmp_path / "cache", adopt_runs=[folders],
                           on_event=events.append)  # fmt: skip
        assert (second.trained, second.reused, second.failed) == (0, 2, 0)
        assert sum("adopted the finished run" in line for line in events) == 2
        with other.transaction() as tx:
            adopted = {r.arm: r for r in tx.reproduction_runs(second.reproduction_id)}
        for arm in ("sasrec", "tiger"):
            assert adopted[arm].run_path == trained[arm].run_path == adopted[arm].metrics["adopted_run"]
            assert adopted[arm].metrics["recall@10"] == trained[arm].metrics["recall@10"]
        assert second.verdicts[0]["mean"] == first.verdicts[0]["mean"]
        wider = {**raw, "model": {**raw["model"], "params": {**raw["model"]["params"], "ffn_dim": 48}}}
        third = reproduce(parse_card(wider), other, tmp_path / "third", tmp_path / "cache", adopt_runs=[folders])
        assert (third.trained, third.reused) == (1, 1)  # SASRec adopted (or shared), TIGER trained anew
    finally:
        other.close()
    with pytest.raises(FileNotFoundError, match="adopt_runs: .*missing is not a folder"):
        reproduce(parse_card(raw), store, tmp_path / "x", tmp_path / "cache", adopt_runs=[tmp_path / "missing"])


def test_a_sequential_run_killed_mid_reproduction_continues_from_its_checkpoint(tmp_path, store, monkeypatch):
    """The TIGER arm dies after 5 of its optimiser steps (a checkpoint at step 4): the failure is
    recorded, and running the reproduction again continues that run in its own folder to exactly
    the metrics of an uninterrupted reproduction, without retraining SASRec."""
    from agenticrs.gr.train import SequentialTask

    train = {**_SMALL_SEQ, "max_steps_per_epoch": 8, "eval_every_steps": 4}
    raw = {**TOY_TIGER, "model": {**TOY_TIGER["model"], "train": train}}
    clean_store = KnowledgeStore(str(tmp_path / "clean.db"))
    try:
        clean = reproduce(parse_card(raw), clean_store, tmp_path / "clean", tmp_path / "cache")
        with clean_store.transaction() as tx:
            expected = {r.arm: r.metrics for r in tx.reproduction_runs(clean.reproduction_id)}
    finally:
        clean_store.close()

    class Crash(Exception):
        pass

    original, calls = SequentialTask.loss, {"tiger": 0, "die_at": 6}

    def dying(self, model, batch):
        if type(getattr(model, "model", model)).__name__.lower() == "tiger":  # the engine trains a LossModule
            calls["tiger"] += 1
            if calls["tiger"] == calls["die_at"]:
                raise Crash("killed")
        return original(self, model, batch)

    monkeypatch.setattr(SequentialTask, "loss", dying)
    first = reproduce(parse_card(raw), store, tmp_path / "runs", tmp_path / "cache")
    assert (first.trained, first.failed) == (1, 1) and "Crash: killed" in first.lessons[0]
    folders = {p.name.split("-seed1-")[0]: p for p in (tmp_path / "runs" / "reproduce" / "toy-tiger").iterdir()}
    assert (folders["toy-tiger-tiger-sim-tiny"] / "checkpoint.pt").is_file()
    calls.update(tiger=0, die_at=-1)
    second = reproduce(parse_card(raw), store, tmp_path / "runs", tmp_path / "cache")
    assert (second.trained, second.reused, second.failed) == (1, 1, 0)  # SASRec read back, TIGER continued
    assert calls["tiger"] == expected["tiger"]["steps"] - 4  # from the checkpoint at step 4, not from step 0
    with store.transaction() as tx:
        runs = {r.arm: r for r in tx.reproduction_runs(second.reproduction_id)}
    assert runs["tiger"].run_path == str(folders["toy-tiger-tiger-sim-tiny"])
    for arm in ("sasrec", "tiger"):
        assert {k: runs[arm].metrics[k] for k in ("recall@10", "ndcg@10", "steps")} == \
            {k: expected[arm][k] for k in ("recall@10", "ndcg@10", "steps")}, arm  # fmt: skip
