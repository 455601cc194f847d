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
    # within seed noise: sim-tiny's valid AUC of this model after 2 epochs spreads 0.017 over seeds
    # (0.705, 0.724, 0.676, 0.703, 0.709, 0.686 for seeds 1-6), so the difference of two runs has a
    # standard deviation of ~0.024; 0.05 is about two of those
    assert summary["valid"]["auc"] == pytest.approx(one.result.valid["auc"], abs=0.05)


# -- the sequential task (SASRec, TIGER) through the same engine ------------------------------------------------------

@pytest.mark.parametrize("mode", ["sequence", "prefixes"])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_users_split_the_epochs_examples(mode: str, world: int) -> None:
    from agenticrs.gr.base import SequenceData
    from agenticrs.gr.sequences import count_next_item_examples
    from agenticrs.gr.train import examples_per_user, rank_users

    lengths = np.random.default_rng(0).integers(1, 9, size=41)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    part = SequenceData(name="t", num_items=50, users=np.arange(100, 141), offsets=offsets,
                        items=np.random.default_rng(1).integers(1, 51, size=int(offsets[-1])))
    shards = [rank_users(part, mode, rank, world) for rank in range(world)]
    assert np.array_equal(np.concatenate([s.users for s in shards]), part.users)  # disjoint, in order, every user
    assert np.array_equal(np.concatenate([s.items for s in shards]), part.items)
    assert all(np.array_equal(np.diff(s.offsets), lengths[np.isin(part.users, s.users)]) for s in shards)
    counts = [count_next_item_examples(s, mode) for s in shards]
    assert sum(counts) == count_next_item_examples(part, mode)
    # one example a user (SASRec): exactly rank_bounds of the examples; prefixes (TIGER): within one user's
    total, most = sum(counts), int(examples_per_user(part, mode).max())
    targets = [stop - start for start, stop in (rank_bounds(total, rank, world) for rank in range(world))]
    slack = 0 if mode == "sequence" else most - 1
    assert all(abs(c - t) <= 2 * slack for c, t in zip(counts, targets))


RANKS_AGREE = """
import json, sys
import numpy as np
import torch
import torch.distributed as dist
from agenticrs.gr.base import SemanticIds
from agenticrs.gr.sequences import resolve_sequences
from agenticrs.gr.train import SequentialTrainConfig, train_sequential
from agenticrs.gr.zoo import build_sequential
from agenticrs.train import distributed

ctx = distributed.init_from_env("cpu")
data = resolve_sequences("sim-tiny", sys.argv[1])
codes = np.zeros((data.num_items + 1, 2), dtype=np.int64)
codes[1:] = np.stack(np.divmod(np.arange(data.num_items), 64), axis=1)  # unique codes, no tokenizer needed
sids = SemanticIds(codes=codes, vocab_sizes=(int(codes[:, 0].max()) + 1, 64)) if sys.argv[3] == "tiger" else None
torch.manual_seed(ctx.rank)  # different initial weights per rank: DDP must start every rank from rank 0's
model = build_sequential(sys.argv[3], data.num_items, json.loads(sys.argv[4]), semantic_ids=sids)
start = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
result = train_sequential(model, data, SequentialTrainConfig(epochs=1, batch_size=64, max_steps_per_epoch=3,
                                                             num_threads=1))
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
gathered = [torch.zeros_like(flat) for _ in range(ctx.world_size)]
dist.all_gather(gathered, flat)
if ctx.is_main:
    json.dump({"steps": result.steps, "max_diff": max(float((g - flat).abs().max()) for g in gathered),
               "moved": float((flat - start).abs().max())}, open(sys.argv[2], "w"))
distributed.shutdown(finished=True)
"""
TINY_SEQUENTIAL = {
    "sasrec": {"dim": 16},
    "tiger": {"d_model": 16, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_heads": 2, "head_dim": 8,
              "ffn_dim": 32, "max_len": 10, "beam_size": 10},
}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["sasrec", "tiger"])
def test_sequential_ranks_hold_the_same_weights_after_every_step(model: str, tmp_path: Path, tiny_cache: Path) -> None:
    """The loss goes through DDP's forward (`LossModule`): the gradients are all-reduced, so the
    ranks, trained on different users from different initial weights, end with equal weights."""
    from agenticrs.gr.sequences import resolve_sequences

    resolve_sequences("sim-tiny", tiny_cache)  # cached once, before two processes read it
    script = tmp_path / "ranks_agree.py"
    script.write_text(RANKS_AGREE)
    out = tmp_path / "agree.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               str(tiny_cache), str(out), model, json.dumps(TINY_SEQUENTIAL[model])]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    agree = json.loads(out.read_text())
    assert agree["steps"] == 3 and agree["moved"] > 0
    assert agree["max_diff"] == 0.0


@pytest.mark.slow
def test_two_processes_train_sasrec_like_one_with_the_same_global_batch(tmp_path: Path, tiny_cache: Path) -> None:
    from agenticrs.gr.workflow import SequentialJob, run_sequential_job

    settings = {"epochs": 3, "batch_size": 128, "num_threads": 1, "seed": 3}
    job = SequentialJob(dataset="sim-tiny", model="sasrec", model_params=TINY_SEQUENTIAL["sasrec"], train=settings)
    _, one = run_sequential_job(job, tmp_path / "one", tiny_cache)
    command = [sys.executable, "-m", "agenticrs.cli.main", "train", "--task", "sequential", "--nproc", "2",
               "-d", "sim-tiny", "-m", "sasrec", "-q", "--runs-dir", str(tmp_path / "two"), "--cache-dir", str(tiny_cache),
               "--set", "model_params.dim=16"]
    command += [arg for key, value in settings.items() for arg in ("--set", f"train.{key}={json.dumps(value)}")]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "data parallel: 2 processes, 128 sequences per global batch (64 per process)" in done.stdout
    runs = list((tmp_path / "two").iterdir())
    assert len(runs) == 1  # written once, by rank 0
    run = runs[0]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["batch_size"] == 128  # the global batch
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]  # only rank 0 logs
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == one.steps  # the same number of global steps
    # batches hold other users than the 1-process run's (each rank draws its own): close, not equal
    assert summary["valid"]["ndcg@10"] == pytest.approx(one.valid["ndcg@10"], abs=0.02)
