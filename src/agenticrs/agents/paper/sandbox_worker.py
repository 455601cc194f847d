"""The sandboxed side of generated code: `python -m agenticrs.agents.paper.sandbox_worker REQUEST.json`.

Started by `sandbox.run_sandboxed` in its own process, with the scratch directory as the working
directory and a cleaned environment. Order matters, and is the point of this file:

1. resource limits (CPU seconds, address space, file size, open files, no core dumps) — the
   generated code cannot raise them again;
2. everything trusted: imports of torch and agenticrs, the data set processed and loaded;
3. the audit hook (`sys.addaudithook`, which cannot be removed): from here on, opening a file for
   writing outside the scratch directory, removing / renaming / creating files outside it, any
   socket, any new process (subprocess, os.system, exec, spawn, fork), signals to other
   processes and ctypes are refused with `PermissionError`, and every refusal is appended to a
   violations file the parent reads, even when the generated code catches the exception;
4. only then the generated module is imported, its model checked against the contract and, when
   asked and the contract passed, trained through the ordinary `train_run` path.

The result is `result.json` in the scratch directory.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PROCESS_EVENTS = {
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "pty.spawn",
    "os.startfile", "os.kill", "os.killpg",
}  # fmt: skip
PATH_EVENTS = {  # event -> positions of path arguments that must stay inside the scratch directory
    "os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "os.link": (0, 1), "os.symlink": (1,),
    "os.mkdir": (0,), "os.chmod": (0,), "os.chown": (0,), "os.truncate": (0,), "os.utime": (0,),
    "shutil.rmtree": (0,), "shutil.move": (0, 1), "shutil.copyfile": (1,),
}  # fmt: skip


def set_limits(limits: dict[str, int]) -> None:
    """Soft and hard limits at once, so the generated code cannot raise them again."""
    for name, value in (("RLIMIT_CPU", limits["cpu_s"]), ("RLIMIT_AS", limits["memory_mb"] << 20),
                        ("RLIMIT_FSIZE", limits["file_mb"] << 20), ("RLIMIT_NOFILE", limits["open_files"]),
                        ("RLIMIT_CORE", 0)):  # fmt: skip
        resource.setrlimit(getattr(resource, name), (value, value))


def install_hook(scratch: Path, violations_path: Path) -> None:
    """The audit hook that confines what runs after it (see the module docstring)."""
    root = str(scratch.resolve())
    log_fd = os.open(violations_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # opened before the hook
    realpath, fspath, write, refusing = os.path.realpath, os.fspath, os.write, [False]

    def inside(path: Any) -> bool:
        if isinstance(path, int):  # an already-open descriptor
            return True
        try:
            resolved = realpath(fspath(path) if not isinstance(path, bytes) else path.decode())
        except (TypeError, ValueError):
            return False
        return resolved == root or resolved.startswith(root + os.sep)

    def refuse(event: str, detail: str) -> None:
        if not refusing[0]:
            refusing[0] = True
            try:
                write(log_fd, (json.dumps({"event": event, "detail": detail[:300]}) + "\n").encode())
            finally:
                refusing[0] = False
        raise PermissionError(f"sandbox: {event} refused ({detail[:200]})")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, 0))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
            if writing and not inside(path):
                refuse(event, f"{path!r} for writing, outside the scratch directory")
        elif event.startswith("socket.") or event in PROCESS_EVENTS or event.startswith("ctypes."):
            refuse(event, repr(args)[:200])
        elif event in PATH_EVENTS:
            for i in PATH_EVENTS[event]:
                if i < len(args) and not inside(args[i]):
                    refuse(event, f"{args[i]!r} is outside the scratch directory")

    sys.addaudithook(hook)


def _warm_up(torch: Any) -> None:
    """Trusted first use of what the contract and training use lazily (torch.save / load set up
    caches and temporary files on first use), so the hook never sees the library's own set-up."""
    import io

    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(2, 1).state_dict(), buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=True)


def main(request_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    set_limits(request["limits"])
    scratch = Path.cwd()
    started = time.perf_counter()
    result: dict[str, Any] = {"status": "crashed", "contract": {}, "metrics": {}}

    # -- trusted: imports and data ------------------------------------------------------------------
    import importlib.util

    import torch

    from agenticrs.models.base import MODELS, Model, build_model
    from agenticrs.train.config import RunConfig
    from agenticrs.train.ctr import evaluate
    from agenticrs.train.workflow import load_data, train_run

    torch.set_num_threads(1)
    _warm_up(torch)
    config = RunConfig.model_validate(request["config"])
    data = load_data(config.dataset, request.get("cache_dir"))
    for split in data.splits.values():
        split.load_in_memory()

    # -- untrusted from here on ---------------------------------------------------------------------
    install_hook(scratch, scratch / "violations.jsonl")
    name = request["model"]
    try:
        spec = importlib.util.spec_from_file_location(f"agenticrs_generated_{name}", scratch / request["module"])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cls = MODELS.get(name) if name in MODELS else None
        if not (isinstance(cls, type) and issubclass(cls, Model)):
            raise ValueError(f"the module registers no CTR model named '{name}' (use @register('{name}') on a Model)")
        from agenticrs.agents.paper.contract import run_contract

        def build(seed: int) -> Model:
            torch.manual_seed(seed)
            return build_model(name, data.schema, config.model_params)

        result["contract"] = run_contract(build, data.split("train"))
        failed = {k: v for k, v in result["contract"].items() if v}
        result["status"] = "failed" if failed else "passed"
        if not failed and request["mode"] == "train":
            trained = train_run(config, scratch / "runs", request.get("cache_dir"), data=data)
            test = data.splits.get("test") or data.splits["valid"]
            metrics, _ = evaluate(trained.model, test, ["auc", "logloss"], config.train.eval_batch_size)
            metrics.update({"valid_auc": trained.result.valid.get("auc"), "stopped_by": trained.result.stopped_by,
                            "steps": trained.result.steps, "best_step": trained.result.best_step})  # fmt: skip
            result["metrics"], result["run_path"] = metrics, str(trained.run.folder)
            result["status"] = "trained"
    except BaseException as exc:  # noqa: BLE001 - whatever the generated code raised is the finding
        result["status"] = "failed"
        result["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:1000]
    result["seconds"] = time.perf_counter() - started
    (scratch / "result.json").write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
