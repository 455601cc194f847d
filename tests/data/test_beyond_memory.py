"""Data beyond memory: block-shuffled batches of a memory-mapped split visit every row once, a
split larger than the bound is read with a flat RSS, and `train.memory_budget_mb` trains from
the map (with the embedding tables' size said before training)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from agenticrs.data.cache import SplitArrays, SplitWriter
from agenticrs.features.batching import iterate_batches
from agenticrs.features.blocks import iterate_block_batches
from agenticrs.progress import SilentReporter
from agenticrs.train.config import RunConfig
from agenticrs.train.workflow import train_run

SRC = Path(__file__).resolve().parents[2] / "src"


def write_split(folder: Path, rows: int, chunk: int = 250_000) -> SplitArrays:
    """A split of `rows` rows (26 int32 ids, 1 label), written chunk by chunk; row r's first id is r."""
    writer = SplitWriter(folder)
    rng = np.random.default_rng(0)
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        ids = rng.integers(0, 1000, size=(n, 26), dtype=np.int32)
        ids[:, 0] = np.arange(start, start + n)
        writer.append({"categorical": ids, "labels": (rng.random((n, 1)) < 0.3).astype(np.float32)})
    writer.close()
    return SplitArrays(folder)


def test_block_batches_visit_every_row_once_in_a_seeded_order(tmp_path: Path) -> None:
    split = write_split(tmp_path / "split", 10_007)
    assert isinstance(split["categorical"], np.memmap)

    def epoch(seed: int, number: int, skip: int = 0) -> list[np.ndarray]:
        return [b["categorical"][:, 0].numpy() for b in iterate_block_batches(
            split, 256, block_rows=1000, seed=seed, epoch=number, skip_batches=skip)]

    batches = epoch(1, 1)
    rows = np.concatenate(batches)
    assert np.array_equal(np.sort(rows), np.arange(10_007))  # every row, once
    assert [len(b) for b in batches[:-1]] == [256] * (len(batches) - 1) and len(batches) == -(-10_007 // 256)
    assert not np.array_equal(rows, np.arange(10_007))  # shuffled
    assert all(np.array_equal(a, b) for a, b in zip(batches, epoch(1, 1)))  # a function of (seed, epoch)
    assert not np.array_equal(rows, np.concatenate(epoch(1, 2)))
    assert all(np.array_equal(a, b) for a, b in zip(batches[5:], epoch(1, 1, skip=5)))  # resume at batch 5
    labels = np.concatenate([b["label"].numpy() for b in iterate_block_batches(split, 256, block_rows=1000, seed=1)])
    assert labels.sum() == split["labels"][:, 0].sum()
    with pytest.raises(ValueError, match="at least train.batch_size"):
        next(iterate_block_batches(split, 256, block_rows=100))


READER = textwrap.dedent("""
    import json, os, sys
    from agenticrs.data.cache import SplitArrays
    from agenticrs.features.batching import iterate_batches
    from agenticrs.features.blocks import iterate_block_batches
    import agenticrs.data.shards as shards

    PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1 << 20)

    def resident():  # the process's resident memory now (ru_maxrss would hide a read below the import peak)
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE_MB
    if sys.argv[2] == "no-release":
        shards.release_pages = lambda *args: None
        import agenticrs.features.blocks as blocks
        blocks.release_pages = shards.release_pages
    split = SplitArrays(__import__("pathlib").Path(sys.argv[1]))
    before = highest = resident()
    seen = 0
    for batch in iterate_block_batches(split, 4096, block_rows=65536, seed=0):
        seen += len(batch["label"])
        highest = max(highest, resident())
    for batch in iterate_batches(split, 65536):  # the evaluation path: in order
        seen += len(batch["label"])
        highest = max(highest, resident())
    print(json.dumps({"rows": seen, "growth_mb": highest - before}))
""")


@pytest.mark.slow
def test_a_split_larger_than_the_bound_is_read_with_flat_memory(tmp_path: Path) -> None:
    split = write_split(tmp_path / "split", 2_000_000)
    split_mb = sum(split[k].nbytes for k in split.keys()) / (1 << 20)
    bound_mb = 64
    assert split_mb > 3 * bound_mb  # ~206 MB on disk
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}

    def read(mode: str) -> dict:
        done = subprocess.run([sys.executable, "-c", READER, str(split.folder), mode], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    released = read("release")
    assert released["rows"] == 2 * 2_000_000
    assert released["growth_mb"] < bound_mb, released
    # the control: without releasing pages the mapped split piles up past the bound (most of the
    # split, unless the kernel reclaims clean pages meanwhile)
    kept = read("no-release")
    assert kept["growth_mb"] > bound_mb, (kept, released)


class Logs(SilentReporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    @contextmanager
    def task(self, description: str, total: float | None = None):  # type: ignore[override]
        with super().task(description, total) as task:
            yield task

    def log(self, message: str) -> None:
        self.lines.append(message)


@pytest.mark.slow
def test_memory_budget_trains_from_the_memory_map(tmp_path: Path, tiny_cache: Path) -> None:
    logs = Logs()
    settings = {"epochs": 1, "batch_size": 512, "num_threads": 1, "memory_budget_mb": 0.01, "shuffle_block_rows": 4096,
                "metrics": ["auc", "logloss"]}
    trained = train_run(RunConfig(dataset="sim-tiny", model="lr", train=settings), tmp_path, tiny_cache, logs)
    said = "\n".join(logs.lines)
    assert "train: " in said and "read from the memory-mapped cache (shuffled blocks)" in said
    assert "valid: " in said and "(in order)" in said
    assert "embedding tables: " in said and " rows, " in said
    assert isinstance(trained.data.split("train")["labels"], np.memmap)  # never loaded
    assert trained.result.valid["auc"] > 0.55
    # the ordered pass over a map gives the same rows as over memory
    valid = trained.data.split("valid")
    mapped = np.concatenate([b["label"].numpy() for b in iterate_batches(valid, 1000)])
    assert np.array_equal(mapped, np.asarray(valid["labels"][:, 0]))
