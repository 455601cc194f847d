"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

One helper for every writer in the project: the content goes to a temporary file in the same
folder (same file system, so the final `os.replace` is atomic), is flushed and fsynced, then
replaces the target. A crash mid-write leaves at most a stray `.tmp` file, never a torn one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """`with atomic_write(path) as handle: ...` writes `path` atomically (mode 'wb' or 'w')."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a plain open() would give 0666 - umask
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _read_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


_UMASK = _read_umask()  # read once: os.umask can only be read by setting it, which is not thread-safe


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def json_safe(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, inf: an undefined metric) replaced by None.

    JSON has no NaN or Infinity; Python's `json` would write the bare tokens, which other readers
    (jq, browsers, pandas with strict parsing) reject. Dicts, lists and tuples are copied; numpy
    scalars are plain numbers to `json` only when they are Python floats, so they are converted.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return json_safe(obj.item())
    return obj


def dumps_json(obj: Any, indent: int | None = None) -> str:
    """Strict JSON text of `obj`: non-finite numbers are written as null (see `json_safe`)."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 1) -> None:
    """Write `obj` as strict JSON, atomically; NaN and infinities become null."""
    atomic_write_text(path, dumps_json(obj, indent=indent))


def atomic_save(path: str | Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Atomic write through a function that writes to a binary handle (torch.save, np.savez)."""
    with atomic_write(path, "wb") as handle:
        writer(handle)
