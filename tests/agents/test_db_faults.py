"""Knowledge-database faults are one line that says what is wrong (exit code 2 from the CLI), never a
traceback: an unsupported scheme, a mistyped URL (which must not create a database), an unreachable
PostgreSQL server, a missing file, a file that is not a knowledge database, a read-only folder.
Read-only commands (history, show, report) read a database they may not write."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agenticrs.agents.candidate import Candidate
from agenticrs.agents.knowledge import KnowledgeStore, KnowledgeStoreError
from agenticrs.agents.knowledge.store import normalise_url
from agenticrs.cli.main import app

runner = CliRunner()


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    return lines[0]


def build_store(url: str) -> int:
    """A knowledge database with one intent and its seed candidate; the candidate's id."""
    store = KnowledgeStore(url)
    candidate = Candidate(model="lr", learning_rate=0.003)
    with store.transaction() as tx:
        snapshot = tx.snapshot("sim-tiny", "fp", {"train": 100})
        intent = tx.create_intent(snapshot_id=snapshot.id, text="improve auc on sim-tiny", objective="auc",
                                  proposer="builtin", seed=0, ensemble_size=8, settings={"dataset": "sim-tiny"})
        row, _ = tx.add_candidate(intent.id, candidate.config_hash(), round=0,
                                  config=candidate.canonical().model_dump(mode="json"), proposer="seed",
                                  rationale="the starting incumbent", status="promoted")
        tx.record_decision(row.id, "seed", True, "starting incumbent")
        tx.promote(intent.id, row.id, 0, {})
        candidate_id = row.id
    store.close()
    return candidate_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- URLs -----------------------------------------------------------------------------------------


def test_an_unsupported_scheme_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeStoreError, match="unsupported database URL scheme 'mysql'"):
        KnowledgeStore("mysql://root:hunter2@db.example/knowledge")
    for command in (["history"], ["evolve", "-d", "sim-tiny"]):
        result = runner.invoke(app, [*command, "--db", "mysql://root:hunter2@db.example/knowledge"])
        assert result.exit_code == 2
        line = one_error_line(result.output)
        assert "mysql" in line and "postgresql://" in line and "hunter2" not in line


def test_a_mistyped_url_creates_no_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("postgresql:/knowledge", "sqlite:runs/k.db", "postgres:knowledge"):
        with pytest.raises(KnowledgeStoreError, match="not a database URL"):
            normalise_url(url)
        result = runner.invoke(app, ["evolve", "-d", "sim-tiny", "--db", url])
        assert result.exit_code == 2 and "needs '://'" in one_error_line(result.output)
    assert list(tmp_path.iterdir()) == []  # no folder "postgresql:", no empty database
    # a Windows drive letter and an explicit relative path are still paths
    assert normalise_url("./postgresql:/k.db") == "sqlite:///postgresql:/k.db"
    assert normalise_url("C:/runs/k.db") == "sqlite:///C:/runs/k.db"


def test_an_unreachable_postgresql_server_is_one_line() -> None:
    url = f"postgresql://agent:hunter2@127.0.0.1:{free_port()}/knowledge"
    started = time.monotonic()
    with pytest.raises(KnowledgeStoreError, match="cannot open the knowledge database postgresql://agent:\\*\\*\\*@"):
        KnowledgeStore(url)
    assert time.monotonic() - started < 30
    for command in (["history"], ["evolve", "-d", "sim-tiny"]):
        result = runner.invoke(app, [*command, "--db", url])
        assert result.exit_code == 2
        line = one_error_line(result.output)
        assert "Connection refused" in line or "connection failed" in line, line
        assert "hunter2" not in line


# -- files ----------------------------------------------------------------------------------------


