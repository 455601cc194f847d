"""Data-parallel training (`agenticrs train --nproc N`): rank slices of the cache, the global
batch, and a 2-process run against a 1-process run with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from agenticrs.data.cache import SplitArrays
from agenticrs.data.shards import SplitShard, rank_bounds
from agenticrs.features.pipeline import ProcessedDataset
from agenticrs.train.config import RunConfig
from agenticrs.train.distributed import DistContext, current, local_batch_size
from agenticrs.train.workflow import train_run

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.parametrize("rows", [0, 1, 7, 20_000])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_rank_bounds_are_disjoint_and_cover_the_rows(rows: int, world: int) -> None:
    bounds = [rank_bounds(rows, rank, world) for rank in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous: no gap, no overlap
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_each_rank_reads_its_own_slice_of_the_memory_mapped_split(tiny_synthetic: ProcessedDataset) -> None:
    # the split freshly opened from its folder: the shared fixture's may have been loaded into memory
    train = SplitArrays(tiny_synthetic.split("train").folder)
    for world in (2, 3):
        shards = [SplitShard.of_rank(train, rank, world) for rank in range(world)]
        assert sum(s.rows for s in shards) == train.rows
        for key in train.keys():
            whole = np.asarray(train[key])
            parts = [s[key] for s in shards]
            # a slice of the map, not a copy: a rank pages in its own byte range only
            assert all(isinstance(p, np.memmap) for p in parts if isinstance(whole, np.ndarray) and p.size)
            assert np.array_equal(np.concatenate([np.asarray(p) for p in parts]), whole)
        shards[0].load_in_memory()
        assert not isinstance(shards[0]["labels"], np.memmap) and shards[0]["labels"].shape[0] == shards[0].rows
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        SplitShard.of_rank(train, 2, 2)


def test_the_configured_batch_is_the_global_batch() -> None:
    assert local_batch_size(512, 2) == 256
    with pytest.raises(ValueError, match="must divide evenly over 3 processes"):
        local_batch_size(512, 3)
    assert current() == DistContext() and DistContext().is_main and not DistContext().active


@pytest.mark.slow
def test_two_processes_reach_the_one_process_auc_with_the_same_global_batch(tmp_path: Path, tiny_cache: Path) -> None:
    settings = {"epochs": 2, "batch_size": 512, "num_threads": 1, "seed": 3, "metrics": ["auc", "logloss"]}
    one = train_run(RunConfig(dataset="sim-tiny", model="dnn", train=settings), tmp_path / "one", tiny_cache)
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "agenticrs.cli.main", "train", "--nproc", "2", "-d", "sim-tiny", "-m", "dnn", "-q",
               "--runs-dir", str(tmp_path / "two"), "--cache-dir", str(tiny_cache)]
    command += [arg for key, value in settings.items() for arg in ("--set", f"train.{key}={json.dumps(value)}")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "data parallel: 2 processes, 512 rows per global batch (256 per process)" in done.stdout
    runs = list((tmp_path / "two").iterdir())
    assert len(runs) == 1  # written once, by rank 0
    run = runs[0]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["batch_size"] == 512  # the global batch
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]  # one line per evaluation: only rank 0 logs
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == one.result.steps  # the same number of global steps
    # within seed noise: sim-tiny's valid AUC of this model spreads ~0.015 over seeds
    assert summary["valid"]["auc"] == pytest.approx(one.result.valid["auc"], abs=0.03)
