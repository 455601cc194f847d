"""The outer reward: a simulated A/B test of a candidate against the incumbent, day by day in the
knowledge layer. A run against itself shows zero lift and passes; a planted bad candidate fails
with a significant loss; a killed test resumes without serving its recorded days again and reaches
the uninterrupted result (which is `Environment.ab_test` over the same days); a test of the same
settings is resumed, never duplicated; a run without a simulated world is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from agenticrs import api
from agenticrs.agents import outer
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.outer import OuterSettings, ensemble_policy, run_outer_test
from agenticrs.sim.environment import Environment, RequestBatch
from agenticrs.train.policy import world_of_run

TRAIN = {"max_steps": 100, "learning_rate": 0.05, "batch_size": 512}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("outer")
    sim = api.simulate("tiny", seed=5, out=folder / "sim5")
    kwargs = {"train": TRAIN, "runs_dir": folder / "runs", "cache_dir": tiny_cache}
    good = api.train(sim["ctr"], "lr", seed=1, **kwargs).run_dir
    other = api.train(sim["ctr"], "lr", seed=2, **kwargs).run_dir
    bad = folder / "runs" / "inverted"  # the good run with every weight's sign flipped: it ranks upside down
    shutil.copytree(good, bad)
    weights = torch.load(bad / "weights.pt", weights_only=True)
    torch.save({k: -v if v.is_floating_point() else v for k, v in weights.items()}, bad / "weights.pt")
    plain = folder / "plain"  # the same logs without the simulator's meta.json: not a simulated world
    plain.mkdir()
    for name in ("ctr.yaml", "impressions_train.parquet", "impressions_valid.parquet", "impressions_test.parquet"):
        shutil.copy(folder / "sim5" / name, plain / name)
    unsimulated = api.train(plain / "ctr.yaml", "lr", seed=1, **{**kwargs, "train": {**TRAIN, "max_steps": 5}}).run_dir
    return {"good": good, "other": other, "bad": bad, "plain": unsimulated}


@pytest.fixture
def store(tmp_path: Path):
    """A knowledge store with an intent and four candidate rows (the runs are passed explicitly)."""
    knowledge = KnowledgeStore(f"sqlite:///{tmp_path / 'k.db'}")
    with knowledge.transaction() as tx:
        snap = tx.snapshot("sim-tiny", "f" * 64, {"train": 1})
        intent = tx.create_intent(snapshot_id=snap.id, text="outer", objective="logloss", proposer="scripted", seed=1,
                                  ensemble_size=1)  # fmt: skip
        for i in range(4):
            tx.add_candidate(intent.id, f"{i}" * 8, round=i, config={"i": i}, proposer="scripted")
    yield knowledge
    knowledge.close()


class Counting:
    """Wraps `ensemble_policy` to count the policy calls per served day (and to fail on one)."""

    def __init__(self, fail_on: tuple[str, int] | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail_on = fail_on

    def __call__(self, run_dirs: list[Path]):
        policy = ensemble_policy(run_dirs)
        label = "candidate" if len(run_dirs) == 1 else "incumbent"  # the resume test gives the incumbent two runs

        def counted(batch: RequestBatch) -> np.ndarray:
            call = (label, int(batch.requests.day[0]))
            self.calls.append(call)
            if call == self.fail_on:
                raise RuntimeError("killed while serving")
            return policy(batch)

        return counted


def test_a_run_against_itself_shows_zero_lift_and_passes(runs: dict[str, Path], store: KnowledgeStore,
                                                          tmp_path: Path) -> None:  # fmt: skip
    result = run_outer_test(store, 2, 1, [runs["good"]], [runs["good"]], OuterSettings(days=2), tmp_path)
    assert result.passed and result.status == "passed" and result.days == 2
    assert set(result.lifts) == {"clicks", "purchases", "gmv"}
    for reading in result.lifts.values():
        assert reading["lift"] == 0.0 and reading["ci_low"] == reading["ci_high"] == 0.0 and reading["p_value"] == 1.0
        assert reading["a_mean"] == reading["b_mean"] > 0
    assert result.reason.startswith("no significant loss over 2 days") and "clicks +0.0%" in result.reason
    with store.transaction() as tx:
        (row,) = tx.outer_tests()
        assert (row.candidate_id, row.incumbent_id, row.intent_id, row.status) == (2, 1, 1, "passed")
        days = tx.outer_days(row.id)
        assert [d.day for d in days] == [0, 1] and all(Path(d.path).is_file() for d in days)
        assert days[0].metrics["incumbent"] == days[0].metrics["candidate"]
        assert days[0].metrics["incumbent"]["impressions"] > 0


def test_a_bad_candidate_fails_with_a_significant_loss(runs: dict[str, Path], store: KnowledgeStore,
                                                       tmp_path: Path) -> None:  # fmt: skip
    result = run_outer_test(store, 2, 1, [runs["bad"]], [runs["good"]], OuterSettings(days=2), tmp_path)
    assert not result.passed and result.status == "failed"
    clicks = result.lifts["clicks"]
    assert clicks["ci_high"] < 0 and clicks["b_mean"] < clicks["a_mean"] and clicks["p_value"] < 0.05
    assert result.reason.startswith("significant loss over 2 days: clicks")
    with store.transaction() as tx:
        (row,) = tx.outer_tests()
        assert row.status == "failed" and row.reason == result.reason and row.finished_at is not None
        assert row.result["lifts"] == result.lifts and row.result["runs"]["candidate"] == [str(runs["bad"].resolve())]
    # a tolerated loss larger than the measured one passes the same arms
    tolerant = run_outer_test(store, 2, 1, [runs["bad"]], [runs["good"]], OuterSettings(days=2, max_loss=0.99),
                              tmp_path)  # fmt: skip
    assert tolerant.passed and tolerant.test_id != result.test_id and "beyond 99.0%" in tolerant.reason


def test_a_killed_test_resumes_without_serving_its_recorded_days(runs: dict[str, Path], store: KnowledgeStore,
                                                                 tmp_path: Path, monkeypatch) -> None:  # fmt: skip
    settings = OuterSettings(days=2)
    arms = ([runs["other"]], [runs["good"], runs["other"]])  # candidate: one run; incumbent: an ensemble of two
    whole = run_outer_test(store, 2, 1, *arms, settings, tmp_path / "whole")
    start = world_of_run(runs["good"]).config.n_days
    counter = Counting(fail_on=("candidate", start + 1))
    monkeypatch.setattr(outer, "ensemble_policy", counter)
    with pytest.raises(RuntimeError, match="killed while serving"):
        run_outer_test(store, 3, 1, *arms, settings, tmp_path / "killed")
    assert counter.calls == [("incumbent", start), ("candidate", start), ("incumbent", start + 1),
                             ("candidate", start + 1)]  # fmt: skip
    with store.transaction() as tx:
        (killed,) = tx.outer_tests(candidate_id=3)
        assert killed.status == "running" and [d.day for d in tx.outer_days(killed.id)] == [0]
    counter = Counting()
    monkeypatch.setattr(outer, "ensemble_policy", counter)
    resumed = run_outer_test(store, 3, 1, *arms, settings, tmp_path / "killed")
    assert counter.calls == [("incumbent", start + 1), ("candidate", start + 1)]  # day 0 was not served again
    assert resumed.test_id == killed.id and resumed.status == whole.status and resumed.days == 2
    assert resumed.lifts == whole.lifts and resumed.reason == whole.reason
    # the day-by-day test is the simulator's A/B test over the same days
    ab = Environment(world_of_run(runs["good"]), seed=0).ab_test(ensemble_policy(arms[1]), ensemble_policy(arms[0]), days=2)
    for metric, reading in whole.lifts.items():
        c = ab.comparisons[metric]
        assert (reading["lift"], reading["ci_low"], reading["ci_high"], reading["a_mean"], reading["b_mean"]) == (
            c.lift, c.ci_low, c.ci_high, c.mean_a, c.mean_b)


def test_a_running_test_of_the_same_settings_is_resumed_not_duplicated(runs: dict[str, Path], store: KnowledgeStore,
                                                                       tmp_path: Path, monkeypatch) -> None:  # fmt: skip
    settings = OuterSettings(days=2, metrics=["clicks"], seed=3, crn="none")  # the classic design: users split
    first = run_outer_test(store, 2, 1, [runs["other"]], [runs["good"]], settings, tmp_path, stop_after=1)
    assert first.status == "running" and first.days == 1 and not first.passed and set(first.lifts) == {"clicks"}
    with pytest.raises(ValueError, match="was started with the member runs"):  # its days are of other arms
        run_outer_test(store, 2, 1, [runs["bad"]], [runs["good"]], settings, tmp_path)
    other_settings = run_outer_test(store, 2, 1, [runs["other"]], [runs["good"]], OuterSettings(days=1), tmp_path)
    assert other_settings.test_id != first.test_id  # other settings: another test
    counter = Counting()
    monkeypatch.setattr(outer, "ensemble_policy", counter)
    again = run_outer_test(store, 2, 1, [runs["other"]], [runs["good"]], settings, tmp_path)
    assert again.test_id == first.test_id and again.status in ("passed", "failed") and again.days == 2
    assert len(counter.calls) == 2  # only day 1, both arms
    finished = run_outer_test(store, 2, 1, [runs["other"]], [runs["good"]], settings, tmp_path)
    assert finished == again and len(counter.calls) == 2  # a finished test is returned, not served again
    with store.transaction() as tx:
        assert sorted(t.id for t in tx.outer_tests(candidate_id=2)) == sorted({first.test_id, other_settings.test_id})
        days = tx.outer_days(first.test_id)
        assert [d.day for d in days] == [0, 1]
        users = [d.metrics["incumbent"]["users"] + d.metrics["candidate"]["users"] for d in days]
        assert users == [world_of_run(runs["good"]).n_users] * 2 and days[0].metrics["incumbent"]["users"] < users[0]


def test_a_run_not_trained_on_simulator_logs_is_refused(runs: dict[str, Path], store: KnowledgeStore,
                                                        tmp_path: Path) -> None:  # fmt: skip
    with pytest.raises(ValueError, match="incumbent_runs: .* was not trained on simulator logs"):
        run_outer_test(store, 2, 1, [runs["good"]], [runs["plain"]], OuterSettings(), tmp_path)
    with pytest.raises(ValueError, match="candidate_runs is empty"):
        run_outer_test(store, 2, 1, [], [runs["good"]], OuterSettings(), tmp_path)
    with pytest.raises(ValueError, match="both 2"):
        run_outer_test(store, 2, 2, [runs["good"]], [runs["good"]], OuterSettings(), tmp_path)
    with store.transaction() as tx:
        assert tx.outer_tests() == []  # nothing started


def test_settings_name_the_bad_field() -> None:
    with pytest.raises(ValueError, match="metrics: unknown \\['ctr'\\]"):
        OuterSettings(metrics=["ctr"])
    with pytest.raises(ValueError, match="crn"):
        OuterSettings(crn="half")
    with pytest.raises(ValueError, match="days"):
        OuterSettings(days=0)
