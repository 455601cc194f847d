"""A trained run as a policy of the simulator's online environment.

The run's saved encoder turns the environment's candidate table (the offline impressions layout)
into model inputs exactly as it did for the logs (`Scorer`), so what was evaluated offline is what
is served.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agenticrs.sim.environment import RequestBatch
from agenticrs.train.scoring import Scorer


class RunPolicy:
    """Scores candidates with a saved run (click probability); usable in `Environment.ab_test`."""

    def __init__(self, run_dir: str | Path, device: str = "cpu", batch_size: int = 16_384) -> None:
        self.scorer = Scorer(run_dir, device=device, batch_size=batch_size)
        self.name = self.scorer.name

    def __call__(self, batch: RequestBatch) -> np.ndarray:
        return self.scorer.score(batch.table, source=f"<environment requests of day {int(batch.requests.day[0])}>")
