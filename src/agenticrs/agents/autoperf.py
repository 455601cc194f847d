"""AutoPerf: what a candidate costs to serve, measured, stored with it, and checked against budgets.

Every candidate the evolution trains is measured on its saved member runs (the champion is served
as its members' average, `serve/models.py`), so the numbers are those of the model that would ship:

- **latency**: milliseconds per 1,000 candidates, p50 and p99 over `repeats` timed forward passes
  after a warm-up, forward only (rows are encoded once, before timing), under
  `torch.inference_mode`, on one intra-op thread by default (comparable across runs and machines).
  The rows are real: the first `rows` raw rows of the run's valid split (train when it has none;
  never the test split, which an evolution keeps for the final comparison) encoded by the run's own
  encoder; where the data files are not on this machine, a synthetic batch of the schema's shape
  (as `space.check` times). An ensemble's time is one pass through every member plus the average.
- **parameters**: `sum(p.numel())` over the members' parameters (buffers counted apart, in details).
- **memory**: parameter and buffer bytes plus the peak bytes of the tensors a forward pass creates
  and holds at the same time (`PeakTensorMemory`: every new tensor storage an operator returns is
  counted until it is freed). The input batch is not counted; scratch space a kernel allocates and
  frees inside one operator (a oneDNN workspace) is not seen.
- **export size**: the members' ONNX files, written by the project's exporter (`serve/export.py`,
  dynamo then TorchScript) into a temporary folder and checked against the eager model on the
  measured rows (1e-5 on probabilities). A model that cannot be exported faithfully is measured by
  its saved state dict (`weights.pt`), `export_format="torch"`, with the exporter's reason in details.

`PerfBudgets` are the guardrails that block a promotion; `pareto_front` / `pareto_figure` are the
quality-vs-latency view (the HTML report draws the same front as inline SVG, `views.perf`).
"""

from __future__ import annotations

import math
import tempfile
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from agenticrs.agents.space import synthetic_batch, time_calls
from agenticrs.data.readers import iter_split
from agenticrs.train.run import WEIGHTS, Run, require_ctr_run
from agenticrs.train.scoring import Scorer

if TYPE_CHECKING:
    from agenticrs.agents.knowledge import KnowledgeStore

MB = 1024 * 1024
PARITY_TOLERANCE = 1e-5  # as `serve/export.py`: an export that disagrees more is not the trained model
ROW_SPLITS = ("valid", "train")  # where measurement rows come from, in order; never "test"


@dataclass
class PerfReport:
    """One measurement of a run or an ensemble of runs (see the module docstring for each figure)."""

    latency_p50_ms: float  # per 1,000 candidates
    latency_p99_ms: float
    parameters: int
    memory_mb: float
    export_bytes: int | None
    export_format: Literal["onnx", "torch"] | None
    device: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of the tensors created while active and alive at the same time.

    Every storage an operator returns that was not alive before (views and in-place results share
    their input's storage and are not new) is counted from its creation until it is freed (a
    finalizer on the storage). Works on any device; tensors that existed before (weights, inputs)
    are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[tuple[str, int]] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if not isinstance(value, torch.Tensor) or value.device.type == "meta":
                continue
            storage = value.untyped_storage()
            size = storage.nbytes()
            key = (str(value.device), storage.data_ptr())
            if size == 0 or key in self._seen:
                continue
            self._seen.add(key)
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key, size)
        return out

    def _free(self, key: tuple[str, int], size: int) -> None:
        if key in self._seen:
            self._seen.discard(key)
            self.live -= size


@dataclass
class _Member:
    """One loaded member run: its model and its encoded measurement batch."""

    run_dir: Path
    model: torch.nn.Module
    batch: dict[str, torch.Tensor]
    arrays: dict[str, np.ndarray]


