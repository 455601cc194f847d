"""CTR training through the one engine: `Trainer(config).fit(model, data, run)`.

A thin entry point kept for the agents, the CLI and the benchmarks: it builds the CTR task
(`agenticrs.train.ctr.CTRTask`) and hands it to `agenticrs.train.engine.Engine`, which owns the
loop, early stopping, checkpoints and the run directory.
"""

from __future__ import annotations

from agenticrs.features.pipeline import ProcessedDataset
from agenticrs.models.base import Model
from agenticrs.progress import SILENT, Reporter
from agenticrs.runtime import resolve_device, seed_everything
from agenticrs.train.config import TrainConfig
from agenticrs.train.ctr import CTRTask, evaluate, predict_probs
from agenticrs.train.engine import Engine, TrainResult
from agenticrs.train.metrics import metric_spec
from agenticrs.train.optim import make_optimizer
from agenticrs.train.run import Run

__all__ = [
    "Trainer",
    "TrainResult",
    "evaluate",
    "make_optimizer",
    "predict_probs",
    "resolve_device",
    "seed_everything",
]


class Trainer:
    """Trains a CTR (or multi-task) model on a processed data set."""

    def __init__(self, config: TrainConfig, reporter: Reporter = SILENT) -> None:
        self.config = config
        self.reporter = reporter
        for name in [*config.metrics, config.monitor]:
            metric_spec(name)  # an unknown metric fails here, naming the known ones

    def fit(
        self, model: Model, data: ProcessedDataset, run: Run | None = None, resume: bool = False,
        train_split: str = "train",
    ) -> TrainResult:  # fmt: skip
        task = CTRTask(data, self.config, model, train_split=train_split)
        return Engine(self.config, self.reporter).fit(model, task, run, resume=resume)
