"""Cards whose method is a composition of building blocks: validated at load with the field named
(unknown block, bad block setting, a block the data set cannot feed), and reproduced end to end
through the one training path as the zoo model `composed`, under the arm's own name."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import yaml

from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.paper.card import CardError, declared_schema, load_card, parse_card, resolve_card
from agenticrs.agents.paper.reproduce import ReproduceOptions, reproduce, run_config

MIX = {"name": "mix", "compose": {"blocks": [{"block": "cross", "num_layers": 1}, {"block": "mlp", "hidden_units": [8]}]}}


def card(model: dict | None = None, dataset: str = "synthetic-tiny", **changes) -> dict:
    raw = {
        "name": "toy", "claim": {"statement": "the mix beats LR", "baseline": "lr"},
        "model": model or MIX, "baselines": [{"name": "lr"}],
        "datasets": [{"dataset": dataset, "protocol": {"step_budget": 4, "eval_every_steps": 2,
                                                      "train": {"batch_size": 512, "num_threads": 1}}}],
        "seeds": [1, 2],
    }  # fmt: skip
    raw.update(changes)
    return raw


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_composition_arm_trains_the_composed_model_with_its_settings_under_its_own_name():
    raw = card(datasets=[{"dataset": "synthetic-tiny", "settings": {"mix": {"params": {"embedding_dim": 6}}}}])
    parsed = parse_card(raw)
    trial = parsed.datasets[0]
    arm = parsed.arm("mix", trial)
    assert (arm.name, arm.model_name) == ("mix", "composed")
    config = run_config(parsed, trial, arm, seed=3)
    assert config["model"] == "composed" and config["name"] == "toy-mix-synthetic-tiny-seed3"
    assert config["model_params"] == {**MIX["compose"], "embedding_dim": 6}  # the data set's settings laid over
    assert run_config(parsed, trial, parsed.arm("lr", trial), seed=3)["model"] == "lr"


def test_the_shipped_composition_card_validates():
    shipped = resolve_card("cross-attention-mix")
    assert shipped.model.model_name == "composed" and shipped.claim.baseline == "deepfm"
    assert [b["block"] for b in shipped.model.model_params()["blocks"]] == ["cross", "self_attention", "mlp"]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"name": "mix", "compose": {"blocks": [{"block": "cross"}, {"block": "foo"}]}},
         r"model\.compose\.blocks\.1\.block: unknown block 'foo'; known: cross, fm, linear, mlp, self_attention"),
        ({"name": "mix", "compose": {"blocks": [{"block": "cross", "num_layers": 0}]}},
         r"model\.compose\.blocks\.0\.num_layers: Input should be greater than or equal to 1"),
        ({"name": "mix", "compose": {"blocks": [{"block": "mlp"}], "embeding_dim": 8}},
         r"model\.compose\.embeding_dim: Extra inputs are not permitted"),
        ({"name": "mix", "compose": {"blocks": []}}, r"model\.compose\.blocks: List should have at least 1 item"),
        ({"name": "deepfm", "compose": {"blocks": [{"block": "mlp"}]}},
         r"model\.name: 'deepfm' is a zoo model; a composition arm needs a name of its own"),
        ({"name": "mix", "compose": {"blocks": [{"block": "mlp"}]}, "code": "mix.py"},
         r"model: an arm is a generated module \(code\) or a composition \(compose\), not both"),
        ({"name": "mix", "model": "deepfm", "compose": {"blocks": [{"block": "mlp"}]}},
         r"model: a composition trains the model 'composed', not 'deepfm'"),
        ({"name": "mix", "compose": {"blocks": [{"block": "mlp"}]}, "params": {"head_dropout": 1.5}},
         r"arm mix: params: invalid config for model 'composed': head_dropout"),
    ],
)
def test_a_bad_composition_is_refused_naming_the_file_and_the_field(tmp_path, model, message):
    path = write(tmp_path, card(model))
    with pytest.raises(CardError, match=message) as info:
        load_card(path)
    assert str(path) in str(info.value)


def test_a_composition_is_a_ctr_model(tmp_path):
    with pytest.raises(CardError, match=r"model\.compose: compositions of building blocks are CTR models; "
                                        r"this card's task is sequential"):  # fmt: skip
        load_card(write(tmp_path, card(task="sequential")))


def test_a_composition_in_a_baseline_is_checked_too(tmp_path):
    raw = card(model={"name": "deepfm"}, baselines=[{"name": "lr"}, {"name": "mix", "compose": {"blocks": [{"block": "x"}]}}])
    with pytest.raises(CardError, match=r"baselines\.1\.compose\.blocks\.0\.block: unknown block 'x'"):
        load_card(write(tmp_path, raw))


def test_a_block_the_data_set_cannot_feed_is_refused_at_load(tmp_path, monkeypatch):
    """Frappe (here: its header only) has no behaviour sequence for target attention."""
    split = tmp_path / "data" / "frappe_nfm" / "split"
    split.mkdir(parents=True)
    header = "label,user,item,daytime,weekday,isweekend,homework,cost,weather,country,city\n"
    with gzip.open(split / "train.csv.gz", "wt") as out:
        out.write(header + "1,u1,i1,morning,monday,workday,unknown,free,sunny,spain,c1\n")
    monkeypatch.setenv("AGENTICRS_DATA_DIR", str(tmp_path / "data"))
    schema = declared_schema("frappe")
    assert schema is not None and len(schema.categorical) == 10 and not schema.sequences
    assert declared_schema("synthetic-tiny") is None  # generated: checked when its run is built
    attention = {"name": "din-mix", "compose": {"blocks": [{"block": "mlp"}, {"block": "target_attention"}]}}
    path = write(tmp_path, card(attention, dataset="frappe"))
    with pytest.raises(CardError, match=r"card\.yaml: model\.compose\.blocks\.1: block 'target_attention' cannot be fed "
                                        r"by datasets\.0 \(frappe\): needs a behaviour sequence"):  # fmt: skip
        load_card(path)
    assert load_card(write(tmp_path, card(dataset="frappe"))).model.name == "mix"  # cross + mlp: fed


def test_a_composition_card_reproduces_end_to_end(tmp_path):
    """Two seeds of a target-attention composition against LR on the synthetic data (histories)."""
    model = {"name": "attention-mix", "compose": {"embedding_dim": 4, "blocks": [
        {"block": "linear"}, {"block": "target_attention", "attention_hidden_units": [8]},
        {"block": "mlp", "hidden_units": [8]}]}}  # fmt: skip
    parsed = parse_card(card(model))
    store = KnowledgeStore(str(tmp_path / "k.db"))
    try:
        result = reproduce(parsed, store, tmp_path / "runs", tmp_path / "cache", ReproduceOptions())
        assert (result.trained, result.failed) == (4, 0)
        (verdict,) = result.verdicts
        assert verdict["method"] == "attention-mix" and verdict["baseline"] == "lr" and verdict["n"] == 2
        with store.transaction() as tx:
            (repro,) = tx.reproductions()
            runs = {(r.arm, r.seed): r for r in tx.reproduction_runs(repro.id)}
        mix = runs[("attention-mix", 1)]
        assert mix.status == "done" and mix.config["model"] == "composed"
        assert mix.config["model_params"]["blocks"][1]["block"] == "target_attention"
        assert mix.metrics["steps"] == 4 and Path(mix.run_path).name.startswith("toy-attention-mix-synthetic-tiny-seed1")
    finally:
        store.close()