def test_read_commands_never_create_a_database(tmp_path: Path) -> None:
    path = tmp_path / "typo" / "knowledge.db"
    for command in (["history"], ["show", "1"], ["report", "--out", str(tmp_path / "r.html")]):
        result = runner.invoke(app, [*command, "--db", str(path)])
        assert result.exit_code == 2 and f"no knowledge database at {path}" in one_error_line(result.output)
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_knowledge_database(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    result = runner.invoke(app, ["history", "--db", str(empty)])
    assert result.exit_code == 2 and "holds no knowledge tables" in one_error_line(result.output)
    garbage = tmp_path / "data.csv"
    garbage.write_text("label,user\n" * 200)
    for command in (["history"], ["evolve", "-d", "sim-tiny"]):
        result = runner.invoke(app, [*command, "--db", str(garbage)])
        assert result.exit_code == 2 and "not a database" in one_error_line(result.output)
    assert garbage.read_text() == "label,user\n" * 200
    folder = tmp_path / "folder.db"
    folder.mkdir()
    result = runner.invoke(app, ["evolve", "-d", "sim-tiny", "--db", str(folder)])
    assert result.exit_code == 2 and "is a folder" in one_error_line(result.output)


def test_reading_leaves_the_journal_mode_alone(tmp_path: Path) -> None:
    """A reader opens without `PRAGMA journal_mode=WAL` (a write) and without a write lock."""
    path = tmp_path / "knowledge.db"
    candidate_id = build_store(f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)
    result = runner.invoke(app, ["history", "--db", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["show", str(candidate_id), "--db", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "the starting incumbent" in result.output
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    # while a writer holds the write lock, a reader still reads (no BEGIN IMMEDIATE)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        store = KnowledgeStore(str(path), readonly=True)
        with store.transaction() as tx:
            assert [row.id for row in tx.candidates()] == [candidate_id]
        store.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_reader_needs_an_existing_knowledge_database(store_url: str) -> None:
    """On SQLite and PostgreSQL alike: a reader creates nothing and migrates nothing."""
    with pytest.raises(KnowledgeStoreError, match="no knowledge database at|holds no knowledge tables"):
        KnowledgeStore(store_url, readonly=True)
    candidate_id = build_store(store_url)
    store = KnowledgeStore(store_url, readonly=True)
    with store.transaction() as tx:
        assert [row.id for row in tx.candidates()] == [candidate_id]
    store.close()
    result = runner.invoke(app, ["show", str(candidate_id), "--db", store_url], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "the starting incumbent" in result.output


# -- a read-only folder (as a user the folder is read-only for) -------------------------------------

READ_ONLY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from typer.testing import CliRunner
    from agenticrs.cli.main import app

    folder, out, candidate = sys.argv[1:4]
    db = folder + "/knowledge.db"
    runs = {
        "history": ["history", "--db", db],
        "show": ["show", candidate, "--db", db],
        "report": ["report", "--db", db, "--out", out + "/report.html"],
        "evolve": ["evolve", "-d", "sim-tiny", "--db", db, "--set", "artifacts=" + out + "/runs"],
        "evolve_new": ["evolve", "-d", "sim-tiny", "--db", folder + "/sub/knowledge.db"],
    }
    results = {}
    for name, args in runs.items():
        result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
        results[name] = {"code": result.exit_code, "output": result.output}
    print(json.dumps(results))
    """
)


def unprivileged() -> list[str]:
    """The command prefix that runs a program as a user whom file modes bind: none when the tests
    do not run as root, else `setpriv` to `nobody` (root may write anywhere)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        nobody = None
    if setpriv is None or nobody is None:
        pytest.skip("running as root, without `setpriv` or a `nobody` user to run the CLI as")
    return [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]


@pytest.fixture
def read_only_folder() -> Iterator[tuple[Path, Path, int, list[str]]]:
    """A folder holding a WAL-mode knowledge database, read-only for the user the CLI runs as,
    and a writable folder; the candidate id and the command prefix that runs as that user."""
    base = Path(tempfile.mkdtemp(prefix="agenticrs-ro-"))
    folder, out = base / "db", base / "out"
    folder.mkdir()
    out.mkdir()
    os.chmod(base, 0o755)
    os.chmod(out, 0o777)
    try:
        candidate_id = build_store(f"sqlite:///{folder / 'knowledge.db'}")
        assert not (folder / "knowledge.db-wal").exists()  # closed cleanly: SQLite would need to create it
        os.chmod(folder / "knowledge.db", 0o644)
        os.chmod(folder, 0o555)
        prefix = unprivileged()
        probe = subprocess.run([*prefix, sys.executable, "-c", f"open({str(folder / 'probe')!r}, 'w')"],
                               capture_output=True, text=True, cwd=out)
        if probe.returncode == 0:
            pytest.skip("the folder is writable for this user whatever its mode")
        if "PermissionError" not in probe.stderr:
            pytest.skip(f"cannot run Python as an unprivileged user here: {probe.stderr.strip()[-200:]}")
        yield folder, out, candidate_id, prefix
    finally:
        os.chmod(folder, stat.S_IRWXU)
        shutil.rmtree(base, ignore_errors=True)


def test_read_commands_work_and_writers_fail_cleanly_in_a_read_only_folder(
    read_only_folder: tuple[Path, Path, int, list[str]],
) -> None:
    folder, out, candidate, prefix = read_only_folder
    env = {**os.environ, "HOME": str(out), "AGENTICRS_CRASH_DIR": str(out)}
    process = subprocess.run([*prefix, sys.executable, "-c", READ_ONLY_SCRIPT, str(folder), str(out), str(candidate)],
                             capture_output=True, text=True, env=env, cwd=out, timeout=600)
    assert process.returncode == 0, process.stderr
    results = json.loads(process.stdout.strip().splitlines()[-1])
    for name in ("history", "show", "report"):
        assert results[name]["code"] == 0, (name, results[name]["output"])
    assert "improve auc on sim-tiny" in results["history"]["output"]
    assert "the starting incumbent" in results["show"]["output"]
    assert (out / "report.html").exists()
    line = one_error_line(results["evolve"]["output"])
    assert results["evolve"]["code"] == 2 and f"the folder {folder} is read-only" in line, line
    line = one_error_line(results["evolve_new"]["output"])
    assert results["evolve_new"]["code"] == 2 and f"cannot create the folder {folder / 'sub'}" in line, line
    assert sorted(p.name for p in folder.iterdir()) == ["knowledge.db"]  # nothing written next to it
