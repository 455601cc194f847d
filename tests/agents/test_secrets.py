"""The LLM API key is a secret: it reaches the endpoint's Authorization header and nothing else; it
is never printed with the effective settings, stored in the knowledge database, written into the
report or an artifact, or shown in an error message."""

from __future__ import annotations

import html
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.knowledge.schema import Intent
from agenticrs.agents.proposers import make_proposer
from agenticrs.agents.report import write_report
from agenticrs.agents.settings import EvolveSettings
from agenticrs.cli.main import app

KEY = "sk-test-9f8e7d6c5b4a-not-a-real-key"
runner = CliRunner()

# a fast evolution: tiny data, small models, two epochs per learner, one thread (as in test_evolve)
FAST: dict[str, Any] = {
    "dataset": "sim-tiny",
    "candidates": 1,
    "seed": 0,
    "bootstrap": 50,
    "start": {"model": "lr", "learning_rate": 0.01, "epochs": 2, "embedding_dim": 8, "hidden_units": [32]},
    "train": {"patience": 1, "monitor": "logloss", "metrics": ["auc", "logloss"],
              "num_threads": 1},
    "space": {"models": ["lr", "fm", "dnn"], "widths": [16, 32], "embedding_dims": [4, 8], "depth_max": 2},
}


def database_text(path: Path) -> str:
    """Every row of every table of a SQLite file, as text."""
    with sqlite3.connect(path) as connection:
        return "\n".join(connection.iterdump())


def files_containing(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_the_key_is_a_secret_in_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = EvolveSettings.model_validate({"dataset": "sim-tiny", "proposer": "llm",
                                              "llm": {"base_url": "http://127.0.0.1:1/v1", "model": "m", "api_key": KEY}})
    assert settings.llm.api_key is not None and settings.llm.api_key.get_secret_value() == KEY
    for shown in (repr(settings), str(settings), settings.model_dump_json(), json.dumps(settings.model_dump(mode="json"))):
        assert KEY not in shown
    assert "api_key" not in settings.model_dump(mode="json")["llm"]
    # the key still reaches the proposer (the coordinator passes the llm section as keyword arguments)
    proposer = make_proposer("llm", **dict(settings.llm))
    assert proposer.settings.api_key.get_secret_value() == KEY and KEY not in repr(proposer.settings)
    # a numeric-looking key from --set or YAML stays text
    numeric = EvolveSettings.model_validate({"dataset": "d", "llm": {"api_key": 123456}})
    assert numeric.llm.api_key.get_secret_value() == "123456"


def test_the_store_and_the_report_drop_secrets(tmp_path: Path) -> None:
    store = KnowledgeStore(f"sqlite:///{tmp_path / 'k.db'}")
    settings = {"dataset": "sim-tiny", "llm": {"model": "m", "api_key": KEY}, "db": {"password": KEY}}
    with store.transaction() as tx:
        snapshot = tx.snapshot("sim-tiny", "fp", {"train": 1})
        intent_id = tx.create_intent(snapshot_id=snapshot.id, text="t", objective="auc", proposer="llm", seed=0,
                                     ensemble_size=8, settings=settings).id
    assert KEY not in database_text(tmp_path / "k.db")
    with store.transaction() as tx:
        assert tx.get(Intent, intent_id).settings["llm"] == {"model": "m"}
        # a database written before secrets were dropped: the report still shows none
        tx.get(Intent, intent_id).settings = settings
    assert KEY in database_text(tmp_path / "k.db")
    page = write_report(store, intent_id, tmp_path / "report.html").read_text()
    store.close()
    assert KEY not in page and html.escape('"model": "m"') in page


def test_a_settings_error_does_not_show_the_key(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evolve", "-d", "sim-tiny", "--proposer", "llm", "--db", str(tmp_path / "k.db"),
                                 "--set", f"llm.api_key={KEY}", "--set", "llm.temperature=9", "--set", "llm.colour=red"])
    assert result.exit_code == 2, result.output
    assert "llm.temperature" in result.output and "llm.colour" in result.output
    assert KEY not in result.output
    assert not (tmp_path / "k.db").exists()  # bad settings: no database created


@pytest.mark.slow
def test_evolve_with_a_key_on_the_command_line_leaks_it_nowhere(tmp_path: Path, tiny_cache: Path) -> None:
    from fake_openai import FakeOpenAI

    config = tmp_path / "evolve.yaml"
    config.write_text(yaml.safe_dump({**FAST, "artifacts": str(tmp_path / "artifacts"), "cache_dir": str(tiny_cache)}))
    db, report = tmp_path / "knowledge.db", tmp_path / "report.html"
    proposal = {"model": "fm", "embedding_dim": 8, "learning_rate": 0.01, "epochs": 2, "rationale": "pairwise crosses"}
    answer = "```json\n" + json.dumps(proposal) + "\n```"
    with FakeOpenAI(responder=lambda _request: answer, api_key=KEY) as server:  # a wrong or missing key: 401
        result = runner.invoke(
            app,
            ["evolve", "--config", str(config), "--proposer", "llm", "--db", str(db), "--report", str(report), "-q",
             "--set", f"llm.base_url={server.base_url}", "--set", "llm.model=fake-model", "--set", f"llm.api_key={KEY}"],
            env={"COLUMNS": "200"},
        )
    assert result.exit_code == 0, result.output
    assert len(server.requests) == 1  # the key worked: the endpoint answered the round's request
    store = KnowledgeStore(str(db), readonly=True)
    with store.transaction() as tx:
        intent = tx.latest_intent()
        rows = tx.candidates(intent.id)
    store.close()
    assert rows[-1].proposer == "llm" and rows[-1].rationale == "pairwise crosses"
    assert intent.settings["llm"]["model"] == "fake-model" and "api_key" not in intent.settings["llm"]
    assert "llm:" in result.output and "fake-model" in result.output  # the effective settings were printed
    assert KEY not in result.output
    assert KEY not in database_text(db)
    assert report.exists() and KEY not in report.read_text()
    assert files_containing(tmp_path, KEY) == []  # nor any artifact, log or config written on the way
