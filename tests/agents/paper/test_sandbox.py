"""Generated model code in the sandbox: the contract before training, the malicious module
stopped (writes outside its folder, a socket, a shell) and recorded, the valid one trained and
compared like any card."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from generated_modules import INVALID, VALID, open_socket, spawn_shell, write_outside

from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.paper.card import parse_card
from agenticrs.agents.paper.draft import vet_module
from agenticrs.agents.paper.reproduce import reproduce
from agenticrs.agents.paper.sandbox import SandboxLimits
from agenticrs.models.base import MODELS

LIMITS = SandboxLimits(cpu_s=120, wall_s=180)


def module(tmp_path: Path, source: str, name: str = "tinynet.py") -> Path:
    path = tmp_path / "generated" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return path


def test_a_valid_generated_module_passes_the_contract_and_is_never_imported_here(tmp_path):
    result = vet_module(module(tmp_path, VALID), "tinynet", tmp_path / "scratch", tmp_path / "cache", LIMITS)
    assert result.status == "passed", result.summary() + result.stderr_tail
    assert result.contract == {"output": [], "gradients": [], "save_load": [], "batch_independence": []}
    assert result.violations == []
    assert "tinynet" not in MODELS  # registered in the child only


def test_an_invalid_module_fails_the_contract_with_the_problems_named(tmp_path):
    result = vet_module(module(tmp_path, INVALID), "tinynet", tmp_path / "scratch", tmp_path / "cache", LIMITS)
    assert result.status == "failed"
    assert result.contract["gradients"] == ["no gradient reaches unused.weight", "no gradient reaches unused.bias"]
    assert result.contract["batch_independence"] == ["an eval-mode prediction depends on the other rows of its batch"]
    assert result.contract["output"] == [] and result.contract["save_load"] == []
    assert "failed the contract: gradients: no gradient reaches unused.weight" in result.summary()


def test_a_module_that_names_another_model_fails(tmp_path):
    result = vet_module(module(tmp_path, VALID), "othernet", tmp_path / "scratch", tmp_path / "cache", LIMITS)
    assert result.status == "failed" and "registers no CTR model named 'othernet'" in result.error


@pytest.fixture
def listener():
    """A loopback server that records whether anything connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(5)
    connected = []

    def accept():
        try:
            conn, _ = server.accept()
            connected.append(conn.recv(100))
            conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], connected
    server.close()
    thread.join(timeout=6)


def test_a_module_writing_outside_its_folder_is_blocked(tmp_path):
    target = tmp_path / "outside" / "pwned.txt"
    target.parent.mkdir()
    result = vet_module(module(tmp_path, write_outside(target)), "tinynet", tmp_path / "scratch", tmp_path / "cache", LIMITS)
    assert result.status == "blocked" and not target.exists()
    assert result.violations[0]["event"] == "open" and str(target) in result.violations[0]["detail"]


def test_a_module_opening_a_socket_is_blocked(tmp_path, listener):
    port, connected = listener
    result = vet_module(module(tmp_path, open_socket(port)), "tinynet", tmp_path / "scratch", tmp_path / "cache", LIMITS)
    assert result.status == "blocked"
    assert result.violations[0]["event"].startswith("socket.")
    assert connected == []


def test_a_module_spawning_a_shell_is_blocked(tmp_path):
    target = tmp_path / "shell-was-here"
    result = vet_module(module(tmp_path, spawn_shell(target)), "tinynet", tmp_path / "scratch", tmp_path / "cache", LIMITS)
    assert result.status == "blocked" and not target.exists()
    assert [v["event"] for v in result.violations] == ["os.system", "subprocess.Popen"]


def test_a_module_that_exceeds_the_wall_clock_is_killed(tmp_path):
    source = "import time\ntime.sleep(60)\n" + VALID
    result = vet_module(module(tmp_path, source), "tinynet", tmp_path / "scratch", tmp_path / "cache",
                        SandboxLimits(cpu_s=60, wall_s=15))  # fmt: skip
    assert result.status == "timeout"


def test_a_generated_model_that_passes_trains_in_the_sandbox_and_is_compared_like_any_card(tmp_path):
    code = module(tmp_path, VALID)
    card = parse_card({
        "name": "tinynet", "claim": {"statement": "a generated model against LR", "baseline": "lr"},
        "model": {"name": "tinynet", "code": code.name, "params": {"hidden": 8}}, "baselines": [{"name": "lr"}],
        "datasets": [{"dataset": "synthetic-tiny", "protocol": {"step_budget": 4, "eval_every_steps": 2,
                                                                 "train": {"batch_size": 512, "num_threads": 1}}}],
        "seeds": [1, 2],
    }, "card", code.parent)  # fmt: skip
    store = KnowledgeStore(str(tmp_path / "k.db"))
    try:
        result = reproduce(card, store, tmp_path / "runs", tmp_path / "cache")
        with store.transaction() as tx:
            runs = {(r.arm, r.seed): r for r in tx.reproduction_runs(result.reproduction_id)}
    finally:
        store.close()
    assert result.failed == 0 and result.trained == 4
    generated = runs[("tinynet", 1)]
    assert generated.status == "done" and generated.metrics["stopped_by"] == "step budget"
    assert "/sandbox/" in generated.run_path and Path(generated.run_path, "summary.json").exists()
    assert len(generated.config["code_sha256"]) == 64
    (verdict,) = result.verdicts
    assert verdict["n"] == 2 and verdict["verdict"] in ("holds", "not shown", "contradicted")
    assert "tinynet" not in MODELS


def test_ctypes_removing_files_outside_and_signals_are_refused_too(tmp_path):
    from generated_modules import malicious

    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    source = malicious("import ctypes; ctypes.CDLL(None)", f"os.remove({str(keep)!r})", "os.kill(os.getppid(), 0)")
    result = vet_module(module(tmp_path, source), "tinynet", tmp_path / "scratch", tmp_path / "cache", LIMITS)
    assert result.status == "blocked" and keep.read_text() == "precious"
    assert [v["event"] for v in result.violations] == ["ctypes.dlopen", "os.remove", "os.kill"]
