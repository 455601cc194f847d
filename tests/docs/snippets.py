"""Run the code blocks of the README and `docs/` as a reader would, with small settings.

Each Markdown file's fenced blocks run in order in one working directory (a later block may use
the run an earlier one trained, as a reader's would). Every fence names its language:

- `bash`: every command runs (continuation lines joined, comments left to bash) after the
  small-settings rewrite below, and must exit 0 (or print the one-line message listed in
  `SITUATIONAL` for commands whose outcome depends on the reader's history, e.g. `--resume`);
- `python`: the block runs as a script (the same rewrite of data sizes and `…` placeholders);
- `yaml`: parsed, and validated as the object it shows (a dataset spec or a run config);
- `text`: output, formulas and trees, not run.

The rewrite keeps every command's shape (same script, flags and data) and shrinks only how much
work it does: one seed, one model, one candidate, a few optimiser steps, the `tiny` simulator
world. A path ending in `…` (a run directory's time stamp) becomes the newest match. Commands on
public data sets that are absent here are skipped with the reason.
"""

from __future__ import annotations

import atexit
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from forkserver import ForkServer, direct_argv  # this folder's helper

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"bash", "python", "yaml", "text"}
BIN = Path(sys.executable).parent
PUBLIC = ("frappe", "movielens_100k", "movielens", "amazon_beauty", "amazon_sports", "yelp")

# (pattern, replacement): applied in order to bash commands and Python blocks
SMALL: list[tuple[str, str]] = [
    (r"\bsim-(small|medium|large|delays|steady)\b", "sim-tiny"),
    (r"--preset (small|medium|large)\b", "--preset tiny"),
    (r"--presets [\w,]+", "--presets tiny"),
    (r"sim_preset\(\"(small|medium|large)\"", 'sim_preset("tiny"'),
    (r"--seeds \d+", "--seeds 1"),
    (r"--models ([\w-]+),[\w,-]+", r"--models \1"),
    (r"--datasets ([\w-]+),[\w,-]+", r"--datasets \1"),
    (r"--bases ([\w-]+),[\w,-]+", r"--bases \1"),
    (r"(-n|--candidates) \d+", r"\1 1"),
    (r"--budget \S+", "-n 1"),
    (r"(-M|--ensemble-size) \d+", r"\1 2"),
    (r"--epochs \d+", "--epochs 1"),
    (r"train\.epochs=\d+", "train.epochs=1"),
    (r"--max-steps \d+", "--max-steps 2"),
    (r"--lrs \S+", "--lrs 1e-3"),
    (r"--rows \d+", "--rows 3000"),
    (r"train\.time_budget_s=\d+", "train.time_budget_s=30"),
    (r"\bshow 7\b", "show 2"),  # the first evolution's first proposed candidate
    (r"--candidate 7\b", "--intent 1 --candidate 2"),
    (r"days=\d+", "days=1"),
]

