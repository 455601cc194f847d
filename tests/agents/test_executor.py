"""The Ray executor against the local one: same seed, same records, decisions and champion; a
worker killed in the middle of a training is retried and the evolution loses nothing.

Ray runs as a private instance on this machine (loopback, 2 CPUs, no dashboard) that the module
starts and stops itself."""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agenticrs.agents.autotrain import MemberResult, MemberTrainer
from agenticrs.agents.coordinator import Coordinator
from agenticrs.agents.executor import LocalExecutor, RayExecutor, TrainingJob, executor_factory, start_local_ray, train_job
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.settings import EvolveSettings
from toy_cards import TOY_CARD  # tests/ helper

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

FAST: dict[str, Any] = {
    "dataset": "sim-tiny",
    "candidates": 2,
    "seed": 0,
    "bootstrap": 100,
    "gate_level": 0.5,
    "start": {"model": "lr", "learning_rate": 0.01, "epochs": 2, "embedding_dim": 8, "hidden_units": [32]},
    "train": {"patience": 1, "monitor": "logloss", "metrics": ["auc", "logloss"], "num_threads": 1},
    "space": {"models": ["lr", "fm", "dnn"], "widths": [16, 32], "embedding_dims": [4, 8], "depth_max": 2},
}


def settings_in(folder: Path, cache: Path) -> EvolveSettings:
    return EvolveSettings.model_validate({**FAST, "artifacts": str(folder / "artifacts"), "cache_dir": str(cache)})


