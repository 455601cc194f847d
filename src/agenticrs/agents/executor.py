"""Where the agents' trainings run: in this process (`local`) or as Ray tasks (`ray`).

The coordinator hands an executor `TrainingJob`s (one learner of one candidate: its seed, role and
run folder) and reads back `MemberResult`s; it alone writes the knowledge database. An executor
never touches the database, so the records, decisions and champion of an evolution do not depend on
where the learners trained: a learner is deterministic for its seed, and the coordinator records
the results in the order it submitted the jobs, whatever order they finish in.

- `LocalExecutor` trains a job when its result is asked for: exactly the sequential behaviour the
  coordinator always had (one learner at a time, in this process).
- `RayExecutor` submits every job of a step at once as a Ray task with a CPU (and, where the
  trainer's device is CUDA, GPU) request, so the two learners of a candidate and the extra learners
  of an audit train side by side up to the cluster's capacity. The evolution's data is put in the
  object store once. A task whose worker process dies (killed, out of memory, node lost) is
  retried by Ray (`max_retries`); training is deterministic and replaces a half-written folder,
  so a retry gives the same learner. The run folder's files travel back with the result and are
  written on the coordinator's side when the worker ran on another machine (no shared file system
  needed).

The executors are not tied to the coordinator's learners: an executor is made from a shared
context (the "trainer", put in Ray's object store once) and a `train_fn(trainer, job)`. The
coordinator's are a `MemberTrainer` and `train_job`; a method-card reproduction's are its arm
trainer and `agents.paper.reproduce.run_arm_job`. A job has a `label`; a result that has a
`run_dir` has that folder's files carried back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agenticrs.agents.autotrain import PREDICTIONS, MemberResult, MemberTrainer
from agenticrs.agents.candidate import Candidate
from agenticrs.runtime import atomic_write


@dataclass(frozen=True)
class TrainingJob:
    """One learner to train: everything a worker needs besides the evolution's data."""

    candidate_id: int
    candidate: Candidate
    role: str
    seed: int
    folder: Path

    @property
    def label(self) -> str:
        return f"#{self.candidate_id} {self.role} seed {self.seed}"


# (shared context, job) -> result: a `MemberTrainer` and a `TrainingJob` give a `MemberResult`
TrainFn = Callable[[Any, Any], Any]


def train_job(trainer: MemberTrainer, job: TrainingJob) -> MemberResult:
    """The work of one job (the default `TrainFn`; tests wrap it to inject faults)."""
    return trainer.train(job.candidate, job.seed, job.folder)


class PendingTraining(Protocol):
    job: Any  # the submitted job (a `TrainingJob` for the coordinator)

    def result(self) -> Any:
        """The trained learner; raises the training's exception."""

    def cancel(self) -> None:
        """Give up on a job whose result is no longer needed."""


class Executor(Protocol):
    name: str
    concurrent: bool  # True: submitted jobs run at once (the live view lists them as running)

    def submit(self, job: Any) -> PendingTraining: ...

    def capacity(self) -> int:
        """How many jobs can train at once."""

    def close(self) -> None: ...


class _Deferred:
    """A local job: trained in this process when its result is first asked for."""

    def __init__(self, job: Any, run: Callable[[], Any]) -> None:
        self.job = job
        self._run: Callable[[], Any] | None = run
        self._result: Any = None

    def result(self) -> Any:
        if self._result is None:
            if self._run is None:
                raise RuntimeError(f"training {self.job.label} was cancelled")
            self._result = self._run()
        return self._result

    def cancel(self) -> None:
        self._run = None


class LocalExecutor:
    """Trains one learner at a time, in this process (today's behaviour)."""

    name = "local"
    concurrent = False

    def __init__(self, trainer: Any, train_fn: TrainFn = train_job) -> None:
        self.trainer = trainer
        self.train_fn = train_fn

    def submit(self, job: Any) -> PendingTraining:
        return _Deferred(job, lambda: self.train_fn(self.trainer, job))

    def capacity(self) -> int:
        return 1

    def close(self) -> None:
        """Nothing to release."""


def _result_folder(result: Any) -> Path | None:
    """The run folder a result names (`run_dir`), if any."""
    folder = getattr(result, "run_dir", None)
    return Path(folder) if folder is not None else None


def _run_folder_files(folder: Path | None) -> dict[str, bytes]:
    if folder is None or not folder.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _ray_train(trainer: Any, train_fn: TrainFn, job: Any, threads: int) -> tuple[Any, dict[str, bytes]]:
    """Body of a Ray task: train, then return the result and the run folder's files."""
    import torch

    torch.set_num_threads(threads)  # as many intra-op threads as CPUs the task was granted
    os.environ["AGENTICRS_NUM_THREADS"] = str(threads)
    result = train_fn(trainer, job)
    return result, _run_folder_files(_result_folder(result))


