"""What MATT and UTTSI share: inference paths of a row run as one stacked forward pass of the
trained model, row-local randomness, and the confidence map from training counts.

A path is the row with some categorical fields replaced by the model's "unknown" id (`OOV_INDEX`,
whose embedding row is the trained OOV vector, or about zero — initialised at std 1e-4 — when the
training data had no OOV value) or its "missing" id; numeric and sequence inputs are kept. The
paths of a block of rows are stacked path-major into ONE batch (P x B rows) and scored in one
forward pass: the worst-case latency of a request is one padded pass. Request ids are made unique
per path, so a request-centric model (SORT) lets a row attend only to the same path of its own
request's candidates, never to another path or another request.

Randomness is a function of the row's own ids and the seed (a counter-based hash), not of its
position or of the other rows in the batch: a row's paths and score never depend on which rows it
is scored with, and a saved run scores the same rows the same way every time.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from agenticrs.features.schema import MISSING_INDEX, OOV_INDEX
from agenticrs.train.testtime.sketch import mix64

Batch = dict[str, torch.Tensor]
MaskValue = Literal["oov", "missing"]
MASK_IDS = {"oov": OOV_INDEX, "missing": MISSING_INDEX}


def confidence(counts: np.ndarray, saturation: float) -> np.ndarray:
    """min(1, log(1 + n) / log(1 + κ)) (spec: conf of a combination from its count lower bound)."""
    return np.minimum(1.0, np.log1p(np.maximum(counts, 0).astype(np.float64)) / np.log1p(max(saturation, 1e-9)))


def row_uniforms(categorical: np.ndarray, seed: int, paths: int) -> np.ndarray:
    """(B, P, F) uniforms in [0, 1) that depend only on each row's categorical ids and `seed`."""
    values = np.asarray(categorical).astype(np.uint64)
    row = np.full(len(values), np.uint64(seed) ^ np.uint64(0xC0FFEE), dtype=np.uint64)
    for k in range(values.shape[1]):
        row = mix64(row ^ mix64(values[:, k] + np.uint64(k) * np.uint64(0x100000001B3)))
    fields = values.shape[1]
    counters = np.arange(paths * fields, dtype=np.uint64).reshape(1, paths, fields)
    bits = mix64(row[:, None, None] ^ mix64(counters + np.uint64(0xA5A5)))
    return (bits >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def stacked_logits(model: torch.nn.Module, batch: Batch, keep: np.ndarray, mask_id: int) -> np.ndarray:
    """Logits (B, P) of P paths of every row in one forward pass: path p of row b keeps field k
    where keep[b, p, k] and puts `mask_id` elsewhere."""
    categorical = batch["categorical"]
    rows, paths, _ = keep.shape
    if rows == 0 or paths == 0:
        return np.zeros((rows, paths), dtype=np.float64)
    keep_t = torch.from_numpy(np.ascontiguousarray(keep.transpose(1, 0, 2))).to(categorical.device)  # (P, B, F)
    stacked = torch.where(keep_t, categorical.unsqueeze(0), torch.full_like(categorical, mask_id).unsqueeze(0))
    big: Batch = {}
    for name, value in batch.items():
        if name == "categorical":
            big[name] = stacked.reshape(paths * rows, -1)
        elif name == "request":  # one request per (request, path): paths never share a request
            path = torch.arange(paths, device=value.device, dtype=value.dtype).repeat_interleave(rows)
            big[name] = value.repeat(paths) * paths + path
        else:
            big[name] = value.repeat(paths, *([1] * (value.dim() - 1)))
    with torch.no_grad():
        logit = model(big)["logit"].float()
    if logit.dim() != 1:
        raise ValueError(
            f"test-time inference wraps single-label CTR runs; this model returns logits of shape {tuple(logit.shape)}"
        )
    return logit.cpu().numpy().astype(np.float64).reshape(paths, rows).T


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
