"""Scoring in-memory rows with a saved CTR run: the run's own encoder, no temporary files.

The Python API (`agenticrs.score`), the simulator's `RunPolicy` and (later) the serving layer
score through `Scorer`, so rows are encoded exactly as the run's training data was: columns are
found by name (any order, extra columns ignored), unseen values go to the OOV id, and a bad value
is a `DataError` naming the row and field.

One scorer, three backends: `torch` (the run's weights, eager), `onnx` and `onnx-int8` (ONNX
Runtime on `RUN/export/model.onnx` / `model.int8.onnx`, written by `agenticrs export`). Encoding
(`encode`) is shared by every backend and kept apart from the model call (`score_encoded`), so a
server can encode several requests, concatenate their arrays along axis 0 and score them at once.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pyarrow as pa
import torch

from agenticrs.data.readers import Chunk
from agenticrs.features.batching import model_input_keys
from agenticrs.runtime import resolve_device
from agenticrs.train.run import Run, require_ctr_run


def as_arrow(rows: Any) -> pa.Table:
    """An Arrow table from a pandas DataFrame, an Arrow table / record batch, or a mapping of
    column name -> values (a pandas index is dropped: rows are scored in their order)."""
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if type(rows).__module__.startswith("pandas") and hasattr(rows, "columns"):
        return pa.Table.from_pandas(rows, preserve_index=False)
    if isinstance(rows, Mapping):
        return pa.table({  # NaN is missing, as in a DataFrame
            str(k): v if isinstance(v, pa.Array | pa.ChunkedArray) else pa.array(list(v), from_pandas=True)
            for k, v in rows.items()
        })
    raise TypeError(
        f"cannot score a {type(rows).__name__}: give a pandas DataFrame, a pyarrow Table or RecordBatch, "
        "or a dict of column name -> values"
    )


Backend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: tuple[str, ...] = get_args(Backend)
EXPORT_DIR = "export"  # RUN/export/: what `agenticrs export` writes
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
_ONNX_DTYPES = {
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float)": np.float32, "tensor(double)": np.float64,
    "tensor(bool)": np.bool_,
}


def onnx_file(run_dir: str | Path, backend: str) -> Path:
    """Where an ONNX backend's model lives in a run directory."""
    if backend not in ONNX_FILES:
        raise ValueError(f"unknown ONNX backend '{backend}' (expected one of {', '.join(ONNX_FILES)})")
    return Path(run_dir) / EXPORT_DIR / ONNX_FILES[backend]


class OnnxModel:
    """An ONNX Runtime session over an exported CTR model: encoded arrays in, logits out.

    The exporter drops inputs a model never reads (e.g. `request` for most models), so only the
    session's own inputs are fed, cast to the dtypes the graph declares."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings of the graph optimiser are not the user's concern
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a corrupt file
            raise ValueError(f"{path} cannot be loaded by ONNX Runtime (re-run `agenticrs export`): "
                             f"{' '.join(str(exc).split())[:300]}") from exc
        self.inputs = [(i.name, _ONNX_DTYPES.get(i.type, np.float32)) for i in self.session.get_inputs()]
        self.output = self.session.get_outputs()[0].name

    def logits(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        missing = [name for name, _ in self.inputs if name not in arrays]
        if missing:
            raise KeyError(f"{self.path} needs the encoded input(s) {', '.join(missing)}, which the arrays lack")
        feed = {name: np.ascontiguousarray(arrays[name], dtype=dtype) for name, dtype in self.inputs}
        return self.session.run([self.output], feed)[0]


def concat_encoded(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The encoded arrays of several `Scorer.encode` calls as one batch (rows in call order)."""
    if len(parts) == 1:
        return parts[0]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


