"""ONNX export of a CTR run, checked against the eager model before anything is written.

`export_onnx(RUN)` traces the run's model with a dynamic batch axis (inputs: the model's encoded
batch keys, output: the logit), scores the run's test split eagerly and with ONNX Runtime and
refuses the export when the probabilities differ by more than 1e-5: a served model must be the
trained one. `quantize=True` adds a dynamic int8 copy (weights int8, activations quantised at run
time), whose test AUC is reported beside the fp32 one (no threshold: the caller decides).

Exporter: the dynamo exporter (`torch.export`, opset 18) first, the TorchScript one
(`dynamo=False`) when dynamo cannot trace the model. Dynamo traces every zoo model but SORT (its
request grouping has data-dependent shapes); TorchScript fails on more (SlotNorm, DIN's batch
norm, CDNet). An exported graph whose batch axis came out fixed is refused like a failed export.
A model neither can export raises `ExportError`; the caller serves it eagerly (`backend="torch"`).

Files (`RUN/export/`): `model.onnx`, `model.int8.onnx` (when quantised) and `export.json` (the
report), each written atomically; a failed export leaves the previous files as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa
import torch

from agenticrs.data.readers import iter_split
from agenticrs.features.actions import featured
from agenticrs.features.batching import model_input_keys
from agenticrs.features.pipeline import process_dataset
from agenticrs.runtime.files import atomic_write_bytes, atomic_write_json
from agenticrs.train.metrics import auc
from agenticrs.train.run import Run, require_ctr_run
from agenticrs.train.scoring import EXPORT_DIR, ONNX_FILES, OnnxModel, Scorer, as_arrow

if TYPE_CHECKING:
    from agenticrs.agents.knowledge import KnowledgeStore

REPORT_FILE = "export.json"
OPSET = 18
PARITY_TOLERANCE = 1e-5  # max |p_eager - p_onnx| on the test split for an fp32 export
_R = TypeVar("_R")
SAMPLE_ROWS = 13  # rows of the tracing example: >1 (a batch of 1 would be specialised), an odd size no layer has


class ExportError(ValueError):
    """A run's model cannot be exported faithfully; the message names the model and why."""


@dataclass
class ExportReport:
    """What an export wrote and measured (also `RUN/export/export.json`)."""

    run_dir: str
    model: str
    path: str
    exporter: str  # "dynamo" or "torchscript"
    opset: int
    inputs: list[str]
    sha256: str
    size_bytes: int
    test_rows: int
    parity_max_abs_diff: float  # fp32 ONNX vs eager probabilities on the test split
    auc_torch: float | None
    auc_onnx: float | None
    quantized: bool = False
    int8_path: str | None = None
    int8_sha256: str | None = None
    int8_size_bytes: int | None = None
    int8_max_abs_diff: float | None = None
    auc_int8: float | None = None
    auc_change_int8: float | None = None  # auc_int8 - auc_onnx
    latency: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # backend -> batch size -> p50/p99
    export_seconds: float = 0.0
    tried: dict[str, str] = field(default_factory=dict)  # exporter -> why it failed, for exporters that did

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def details(self, quantized: bool) -> dict[str, Any]:
        """The knowledge store's `details` of one exported file."""
        keys = ("model", "exporter", "opset", "inputs", "test_rows", "parity_max_abs_diff", "auc_torch", "auc_onnx",
                "auc_int8", "auc_change_int8", "int8_max_abs_diff", "latency")
        return {"format": "onnx", "quantized": quantized, "run_dir": self.run_dir, **{k: getattr(self, k) for k in keys}}


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _LogitModule(torch.nn.Module):
    """The model as the exporter sees it: a dict of batch tensors in, the logit out."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch)["logit"]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress and warnings to stdout and the log; a CLI wants its own table."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    loggers.append(logging.getLogger())  # onnxruntime.quantization logs its advice on the root logger
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]  # the exporters' C++ side writes graphs straight to the descriptors
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _first_line(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    text = lines[0] if lines else type(cause).__name__
    return f"{type(cause).__name__}: {text[:240]}"


def _batch_axis_is_dynamic(path: Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return all(i.type.tensor_type.shape.dim[0].dim_param for i in graph.input if i.type.tensor_type.shape.dim)


def _export_to(model: torch.nn.Module, sample: dict[str, torch.Tensor], path: Path, exporter: str) -> None:
    keys = list(sample)
    wrapped = _LogitModule(model).eval()
    with _quiet(), torch.no_grad():
        if exporter == "dynamo":
            batch = torch.export.Dim("batch")
            program = torch.onnx.export(wrapped, (), kwargs={"batch": sample}, dynamo=True, opset_version=OPSET,
                                        input_names=keys, output_names=["logit"], external_data=False,
                                        dynamic_shapes={"batch": {k: {0: batch} for k in keys}})
            assert program is not None
            program.save(str(path), external_data=False)
        else:
            torch.onnx.export(wrapped, (sample, {}), str(path), dynamo=False, opset_version=17,
                              input_names=keys, output_names=["logit"],
                              dynamic_axes={**{k: {0: "batch"} for k in keys}, "logit": {0: "batch"}})
    if not _batch_axis_is_dynamic(path):
        raise ExportError("the batch axis came out fixed (the model specialises on the example's batch size)")


EXPORTERS = ("dynamo", "torchscript")


def export_model(
    model: torch.nn.Module, sample: dict[str, torch.Tensor], path: Path, check: Callable[[Path], _R] | None = None
) -> tuple[str, _R | None, dict[str, str]]:
    """Export `model` (a batch dict in, `{"logit": ...}` out) to the ONNX file `path` with the first
    exporter of `EXPORTERS` that traces it with a dynamic batch axis and whose file passes `check`
    (e.g. a parity test; what it returns is handed back). Returns (exporter, check's result, why
    each earlier exporter failed); raises `ExportError` naming every exporter's failure when none
    works. Used by `export_onnx` and by AutoPerf's export-size measurement."""
    tried: dict[str, str] = {}
    for name in EXPORTERS:
        try:
            _export_to(model, sample, path, name)
            result = check(path) if check is not None else None
        except Exception as exc:  # noqa: BLE001 - every exporter failure is reported, then the next is tried
            tried[name] = _first_line(exc)
            continue
        return name, result, tried
    raise ExportError("; ".join(f"{k}: {v}" for k, v in tried.items()))