# extra flags per entry point, appended to shrink the work (bash commands only)
APPEND: list[tuple[str, str]] = [
    (r"agenticrs train (?!.*--resume)(?!.*--task (sequential|multi_objective_retrieval))",
     " --set train.max_steps=6 --set train.eval_every_steps=3"),
    (r"agenticrs train (?!.*--resume).*--task multi_objective_retrieval",
     " --set train.stage_steps=[2,2,2] --set train.recovery_steps=1 --set train.eval_every_steps=2"),
    (r"agenticrs train (?!.*--resume).*--task sequential",
     " --set train.epochs=1 --set train.max_steps_per_epoch=3 --set train.eval_every_epochs=1 --set train.valid_users=256"),
    (r"agenticrs train (?!.*--resume).*-m tiger",
     " --set model_params.beam_size=4 --set model_params.num_encoder_layers=1 --set model_params.num_decoder_layers=1"
     " --set model_params.num_heads=2 --set model_params.ffn_dim=128"),
    (r"agenticrs train (?!.*--resume).*-m grc\b",
     " --set model_params.beam_size=4 --set model_params.num_encoder_layers=1 --set model_params.num_decoder_layers=1"
     " --set model_params.num_heads=2 --set model_params.ffn_dim=128 --set model_params.group_size=2"),
    (r"agenticrs train (?!.*--resume).*tokenizer\.method=rq_vae", " --set tokenizer.params.epochs=2"),
    (r"agenticrs train (?!.*--resume).*-m sort\b", " --set train.batch_size=256"),  # its default batch: 2 s a step
    (r"agenticrs evolve (?!.*--resume)", " --set start.epochs=1"),
    (r"agenticrs demo", " -d sim-tiny --budget 5s"),
    (r"bench/ctr_benchmark\.py", " --step-budget 4 --ceiling-steps 1"),
    (r"bench/ssr_scaling\.py", " --step-budget 4 --sizes small"),
    (r"bench/tune_ctr\.py", " --max-trials 1 --set train.max_steps=2"),
    (r"bench/speed_ratio\.py", " --steps 2 --rounds 1 --no-defaults"),
    (r"bench/autoperf_benchmark\.py", " --train-steps 2 --rounds 1 --repeats 3 --rows 200"),
    (r"bench/agents_benchmark\.py --part planted", " --preset tiny-planted --seeds 0 --rounds 1"),
    (r"bench/agents_benchmark\.py --part compare", " --dataset sim-tiny --seeds 0 --budget-s 1"),
    (r"bench/serve_benchmark\.py", " --train-steps 4 --seconds 0.5 --rates 20 --max-requests 10 --sequential 5 --backends onnx --repeats 1 --payloads 4"),
    (r"bench/ensnas_agreement\.py", " --candidates 1 --ensemble-size 2 --bootstrap 50"),
    (r"bench/cvr_prepromo\.py", " --smoke"),
    (r"agenticrs reproduce", " --step-budget 4 --seeds 1"),
    (r"agenticrs stream (?!.*--resume)", " --pretrain-epochs 1"),
    (r"bench/cvr_benchmark\.py --part", " --pretrain-epochs 1 --max-windows 4 --methods vanilla,es_dfm"),
    (r"bench/reproduce_benchmark\.py", " --step-budget 4 --seeds 1"),
    (r"bench/cvr_prepromo_oracle\.py", " --smoke"),
    (r"bench/gsvr_benchmark\.py", " --steps 4 --eval-every 2"),
    (r"bench/genctr_benchmark\.py", " --eval-every 2 --batch-size 256 --arms deepfm,dgenctr"),
    (r"bench/gr_benchmark\.py.*--models sasrec\b",
     " --set sasrec.train.epochs=1 --set sasrec.train.max_steps_per_epoch=3 --set sasrec.train.eval_every_epochs=1"
     " --set sasrec.train.valid_users=256"),
    (r"bench/gr_benchmark\.py.*--models tiger\b",
     " --set tiger.train.epochs=1 --set tiger.train.max_steps_per_epoch=3 --set tiger.train.eval_every_epochs=1"
     " --set tiger.train.valid_users=256"),
]

# commands whose outcome depends on what the reader did before: the one-line message that says so
SITUATIONAL: dict[str, str] = {
    "evolve --resume": "no unfinished intent",
    "train --resume": "has no checkpoint.pt to resume from",
    "train --task sequential --resume": "is not a sequential run that can resume",
}

# commands that are not run, with the reason (kept to the one that cannot be)
NOT_RUN: dict[str, str] = {
    "make test": "the test suite itself (this test is part of it)",
}