def records(store: KnowledgeStore, intent_id: int) -> dict[str, Any]:
    """What an evolution decided, without ids, times or paths."""
    with store.transaction() as tx:
        rows = tx.candidates(intent_id)
        by_id = {r.id: (r.round, r.config_hash) for r in rows}
        return {
            "candidates": [(r.round, r.config_hash, r.status) for r in rows],
            "decisions": sorted((by_id[d.candidate_id], d.gate, d.accepted, d.reason)
                                for d in tx.decisions(intent_id=intent_id)),
            "champions": [by_id[c.candidate_id] for c in tx.lineage(intent_id)],
            "trainings": sorted((by_id[t.candidate_id], t.role, t.seed, t.status, repr(t.metrics))
                                for t in tx.trainings(intent_id=intent_id)),
        }  # fmt: skip


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A private Ray instance for the module: loopback only, 2 CPUs, stopped at the end."""
    start_local_ray(2)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> tuple[dict[str, Any], Coordinator]:
    folder = tmp_path_factory.mktemp("local")
    store = KnowledgeStore(f"sqlite:///{folder / 'k.db'}")
    coordinator = Coordinator(store, settings_in(folder, tiny_cache))
    assert isinstance(coordinator.executor, LocalExecutor)
    summary = coordinator.run()
    return records(store, summary.intent_id), coordinator


def kill_once(marker: str, trainer: MemberTrainer, job: TrainingJob) -> MemberResult:
    """The first training to get here SIGKILLs its own worker process at its first optimiser step
    (every training takes one; a later step could lie past a short job's end); every attempt is
    logged in `marker`. The claim is atomic (two workers start at once) and the patch is undone if
    the training returns, so a reused worker never kills a later job."""
    try:
        os.close(os.open(marker + ".claim", os.O_CREAT | os.O_EXCL))
        first = True
    except FileExistsError:
        first = False
    with open(marker, "a") as log:
        log.write(f"{'killed ' if first else ''}{job.label} pid {os.getpid()}\n")
    if not first:
        return train_job(trainer, job)
    from agenticrs.train.engine import Engine

    original = Engine._step

    def dying_step(self: Engine, model: Any, task: Any, batch: Any, optimizers: Any, schedule: Any, state: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    Engine._step = dying_step  # type: ignore[method-assign]
    try:
        return train_job(trainer, job)
    finally:
        Engine._step = original  # type: ignore[method-assign]


def test_ray_executor_reaches_the_local_records_decisions_and_champion(
    local_ray: None, local_run: tuple[dict[str, Any], Coordinator], tmp_path: Path, tiny_cache: Path
) -> None:
    expected, local = local_run
    store = KnowledgeStore(f"sqlite:///{tmp_path / 'k.db'}")
    events: list[tuple[str, dict[str, Any]]] = []
    coordinator = Coordinator(store, settings_in(tmp_path, tiny_cache), evo=local.evo,
                              observer=lambda e, i: events.append((e, i)), executor=RayExecutor)
    assert coordinator.executor.name == "ray" and coordinator.executor.capacity() == 2
    summary = coordinator.run()
    coordinator.executor.close()  # joined an existing instance: leaves it running
    assert ray.is_initialized()
    got = records(store, summary.intent_id)
    assert got == expected
    # both learners of a candidate were in flight together (submitted before either was recorded)
    kinds = [e for e, i in events if e in ("training", "trained") and not i.get("cached")]
    assert kinds[:4] == ["training", "training", "trained", "trained"]


def test_a_killed_ray_worker_is_retried_and_nothing_recorded_is_lost(
    local_ray: None, local_run: tuple[dict[str, Any], Coordinator], tmp_path: Path, tiny_cache: Path
) -> None:
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    expected, local = local_run
    marker = tmp_path / "attempts.log"
    store = KnowledgeStore(f"sqlite:///{tmp_path / 'k.db'}")
    coordinator = Coordinator(
        store, settings_in(tmp_path, tiny_cache), evo=local.evo,
        executor=lambda trainer: RayExecutor(trainer, max_retries=2,
                                             train_fn=functools.partial(kill_once, str(marker))),
    )  # fmt: skip
    summary = coordinator.run()
    lines = marker.read_text().splitlines()
    killed = next(a for a in lines if a.startswith("killed ")).removeprefix("killed ").split(" pid ")[0]
    attempts = [a.removeprefix("killed ") for a in lines]
    assert sum(a.startswith(killed + " pid") for a in attempts) == 2  # the killed training ran again
    assert len({a.split(" pid ")[1] for a in attempts if a.startswith(killed + " pid")}) == 2  # in a new worker
    assert records(store, summary.intent_id) == expected


def test_executor_flags_are_checked_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="--ray-address needs --executor ray"):
        executor_factory("local", address="127.0.0.1:6379")
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        executor_factory("dask")
    with pytest.raises(ValueError, match="positive"):
        executor_factory("ray", num_cpus=0)


# -- feature candidates: the worker applies a candidate's feature actions as the local path does --
FEATURES: dict[str, Any] = {
    "dataset": "sim-tiny-planted", "seed": 0, "bootstrap": 50, "gate_level": 0.5, "agents": ["feature"],
    "candidates": 1, "outer_every": 0, "measure_perf": False,
    "start": {"model": "lr", "learning_rate": 0.01, "epochs": 1},
    "train": {"patience": 1, "monitor": "logloss", "metrics": ["auc", "logloss"], "num_threads": 1, "batch_size": 1024},
}  # fmt: skip


def feature_records(store: KnowledgeStore, intent_id: int) -> dict[str, Any]:
    """`records` plus each candidate's config (its feature actions) and who proposed it."""
    with store.transaction() as tx:
        configs = [(r.round, r.proposer, r.config) for r in tx.candidates(intent_id)]
    return {**records(store, intent_id), "configs": configs}


def test_feature_candidates_train_on_ray_as_they_do_locally(local_ray: None, tmp_path: Path, tiny_cache: Path) -> None:
    runs = {}
    evo = None
    for name in ("local", "ray"):
        folder = tmp_path / name
        folder.mkdir()
        store = KnowledgeStore(f"sqlite:///{folder / 'k.db'}")
        settings = EvolveSettings.model_validate({**FEATURES, "artifacts": str(folder / "artifacts"),
                                                  "cache_dir": str(tiny_cache)})  # fmt: skip
        coordinator = Coordinator(store, settings, evo=evo, executor=RayExecutor if name == "ray" else None)
        assert coordinator.executor.name == name
        evo = coordinator.evo
        summary = coordinator.run()
        coordinator.executor.close()
        runs[name] = feature_records(store, summary.intent_id)
    local, on_ray = runs["local"], runs["ray"]
    # the round's candidate is AutoFeature's: the start's actions (the leak dropped) and one more
    (_, proposer, config) = next(c for c in local["configs"] if c[0] == 1)
    assert proposer == "feature" and len(config["features"]) > len(local["configs"][0][2]["features"]) > 0
    assert on_ray == local  # configs, every learner's metrics, decisions and the champion


# -- method-card reproductions: runs as Ray tasks, recorded by the driver in the local order --------


def test_a_reproduction_on_ray_equals_the_local_one_and_resumes_locally(local_ray: None, tmp_path: Path,
                                                                        tiny_cache: Path) -> None:
    from agenticrs.agents.paper.card import parse_card
    from agenticrs.agents.paper.reproduce import reproduce

    card = parse_card(TOY_CARD)
    outcome = {}
    for name in ("local", "ray"):
        made: list[Any] = []

        def make(*args: Any, name: str = name, made: list[Any] = made) -> Any:
            made.append(executor_factory(name)(*args))
            return made[-1]

        store = KnowledgeStore(str(tmp_path / f"{name}.db"))
        result = reproduce(card, store, tmp_path / name, tiny_cache, executor=make)
        assert [e.name for e in made] == [name]
        with store.transaction() as tx:
            rows = tx.reproduction_runs(result.reproduction_id)
            runs = [(r.arm, r.seed, r.status, dict(r.metrics)) for r in rows]
            paths = [Path(r.run_path) for r in rows]
            lessons = [lesson.text for lesson in tx.lessons()]
            # Ray: the baseline was submitted (its row started) before the method's run was recorded
            assert (rows[1].started_at < rows[0].finished_at) == (name == "ray")
        assert all((p / "summary.json").exists() for p in paths)
        outcome[name] = (runs, result.verdicts, lessons, (result.trained, result.reused, result.failed))
        store.close()
    assert ray.is_initialized()  # joined the test's instance: left running
    local, on_ray = outcome["local"], outcome["ray"]
    # the runs in the plan's order (seed by seed, method then baseline), every metric equal
    assert [r[:3] for r in local[0]] == [("deepfm", 1, "done"), ("lr", 1, "done"), ("deepfm", 2, "done"),
                                         ("lr", 2, "done")]  # fmt: skip
    assert on_ray == local  # per-seed metrics, effect, verdict, lessons and counts
    # resume: the Ray reproduction run again, locally, trains nothing and reaches the same verdicts
    store = KnowledgeStore(str(tmp_path / "ray.db"))
    again = reproduce(card, store, tmp_path / "ray", tiny_cache, trainer=_never_trains)
    store.close()
    assert (again.trained, again.reused) == (0, 4) and again.verdicts == on_ray[1]


def _never_trains(*_args: Any) -> Any:
    raise AssertionError("a finished run was retrained")


def _baseline_breaks(card: Any, trial: Any, arm: Any, seed: int, runs_dir: Path, cache_dir: Path | None) -> Any:
    """No training: the method scores by seed, the baseline raises on seed 2."""
    from agenticrs.agents.paper.reproduce import ArmResult

    if arm.name == "lr" and seed == 2:
        raise ValueError(f"diverged at seed {seed}")
    return ArmResult({"auc": 0.7 + 0.01 * seed + (0.02 if arm.name == "deepfm" else 0.0), "logloss": 0.5})


def test_a_failed_run_on_ray_is_the_same_lesson_as_locally(local_ray: None, tmp_path: Path) -> None:
    from ray import cloudpickle

    from agenticrs.agents.paper.card import parse_card
    from agenticrs.agents.paper.reproduce import reproduce

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    card = parse_card(TOY_CARD)
    outcome = {}
    for name in ("local", "ray"):
        store = KnowledgeStore(str(tmp_path / f"{name}.db"))
        result = reproduce(card, store, tmp_path / name, trainer=_baseline_breaks, executor=executor_factory(name))
        with store.transaction() as tx:
            runs = [(r.arm, r.seed, r.status, r.error) for r in tx.reproduction_runs(result.reproduction_id)]
        store.close()
        outcome[name] = (runs, result.lessons, result.verdicts, result.failed)
    assert outcome["local"][0][-1] == ("lr", 2, "failed", "ValueError: diverged at seed 2")
    assert outcome["ray"] == outcome["local"]  # the training's own exception, not Ray's wrapper


def test_run_files_come_back_to_a_driver_that_lacks_them(local_ray: None, tmp_path: Path) -> None:
    """A worker on another machine: the driver writes the run folder's files it does not have."""
    from agenticrs.agents.executor import _RayPending
    from agenticrs.agents.paper.reproduce import ArmResult

    folder = tmp_path / "elsewhere" / "run-1"
    files = {"summary.json": b'{"auc": 0.7}', "config.yaml": b"model: lr\n"}
    result = _RayPending("job", ray.put((ArmResult({"auc": 0.7}, str(folder)), files))).result()
    assert result.run_dir == folder and {p.name: p.read_bytes() for p in folder.iterdir()} == files
    (folder / "summary.json").write_bytes(b'{"auc": 0.8}')  # same size: the driver's copy is complete, kept
    _RayPending("job", ray.put((result, files))).result()
    assert (folder / "summary.json").read_bytes() == b'{"auc": 0.8}'


def test_the_reproduce_command_trains_on_ray(local_ray: None, tmp_path: Path, tiny_cache: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from agenticrs.cli.main import app

    card = tmp_path / "toy.yaml"
    card.write_text(yaml.safe_dump({**TOY_CARD, "seeds": [1]}))
    args = ["reproduce", str(card), "--db", str(tmp_path / "k.db"), "--runs-dir", str(tmp_path / "runs"),
            "--cache-dir", str(tiny_cache), "--executor", "ray", "--cpus-per-training", "1"]  # fmt: skip
    result = CliRunner().invoke(app, args, terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "deepfm seed 1: auc" in result.output and "lr seed 1: auc" in result.output and "Reproductions" in result.output
    assert ray.is_initialized()
