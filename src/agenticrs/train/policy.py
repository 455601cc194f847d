"""A trained run as a policy of the simulator's online environment.

The run's saved encoder turns the environment's candidate table (the offline impressions layout)
into model inputs exactly as it did for the logs, so what was evaluated offline is what is served.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from agenticrs.data.readers import Chunk
from agenticrs.features.batching import model_input_keys
from agenticrs.sim.environment import RequestBatch
from agenticrs.train.run import Run


class RunPolicy:
    """Scores candidates with a saved run (click probability); usable in `Environment.ab_test`."""

    def __init__(self, run_dir: str | Path, device: str = "cpu", batch_size: int = 16_384) -> None:
        run = Run(run_dir)
        self.name = Path(run_dir).name
        self.encoder = run.encoder
        self.model = run.load_model(device)
        self.device = device
        self.batch_size = batch_size

    def __call__(self, batch: RequestBatch) -> np.ndarray:
        chunk = Chunk(file=f"<environment requests of day {int(batch.requests.day[0])}>", first_row=1, table=batch.table)
        arrays = self.encoder.transform(self.encoder.parse_chunk(chunk))
        keys = model_input_keys(arrays)
        scores = np.empty(batch.num_rows, np.float32)
        with torch.no_grad():
            for start in range(0, batch.num_rows, self.batch_size):
                part = {k: torch.from_numpy(np.ascontiguousarray(arrays[k][start : start + self.batch_size])) for k in keys}
                part = {k: v.to(self.device) for k, v in part.items()}
                scores[start : start + len(part["categorical"])] = torch.sigmoid(self.model(part)["logit"]).cpu().numpy()
        return scores