def latency_profile(
    scorer: Scorer, rows: Any, sizes: Sequence[int] = (1, 100, 1000), repeats: int = 30, warmup: int = 2
) -> dict[str, dict[str, float]]:
    """Milliseconds per call of `scorer` on the first `size` rows (tiled when fewer), per batch
    size: p50/p99 of a whole call (encode + model) and of the model call alone."""
    table = as_arrow(rows)
    if table.num_rows == 0:
        raise ValueError("latency_profile needs at least one row")
    profile: dict[str, dict[str, float]] = {}
    for size in sizes:
        copies = -(-size // table.num_rows)
        batch = (pa.concat_tables([table] * copies) if copies > 1 else table).slice(0, size)
        total, model = np.empty(repeats), np.empty(repeats)
        for i in range(-warmup, repeats):
            start = time.perf_counter()
            arrays = scorer.encode(batch)
            encoded = time.perf_counter()
            scorer.score_encoded(arrays)
            end = time.perf_counter()
            if i >= 0:
                total[i], model[i] = end - start, end - encoded
        profile[str(size)] = {
            "p50_ms": float(np.percentile(total, 50) * 1e3), "p99_ms": float(np.percentile(total, 99) * 1e3),
            "model_p50_ms": float(np.percentile(model, 50) * 1e3), "model_p99_ms": float(np.percentile(model, 99) * 1e3),
        }
    return profile


def _test_rows(run: Run, limit: int) -> pa.Table:
    """The first `limit` raw rows of the run's test split, as a server would receive them."""
    spec = run.spec
    chunks, total = [], 0
    for chunk in iter_split(spec.files["test"], spec.reader, spec.source_columns):
        chunks.append(chunk.table)
        total += chunk.num_rows
        if total >= limit:
            break
    return pa.concat_tables(chunks).slice(0, limit)


def _auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    scores = probs if probs.ndim == 1 else probs[:, 0]  # a multi-task model: its first head
    value = auc(labels, scores)
    return None if np.isnan(value) else float(value)


def export_onnx(
    run_dir: str | Path,
    quantize: bool = False,
    *,
    cache_dir: str | Path | None = None,
    threads: int | None = None,
    latency_sizes: Sequence[int] = (1, 100, 1000),
    latency_repeats: int = 30,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportReport:
    """Export a CTR run to `RUN/export/` (see the module docstring); returns the report it writes.

    Raises `ExportError` when the model cannot be exported or the fp32 export disagrees with the
    eager model on the test split by more than `tolerance`."""
    started = time.perf_counter()
    require_ctr_run(run_dir, "export")
    run = Run(run_dir)
    config, spec = run.config, run.spec
    if "test" not in spec.files:
        raise ValueError(f"{run.folder} has no test split to check the export on (splits: {sorted(spec.files)})")
    data = process_dataset(spec.model_copy(update={"files": {"train": [], "test": spec.files["test"]}}), cache_dir,
                           encoder=run.encoder)
    data = featured(data, run.features)  # the run's fitted feature actions, as in training and scoring
    split = data.split("test")
    arrays = {k: np.ascontiguousarray(split[k]) for k in model_input_keys(split)}
    # a multi-task run (summary label None) is checked on its first head's label, as `_auc` scores it
    label_name = run.summary.get("label") or (run.summary.get("labels") or run.schema.labels)[0]
    labels = np.asarray(split["labels"])[:, list(run.schema.labels).index(label_name)]

    torch_scorer = Scorer(run.folder, device="cpu")
    eager = torch_scorer.score_encoded(arrays)
    rows = split.rows
    pick = np.arange(SAMPLE_ROWS) % rows
    sample = {k: torch.from_numpy(np.ascontiguousarray(v[pick])) for k, v in arrays.items()}

    folder = run.folder / EXPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as tmp:
        fp32 = Path(tmp) / ONNX_FILES["onnx"]

        def check(path: Path) -> tuple[OnnxModel, np.ndarray]:
            onnx_model = OnnxModel(path, threads)
            return onnx_model, _probabilities(onnx_model, arrays, torch_scorer.batch_size)

        try:
            exporter, (onnx_model, exported), tried = export_model(torch_scorer.model, sample, fp32, check)
        except ExportError as exc:
            raise ExportError(f"model '{config.model}' of {run.folder} cannot be exported to ONNX ({exc}); "
                              "serve it with backend='torch'") from exc
        diff = float(np.abs(exported.astype(np.float64) - eager).max()) if rows else 0.0
        if not diff <= tolerance:
            raise ExportError(f"model '{config.model}' of {run.folder}: the ONNX export ({exporter}) differs from the "
                              f"eager model by {diff:.3g} on the test split (tolerance {tolerance:g}); nothing written")
        report = ExportReport(
            run_dir=str(run.folder), model=config.model, path=str(folder / ONNX_FILES["onnx"]), exporter=exporter,
            opset=OPSET if exporter == "dynamo" else 17, inputs=[name for name, _ in onnx_model.inputs], sha256="",
            size_bytes=0, test_rows=rows, parity_max_abs_diff=diff, auc_torch=_auc(labels, eager),
            auc_onnx=_auc(labels, exported), tried=tried,
        )
        int8 = Path(tmp) / ONNX_FILES["onnx-int8"]
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with _quiet():
                quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)
            quantized = _probabilities(OnnxModel(int8, threads), arrays, torch_scorer.batch_size)
            report.quantized = True
            report.int8_path = str(folder / ONNX_FILES["onnx-int8"])
            report.int8_max_abs_diff = float(np.abs(quantized.astype(np.float64) - eager).max()) if rows else 0.0
            report.auc_int8 = _auc(labels, quantized)
            if report.auc_int8 is not None and report.auc_onnx is not None:
                report.auc_change_int8 = report.auc_int8 - report.auc_onnx
        # checked: now the files replace the previous export, each atomically
        atomic_write_bytes(report.path, fp32.read_bytes())
        report.sha256, report.size_bytes = file_sha256(report.path), Path(report.path).stat().st_size
        if quantize and report.int8_path:
            atomic_write_bytes(report.int8_path, int8.read_bytes())
            report.int8_sha256, report.int8_size_bytes = file_sha256(report.int8_path), Path(report.int8_path).stat().st_size

    if latency_sizes:
        raw = _test_rows(run, max(latency_sizes))
        report.latency["torch"] = latency_profile(torch_scorer, raw, latency_sizes, latency_repeats)
        for backend in ("onnx", "onnx-int8") if quantize else ("onnx",):
            scorer = Scorer(run.folder, backend=backend, threads=threads)
            report.latency[backend] = latency_profile(scorer, raw, latency_sizes, latency_repeats)
    report.export_seconds = time.perf_counter() - started
    atomic_write_json(folder / REPORT_FILE, report.to_dict())
    return report


def _probabilities(model: OnnxModel, arrays: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
    parts = [model.logits({k: v[s : s + batch_size] for k, v in arrays.items()}).astype(np.float64)
             for s in range(0, len(arrays["categorical"]), batch_size)]
    return np.exp(-np.logaddexp(0.0, -np.concatenate(parts))).astype(np.float32)


def load_report(run_dir: str | Path) -> ExportReport:
    """The report of a run's last export (`RUN/export/export.json`)."""
    import json

    path = Path(run_dir) / EXPORT_DIR / REPORT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `agenticrs export {run_dir}` first")
    return ExportReport(**json.loads(path.read_text()))


def record_export(
    store: KnowledgeStore, report: ExportReport, candidate_id: int | None = None, intent_id: int | None = None
) -> list[int]:
    """One `Artifact` row of kind "export" per exported file (fp32, and int8 when quantised):
    path, sha256, size and the report's figures as `details`. A re-export of the same path
    refreshes its row. Returns the rows' ids."""
    files = [(report.path, report.sha256, report.size_bytes, False)]
    if report.quantized and report.int8_path:
        files.append((report.int8_path, report.int8_sha256, report.int8_size_bytes, True))
    ids = []
    with store.transaction() as tx:
        for path, sha256, size, quantized in files:
            fields = {"sha256": sha256, "size_bytes": size, "details": report.details(quantized),
                      "candidate_id": candidate_id, "intent_id": intent_id}
            row = tx.add_artifact("export", path, **fields)
            for key, value in fields.items():  # an existing row (a re-export) takes the new figures
                setattr(row, key, value)
            row.kind = "export"
            tx.session.flush()
            ids.append(row.id)
    return ids
