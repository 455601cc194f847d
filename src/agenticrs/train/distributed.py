"""Data-parallel training with torch.distributed: the one engine, on every rank.

`agenticrs train --nproc N` starts N processes through torchrun (`torch.distributed.run`); each
joins one process group (gloo on CPU, nccl on GPUs) and runs the ordinary engine, which, when a
group is initialised:

- wraps the model in `DistributedDataParallel` for the training step (gradients all-reduced,
  averaged over ranks), so every rank holds the same weights after every step; a task whose loss
  is not the model's forward (sequential: `model.loss`) hands the engine a module whose forward
  is that loss (`Task.train_module`), and DDP wraps that;
- trains each rank on its own contiguous slice of the processed training split
  (`agenticrs.data.shards`), with a per-rank batch of `train.batch_size / N`: the global batch is
  the configured one, so an N-process run follows the same optimisation as a 1-process run;
- takes the smallest per-rank number of steps per epoch (every rank must take every step);
- evaluates on rank 0 only, decides early stopping and the best checkpoint there, and broadcasts
  the decision (a time budget too), so that all ranks stop at the same step;
- writes the run directory once, from rank 0.

Nothing here is a home-made collective: the process group, DDP and broadcasts are torch's.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (which sets RANK, WORLD_SIZE, MASTER_ADDR)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR"))


def init_from_env(device: str = "cpu") -> DistContext:
    """Join the process group torchrun describes in the environment (once); a context of one
    process when not launched by torchrun. gloo on CPU, nccl when training on CUDA."""
    if dist.is_available() and dist.is_initialized():
        return current()
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistContext()
    backend = "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return current()


def current() -> DistContext:
    """The context of the initialised group, or of one process."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size())
    return DistContext()


def shutdown(finished: bool = False) -> None:
    """Leave the process group. `finished`: this rank ended normally, so first wait for every rank
    to end too: a rank that tears down its transport while a peer still has gloo work in flight can
    make the peer abort at exit ("terminate called without an active exception"). After an error
    the ranks do not wait for one another (a peer stuck in a collective would hang the barrier;
    torchrun stops it). Unreachable DDP wrappers are collected first: a reducer that outlives
    the group would destroy its gloo work at interpreter exit, where that can abort the process."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        if finished and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (nothing without a group)."""
    if current().active:
        dist.barrier()


def local_batch_size(global_batch: int, world_size: int) -> int:
    """Each rank's batch: the global batch split evenly (a clear error when it does not divide)."""
    if global_batch % world_size:
        raise ValueError(
            f"train.batch_size {global_batch} is the global batch and must divide evenly over {world_size} "
            f"processes (e.g. {global_batch - global_batch % world_size or world_size})"
        )
    return global_batch // world_size


class DataParallel(DistributedDataParallel):
    """DDP that lets a task read the model's own attributes (`targets`, `labelled_loss`, ...)
    through the wrapper, so tasks call the wrapper exactly as they call the bare model."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model to train with: DDP over the group, or the model itself without one."""
    if not current().active:
        return model
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DataParallel(model, device_ids=ids)


def _tensor(values: list[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, device=device if dist.get_backend() == "nccl" else "cpu")


def broadcast_from_main(values: list[float], device: torch.device) -> list[float]:
    """Rank 0's `values` on every rank (the same length everywhere)."""
    if not current().active:
        return values
    tensor = _tensor(values, device)
    dist.broadcast(tensor, src=0)
    return tensor.cpu().tolist()


def broadcast_object_from_main(value: T) -> T:
    """Rank 0's picklable `value` on every rank (e.g. semantic IDs fitted once, on rank 0)."""
    if not current().active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_min(value: int, device: torch.device) -> int:
    """The smallest `value` over the ranks."""
    if not current().active:
        return value
    tensor = _tensor([float(value)], device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def all_sum(value: float, device: torch.device) -> float:
    """The sum of `value` over the ranks."""
    if not current().active:
        return value
    tensor = _tensor([float(value)], device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item())
