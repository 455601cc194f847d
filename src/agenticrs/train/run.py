"""Run directories: self-describing folders that anything can load and score with.

A run holds `config.yaml` (the effective run config), `dataset.yaml` (the data set spec),
`encoder.json`, `schema.json`, `weights.pt` (the best checkpoint), `metrics.jsonl` (one record
per evaluation, appended and flushed as training goes), `checkpoint.pt` (what a resumed run
continues from; removed when training ends) and `summary.json` (written last).

One writer for every task: CTR runs add the data set spec and encoder (`write_setup`), sequential
runs their item count and semantic IDs (`write_config`, `save_arrays`). Every whole-file write is
atomic (`agenticrs.runtime.files`), so a run killed at any moment leaves complete files.

Loading refuses a damaged run with one line naming the file and what is wrong with it (a
`FileNotFoundError` for a missing file, a `ValueError` for a truncated, corrupt or mismatched
one), never a traceback from YAML, JSON, pickle or `load_state_dict`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from pydantic import ValidationError

from agenticrs.config import dump_yaml, load_yaml
from agenticrs.data.spec import DatasetSpec
from agenticrs.features.actions import FEATURES_FILE, FittedFeatures
from agenticrs.features.encoder import FeatureEncoder
from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import Model, build_model
from agenticrs.runtime.files import atomic_save, atomic_write_json, atomic_write_text, dumps_json
from agenticrs.train.config import RunConfig

CONFIG, DATASET, ENCODER, SCHEMA, WEIGHTS, METRICS, SUMMARY, CHECKPOINT = (
    "config.yaml",
    "dataset.yaml",
    "encoder.json",
    "schema.json",
    "weights.pt",
    "metrics.jsonl",
    "summary.json",
    "checkpoint.pt",
)
_T = TypeVar("_T")
SEQUENTIAL_JOB = "job.yaml"  # written by a sequential (next-item) run only


def run_task(folder: str | Path) -> str | None:
    """'ctr', 'sequential', 'multi_objective_retrieval' or None (not a run directory we can tell): a
    sequential run has `job.yaml` or a `config.yaml` with `num_items`; a multi-objective retrieval
    run (`retrieval.cascade_train`) says its task in `config.yaml`; a CTR run has its
    `dataset.yaml` / `encoder.json`."""
    folder = Path(folder)
    if (folder / SEQUENTIAL_JOB).is_file():
        return "sequential"
    if (folder / DATASET).is_file() or (folder / ENCODER).is_file():
        return "ctr"
    try:
        raw = load_yaml(folder / CONFIG)
    except Exception:  # noqa: BLE001 - missing or unreadable: the caller's own read says why
        return None
    if isinstance(raw, dict) and raw.get("task") == "multi_objective_retrieval":
        return "multi_objective_retrieval"
    return "sequential" if "num_items" in raw else None


def require_ctr_run(folder: str | Path, command: str) -> None:
    """A one-line ValueError when `folder` is a sequential run given to a CTR command."""
    if run_task(folder) == "sequential":
        raise ValueError(
            f"{folder} is a sequential (next-item) run; `{command}` takes CTR runs. For this run use "
            f"`agenticrs recommend --run {folder} --user ID` (its test metrics are in summary.json)"
        )


class DamagedRunError(ValueError):
    """A file of a run directory exists but cannot be read: truncated, corrupt or inconsistent."""


def _reason(exc: BaseException) -> str:
    """What went wrong, in one line (a pydantic error as `field: message`)."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{where + ': ' if where else ''}{first['msg']}{more}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = "; ".join(lines[:2]) if lines else "no details"  # e.g. load_state_dict: a header, then what differs
    return f"{type(exc).__name__}: {text if len(text) <= 300 else text[:297] + '...'}"