def _complete_here(folder: Path, files: dict[str, bytes]) -> bool:
    """Whether this machine already has the folder the worker wrote (same machine or shared storage)."""
    return all((folder / name).is_file() and (folder / name).stat().st_size == len(content)
               for name, content in files.items())  # fmt: skip


class _RayPending:
    def __init__(self, job: Any, ref: Any) -> None:
        self.job = job
        self.ref = ref

    def result(self) -> Any:
        import ray

        try:
            result, files = ray.get(self.ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):  # the training's own exception, as the local executor raises it
                raise cause from exc
            raise
        folder = _result_folder(result)
        if folder is not None and files and not _complete_here(folder, files):  # trained on another machine
            folder.mkdir(parents=True, exist_ok=True)
            # predictions.npz last: it is what marks a learner's folder as complete
            for name, content in sorted(files.items(), key=lambda item: item[0] == PREDICTIONS):
                with atomic_write(folder / name, "wb") as handle:
                    handle.write(content)
        return result

    def cancel(self) -> None:
        import ray

        ray.cancel(self.ref, force=True)


class RayExecutor:
    """Trains learners as Ray tasks (one CPU each by default, one GPU each on a CUDA trainer).

    `address`: an existing cluster (`ray://host:10001` or `host:6379`, or "auto"); None starts a
    private local Ray instance (workers on this machine, dashboard off) that `close` stops."""

    name = "ray"
    concurrent = True

    def __init__(
        self,
        trainer: Any,
        address: str | None = None,
        num_cpus: float = 1,
        num_gpus: float | None = None,
        max_retries: int = 3,
        train_fn: TrainFn = train_job,
        local_cpus: int | None = None,
    ) -> None:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is a dependency; a broken install says so
            raise RuntimeError("the ray executor needs the `ray` package: pip install ray") from exc
        if num_cpus <= 0:
            raise ValueError(f"num_cpus per training must be positive, got {num_cpus}")
        self.trainer = trainer
        self.num_cpus = num_cpus
        if num_gpus is None:  # the shared context says which device its trainings use
            num_gpus = 1.0 if getattr(trainer, "device", "cpu") in ("cuda", "auto") and _has_cuda() else 0.0
        self.num_gpus = num_gpus
        self._owns = not ray.is_initialized()
        if self._owns:
            if address is None:
                start_local_ray(local_cpus)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        self._trainer_ref = ray.put(trainer)  # the evolution's data, once, in the object store
        self._remote = ray.remote(_ray_train).options(
            num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries, retry_exceptions=False
        )
        self.train_fn = train_fn
        self._threads = max(1, int(num_cpus))

    def submit(self, job: Any) -> PendingTraining:
        return _RayPending(job, self._remote.remote(self._trainer_ref, self.train_fn, job, self._threads))

    def capacity(self) -> int:
        import ray

        resources = ray.cluster_resources()
        by_cpu = int(resources.get("CPU", 1) // self.num_cpus)
        if self.num_gpus:
            return max(1, min(by_cpu, int(resources.get("GPU", 0) // self.num_gpus)))
        return max(1, by_cpu)

    def close(self) -> None:
        import ray

        if self._owns and ray.is_initialized():
            ray.shutdown()


# (shared context[, train_fn]) -> Executor: the coordinator calls it with its `MemberTrainer`, a
# reproduction with its arm trainer and `run_arm_job`
ExecutorFactory = Callable[..., Executor]


def start_local_ray(num_cpus: int | None = None) -> None:
    """Start a private Ray instance on this machine: loopback only, no dashboard, and workers at the
    driver's priority. Ray's default starts workers at niceness 15, so on a machine with any other
    load (a second process, a test worker) a training starves: importing torch alone took 20 s
    instead of 2 on a 2-core machine beside one busy process."""
    import ray

    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False, _system_config={"worker_niceness": 0})  # fmt: skip


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def executor_factory(
    name: str, address: str | None = None, num_cpus: float = 1, num_gpus: float | None = None, max_retries: int = 3,
) -> ExecutorFactory:
    """What a `--executor` flag names, as a factory the coordinator calls with its trainer;
    settings are checked here, before any data is loaded."""
    if name == "local":
        if address is not None:
            raise ValueError("--ray-address needs --executor ray")
        return LocalExecutor
    if name == "ray":
        if num_cpus <= 0:
            raise ValueError(f"--cpus-per-training must be positive, got {num_cpus}")
        return lambda trainer, train_fn=train_job: RayExecutor(
            trainer, address=address, num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries,
            train_fn=train_fn,
        )
    raise ValueError(f"unknown executor {name!r}: local | ray")