def _raw_rows(run: Run, rows: int) -> tuple[pa.Table | None, str]:
    """The first `rows` raw rows of the run's valid (else train) split, tiled when the split is
    smaller; (None, why) when no such file is on this machine."""
    spec = run.spec
    for split in ROW_SPLITS:
        files = spec.files.get(split) or []
        if not files or not all(Path(f).is_file() for f in files):
            continue
        chunks, total = [], 0
        for chunk in iter_split(files, spec.reader, spec.source_columns):
            chunks.append(chunk.table)
            total += chunk.num_rows
            if total >= rows:
                break
        if total == 0:
            continue
        table = pa.concat_tables(chunks)
        copies = -(-rows // table.num_rows)
        table = (pa.concat_tables([table] * copies) if copies > 1 else table).slice(0, rows)
        return table, f"{split} split of {spec.name} ({min(total, rows)} distinct rows)"
    return None, f"synthetic (no valid or train file of {spec.name} on this machine)"


def _load_members(run_dirs: Sequence[str | Path], rows: int, device: torch.device) -> tuple[list[_Member], str]:
    members, table, source = [], None, ""
    for i, run_dir in enumerate(run_dirs):
        require_ctr_run(run_dir, "measure")
        scorer = Scorer(run_dir, device=str(device))
        run = Run(run_dir)
        if i == 0:
            table, source = _raw_rows(run, rows)
        if table is not None:
            arrays = scorer.encode(table, source=f"{run_dir} (measurement rows)")
        else:
            arrays = {k: v.numpy() for k, v in synthetic_batch(run.schema, rows).items()}
        batch = {k: torch.from_numpy(np.array(v)).to(device) for k, v in arrays.items()}
        members.append(_Member(Path(run_dir), scorer.model.eval(), batch, arrays))
    return members, source


def _ensemble_call(members: list[_Member]) -> Callable[[], torch.Tensor]:
    """One scoring pass: every member's forward, then the mean probability (as `ServedModel`)."""

    def call() -> torch.Tensor:
        probs = [torch.sigmoid(m.model(m.batch)["logit"].float()) for m in members]
        return probs[0] if len(probs) == 1 else torch.stack(probs).mean(dim=0)

    return call


def _bytes_of(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _export_member(member: _Member, folder: Path) -> tuple[int, str]:
    """(ONNX file bytes, exporter) of one member, exported into `folder` and checked for parity on
    the measured rows. Raises `ExportError` when no exporter gives a faithful file."""
    from agenticrs.serve.export import SAMPLE_ROWS, ExportError, export_model  # the serving layer, used lazily
    from agenticrs.train.scoring import OnnxModel

    rows = len(next(iter(member.batch.values())))
    pick = torch.arange(SAMPLE_ROWS) % rows
    sample = {k: v.cpu()[pick].contiguous() for k, v in member.batch.items()}
    model = member.model.cpu()
    with torch.inference_mode():
        eager = torch.sigmoid(model({k: v.cpu() for k, v in member.batch.items()})["logit"].double()).numpy()

    def parity(path: Path) -> float:
        exported = OnnxModel(path, threads=1).logits(member.arrays).astype(np.float64)
        diff = float(np.abs(np.exp(-np.logaddexp(0.0, -exported)) - eager).max())
        if not diff <= PARITY_TOLERANCE:
            raise ExportError(f"the ONNX file differs from the eager model by {diff:.3g} (tolerance {PARITY_TOLERANCE:g})")
        return diff

    path = folder / f"{member.run_dir.name}.onnx"
    exporter, _diff, _tried = export_model(model, sample, path, parity)
    return path.stat().st_size, exporter


def _architecture(model: torch.nn.Module) -> tuple[Any, ...]:
    """What an exported file's size depends on: the model class and every tensor's name, shape, dtype."""
    return (type(model).__name__, *((name, tuple(t.shape), str(t.dtype)) for name, t in model.state_dict().items()))


def _measure_export(members: list[_Member], device: torch.device, export_dir: Path | None) -> tuple[int, str, dict[str, Any]]:
    details: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="autoperf-") as tmp:
            folder = Path(export_dir) if export_dir is not None else Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            sizes, exporters, shared = [], [], 0
            done: dict[tuple[Any, ...], tuple[int, str]] = {}
            for member in members:
                # members with one architecture (same layers, shapes and dtypes) give files of one size:
                # the first is exported and checked, the others reuse its size (export costs seconds)
                key = _architecture(member.model)
                if key in done and export_dir is None:
                    size, exporter = done[key]
                    shared += 1
                else:
                    size, exporter = _export_member(member, folder)
                    done[key] = (size, exporter)
                sizes.append(size)
                exporters.append(exporter)
        details.update(export_exporters=exporters, export_member_bytes=sizes, export_reused=shared)
        return sum(sizes), "onnx", details
    except Exception as exc:  # noqa: BLE001 - an export failure is a measured fact (served eagerly), not a crash
        sizes = [(m.run_dir / WEIGHTS).stat().st_size for m in members]
        details.update(export_reason=f"not exportable to ONNX, served eagerly: {exc}"[:600], export_member_bytes=sizes)
        return sum(sizes), "torch", details
    finally:
        for member in members:
            member.model.to(device)


def measure_candidate(
    run_dirs: Sequence[str | Path],
    rows: int = 1000,
    repeats: int = 30,
    export: bool = True,
    *,
    device: str = "cpu",
    threads: int | None = 1,
    warmup: int = 3,
    export_dir: str | Path | None = None,
) -> PerfReport:
    """Measure an ensemble of member runs as it would be served: one pass through every member on
    the same `rows` rows plus the average. Latencies are per 1,000 candidates; `export_dir` keeps
    the ONNX files (one per member, named after its run folder) instead of a temporary folder."""
    if not run_dirs:
        raise ValueError("run_dirs is empty: a candidate is measured on at least one member run")
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    target = torch.device(device)
    members, source = _load_members(run_dirs, rows, target)
    call = _ensemble_call(members)
    cuda = target.type == "cuda"
    seconds = np.asarray(time_calls(call, repeats=repeats, warmup=warmup, threads=threads, cuda=cuda))
    per_1000 = seconds * 1e3 * (1000.0 / rows)
    tracker = PeakTensorMemory()
    with torch.inference_mode(), tracker:
        call()
    weights = [p for m in members for p in m.model.parameters()]
    buffers = [b for m in members for b in m.model.buffers()]
    weight_bytes, buffer_bytes = _bytes_of(weights), _bytes_of(buffers)
    details: dict[str, Any] = {
        "runs": [str(m.run_dir) for m in members], "members": len(members), "rows": rows, "rows_source": source,
        "repeats": repeats, "warmup": warmup, "threads": threads if threads is not None else torch.get_num_threads(),
        "latency_mean_ms": float(per_1000.mean()), "latency_max_ms": float(per_1000.max()),
        "buffers": sum(b.numel() for b in buffers), "parameter_bytes": weight_bytes, "buffer_bytes": buffer_bytes,
        "activation_peak_bytes": tracker.peak, "input_bytes": _bytes_of(members[0].batch.values()),
        "models": [Run(m.run_dir).config.model for m in members],
    }
    export_bytes, export_format = None, None
    if export:
        export_bytes, export_format, more = _measure_export(members, target, Path(export_dir) if export_dir else None)
        details.update(more)
    return PerfReport(
        latency_p50_ms=float(np.percentile(per_1000, 50)), latency_p99_ms=float(np.percentile(per_1000, 99)),
        parameters=sum(p.numel() for p in weights), memory_mb=(weight_bytes + buffer_bytes + tracker.peak) / MB,
        export_bytes=export_bytes, export_format=export_format,  # type: ignore[arg-type]
        device=str(target), details=details,
    )


def measure_run(
    run_dir: str | Path, rows: int = 1000, repeats: int = 30, export: bool = True, **options: Any
) -> PerfReport:
    """Measure one saved CTR training run (`measure_candidate` of one member; same options)."""
    return measure_candidate([run_dir], rows, repeats, export, **options)


# -- guardrails -----------------------------------------------------------------------------------
class PerfBudgets(BaseModel):
    """Serving budgets; None: no limit. A candidate over any budget is not promoted."""

    model_config = ConfigDict(extra="forbid")

    max_latency_p99_ms: float | None = Field(default=None, gt=0, description="p99 ms per 1,000 candidates")
    max_parameters: int | None = Field(default=None, ge=1)
    max_memory_mb: float | None = Field(default=None, gt=0)
    max_export_mb: float | None = Field(default=None, gt=0)

    def violations(self, report: PerfReport) -> list[str]:
        """One line per budget the report exceeds, naming the budget, the measured value and the
        limit. A figure that is not a finite number, or an export size that was not measured while
        it has a budget, is a violation too: a guardrail that cannot be checked does not pass."""
        found = []
        checks = [
            ("max_latency_p99_ms", report.latency_p99_ms, self.max_latency_p99_ms, "latency p99", "{:.3f} ms per 1,000"),
            ("max_parameters", report.parameters, self.max_parameters, "parameters", "{:,}"),
            ("max_memory_mb", report.memory_mb, self.max_memory_mb, "memory", "{:.3f} MB"),
            ("max_export_mb", None if report.export_bytes is None else report.export_bytes / MB, self.max_export_mb,
             "export size", "{:.3f} MB"),
        ]
        for budget, value, limit, what, fmt in checks:
            if limit is None:
                continue
            if value is None:
                found.append(f"{budget}: {what} was not measured (budget {fmt.format(limit)})")
            elif not math.isfinite(float(value)):
                found.append(f"{budget}: {what} is {value} (budget {fmt.format(limit)})")
            elif value > limit:
                found.append(f"{budget}: {what} {fmt.format(value)} exceeds the budget of {fmt.format(limit)}")
        return found


def record_perf(store: KnowledgeStore, candidate_id: int, report: PerfReport) -> None:
    """Store the measurement with its candidate (`PerfProfile`). Idempotent per (candidate,
    device): a candidate already measured on this device keeps its first row."""
    with store.transaction() as tx:
        tx.save_perf(
            candidate_id, report.device, latency_p50_ms=report.latency_p50_ms, latency_p99_ms=report.latency_p99_ms,
            parameters=report.parameters, memory_mb=report.memory_mb, export_bytes=report.export_bytes,
            export_format=report.export_format, details=report.details,
        )


# -- the Pareto view ------------------------------------------------------------------------------
def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices (ascending) of the points no other point dominates, for (quality, latency) with
    quality higher-is-better and latency lower-is-better. A point is dominated by one at least as
    good on both and strictly better on one, so identical points are all on the front. A point
    with a NaN coordinate is neither on the front nor dominates anything."""
    valid = [i for i, (q, lat) in enumerate(points) if not (math.isnan(q) or math.isnan(lat))]
    # best quality first, then lowest latency: a point is dominated iff an earlier point of a
    # different (quality, latency) pair has latency <= its own
    order = sorted(valid, key=lambda i: (-points[i][0], points[i][1]))
    front, best_latency, best_pair = [], math.inf, None
    for i in order:
        q, lat = points[i]
        if lat < best_latency or (lat == best_latency and (q, lat) == best_pair):
            front.append(i)
            if lat < best_latency:
                best_latency, best_pair = lat, (q, lat)
        # lat > best_latency, or lat == best_latency with lower quality: dominated
    return sorted(front)


def pareto_figure(points: Sequence[tuple[float, float]], labels: Sequence[str], front: Sequence[int] | None = None):
    """A plotly Figure of quality (y) against p99 latency (x): every point labelled, the front
    highlighted and joined. `front` defaults to `pareto_front(points)`. Needs plotly (the `dev`
    extra); the HTML report draws the same chart as inline SVG without it."""
    try:
        import plotly.graph_objects as go
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("pareto_figure needs plotly: pip install plotly (or the project's dev extra)") from exc
    if len(points) != len(labels):
        raise ValueError(f"points and labels differ in length ({len(points)} vs {len(labels)})")
    chosen = set(pareto_front(points) if front is None else front)
    others = [i for i in range(len(points)) if i not in chosen]
    on_front = sorted(chosen, key=lambda i: (points[i][1], -points[i][0]))
    figure = go.Figure()
    figure.add_trace(go.Scatter(
        x=[points[i][1] for i in others], y=[points[i][0] for i in others], text=[labels[i] for i in others],
        mode="markers+text", textposition="top center", name="dominated", marker={"color": "#90a4ae", "size": 8},
    ))
    figure.add_trace(go.Scatter(
        x=[points[i][1] for i in on_front], y=[points[i][0] for i in on_front], text=[labels[i] for i in on_front],
        mode="lines+markers+text", textposition="top center", name="Pareto front", line={"shape": "hv", "color": "#2e7d32"},
        marker={"color": "#2e7d32", "size": 11},
    ))
    figure.update_layout(title="quality vs p99 latency (per 1,000 candidates)", xaxis_title="p99 latency, ms per 1,000",
                         yaxis_title="quality (valid AUC)", template="plotly_white")
    return figure
