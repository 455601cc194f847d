"""How the CLI shows faults and outside text: one place (`friendly_errors`) turns every error into
one line per problem, an unexpected one into a line plus the file that holds its traceback, and no
text from a data file, a path, a database row or an LLM answer is ever parsed as Rich markup."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from agenticrs.agents.candidate import Candidate
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.cli.common import friendly_errors
from agenticrs.cli.evolve import LiveView
from agenticrs.cli.main import app
from agenticrs.progress import RichReporter

runner = CliRunner()
HOSTILE = "[/] [red]:x:[/red] [bold]"  # unbalanced markup, a style tag around an emoji code


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


# -- one place turns errors into messages -------------------------------------------------------


def test_every_command_goes_through_friendly_errors() -> None:
    for command in app.registered_commands:
        assert getattr(command.callback, "friendly_errors", False), command.callback.__name__


def test_a_validation_error_is_one_line_per_field(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "-d", "synthetic-tiny", "-m", "fm", "--runs-dir", str(tmp_path),
                                 "--set", "train.epochs=abc", "--set", "train.patience=-5"])
    assert result.exit_code == 2
    lines = error_lines(result.output)
    assert len(lines) == 2 and all(line.startswith("error: RunConfig: train.") for line in lines), lines
    assert "train.epochs" in lines[0] and "'abc'" in lines[0] and "train.patience" in lines[1]
    assert "errors.pydantic.dev" not in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())  # nothing was written


def _boom_app() -> typer.Typer:
    boom_app = typer.Typer()

    @boom_app.command()
    @friendly_errors
    def boom(kind: str = "runtime") -> None:
        if kind == "runtime":
            raise RuntimeError(f"the loop lost its incumbent {HOSTILE}")
        if kind == "key":
            raise KeyError("no candidates row with id 7")
        if kind == "missing":
            raise FileNotFoundError(2, "No such file or directory", "/nowhere/[/]config.yaml")
        raise typer.Exit(5)  # the command's own exit passes through

    return boom_app


def test_an_unexpected_exception_is_one_line_and_a_traceback_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTICRS_CRASH_DIR", str(tmp_path / "crashes"))
    result = runner.invoke(_boom_app(), [])
    assert result.exit_code == 1 and not isinstance(result.exception, RuntimeError)
    lines = error_lines(result.output)
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: unexpected RuntimeError: the loop lost its incumbent [/] [red]:x:[/red]")
    files = list((tmp_path / "crashes").iterdir())
    assert len(files) == 1 and str(files[0]) in lines[0]
    text = files[0].read_text()
    assert "Traceback (most recent call last)" in text and 'raise RuntimeError(f"the loop lost' in text


def test_known_errors_exit_2_and_click_exits_pass_through() -> None:
    result = runner.invoke(_boom_app(), ["--kind", "key"])
    assert result.exit_code == 2 and error_lines(result.output) == ["error: no candidates row with id 7"]
    result = runner.invoke(_boom_app(), ["--kind", "missing"])
    assert result.exit_code == 2
    assert error_lines(result.output) == ["error: No such file or directory: /nowhere/[/]config.yaml"]
    assert runner.invoke(_boom_app(), ["--kind", "exit"]).exit_code == 5


def test_predict_refuses_a_folder_and_its_own_input(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    result = runner.invoke(app, ["predict", "--run", str(tmp_path / "run"), "-i", "x.csv", "-o", str(folder), "-q"])
    assert result.exit_code == 2 and "is a folder" in result.output
    assert len(error_lines(result.output)) == 1
    data = tmp_path / "x.csv"
    data.write_text("user,item\na,b\n")
    result = runner.invoke(app, ["predict", "--run", str(tmp_path / "run"), "-i", str(data), "-o", str(data), "-q"])
    assert result.exit_code == 2 and "is also an input file" in result.output
    assert data.read_text() == "user,item\na,b\n"


# -- outside text is never markup -------------------------------------------------------------


def test_a_data_value_and_a_path_are_printed_as_they_are(tmp_path: Path) -> None:
    folder = tmp_path / "[/]data"  # a folder "[" holding "]data": the path reads .../[/]data
    folder.mkdir(parents=True)
    (folder / "bad.csv").write_text("label,user,item\n1,a,x\n0,b,y\n[red]:x:[/red],c,z\n")
    spec = folder / "bad.yaml"
    spec.write_text(
        "name: bad\nfiles: {train: bad.csv}\nfields:\n"
        "  - {name: label, kind: label}\n  - {name: user, kind: categorical}\n  - {name: item, kind: categorical}\n"
    )
    result = runner.invoke(app, ["train", "-d", str(spec), "-m", "fm", "-q", "--runs-dir", str(tmp_path / "r"),
                                 "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2, result.output
    assert "[/]data" in result.output and "'[red]:x:[/red]'" in result.output and "❌" not in result.output
    assert "MarkupError" not in result.output and "Traceback" not in result.output


def test_a_run_folder_with_markup_in_its_name(tiny_cache: Path, tiny_synthetic: object, tmp_path: Path) -> None:
    runs = tmp_path / "[/]runs [red]:x:"
    result = runner.invoke(app, ["train", "-d", "synthetic-tiny", "-m", "lr", "--smoke", "-q", "--runs-dir", str(runs),
                                 "--cache-dir", str(tiny_cache), "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    squeeze = lambda text: "".join(text.split())  # noqa: E731  (Rich wraps long lines at any space)
    assert squeeze("run directory: " + str(runs)) in squeeze(result.output)


def _hostile_store(tmp_path: Path) -> tuple[str, int]:
    url = f"sqlite:///{tmp_path / 'knowledge.db'}"
    store = KnowledgeStore(url)
    candidate = Candidate(model="lr", learning_rate=0.003)
    with store.transaction() as tx:
        snapshot = tx.snapshot("sim-tiny", "fp", {"train": 100})
        intent = tx.create_intent(snapshot_id=snapshot.id, text=f"improve auc {HOSTILE}", objective="auc",
                                  proposer="llm", seed=0, ensemble_size=8, settings={"dataset": "sim-tiny"})
        row, _ = tx.add_candidate(intent.id, candidate.config_hash(), round=0,
                                  config=candidate.canonical().model_dump(mode="json"), proposer=f"llm {HOSTILE}",
                                  rationale=f"{HOSTILE} because the LLM said so", status="promoted")
        tx.record_decision(row.id, "seed", True, f"starting incumbent {HOSTILE}")
        tx.add_lesson("validation", f"lesson {HOSTILE}", intent.id, row.id)
        tx.promote(intent.id, row.id, 0, {})
        candidate_id = row.id
    store.close()
    return url, candidate_id


def test_history_and_show_print_llm_text_as_it_is(tmp_path: Path) -> None:
    url, candidate_id = _hostile_store(tmp_path)
    result = runner.invoke(app, ["show", str(candidate_id), "--db", url], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert f"rationale: {HOSTILE} because the LLM said so" in result.output
    assert f"starting incumbent {HOSTILE}" in result.output and f"lesson {HOSTILE}" in result.output
    assert "❌" not in result.output
    result = runner.invoke(app, ["history", "--db", url], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "[/]" in result.output and ":x:" in result.output and "❌" not in result.output


def test_the_live_view_and_the_progress_bars_show_text_as_it_is() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200)  # markup and emoji on: the text itself must be safe
    view = LiveView()
    view("round", {"round": 1, "id": 2, "candidate": f"dnn {HOSTILE}", "rationale": f"{HOSTILE} wider"})
    view("ensnas", {"accepted": False, "reason": f"rejected {HOSTILE}"})
    console.print(view.render())
    reporter = RichReporter(console)
    with reporter.task(f"read {HOSTILE}.csv", total=2) as task:
        task.advance(1, file=HOSTILE)
    reporter.log(f"epoch 1 {HOSTILE}")
    text = buffer.getvalue()
    assert f"{HOSTILE} wider" in text and f"rejected {HOSTILE}" in text and f"dnn {HOSTILE}" in text
    assert f"read {HOSTILE}.csv" in text and f"file={HOSTILE}" in text and f"epoch 1 {HOSTILE}" in text
    assert "❌" not in text
