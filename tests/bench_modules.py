"""A benchmark script of `bench/` loaded as a fresh module, so tests call its functions (and
`main`) without running it as a subprocess."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench(script: str) -> ModuleType:
    """`bench/<script>.py` as a new module object (each call loads it again: no state leaks between tests)."""
    spec = importlib.util.spec_from_file_location(f"{script}_under_test", BENCH / f"{script}.py")
    assert spec is not None and spec.loader is not None, script
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
