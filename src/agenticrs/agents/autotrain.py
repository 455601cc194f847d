"""AutoTrain's executor: train one learner of a candidate and keep its predictions.

A learner is an ordinary run (the foundation's trainer, run directory and saved encoder), so a
champion's members can be evaluated, served or A/B-tested like any `agenticrs train` run. Its
early stopping watches the evolution's `stop` slice of train; its predictions on valid, gate and
test are written next to the weights (`predictions.npz`, atomically) and are what the EnsNAS
statistics, the gate and the report read. Training is deterministic for a seed, which is what
lets a resumed evolution redo an interrupted training and land on the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agenticrs.agents.candidate import Candidate
from agenticrs.agents.splits import EvolutionData
from agenticrs.features.actions import FittedFeatures, dump_actions, featured, fit_features
from agenticrs.features.subset import field_names, protected_fields
from agenticrs.models.base import build_model
from agenticrs.progress import SILENT, Reporter
from agenticrs.runtime import resolve_device, seed_everything
from agenticrs.train.config import TrainConfig
from agenticrs.train.ctr import predict_probs
from agenticrs.train.metrics import compute_metrics
from agenticrs.train.run import Run
from agenticrs.train.trainer import Trainer
from agenticrs.train.workflow import with_model_train_defaults

PREDICTIONS = "predictions.npz"
REPORT_METRICS = ["auc", "logloss", "brier"]
SPLITS = ("valid", "gate", "test")


@dataclass
class MemberResult:
    run_dir: Path
    predictions: dict[str, np.ndarray]  # split -> probabilities (float64)
    metrics: dict[str, dict[str, float]]  # split -> metric -> value
    cost_s: float
    epochs: int


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_predictions(run_dir: Path) -> dict[str, np.ndarray]:
    path = Path(run_dir) / PREDICTIONS
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no {PREDICTIONS}: the training did not finish")
    with np.load(path) as stored:
        return {k: stored[k].astype(np.float64) for k in stored.files}


class MemberTrainer:
    """Trains learners of candidates on one evolution's data."""

    def __init__(self, evo: EvolutionData, base: TrainConfig, label_index: int = 0, reporter: Reporter = SILENT):
        self.evo = evo
        self.base = base
        self.label_index = label_index
        self.reporter = reporter
        schema = evo.data.schema
        self.all_fields = field_names(schema)
        self.protected = protected_fields(schema)
        self._fitted: dict[str, FittedFeatures] = {}

    @property
    def device(self) -> str:
        """The trainings' device setting (what an executor reads to ask for a GPU)."""
        return self.base.device

    def features(self, candidate: Candidate) -> FittedFeatures | None:
        """The candidate's feature actions fitted on the evolution's train rows (never the stop
        slice, valid, gate or test); fitted once per action list and shared by its learners."""
        if not candidate.features:
            return None
        key = json.dumps(dump_actions(candidate.features), sort_keys=True)
        if key not in self._fitted:
            self._fitted[key] = fit_features(candidate.features, self.evo.fit)
        return self._fitted[key]

    def run_dir(self, root: Path, candidate_id: int, role: str, seed: int) -> Path:
        return Path(root) / f"candidate-{candidate_id}" / f"{role}-seed{seed}"

    def train(self, candidate: Candidate, seed: int, folder: Path) -> MemberResult:
        """Train (from scratch: a half-written folder from a killed run is replaced)."""
        fitted = self.features(candidate)
        fit_data = featured(self.evo.fit, fitted)
        all_fields, protected = self.all_fields, self.protected
        if fitted is not None:  # bagging draws from the fields the actions leave
            all_fields, protected = field_names(fit_data.schema), protected_fields(fit_data.schema)
        config = with_model_train_defaults(candidate.run_config(
            self.evo.data.spec.name, seed, self.base, all_fields, protected, name=folder.name
        ))
        if folder.exists():
            for stale in folder.iterdir():
                stale.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        run = Run(folder)
        data = self.evo.data
        run.write_setup(config, data.spec, data.encoder, fitted)
        started = time.perf_counter()
        seed_everything(seed)
        model = build_model(config.model, fit_data.schema, config.model_params)
        result = Trainer(config.train, self.reporter).fit(model, fit_data, run)
        device = resolve_device(config.train.device)
        predictions: dict[str, np.ndarray] = {}
        metrics: dict[str, dict[str, float]] = {"stop": dict(result.valid)}
        for split in SPLITS:
            rows = self.evo.split(split) if split != "test" or self.evo.test is not None else None
            if rows is None:
                continue
            if fitted is not None:
                rows = fitted.transform(rows)
            probs = predict_probs(model, rows, config.train.eval_batch_size, device).astype(np.float64)
            predictions[split] = probs
            metrics[split] = compute_metrics(REPORT_METRICS, self.evo.labels(split, self.label_index), probs)
        stored = {k: v.astype(np.float32) for k, v in predictions.items()}
        run.save_arrays(PREDICTIONS, **stored)
        cost = time.perf_counter() - started
        # the float32 values that were stored, so a resumed run reads exactly what this one used
        as_stored = {k: v.astype(np.float64) for k, v in stored.items()}
        return MemberResult(folder, as_stored, metrics, cost, len(result.history))
