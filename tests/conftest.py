"""Shared fixtures: a tiny processed synthetic data set, generated once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from agenticrs.data.synthetic import generate_synthetic
from agenticrs.features.pipeline import ProcessedDataset, process_dataset

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per worker: pytest-xdist already runs one worker per core, and oversubscribed
    # intra-op threads slow training by an order of magnitude on a 2-core machine
    torch.set_num_threads(1)
    os.environ["AGENTICRS_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agenticrs-cache")


@pytest.fixture(scope="session")
def tiny_synthetic(tiny_cache: Path) -> ProcessedDataset:
    """The 'tiny' synthetic preset (20k impressions, histories), processed."""
    spec = generate_synthetic("tiny", tiny_cache / "generated" / "synthetic-tiny")
    return process_dataset(spec, tiny_cache)
