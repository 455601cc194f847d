"""Run directories: self-describing folders that anything can load and score with.

A run holds `config.yaml` (the effective run config), `dataset.yaml` (the data set spec),
`encoder.json`, `schema.json`, `weights.pt` (the best checkpoint), `metrics.jsonl` (one record
per epoch, appended and flushed as training goes) and `summary.json` (written last).
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import torch

from agenticrs.config import dump_yaml, load_yaml
from agenticrs.data.spec import DatasetSpec
from agenticrs.features.encoder import FeatureEncoder
from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import Model, build_model
from agenticrs.train.config import RunConfig

CONFIG, DATASET, ENCODER, SCHEMA, WEIGHTS, METRICS, SUMMARY = (
    "config.yaml",
    "dataset.yaml",
    "encoder.json",
    "schema.json",
    "weights.pt",
    "metrics.jsonl",
    "summary.json",
)


class Run:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    # -- creation -------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, name: str) -> "Run":
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = Path(root) / f"{name}-{stamp}-{secrets.token_hex(2)}"
        folder.mkdir(parents=True, exist_ok=False)
        return cls(folder)

    def write_setup(self, config: RunConfig, spec: DatasetSpec, encoder: FeatureEncoder) -> None:
        dump_yaml(config.model_dump(mode="json"), self.folder / CONFIG)
        spec.to_yaml(self.folder / DATASET)
        encoder.save(self.folder / ENCODER)
        (self.folder / SCHEMA).write_text(json.dumps(encoder.schema().to_dict(), indent=1))

    def log(self, record: dict[str, Any]) -> None:
        with (self.folder / METRICS).open("a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()

    def save_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        tmp = self.folder / (WEIGHTS + ".tmp")
        torch.save(state_dict, tmp)
        tmp.replace(self.folder / WEIGHTS)

    def write_summary(self, summary: dict[str, Any]) -> None:
        (self.folder / SUMMARY).write_text(json.dumps(summary, indent=1))

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
        state = torch.load(self._require(WEIGHTS), map_location=device, weights_only=True)
        model.load_state_dict(state)
        return model.to(device).eval()
