"""Nearest-neighbour search over item vectors with FAISS: exact and approximate.

Why FAISS: a maintained library with exact inner-product search (`IndexFlatIP`, the reference)
and the two usual approximate structures, HNSW graphs (`IndexHNSWFlat`) and inverted lists
(`IndexIVFFlat`), all serialisable. `VectorIndex` adds what the library leaves to the caller:
item ids (FAISS returns positions), checks that stop bad input with a message naming what was
expected (a query of the wrong width, NaN or infinite vectors), and saving into a run directory
(`index.faiss` + `index.json` + `index_ids.npy`, each written atomically) that reloads to the
same answers.

Scores are inner products; `metric="cosine"` normalises items and queries first.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agenticrs.runtime.files import atomic_save, atomic_write_bytes, atomic_write_json

INDEX_FILE, META_FILE, IDS_FILE = "index.faiss", "index.json", "index_ids.npy"


class IndexConfig(BaseModel):
    """Which index and its knobs (FAISS's names); defaults reach >= 0.95 recall@100 on 100k items."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["exact", "hnsw", "ivf"] = "hnsw"
    metric: Literal["ip", "cosine"] = "ip"
    hnsw_m: int = Field(16, ge=2, le=256, description="graph neighbours per node")
    ef_construction: int = Field(80, ge=1, le=4096)
    ef_search: int = Field(128, ge=1, le=8192, description="search beam; raise it for recall, lower for speed")
    nlist: int = Field(1024, ge=1, description="IVF cells")
    nprobe: int = Field(32, ge=1, description="IVF cells visited per query")


def _check_vectors(vectors: np.ndarray, what: str, dim: int | None = None) -> np.ndarray:
    arr = np.asarray(vectors)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (n, dim); got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{what} must be numeric; got dtype {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{what} have dimension {arr.shape[1]}; the index was built on {dim}-dimensional vectors")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"{what} contain NaN or infinite values in {len(rows)} row(s), e.g. rows {rows[:5].tolist()}")
    return arr


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


@dataclass
class VectorIndex:
    """Item vectors in a FAISS index, searched by inner product; `ids[j]` is row j's item id."""

    index: faiss.Index
    ids: np.ndarray
    config: IndexConfig
    dim: int
    build_seconds: float = 0.0

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray | None = None, config: IndexConfig | None = None) -> VectorIndex:
        cfg = config or IndexConfig()
        x = _check_vectors(vectors, "item vectors")
        n, dim = x.shape
        if n == 0:
            raise ValueError("item vectors are empty: nothing to index")
        ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        if ids.shape != (n,):
            raise ValueError(f"ids must have one entry per vector ({n}); got shape {ids.shape}")
        if cfg.metric == "cosine":
            x = _normalise(x)
        started = time.perf_counter()
        if cfg.kind == "exact":
            index = faiss.IndexFlatIP(dim)
        elif cfg.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = cfg.ef_construction
        else:
            nlist = min(cfg.nlist, n)
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(x)
        index.add(x)
        built = cls(index, ids, cfg, dim, time.perf_counter() - started)
        built._set_search_params()
        return built

    def _set_search_params(self) -> None:
        if self.config.kind == "hnsw":
            self.index.hnsw.efSearch = self.config.ef_search
        elif self.config.kind == "ivf":
            self.index.nprobe = self.config.nprobe

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (Q, k), item ids (Q, k)) best first; -1 ids (score -inf) where fewer than k exist."""
        q = _check_vectors(queries, "query vectors", self.dim)
        if not 1 <= k:
            raise ValueError(f"k must be >= 1, got {k}")
        if self.config.metric == "cosine":
            q = _normalise(q)
        if self.config.kind == "hnsw" and k > self.config.ef_search:
            # the search beam must hold k results: a beam narrower than k would silently cut recall
            scores, rows = self.index.search(q, k, params=faiss.SearchParametersHNSW(efSearch=k))
        else:
            scores, rows = self.index.search(q, k)
        found = rows >= 0
        ids = np.where(found, self.ids[np.maximum(rows, 0)], -1)
        return np.where(found, scores, -np.inf), ids

    # -- artifact --------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / INDEX_FILE, faiss.serialize_index(self.index).tobytes())
        atomic_save(folder / IDS_FILE, lambda f: np.save(f, self.ids))
        atomic_write_json(folder / META_FILE, {"config": self.config.model_dump(mode="json"), "dim": self.dim,
                                               "size": self.size, "build_seconds": self.build_seconds})  # fmt: skip
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> VectorIndex:
        folder = Path(folder)
        for name in (INDEX_FILE, META_FILE, IDS_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} holds no saved index: {name} is missing")
        meta = json.loads((folder / META_FILE).read_text())
        index = faiss.deserialize_index(np.fromfile(folder / INDEX_FILE, dtype=np.uint8))
        ids = np.load(folder / IDS_FILE)
        if index.d != meta["dim"] or index.ntotal != len(ids):
            raise ValueError(f"{folder}: the index ({index.ntotal} x {index.d}) does not match {META_FILE} / {IDS_FILE}")
        loaded = cls(index, ids, IndexConfig.model_validate(meta["config"]), int(meta["dim"]), meta.get("build_seconds", 0.0))
        loaded._set_search_params()
        return loaded


def neighbour_recall(exact_ids: np.ndarray, approx_ids: np.ndarray) -> float:
    """Mean share of each query's exact top k that the approximate top k also returns."""
    exact_ids, approx_ids = np.asarray(exact_ids), np.asarray(approx_ids)
    if exact_ids.shape != approx_ids.shape or exact_ids.ndim != 2:
        raise ValueError(f"expected two (Q, k) id arrays of one shape; got {exact_ids.shape} and {approx_ids.shape}")
    q, k = exact_ids.shape
    offset = (np.arange(q, dtype=np.int64) * (max(int(exact_ids.max()), int(approx_ids.max())) + 2))[:, None]
    hit = np.isin(exact_ids + offset, approx_ids + offset) & (exact_ids >= 0)
    return float(hit.sum() / max((exact_ids >= 0).sum(), 1))


def time_search(index: VectorIndex, queries: np.ndarray, k: int, repeats: int = 1) -> tuple[float, np.ndarray]:
    """(seconds per query, the ids of the last repeat): all queries in one call, best of `repeats`."""
    best, ids = float("inf"), np.zeros(0)
    for _ in range(max(repeats, 1)):
        started = time.perf_counter()
        _, ids = index.search(queries, k)
        best = min(best, time.perf_counter() - started)
    return best / max(len(queries), 1), ids
