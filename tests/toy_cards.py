"""A method card small enough to reproduce in seconds (DeepFM against LR on `synthetic-tiny`, 4
steps), shared by the reproduction tests and the Ray executor's."""

from __future__ import annotations

TOY_CARD = {
    "name": "toy", "claim": {"statement": "DeepFM beats LR", "baseline": "lr"},
    "model": {"name": "deepfm", "params": {"hidden_units": [16]}}, "baselines": [{"name": "lr"}],
    "datasets": [{"dataset": "synthetic-tiny", "expected": "holds",
                  "protocol": {"step_budget": 4, "eval_every_steps": 2, "train": {"batch_size": 512, "num_threads": 1}},
                  "settings": {"lr": {"train": {"learning_rate": 0.01}}}}],
    "seeds": [1, 2],
}  # fmt: skip