class Scorer:
    """A loaded CTR run that scores tables: click probability (the run's label) per row, in order.

    `backend` is `torch` (eager, on `device`), `onnx` or `onnx-int8` (ONNX Runtime on the CPU with
    `threads` intra-op threads; None: its default). An ONNX backend needs the run exported first."""

    def __init__(
        self,
        run_dir: str | Path,
        device: str | None = None,
        batch_size: int | None = None,
        *,
        backend: str = "torch",
        threads: int | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown scoring backend '{backend}' (expected one of {', '.join(BACKENDS)})")
        require_ctr_run(run_dir, "score")
        run = Run(run_dir)
        self.run_dir = Path(run_dir)
        self.name = self.run_dir.name
        self.backend = backend
        self.encoder = run.encoder
        self.features = run.features  # fitted feature actions, applied after the encoder as in training
        config = run.config
        self.batch_size = batch_size or config.train.eval_batch_size
        self.onnx: OnnxModel | None = None
        if backend == "torch":
            self.device = resolve_device(device or config.train.device)
            self.model = run.load_model(self.device)
            return
        path = onnx_file(run_dir, backend)
        if not path.is_file():
            flag = " --int8" if backend == "onnx-int8" else ""
            raise FileNotFoundError(f"{path} is missing: the '{backend}' backend needs an exported model; "
                                    f"run `agenticrs export {run_dir}{flag}` first (or score with backend='torch')")
        self.device = torch.device("cpu")
        self.onnx = OnnxModel(path, threads)

    def encode(self, rows: Any, source: str = "<rows>", shared: Collection[str] = ()) -> dict[str, np.ndarray]:
        """The model's input arrays for `rows` (the run's encoder; `source` names the rows in
        error messages). Arrays of several calls may be concatenated along axis 0
        (`concat_encoded`) and scored at once. `shared` names columns that hold one value in every
        row (a request's user context), encoded once and repeated."""
        table = as_arrow(rows)
        chunk = self.encoder.parse_chunk(Chunk(file=source, first_row=1, table=table))
        return self.model_inputs(self.encoder.transform(chunk, shared=shared))

    def model_inputs(self, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The encoder's arrays after the run's fitted feature actions, as the model reads them."""
        if self.features is not None:
            arrays = self.features.transform_arrays(arrays)
        return {k: np.asarray(arrays[k]) for k in model_input_keys(arrays)}

    def score_encoded(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities (float32) for encoded arrays of any batch size: (N,) for a single-head
        model, (N, T) for a multi-task one. Scored in slices of `batch_size` rows."""
        rows = len(arrays["categorical"]) if "categorical" in arrays else len(next(iter(arrays.values())))
        if rows == 0:
            return np.zeros(0, np.float32)
        parts = []
        if self.onnx is not None:
            for start in range(0, rows, self.batch_size):
                part = {k: v[start : start + self.batch_size] for k, v in arrays.items()}
                logits = self.onnx.logits(part).astype(np.float64, copy=False)
                parts.append(np.exp(-np.logaddexp(0.0, -logits)))  # a sigmoid that never overflows
            return np.concatenate(parts).astype(np.float32, copy=False)
        keys = model_input_keys(arrays)  # type: ignore[arg-type]  # labels or groups passed along are not inputs
        self.model.eval()
        with torch.no_grad():
            for start in range(0, rows, self.batch_size):
                part = {
                    k: torch.from_numpy(np.array(arrays[k][start : start + self.batch_size])).to(self.device)  # a writable copy
                    for k in keys
                }
                parts.append(torch.sigmoid(self.model(part)["logit"].float()).cpu().numpy())
        return np.concatenate(parts).astype(np.float32, copy=False)

    def score(self, rows: Any, source: str = "<rows>") -> np.ndarray:
        """Probabilities (float32) in row order: (N,) for a single-head model, (N, T) for a
        multi-task one (as `predict`). `source` names the rows in error messages."""
        table = as_arrow(rows)
        if table.num_rows == 0:
            return np.zeros(0, np.float32)
        return self.score_encoded(self.encode(table, source))

    __call__ = score
