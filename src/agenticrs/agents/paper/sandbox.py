"""Run generated model code away from the agent's process: a resource-limited child, a scratch
directory, an audit hook that refuses network, new processes and writes outside the scratch
directory, and the zoo's model contract before any training.

Why a child process and not `importlib` here: generated code is not trusted to be correct, let
alone harmless, and an import runs arbitrary code. The agent's process never imports it; the
child (`sandbox_worker.py`) does, after it has set its rlimits and installed its audit hook, and
reports back through `result.json` and `violations.jsonl` in the scratch directory. The parent
also enforces a wall-clock limit (the child's whole process group is killed) and starts the child
with an environment that holds no secrets (no API keys, no proxies).

What this does not guarantee (docs/reproduce.md says the same): the audit hook is a CPython
mechanism, not an OS boundary: code that corrupts the interpreter (a C extension it can load, a
CPython bug, tampering with the hook's state through introspection) can get around it; reading
files is allowed (the model needs the Python installation and the data); there is no network
namespace, so the refusal of sockets is the hook's. For untrusted code at scale, run the worker in
a container or VM without network; the rlimits and the process boundary are the backstop here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

import agenticrs

PACKAGE_ROOT = Path(agenticrs.__file__).resolve().parents[1]  # what the child needs on sys.path
SAFE_ENV = ("PATH", "HOME", "LANG", "LC_ALL")


class SandboxLimits(BaseModel):
    """The child's resource limits."""

    model_config = ConfigDict(extra="forbid")

    cpu_s: int = Field(default=600, ge=1, le=86_400, description="CPU seconds (RLIMIT_CPU)")
    wall_s: float = Field(default=900.0, gt=0, le=86_400, description="wall-clock seconds, then the child is killed")
    memory_mb: int = Field(default=8192, ge=512, le=1_048_576, description="address space (RLIMIT_AS)")
    file_mb: int = Field(default=1024, ge=1, le=1_048_576, description="largest file it may write (RLIMIT_FSIZE)")
    open_files: int = Field(default=256, ge=32, le=65_536, description="open file descriptors (RLIMIT_NOFILE)")


class SandboxError(RuntimeError):
    """Generated code was stopped, failed its contract or crashed; the message says which and why."""

    def __init__(self, result: SandboxResult) -> None:
        super().__init__(result.summary())
        self.result = result


@dataclass
class SandboxResult:
    status: str  # passed | trained | failed | blocked | crashed | timeout
    violations: list[dict[str, str]] = field(default_factory=list)
    contract: dict[str, list[str]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    run_path: str | None = None
    seconds: float | None = None
    stderr_tail: str = ""
    scratch: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "trained")

    def summary(self) -> str:
        if self.status == "blocked":
            what = "; ".join(f"{v['event']}: {v['detail']}" for v in self.violations[:3])
            return f"generated code blocked by the sandbox ({len(self.violations)} refused action(s)): {what}"
        if self.status == "failed" and self.error:
            return f"generated code failed: {self.error}"
        if self.status == "failed":
            problems = [f"{check}: {p}" for check, ps in self.contract.items() for p in ps]
            return "generated model failed the contract: " + "; ".join(problems[:5])
        if self.status in ("crashed", "timeout"):
            tail = " ".join(self.stderr_tail.split())[-300:]
            return f"generated code {self.status} in the sandbox" + (f": {tail}" if tail else "")
        return f"generated model {self.status}"


def run_sandboxed(
    module: str | Path,
    model: str,
    config: dict[str, Any],
    scratch: str | Path,
    mode: str = "contract",
    cache_dir: str | Path | None = None,
    limits: SandboxLimits | None = None,
) -> SandboxResult:
    """Copy `module` into `scratch` and, in a sandboxed child, import it, run the contract on the
    model `model` built with `config` (a RunConfig as data), and train it when `mode="train"`."""
    limits = limits or SandboxLimits()
    scratch = Path(scratch).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "violations.jsonl"):
        (scratch / stale).unlink(missing_ok=True)
    target = scratch / f"generated_{model}.py"
    shutil.copyfile(module, target)
    request = {"module": target.name, "model": model, "config": config, "mode": mode, "limits": limits.model_dump(),
               "cache_dir": str(Path(cache_dir).resolve()) if cache_dir is not None else None}  # fmt: skip
    (scratch / "request.json").write_text(json.dumps(request))
    env = {k: os.environ[k] for k in SAFE_ENV if k in os.environ}
    (scratch / "tmp").mkdir(exist_ok=True)  # temporary files stay inside the scratch directory
    env.update({"PYTHONPATH": str(PACKAGE_ROOT), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
                "PYTHONHASHSEED": "0", "NO_PROXY": "*", "TMPDIR": str(scratch / "tmp")})  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "agenticrs.agents.paper.sandbox_worker", str(scratch / "request.json")],
        cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: a timeout kills everything it started
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=limits.wall_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        timed_out = True
    tail = output.decode(errors="replace")[-2000:] if output else ""
    violations = []
    if (scratch / "violations.jsonl").exists():
        violations = [json.loads(line) for line in (scratch / "violations.jsonl").read_text().splitlines() if line.strip()]
    reported: dict[str, Any] = {}
    if (scratch / "result.json").exists():
        try:
            reported = json.loads((scratch / "result.json").read_text())
        except ValueError:
            reported = {}
    status = "timeout" if timed_out else str(reported.get("status", "crashed"))
    if violations:  # refused actions stop the code even when it caught the PermissionError
        status = "blocked"
    return SandboxResult(
        status=status, violations=violations, contract=dict(reported.get("contract") or {}),
        metrics=dict(reported.get("metrics") or {}) if status == "trained" else {}, error=reported.get("error"),
        run_path=reported.get("run_path"), seconds=reported.get("seconds"), stderr_tail=tail, scratch=str(scratch),
    )  # fmt: skip


def train_generated(arm: Any, raw_config: dict[str, Any], runs_dir: Path, cache_dir: Path | None,
                    base_dir: Path | None = None, limits: SandboxLimits | None = None) -> Any:  # fmt: skip
    """One arm of a reproduction whose model is generated code: contract, then training, in the sandbox."""
    from agenticrs.agents.paper.reproduce import ArmResult

    module = Path(arm.code) if Path(arm.code).is_absolute() else (base_dir or Path.cwd()) / arm.code
    scratch = Path(runs_dir) / "sandbox" / raw_config["name"]
    result = run_sandboxed(module, arm.name, raw_config, scratch, mode="train", cache_dir=cache_dir, limits=limits)
    if result.status != "trained":
        raise SandboxError(result)
    return ArmResult(metrics=result.metrics, run_path=result.run_path)
