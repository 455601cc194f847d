"""A trained run as a policy of the simulator's online environment.

The run's saved encoder turns the environment's candidate table (the offline impressions layout)
into model inputs exactly as it did for the logs (`Scorer`), so what was evaluated offline is what
is served.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agenticrs.sim.environment import RequestBatch
from agenticrs.sim.world import World
from agenticrs.train.scoring import Scorer

if TYPE_CHECKING:
    from agenticrs.sim.config import SimConfig


class RunPolicy:
    """Scores candidates with a saved run (click probability); usable in `Environment.ab_test`."""

    def __init__(self, run_dir: str | Path, device: str = "cpu", batch_size: int = 16_384) -> None:
        self.scorer = Scorer(run_dir, device=device, batch_size=batch_size)
        self.name = self.scorer.name

    def __call__(self, batch: RequestBatch) -> np.ndarray:
        return self.scorer.score(batch.table, source=f"<environment requests of day {int(batch.requests.day[0])}>")


def world_of_run(folder: str | Path) -> World | None:
    """The simulated world a CTR run was trained on, rebuilt from the `meta.json` that the
    simulator wrote next to the run's training files (None when the run's data is not simulated)."""
    from agenticrs.sim.world import build_world

    config = sim_config_of_run(folder)
    return None if config is None else build_world(config)


def sim_config_of_run(folder: str | Path) -> SimConfig | None:
    """The simulator configuration of a run's training logs (None when its data is not simulated):
    cheap, so that several runs can be checked to share one world before any is built."""
    from agenticrs.sim.config import SimConfig
    from agenticrs.train.run import Run

    files = Run(folder).spec.files.get("train") or []
    for path in files[:1]:
        meta = Path(path).parent / "meta.json"
        if meta.is_file():
            return SimConfig.model_validate(json.loads(meta.read_text())["config"])
    return None
