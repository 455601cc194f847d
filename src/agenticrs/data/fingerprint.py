"""Content fingerprints that key caches: a cache is reused only for the very same inputs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

_PROBE_BYTES = 1 << 20


def file_fingerprint(path: str | Path) -> str:
    """Size, mtime and the first and last MiB of a file: cheap, and changes whenever the file does."""
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    with path.open("rb") as handle:
        digest.update(handle.read(_PROBE_BYTES))
        if stat.st_size > _PROBE_BYTES:
            handle.seek(max(_PROBE_BYTES, stat.st_size - _PROBE_BYTES))
            digest.update(handle.read(_PROBE_BYTES))
    return digest.hexdigest()[:16]


def fingerprint(paths: Iterable[str | Path], extra: object = None) -> str:
    """One key for a set of files plus any JSON-serialisable settings that shape the output."""
    digest = hashlib.sha256()
    for p in paths:
        digest.update(file_fingerprint(p).encode())
    if extra is not None:
        digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]