@dataclass
class Block:
    file: Path
    line: int
    language: str
    code: str


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, in order."""
    out, current, start, language = [], None, 0, ""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith("```"):
            if current is None:
                current, start, language = [], number, line[3:].strip()
            else:
                out.append(Block(path, start, language, "\n".join(current) + "\n"))
                current = None
        elif current is not None:
            current.append(line)
    return out


def commands(code: str) -> list[str]:
    """Logical commands of a bash block: continuation lines joined; lines that are only a comment dropped."""
    out: list[str] = []
    pending = ""
    for line in code.splitlines():
        if not pending and (not line.strip() or line.strip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((pending + line).strip())
        pending = ""
    return out


def small(text: str, bash: bool) -> str:
    for pattern, replacement in SMALL:
        text = re.sub(pattern, replacement, text)
    if bash:
        command = re.sub(r"^make demo\b", "agenticrs demo", text.split(" #", 1)[0])  # flags go before a comment
        extra = "".join(flags for pattern, flags in APPEND if re.search(pattern, command))
        text = command.rstrip() + extra
        text = re.sub(r"(^|&& )\.venv/bin/agenticrs\b", rf"\g<1>{BIN}/agenticrs", text)
        text = re.sub(r"(^|&& )agenticrs\b", rf"\g<1>{BIN}/agenticrs", text)
        text = re.sub(r"(^|&& )python\b", rf"\g<1>{sys.executable}", text)
    return text


def resolve_placeholders(text: str, cwd: Path) -> str:
    """`runs/deepfm-sim-tiny-…` -> the newest existing match in `cwd`."""

    def newest(match: re.Match[str]) -> str:
        prefix = match.group(1)
        found = sorted(cwd.glob(prefix + "*"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise AssertionError(f"no run matches the placeholder {prefix}… in {cwd}")
        return str(found[-1].relative_to(cwd))

    return re.sub(r"([\w./-]+)…", newest, text)


def missing_public_data(text: str) -> str | None:
    from agenticrs.data.registry import DATASETS
    from agenticrs.gr.sequences import SEQUENCE_DATASETS

    for name in PUBLIC:
        if re.search(rf"(?<!\w){name}(?!\w)", text):  # also inside a run name: runs/deepfm-frappe-…
            entry = DATASETS.get(name) if name in DATASETS else SEQUENCE_DATASETS.get(name)
            if entry is not None and not entry.available():
                return f"public data set '{name}' is not available here"
    return None


def prepare_workdir(folder: Path) -> None:
    """A reader's checkout, minus what a command could overwrite: `bench/` scripts and configs
    linked, `bench/results` copied (commands write their JSON there), `examples/` linked."""
    bench = folder / "bench"
    bench.mkdir(parents=True, exist_ok=True)
    for entry in (ROOT / "bench").iterdir():
        if entry.name in ("results", "out", "__pycache__"):
            continue
        (bench / entry.name).symlink_to(entry)
    shutil.copytree(ROOT / "bench" / "results", bench / "results")
    (bench / "out").mkdir()
    (folder / "examples").symlink_to(ROOT / "examples")


def run_bash(command: str, cwd: Path, env: dict[str, str], timeout: int = 600) -> tuple[int, str]:
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


_SERVER: ForkServer | None = None


def fork_server(env: dict[str, str]) -> ForkServer:
    """This test process's fork server (started on first use, stopped at exit)."""
    global _SERVER
    if _SERVER is None:
        _SERVER = ForkServer(env)
        atexit.register(_SERVER.close)
    return _SERVER


def run_command(command: str, cwd: Path, env: dict[str, str], timeout: int = 600) -> tuple[int, str]:
    """A plain `agenticrs ...` / `python FILE.py ...` in a process forked from the warmed-up
    interpreter (`forkserver.py`); anything with shell syntax through bash."""
    parts = [direct_argv(part, str(BIN / "agenticrs"), sys.executable) for part in command.split(" && ")]
    if any(part is None for part in parts):
        return run_bash(command, cwd, env, timeout)
    outputs: list[str] = []
    for kind, argv in parts:  # type: ignore[misc] - `a && b`: b runs only when a succeeded
        code, output = fork_server(env).run(kind, argv, cwd, env, timeout)
        outputs.append(output)
        if code != 0:
            break
    return code, "".join(outputs)


def situational(command: str) -> str | None:
    words = " ".join(shlex.split(command.split(" #", 1)[0])[1:]) if command else ""
    for key, message in sorted(SITUATIONAL.items(), key=lambda kv: -len(kv[0])):
        if words.startswith(key):
            return message
    return None