class Run:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    # -- creation -------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, name: str) -> Run:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = name.replace("/", "_").replace("\\", "_").strip("._") or "run"  # one folder, never a path
        folder = Path(root) / f"{name}-{stamp}-{secrets.token_hex(2)}"
        folder.mkdir(parents=True, exist_ok=False)
        return cls(folder)

    @classmethod
    def at(cls, folder: str | Path) -> Run:
        """A run in a given folder (created if missing)."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        return cls(folder)

    def write_setup(
        self, config: RunConfig, spec: DatasetSpec, encoder: FeatureEncoder, features: FittedFeatures | None = None
    ) -> None:
        """What a CTR run needs to be rebuilt: its config, data set spec, encoder, fitted feature
        actions (`features.json`, when it has any) and the schema its model is built on."""
        self.write_config(config.model_dump(mode="json"))
        spec.to_yaml(self.folder / DATASET)
        encoder.save(self.folder / ENCODER)
        if features is not None:
            features.save(self.folder)
        else:
            (self.folder / FEATURES_FILE).unlink(missing_ok=True)
        schema = features.schema() if features is not None else encoder.schema()
        self.write_json(SCHEMA, schema.to_dict())

    def write_config(self, config: dict[str, Any]) -> None:
        dump_yaml(config, self.folder / CONFIG)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.folder / name, obj)

    def save_arrays(self, name: str, **arrays: np.ndarray) -> None:
        atomic_save(self.folder / name, lambda handle: np.savez(handle, **arrays))

    # -- the metrics log ----------------------------------------------------------------------
    def reset_log(self) -> None:
        atomic_write_text(self.folder / METRICS, "")

    def log(self, record: dict[str, Any]) -> None:
        with (self.folder / METRICS).open("a") as handle:
            handle.write(dumps_json(record) + "\n")
            handle.flush()

    def rewrite_log(self, records: list[dict[str, Any]]) -> None:
        """The log as a checkpoint knew it (a resumed run drops records written after it)."""
        atomic_write_text(self.folder / METRICS, "".join(dumps_json(r) + "\n" for r in records))

    # -- weights and checkpoints ----------------------------------------------------------------
    def save_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        atomic_save(self.folder / WEIGHTS, lambda handle: torch.save(state_dict, handle))

    def has_weights(self) -> bool:
        return (self.folder / WEIGHTS).is_file()

    def load_weights(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        return self._read(
            WEIGHTS,
            lambda path: torch.load(path, map_location=device, weights_only=True),
            "cannot be read as saved weights (truncated or corrupt)",
        )

    def save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        atomic_save(self.folder / CHECKPOINT, lambda handle: torch.save(checkpoint, handle))

    def has_checkpoint(self) -> bool:
        return (self.folder / CHECKPOINT).is_file()

    def load_checkpoint(self, device: str | torch.device = "cpu") -> dict[str, Any] | None:
        path = self.folder / CHECKPOINT
        if not path.is_file():
            return None
        # the checkpoint holds generator states and plain Python records besides tensors
        return self._read(
            CHECKPOINT,
            lambda path: torch.load(path, map_location=device, weights_only=False),
            "cannot be read as a resume checkpoint (truncated or corrupt; delete it to train from scratch)",
        )

    def remove_checkpoint(self) -> None:
        (self.folder / CHECKPOINT).unlink(missing_ok=True)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.folder / SUMMARY, summary)

    # -- loading --------------------------------------------------------------------------
    def _require(self, name: str) -> Path:
        if not self.folder.is_dir():
            what = "is not a directory" if self.folder.exists() else "does not exist"
            raise FileNotFoundError(f"run directory {self.folder} {what}")
        path = self.folder / name
        if not path.exists():
            raise FileNotFoundError(f"{self.folder} is not a complete run directory: {name} is missing")
        if not path.is_file():
            raise DamagedRunError(f"{path} is not a file")
        return path

    def _read(self, name: str, parse: Callable[[Path], _T], what: str = "is not valid") -> _T:
        """`parse(path)` of one file of the run; any failure names the file and what is wrong."""
        path = self._require(name)
        try:
            return parse(path)
        except (FileNotFoundError, DamagedRunError):
            raise
        except Exception as exc:  # noqa: BLE001 - YAML, JSON, pickle, zip and validation errors alike
            raise DamagedRunError(f"{path} {what}: {_reason(exc)}") from exc

    @property
    def config(self) -> RunConfig:
        require_ctr_run(self.folder, "evaluate / predict / train --resume")
        return self._read(CONFIG, lambda path: RunConfig.model_validate(load_yaml(path)), "is not a valid run config")

    @property
    def spec(self) -> DatasetSpec:
        return self._read(
            DATASET, lambda path: DatasetSpec.from_dict(load_yaml(path), source=str(path)), "is not a valid dataset spec"
        )

    @property
    def encoder(self) -> FeatureEncoder:
        return self._read(ENCODER, FeatureEncoder.load, "is not a valid saved encoder")

    @property
    def features(self) -> FittedFeatures | None:
        """The run's fitted feature actions (`features.json`); None for a run without actions."""
        if not (self.folder / FEATURES_FILE).is_file():
            return None
        return self._read(FEATURES_FILE, lambda path: FittedFeatures.load(path.parent), "is not a valid features file")

    @property
    def schema(self) -> FeatureSchema:
        return self._read(SCHEMA, lambda path: FeatureSchema.from_dict(json.loads(path.read_text())), "is not a valid schema")

    @property
    def summary(self) -> dict[str, Any]:
        summary = self._read(SUMMARY, lambda path: json.loads(path.read_text()), "is not valid JSON")
        if not isinstance(summary, dict):
            raise DamagedRunError(f"{self.folder / SUMMARY} is not a valid summary: expected a JSON object")
        return summary

    def metrics_log(self) -> list[dict[str, Any]]:
        path = self.folder / METRICS
        if not path.exists():
            return []
        records = []
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise DamagedRunError(f"{path}, line {number}: not a JSON record ({exc})") from exc
        return records

    def load_model(self, device: str | torch.device = "cpu") -> Model:
        config = self.config
        model = build_model(config.model, self.schema, config.model_params, smoke=config.smoke)
        weights = self.load_weights(device)
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:
            raise DamagedRunError(
                f"{self.folder / WEIGHTS} does not match the model {self.folder / CONFIG} describes "
                f"('{config.model}'): {_reason(exc)}"
            ) from exc
        return model.to(device).eval()
