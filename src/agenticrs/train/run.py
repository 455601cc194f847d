"""Run directories: self-describing folders that anything can load and score with.

A run holds `config.yaml` (the effective run config), `dataset.yaml` (the data set spec),
`encoder.json`, `schema.json`, `weights.pt` (the best checkpoint), `metrics.jsonl` (one record
per evaluation, appended and flushed as training goes), `checkpoint.pt` (what a resumed run
continues from; removed when training ends) and `summary.json` (written last).

One writer for every task: CTR runs add the data set spec and encoder (`write_setup`), sequential
runs their item count and semantic IDs (`write_config`, `save_arrays`). Every whole-file write is
atomic (`agenticrs.runtime.files`), so a run killed at any moment leaves complete files.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agenticrs.config import dump_yaml, load_yaml
from agenticrs.data.spec import DatasetSpec
from agenticrs.features.encoder import FeatureEncoder
from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import Model, build_model
from agenticrs.runtime.files import atomic_save, atomic_write_json, atomic_write_text
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


class Run:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    # -- creation -------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, name: str) -> Run:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = Path(root) / f"{name}-{stamp}-{secrets.token_hex(2)}"
        folder.mkdir(parents=True, exist_ok=False)
        return cls(folder)

    @classmethod
    def at(cls, folder: str | Path) -> Run:
        """A run in a given folder (created if missing)."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        return cls(folder)

    def write_setup(self, config: RunConfig, spec: DatasetSpec, encoder: FeatureEncoder) -> None:
        """What a CTR run needs to be rebuilt: its config, data set spec, encoder and schema."""
        self.write_config(config.model_dump(mode="json"))
        spec.to_yaml(self.folder / DATASET)
        encoder.save(self.folder / ENCODER)
        self.write_json(SCHEMA, encoder.schema().to_dict())

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
            handle.write(json.dumps(record) + "\n")
            handle.flush()

    def rewrite_log(self, records: list[dict[str, Any]]) -> None:
        """The log as a checkpoint knew it (a resumed run drops records written after it)."""
        atomic_write_text(self.folder / METRICS, "".join(json.dumps(r) + "\n" for r in records))

    # -- weights and checkpoints ----------------------------------------------------------------
    def save_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        atomic_save(self.folder / WEIGHTS, lambda handle: torch.save(state_dict, handle))

    def has_weights(self) -> bool:
        return (self.folder / WEIGHTS).is_file()

    def load_weights(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        return torch.load(self._require(WEIGHTS), map_location=device, weights_only=True)

    def save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        atomic_save(self.folder / CHECKPOINT, lambda handle: torch.save(checkpoint, handle))

    def has_checkpoint(self) -> bool:
        return (self.folder / CHECKPOINT).is_file()

    def load_checkpoint(self, device: str | torch.device = "cpu") -> dict[str, Any] | None:
        path = self.folder / CHECKPOINT
        if not path.is_file():
            return None
        # the checkpoint holds generator states and plain Python records besides tensors
        return torch.load(path, map_location=device, weights_only=False)

    def remove_checkpoint(self) -> None:
        (self.folder / CHECKPOINT).unlink(missing_ok=True)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.folder / SUMMARY, summary)

    # -- loading --------------------------------------------------------------------------
    def _require(self, name: str) -> Path:
        path = self.folder / name
        if not path.exists():
            raise FileNotFoundError(f"{self.folder} is not a complete run directory: {name} is missing")
        return path

    @property
    def config(self) -> RunConfig:
        return RunConfig.model_validate(load_yaml(self._require(CONFIG)))

    @property
    def spec(self) -> DatasetSpec:
        return DatasetSpec.from_dict(load_yaml(self._require(DATASET)), source=str(self.folder / DATASET))

    @property
    def encoder(self) -> FeatureEncoder:
        return FeatureEncoder.load(self._require(ENCODER))

    @property
    def schema(self) -> FeatureSchema:
        return FeatureSchema.from_dict(json.loads(self._require(SCHEMA).read_text()))

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads(self._require(SUMMARY).read_text())

    def metrics_log(self) -> list[dict[str, Any]]:
        path = self.folder / METRICS
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def load_model(self, device: str | torch.device = "cpu") -> Model:
        config = self.config
        model = build_model(config.model, self.schema, config.model_params, smoke=config.smoke)
        model.load_state_dict(self.load_weights(device))
        return model.to(device).eval()