def environment(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(AGENTICRS_CACHE_DIR=str(cache), COLUMNS="160",
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("AGENTICRS_TRACEBACK", None)
    return env


def _validate_yaml(block: Block) -> None:
    from agenticrs.data.spec import DatasetSpec
    from agenticrs.train.config import RunConfig

    data = yaml.safe_load(block.code)
    assert isinstance(data, dict), f"{block.file.name}:{block.line}: YAML is not a mapping"
    if "claim" in data:  # a method card
        from agenticrs.agents.paper.card import parse_card

        parse_card(data, f"{block.file.name}:{block.line}")
    elif "fields" in data:
        DatasetSpec.model_validate(data)
    elif "model" in data and "dataset" in data:
        RunConfig.model_validate(data)


def _postgres_url(request: pytest.FixtureRequest) -> str | None:
    """A fresh database on a private loopback PostgreSQL server (stopped at the test's end), or
    None where no server can start (binaries not installed)."""
    from agenticrs.agents.knowledge.pgserver import TemporaryPostgres

    server = TemporaryPostgres()
    try:
        server.start()
    except Exception:  # noqa: BLE001 - any failure to start means "no PostgreSQL here"
        return None
    request.addfinalizer(server.stop)
    return server.url


def heading_line(path: Path, heading: str) -> int:
    """The line number of a Markdown heading (a document's blocks may run in two parts from it)."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip() == heading:
            return number
    raise AssertionError(f"{path.name} has no heading {heading!r}")


def run_document(path: Path, workdir: Path, cache: Path, request: pytest.FixtureRequest,
                 lines: tuple[int, int | None] = (1, None)) -> list[str]:  # fmt: skip
    """Run one document's blocks (those that start in `lines`, first to before last: a long
    document runs in parts on several workers); returns the commands that were not run, with why."""
    prepare_workdir(workdir)
    env = environment(cache)
    not_run: list[str] = []
    first, last = lines
    for block in blocks(path):
        if block.line < first or (last is not None and block.line >= last):
            continue
        where = f"{path.relative_to(ROOT)}:{block.line}"
        if block.language == "text":
            continue
        if block.language == "yaml":
            _validate_yaml(block)
            continue
        if block.language == "python":
            code = resolve_placeholders(small(block.code, bash=False), workdir)
            if reason := missing_public_data(code):
                not_run.append(f"{where}: {reason}")
                continue
            script = workdir / f"snippet_{path.stem}_{block.line}.py"
            script.write_text(code)
            started = time.perf_counter()
            returncode, output = fork_server(env).run("script", [script.name], workdir, env)
            print(f"{time.perf_counter() - started:6.1f} s  {where}: Python block")
            assert returncode == 0, f"{where}: the Python block failed\n{code}\n{output}"
            continue
        assert block.language == "bash", f"{where}: unexpected language {block.language!r}"
        for original in commands(block.code):
            if (reason := next((r for k, r in NOT_RUN.items() if original.startswith(k)), None)):
                not_run.append(f"{where}: `{original}`: {reason}")
                continue
            if reason := missing_public_data(original):
                not_run.append(f"{where}: `{original}`: {reason}")
                continue
            command = small(original, bash=True)
            if "postgresql://" in command:
                url = _postgres_url(request)
                if url is None:
                    not_run.append(f"{where}: `{original}`: PostgreSQL is not installed here")
                    continue
                command = re.sub(r"postgresql://\S+", shlex.quote(url), command)
            command = resolve_placeholders(command, workdir)
            started = time.perf_counter()
            code, output = run_command(command, workdir, env)
            print(f"{time.perf_counter() - started:6.1f} s  {where}: {command}")
            expected = situational(original.replace(".venv/bin/", ""))
            if expected is not None:
                assert code in (0, 2) and (code == 0 or expected in output), f"{where}: `{command}`\n{output}"
                continue
            assert code == 0, f"{where}: `{original}` failed (ran as `{command}`, exit {code})\n{output[-4000:]}"
    return not_run
