"""Run documentation commands in processes forked from one warmed-up interpreter.

A command of the README or `docs/` is a new process that imports agenticrs (torch, pandas,
SQLAlchemy, ...): about 3 s before it does any work, for 140 commands. `ForkServer` imports that
once, in a helper process, and forks a child per command; the child changes to the command's
folder and environment, points its stdout/stderr at a file, sets `sys.argv` and runs the console
script (`agenticrs ...`) or the Python file (`python script.py ...`) as `__main__`, then exits the
way an interpreter does (threads joined, `atexit` handlers run). Every command still runs in a
process of its own, from a state no other command touched; only the imports are shared.

Commands that need a shell (pipes, `&&`, redirections, globs, variables) keep running through
bash (`snippets.run_bash`).
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# The helper process: imports, then serves one JSON request per line on stdin, forking a child per
# request; it answers {"pid": ...} when the child starts and {"code": ...} when it ends.
SERVER = r"""
import json, os, runpy, sys, traceback

sys.path[:] = [p for p in sys.path if p not in ("", ".")]  # `-c` put the working folder first; a command would not

import agenticrs.cli.main  # noqa: F401 - the imports every command shares
import agenticrs.models, agenticrs.train.workflow, pandas, pyarrow.parquet  # noqa: E401,F401
# torch's optimisers import TorchDynamo (1-3 s) when the first one is built: every training command
# (ONNX, ONNX Runtime and scikit-learn are not preloaded: children forked after them aborted)
import torch._dynamo, torch.optim  # noqa: E401,F401


def child(request):
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.close(stdin)
    sys.stdin = open(0, closefd=False)
    sys.argv = list(request["argv"])
    if request["kind"] == "cli":
        from agenticrs.cli.main import app

        app()
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
        runpy.run_path(sys.argv[0], run_name="__main__")


answers = sys.stdout
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            child(request)
            code = 0
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.exit(code)  # a normal interpreter exit: threads joined, atexit handlers, buffers flushed
    answers.write(json.dumps({"pid": pid}) + "\n")
    answers.flush()
    _, status = os.waitpid(pid, 0)
    answers.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n")
    answers.flush()
"""

SHELL_SYNTAX = re.compile(r"[|&;<>()$`*?\[\]{}~\\]")


def direct_argv(command: str, agenticrs: str, python: str) -> tuple[str, list[str]] | None:
    """(kind, argv) when the command is a plain `agenticrs ...` or `python FILE.py ...` with no
    shell syntax outside quotes; None when it needs bash."""
    unquoted = re.sub(r"'[^']*'|\"[^\"]*\"", "", command.split(" #", 1)[0])
    if SHELL_SYNTAX.search(unquoted) or "=" in unquoted.split(" ", 1)[0]:
        return None
    argv = shlex.split(command, comments=True)
    if argv and argv[0] == agenticrs:
        return "cli", argv
    if len(argv) >= 2 and argv[0] == python and argv[1].endswith(".py"):
        return "script", argv[1:]
    return None


class ForkServer:
    """One warmed-up interpreter per test process; `run` is `snippets.run_bash` for plain commands."""

    def __init__(self, env: dict[str, str]) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env=env, text=True, bufsize=1)  # fmt: skip

    def _answer(self, timeout: float) -> dict:
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server exited ({self._proc.poll()})")
        return json.loads(line)

    def run(self, kind: str, argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> tuple[int, str]:
        assert self._proc.stdin is not None
        with tempfile.NamedTemporaryFile("r", suffix=".out", delete=False) as handle:
            out = Path(handle.name)
        try:
            request = {"kind": kind, "argv": argv, "cwd": str(cwd), "env": env, "out": str(out)}
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            pid = self._answer(30)["pid"]
            try:
                code = self._answer(timeout)["code"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._answer(30)
                raise subprocess.TimeoutExpired(argv, timeout) from None
            return code, out.read_text(errors="replace")
        finally:
            out.unlink(missing_ok=True)

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(timeout=30)
