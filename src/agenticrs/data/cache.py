"""Columnar on-disk store of processed splits: raw little-endian arrays, memory-mapped on load.

Arrays are appended chunk by chunk while processing (bounded memory), and a split folder becomes
visible only when its `meta.json` is written last — an interrupted run leaves no half cache behind.
Text columns are stored as Arrow IPC files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

META = "meta.json"


def default_cache_root() -> Path:
    """Where processed data and generated data sets live: $AGENTICRS_CACHE_DIR or ./.cache/agenticrs."""
    return Path(os.environ.get("AGENTICRS_CACHE_DIR", Path.cwd() / ".cache" / "agenticrs"))


def _file_name(key: str) -> str:
    return key.replace("/", "__")


class SplitWriter:
    """Appends named arrays of one split; all arrays must have the same number of rows."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.handles: dict[str, BinaryIO] = {}
        self.layout: dict[str, dict] = {}
        self.text_writers: dict[str, pa.ipc.RecordBatchFileWriter] = {}
        self.rows = 0

    def append(self, arrays: dict[str, np.ndarray | pa.Array]) -> None:
        n = None
        for key, value in arrays.items():
            if isinstance(value, (pa.Array, pa.ChunkedArray)):
                self._append_text(key, value)
                rows = len(value)
            else:
                self._append_array(key, value)
                rows = value.shape[0]
            if n is not None and rows != n:
                raise ValueError(f"array '{key}' has {rows} rows, expected {n}")
            n = rows
        self.rows += n or 0

    def _append_array(self, key: str, value: np.ndarray) -> None:
        value = np.ascontiguousarray(value)
        if key not in self.handles:
            self.handles[key] = open(self.folder / f"{_file_name(key)}.bin", "wb")
            self.layout[key] = {"dtype": value.dtype.str, "shape": list(value.shape[1:])}
        elif self.layout[key]["dtype"] != value.dtype.str or self.layout[key]["shape"] != list(value.shape[1:]):
            raise ValueError(f"array '{key}' changed dtype or shape between chunks")
        self.handles[key].write(value.tobytes())

    def _append_text(self, key: str, value: pa.Array) -> None:
        batch = pa.record_batch({"value": value.cast(pa.large_string())})
        if key not in self.text_writers:
            sink = pa.OSFile(str(self.folder / f"{_file_name(key)}.arrow"), "wb")
            self.text_writers[key] = pa.ipc.new_file(sink, batch.schema)
            self.layout[key] = {"dtype": "text", "shape": []}
        self.text_writers[key].write_batch(batch)

    def close(self, extra: dict | None = None) -> None:
        for handle in self.handles.values():
            handle.close()
        for writer in self.text_writers.values():
            writer.close()
        meta = {"rows": self.rows, "arrays": self.layout, **(extra or {})}
        (self.folder / META).write_text(json.dumps(meta, indent=1))


class SplitArrays:
    """Read-only memory-mapped arrays of one processed split."""

    def __init__(self, folder: Path) -> None:
        meta_path = folder / META
        if not meta_path.exists():
            raise FileNotFoundError(f"no processed split at {folder} (missing {META})")
        self.folder = folder
        self.meta = json.loads(meta_path.read_text())
        self.rows: int = self.meta["rows"]
        self._cache: dict[str, np.ndarray | pa.Array] = {}

    def keys(self) -> list[str]:
        return list(self.meta["arrays"])

    def __contains__(self, key: str) -> bool:
        return key in self.meta["arrays"]

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._cache:
            layout = self.meta["arrays"][key]
            if layout["dtype"] == "text":
                with pa.memory_map(str(self.folder / f"{_file_name(key)}.arrow")) as source:
                    self._cache[key] = pa.ipc.open_file(source).read_all().column("value").combine_chunks()
            else:
                shape = (self.rows, *layout["shape"])
                path = self.folder / f"{_file_name(key)}.bin"
                if self.rows == 0 or path.stat().st_size == 0:
                    self._cache[key] = np.zeros(shape, dtype=np.dtype(layout["dtype"]))
                else:
                    self._cache[key] = np.memmap(path, dtype=np.dtype(layout["dtype"]), mode="r", shape=shape)
        return self._cache[key]

    def load_in_memory(self) -> None:
        """Copy every array into RAM (faster random batching for data that fits)."""
        for key in self.keys():
            value = self[key]
            if isinstance(value, np.memmap):
                self._cache[key] = np.array(value)


def publish(tmp_folder: Path, final_folder: Path) -> None:
    """Atomically move a fully written cache folder into place."""
    if final_folder.exists():
        shutil.rmtree(tmp_folder, ignore_errors=True)
        return
    final_folder.parent.mkdir(parents=True, exist_ok=True)
    tmp_folder.rename(final_folder)
