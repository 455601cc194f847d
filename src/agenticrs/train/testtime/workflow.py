"""Test-time inference around a saved CTR run: `agenticrs evaluate|predict --run R --test-time matt|uttsi`.

Nothing is retrained. The first use builds the hierarchical hashing of the run's training split
(one streaming pass, `sketch.py`) and, for UTTSI, chooses τ on the validation split; both are saved
in `R/testtime/` under a fingerprint of their settings, so a later call (or another process)
reloads them and reproduces the same scores. Each evaluation is recorded beside the run's own
files as `R/testtime/<method>-<split>.json`: the run's metrics (the metric registry's, as
`summary.json` has them) with and without the wrapper, the share of rows explored and the
forward rows per row (compute relative to the base model).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agenticrs.config import apply_overrides
from agenticrs.data.cache import SplitArrays
from agenticrs.features.actions import featured
from agenticrs.features.batching import iterate_batches
from agenticrs.features.pipeline import ProcessedDataset, process_dataset
from agenticrs.progress import SILENT, Reporter
from agenticrs.runtime import resolve_device
from agenticrs.train.ctr import label_metrics, predict_probs
from agenticrs.train.run import Run
from agenticrs.train.testtime.matt import Matt, MattConfig
from agenticrs.train.testtime.sketch import HashingConfig, HierarchicalHashing
from agenticrs.train.testtime.uttsi import Uttsi, UttsiConfig

Method = Literal["matt", "uttsi"]
METHODS: tuple[str, ...] = ("matt", "uttsi")
FOLDER = "testtime"


class TestTimeSettings(BaseModel):
    """Everything a test-time wrapper depends on (`--tt-set hashing.width=65536`, `--tt-set matt.paths=4`)."""

    model_config = ConfigDict(extra="forbid")
    hashing: HashingConfig = Field(default_factory=HashingConfig)
    matt: MattConfig = Field(default_factory=MattConfig)
    uttsi: UttsiConfig = Field(default_factory=UttsiConfig)


def parse_settings(overrides: list[str] | dict[str, Any] | None) -> TestTimeSettings:
    """Settings from `key=value` overrides (or a nested dict); a bad one is a ValueError naming the field."""
    raw = overrides if isinstance(overrides, dict) else apply_overrides({}, list(overrides or []))
    try:
        return TestTimeSettings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise ValueError(f"invalid test-time setting {where}: {first['msg']} (got {first.get('input')!r})") from None


def check_method(method: str) -> Method:
    if method not in METHODS:
        raise ValueError(f"unknown test-time method '{method}' (expected one of {', '.join(METHODS)})")
    return method  # type: ignore[return-value]


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Wrapped:
    """A loaded run with its test-time scorer."""

    run: Run
    model: torch.nn.Module
    scorer: Matt | Uttsi
    device: torch.device
    batch_rows: int
    built: dict[str, float] = field(default_factory=dict)  # seconds spent building statistics (0 when loaded)


def _train_labels(run: Run, split: SplitArrays) -> np.ndarray | None:
    if "labels" not in split:
        return None
    labels = list(run.schema.labels)
    name = run.summary.get("label") or (labels[0] if labels else None)
    return None if name is None else split["labels"][:, labels.index(name)]


def load_hashing(run: Run, config: HashingConfig, data: Callable[[], ProcessedDataset],
                 reporter: Reporter = SILENT) -> tuple[HierarchicalHashing, float]:  # fmt: skip
    """The run's saved hashing for these settings, or one built in one pass over its training split
    (then saved). Returns it and the seconds spent building (0.0 when loaded)."""
    path = run.folder / FOLDER / f"hashing-{fingerprint(config.model_dump())}.npz"
    if path.is_file():
        return HierarchicalHashing.load(path), 0.0
    split = data().split("train")
    started = time.perf_counter()
    reporter.log(f"test time: counting feature combinations of {split.rows:,} training rows (one pass)")
    hph = HierarchicalHashing.build(split["categorical"], list(run.schema.categorical_names), config,
                                    labels=_train_labels(run, split))
    seconds = time.perf_counter() - started
    hph.save(path)
    return hph, seconds


def wrap_run(run_dir: str | Path, method: str, settings: TestTimeSettings | None = None,
             cache_dir: str | Path | None = None, reporter: Reporter = SILENT,
             data: ProcessedDataset | None = None) -> Wrapped:  # fmt: skip
    """Load a CTR run and its test-time statistics (building and saving them on first use)."""
    method = check_method(method)
    settings = settings or TestTimeSettings()
    run = Run(run_dir)
    config = run.config
    if not run.schema.categorical:
        raise ValueError(f"test-time inference masks categorical fields; the run {run.folder} has none")
    summary = run.summary
    if summary.get("label") is None and summary.get("labels"):
        raise ValueError(f"test-time inference wraps single-label CTR runs; {run.folder} is multi-task "
                         f"({summary['labels']})")
    loaded: dict[str, ProcessedDataset] = {}

    def run_data() -> ProcessedDataset:
        if "data" not in loaded:
            loaded["data"] = data or featured(
                process_dataset(run.spec, cache_dir, encoder=run.encoder, reporter=reporter), run.features
            )
        return loaded["data"]

    device = resolve_device(config.train.device)
    model = run.load_model(device)
    hph, seconds = load_hashing(run, settings.hashing, run_data, reporter)
    paths = settings.matt.paths + 1 if method == "matt" else settings.uttsi.max_paths
    batch_rows = max(1, config.train.eval_batch_size // paths)
    scorer: Matt | Uttsi
    if method == "matt":
        scorer = Matt(hph, settings.matt)
    else:
        scorer = Uttsi(hph, settings.uttsi)
        if scorer.threshold is None:
            _calibrate(run, scorer, model, settings, run_data, batch_rows, device, reporter)
    return Wrapped(run, model, scorer, device, batch_rows, {"build_seconds": seconds})


def _calibrate(run: Run, scorer: Uttsi, model: torch.nn.Module, settings: TestTimeSettings,
               data: Callable[[], ProcessedDataset], batch_rows: int, device: torch.device,
               reporter: Reporter) -> None:  # fmt: skip
    """τ from the validation split (saved with the run under the settings' fingerprint)."""
    key = fingerprint({"hashing": settings.hashing.model_dump(), "uttsi": settings.uttsi.model_dump()})
    path = run.folder / FOLDER / f"uttsi-threshold-{key}.json"
    if path.is_file():
        scorer.threshold = float(json.loads(path.read_text())["threshold"])
        return
    processed = data()
    if "valid" not in processed.splits:
        raise ValueError(f"UTTSI chooses its threshold on the validation split, which {run.folder}'s data set lacks; "
                         "set uttsi.threshold=... instead")
    split = processed.split("valid")
    uncertainty = []
    with torch.no_grad():
        for batch in iterate_batches(split, batch_rows, label_index=None, device=device):
            uncertainty.append(scorer.base(model, batch)[1])
    values = np.concatenate(uncertainty) if uncertainty else np.zeros(0)
    threshold = scorer.calibrate(values)
    reporter.log(f"test time: UTTSI threshold τ = {threshold:.5f} ({float(np.mean(values > threshold)):.1%} of "
                 f"{len(values):,} validation rows explored)")
    run.write_json(f"{FOLDER}/{path.name}", {"threshold": threshold, "explore_share": settings.uttsi.explore_share,
                                             "valid_rows": len(values),
                                             "valid_explored_share": float(np.mean(values > threshold))})


def score_split(wrapped: Wrapped, split: SplitArrays, reporter: Reporter = SILENT,
                description: str = "test time") -> tuple[np.ndarray, dict[str, float]]:  # fmt: skip
    """Probabilities of every row of a split (row order) and the totals of the scorer's counters."""
    wrapped.model.eval()
    parts, totals = [], {}
    started = time.perf_counter()
    with reporter.task(description, total=split.rows) as task, torch.no_grad():
        for batch in iterate_batches(split, wrapped.batch_rows, label_index=None, device=wrapped.device):
            probs, stats = wrapped.scorer.score(wrapped.model, batch)
            parts.append(probs)
            for k, v in stats.items():
                totals[k] = totals.get(k, 0) + v
            task.advance(len(probs))
    seconds = time.perf_counter() - started
    probs = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    rows = max(totals.get("rows", 0), 1)
    summary = {
        "rows": int(totals.get("rows", 0)),
        "explored_share": totals.get("explored", 0) / rows,
        "compute_vs_base": totals.get("forward_rows", 0) / rows,
        "seconds": seconds,
    }
    if "effective_forward_rows" in totals:
        summary["effective_compute_vs_base"] = totals["effective_forward_rows"] / rows
    return probs, summary


def evaluate_test_time(run_dir: str | Path, method: str, split: str = "test", files: list[str] | None = None,
                       overrides: list[str] | dict[str, Any] | None = None, cache_dir: str | Path | None = None,
                       reporter: Reporter = SILENT) -> tuple[dict[str, float], np.ndarray, dict[str, Any]]:  # fmt: skip
    """Metrics and probabilities of a run wrapped by MATT or UTTSI on one of its splits (or other
    labelled files), and the record written to `R/testtime/<method>-<split>.json` (with the base
    model's metrics on the same rows beside them)."""
    from agenticrs.train.workflow import _with_files

    settings = parse_settings(overrides)
    run = Run(run_dir)
    spec = run.spec
    wrapped = wrap_run(run_dir, method, settings, cache_dir, reporter)
    if files:
        spec, split = _with_files(spec, "eval", files), "eval"
    elif split not in spec.files:
        raise KeyError(f"the run's data set has no split '{split}' (has {sorted(spec.files)})")
    else:
        spec = spec.model_copy(update={"files": {"train": [], split: spec.files[split]}})
    rows = featured(process_dataset(spec, cache_dir, encoder=run.encoder, reporter=reporter), run.features).split(split)
    probs, stats = score_split(wrapped, rows, reporter)
    base = predict_probs(wrapped.model, rows, run.config.train.eval_batch_size, wrapped.device)
    labels = _train_labels(run, rows)
    if labels is None:
        raise ValueError(f"the {split} rows have no labels to evaluate; use `agenticrs predict --test-time`")
    labels = np.asarray(labels, dtype=np.float64)
    groups = np.asarray(rows["group"]) if "group" in rows else None
    metrics = label_metrics(run.config.train.metrics, labels, probs, groups)
    base_metrics = label_metrics(run.config.train.metrics, labels, base, groups)
    record = {"method": method, "split": split, "metrics": metrics, "base_metrics": base_metrics, **stats,
              **wrapped.built, "settings": settings.model_dump(), "hashing_bytes": wrapped.scorer.hashing.nbytes}
    if isinstance(wrapped.scorer, Uttsi):
        record["threshold"] = wrapped.scorer.threshold
    run.write_json(f"{FOLDER}/{method}-{split}.json", record)
    return metrics, probs, record


def predict_test_time(run_dir: str | Path, method: str, files: list[str],
                      overrides: list[str] | dict[str, Any] | None = None, cache_dir: str | Path | None = None,
                      reporter: Reporter = SILENT, out: str | Path | None = None) -> np.ndarray:  # fmt: skip
    """Click probabilities of files scored through MATT or UTTSI (row order); `out` as `predict_files`."""
    from agenticrs.train.workflow import _with_files, check_output_path, write_predictions

    if out is not None:
        check_output_path(out, files)
    settings = parse_settings(overrides)
    run = Run(run_dir)
    wrapped = wrap_run(run_dir, method, settings, cache_dir, reporter)
    spec = _with_files(run.spec, "predict", files)
    rows = featured(process_dataset(spec, cache_dir, encoder=run.encoder, with_labels=False, reporter=reporter),
                    run.features).split("predict")
    probs, _ = score_split(wrapped, rows, reporter)
    if out is not None:
        write_predictions(out, probs)
    return probs
