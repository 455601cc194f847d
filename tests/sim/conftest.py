"""Simulated worlds shared by the simulator tests (generated once per session)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agenticrs.data.simulated import write_simulation
from agenticrs.sim import sim_preset


def read_split_tables(folder: Path, prefix: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(str(folder / f"{prefix}_{s}.parquet")) for s in ("train", "valid", "test")])


@pytest.fixture(scope="session")
def split_tables():
    """`split_tables(folder, prefix)`: the train, valid and test files of a table, concatenated."""
    return read_split_tables


@pytest.fixture(scope="session")
def tiny_sim(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim_tiny")
    write_simulation(sim_preset("tiny", seed=5), out, name="sim-tiny")
    return out


@pytest.fixture(scope="session")
def small_sim(tmp_path_factory) -> Path:
    """The `small` preset (~200k impressions): large enough for calibration checks."""
    out = tmp_path_factory.mktemp("sim_small")
    write_simulation(sim_preset("small", seed=11), out, name="sim-small")
    return out


@pytest.fixture(scope="session")
def small_impressions(small_sim) -> pa.Table:
    return read_split_tables(small_sim, "impressions")
