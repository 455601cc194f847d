"""`agenticrs reproduce` and `agenticrs cards` from the command line: the table, resume, errors."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from agenticrs.cli.main import app

runner = CliRunner()

CARD = {
    "name": "toy", "claim": {"statement": "DeepFM beats LR", "baseline": "lr"},
    "model": {"name": "deepfm", "params": {"hidden_units": [16]}}, "baselines": [{"name": "lr"}],
    "datasets": [{"dataset": "synthetic-tiny", "expected": "holds",
                  "protocol": {"step_budget": 3, "eval_every_steps": 3, "train": {"batch_size": 512, "num_threads": 1}}}],
    "seeds": [1, 2],
}  # fmt: skip


def test_reproduce_prints_the_table_and_a_second_run_trains_nothing(tmp_path):
    card = tmp_path / "toy.yaml"
    card.write_text(yaml.safe_dump(CARD))
    args = ["reproduce", str(card), "--db", str(tmp_path / "k.db"), "--runs-dir", str(tmp_path / "runs"),
            "--cache-dir", str(tmp_path / "cache"), "--json", str(tmp_path / "out.json")]  # fmt: skip
    first = runner.invoke(app, args, terminal_width=250)
    assert first.exit_code == 0, first.output
    assert "Reproductions" in first.output and "synthetic-tiny" in first.output
    assert "deepfm seed 2: auc" in first.output and "(new)" in first.output
    second = runner.invoke(app, args, terminal_width=250)
    assert second.exit_code == 0 and "(resumed)" in second.output and "seed 1: auc" not in second.output
    (record,) = yaml.safe_load((tmp_path / "out.json").read_text())
    assert record["card"] == "toy" and record["verdicts"][0]["n"] == 2


def test_reproduce_refuses_a_bad_card_and_a_card_with_all(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**CARD, "model": {"name": "deepfmm"}}))
    result = runner.invoke(app, ["reproduce", str(bad), "--db", str(tmp_path / "k.db")])
    assert result.exit_code == 2 and "model.name: unknown model 'deepfmm'" in result.output
    both = runner.invoke(app, ["reproduce", "mgdin", "--all", "--db", str(tmp_path / "k.db")])
    assert both.exit_code == 2 and "not both" in both.output


def test_adopt_runs_names_a_folder_that_is_not_there_and_notes_a_card_it_does_not_apply_to(tmp_path):
    card = tmp_path / "toy.yaml"
    card.write_text(yaml.safe_dump(CARD))
    common = ["reproduce", str(card), "--db", str(tmp_path / "k.db"), "--runs-dir", str(tmp_path / "runs"),
              "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    missing = runner.invoke(app, [*common, "--adopt-runs", str(tmp_path / "nowhere")], terminal_width=250)
    assert missing.exit_code != 0 and "nowhere is not a folder of finished runs" in " ".join(missing.output.split())
    (tmp_path / "bench-runs").mkdir()
    ctr = runner.invoke(app, [*common, "--adopt-runs", str(tmp_path / "bench-runs")], terminal_width=250)
    assert ctr.exit_code == 0, ctr.output
    assert "only sequential runs are adopted" in ctr.output and "deepfm seed 2: auc" in ctr.output  # trained


def test_cards_lists_the_shipped_cards():
    result = runner.invoke(app, ["cards"], terminal_width=250)
    assert result.exit_code == 0
    for name in ("mgdin", "cdnet", "ssr", "sort"):
        assert name in result.output


def test_draft_from_an_abstract_through_a_fake_endpoint_then_reproduce(tmp_path, monkeypatch):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))
    from fake_openai import FakeOpenAI

    abstract = tmp_path / "abstract.txt"
    abstract.write_text("We show that DeepFM beats logistic regression.")
    answer = "```json\n" + json.dumps(CARD) + "\n```"
    monkeypatch.setenv("AGENTICRS_LLM_API_KEY", "k")
    with FakeOpenAI(responder=lambda request: answer, api_key="k") as server:
        result = runner.invoke(app, ["draft", str(abstract), "--no-code", "--llm-url", server.base_url, "--llm-model", "m",
                                     "--out", str(tmp_path / "drafts"), "--db", str(tmp_path / "k.db"), "--reproduce",
                                     "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")],
                               terminal_width=250)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "draft: ready (card valid)" in result.output and "Reproductions" in result.output
    assert (tmp_path / "drafts" / "toy.yaml").exists()
    with FakeOpenAI(responder=lambda request: "no card here", api_key="k") as server:
        refused = runner.invoke(app, ["draft", str(abstract), "--llm-url", server.base_url, "--llm-model", "m",
                                      "--out", str(tmp_path / "d2"), "--db", str(tmp_path / "k.db")])  # fmt: skip
    assert refused.exit_code == 2 and "lesson: LLM draft (m): the answer holds no JSON method card" in refused.output


def test_reproduce_checks_its_executor_flags_before_anything_trains(tmp_path):
    card = tmp_path / "toy.yaml"
    card.write_text(yaml.safe_dump(CARD))
    base = ["reproduce", str(card), "--db", str(tmp_path / "k.db"), "--runs-dir", str(tmp_path / "runs")]
    address = runner.invoke(app, [*base, "--ray-address", "127.0.0.1:6379"])
    assert address.exit_code == 2 and "--ray-address needs --executor ray" in address.output
    unknown = runner.invoke(app, [*base, "--executor", "dask"])
    assert unknown.exit_code == 2 and "unknown executor 'dask'" in unknown.output
    assert not (tmp_path / "runs").exists()
