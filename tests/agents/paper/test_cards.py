"""Method cards: the shipped cards validate; a card naming an unknown model, data set or setting is
refused with the file and the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agenticrs.agents.paper.card import CARDS, CardError, MethodCard, load_card, parse_card, resolve_card
from agenticrs.runtime.registry import Registry

SEED_METHODS = {"mgdin", "cdnet", "ssr", "sort"}
LATER_METHODS = {"esmm", "mmoe", "ple", "es_dfm", "tiger", "dgenctr", "sgctr", "hetegenctr", "gatesid", "hstu", "mdgr", "grc", "rclrec",
                 "csmf", "cmdcm"}
# multi-task, streaming, generative-CTR and sequential cards


def minimal(**changes) -> dict:
    card = {
        "name": "toy", "claim": {"statement": "beats LR", "baseline": "lr"},
        "model": {"name": "deepfm"}, "baselines": [{"name": "lr"}],
        "datasets": [{"dataset": "synthetic-tiny", "protocol": {"step_budget": 4}}], "seeds": [1, 2],
    }  # fmt: skip
    card.update(changes)
    return card


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_seed_methods_cards_ship_in_the_one_registry_and_validate():
    assert isinstance(CARDS, Registry)
    assert SEED_METHODS | LATER_METHODS <= set(CARDS.names())
    for name in CARDS.names():
        card = resolve_card(name)
        assert card.name == name
        assert all(t.expected in ("holds", "not shown", "contradicted", None) for t in card.datasets)
        if name in SEED_METHODS:  # the seed ranking models: against DeepFM, with the README's verdicts
            assert card.claim.baseline == "deepfm"
            assert all(t.expected is not None for t in card.datasets)
    tasks = {name: resolve_card(name).task for name in LATER_METHODS}
    assert tasks == {"esmm": "ctr", "mmoe": "ctr", "ple": "ctr", "es_dfm": "streaming", "tiger": "sequential", "dgenctr": "ctr",
                     "sgctr": "ctr", "hetegenctr": "ctr", "gatesid": "ctr", "hstu": "sequential", "mdgr": "sequential",
                     "grc": "sequential", "rclrec": "sequential", "csmf": "multi_objective_retrieval",
                     "cmdcm": "ctr"}  # fmt: skip


def test_a_ctr_card_may_claim_one_label_of_a_multi_task_run():
    """CM-DCM's claim is on its delayed-conversion head (`y_del/auc`), which a multi-task run reports
    per label; a per-label metric the task does not compute is still refused."""
    card = resolve_card("cmdcm")
    assert card.claim.metric == "y_del/auc" and card.datasets[0].dataset == "sim-promo-prepromo"
    with pytest.raises(CardError, match=r"claim\.metric: a ctr reproduction does not report 'y_del/ndcg@10'"):
        parse_card(minimal(claim={"statement": "s", "baseline": "lr", "metric": "y_del/ndcg@10"}), "<test>")


def test_mgdin_card_carries_the_benchmark_settings_of_frappe():
    card = resolve_card("mgdin")
    frappe = card.trial("frappe")
    assert frappe.protocol.train_settings() == {"max_steps": 1100, "patience": 4, "eval_every_steps": 22,
                                                "embedding_l2": 0.2, "lr_decay_patience": 2, "num_threads": 1}  # fmt: skip
    assert card.arm("mgdin", frappe).params == {"token_dim": 32, "num_layers": 3, "batch_norm": True}
    assert card.arm("deepfm", frappe).params == {}


def test_the_protocols_step_budget_caps_every_arm_even_one_with_its_own_cap():
    """One optimiser-step budget for every arm: an arm's `max_steps` never outruns the protocol's
    (so `--step-budget`, which replaces the protocol's, reaches every arm)."""
    card = parse_card(minimal(model={"name": "deepfm", "train": {"max_steps": 50, "patience": 2}}), "<test>")
    trial = card.trial("synthetic-tiny")
    assert card.train_settings(trial, card.arm("deepfm", trial)) == {"max_steps": 4, "patience": 2}
    rclrec = resolve_card("rclrec")
    behaviours = rclrec.trial("sim-small-behaviours")
    for arm in ("rclrec", "tiger"):
        settings = rclrec.train_settings(behaviours, rclrec.arm(arm, behaviours))
        assert settings["max_steps"] == 450 and settings["targets"] == "conversion"


def test_a_card_file_round_trips_and_its_hash_is_stable(tmp_path):
    card = load_card(write(tmp_path, minimal()))
    again = MethodCard.model_validate(yaml.safe_load(card.to_yaml()))
    assert again == card and again.content_hash() == card.content_hash()
    assert load_card(write(tmp_path, minimal(seeds=[1, 3]))).content_hash() != card.content_hash()
    reworded = load_card(write(tmp_path, minimal(claim={"statement": "DeepFM is better", "baseline": "lr"})))
    assert reworded.content_hash() != card.content_hash() and reworded.protocol_hash() == card.protocol_hash()
    assert load_card(write(tmp_path, minimal(seeds=[1, 3]))).protocol_hash() != card.protocol_hash()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": {"name": "deepfmm"}}, r"card\.yaml: model\.name: unknown model 'deepfmm'; known CTR models: .*deepfm"),
        ({"baselines": [{"name": "lr"}, {"name": "nope"}]}, r"baselines\.1\.name: unknown model 'nope'"),
        ({"datasets": [{"dataset": "frappee"}]}, r"datasets\.0\.dataset: unknown data set 'frappee'; known ctr data sets: .*frappe"),
        ({"model": {"name": "deepfm", "params": {"hiden_units": [8]}}},
         r"datasets\.0 \(synthetic-tiny\), arm deepfm: params: invalid config for model 'deepfm': hiden_units"),
        ({"model": {"name": "deepfm", "train": {"learning_rate": -1}}},
         r"arm deepfm: train\.learning_rate: Input should be greater than 0"),
        ({"claim": {"statement": "x", "baseline": "dcnv2"}}, r"claim\.baseline 'dcnv2' is not one of the baselines \['lr'\]"),
        ({"seeds": [1, 1]}, r"seeds: .*distinct"),
        ({"modell": {"name": "deepfm"}}, r"modell: Extra inputs are not permitted"),
        ({"baselines": [{"name": "deepfm"}]}, r"model and baselines must be distinct"),
    ],
)
def test_a_bad_card_is_refused_naming_the_file_and_the_field(tmp_path, changes, message):
    path = write(tmp_path, minimal(**changes))
    with pytest.raises(CardError, match=message) as info:
        load_card(path)
    assert str(path) in str(info.value)


def test_a_generated_model_needs_its_module_file(tmp_path):
    with pytest.raises(CardError, match=r"model\.code: no generated module at .*mynet\.py"):
        parse_card(minimal(model={"name": "mynet", "code": "mynet.py"}), "draft", tmp_path)
    (tmp_path / "mynet.py").write_text("# never imported here\n")
    card = parse_card(minimal(model={"name": "mynet", "code": "mynet.py"}), "draft", tmp_path)
    assert card.model.code == str(tmp_path / "mynet.py")  # resolved against the card's folder


def test_resolve_card_says_which_cards_exist():
    with pytest.raises(CardError, match="no method card 'nope'.*mgdin"):
        resolve_card("nope")
