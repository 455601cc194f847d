"""AutoPerf (`agenticrs.agents.autoperf`): the Pareto front on hand-checked points, budgets as
guardrails, measurements of tiny trained runs (latency, parameters, memory, export size), their
storage per (candidate, device) and the report's serving-cost section."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from agenticrs import api
from agenticrs.agents import views
from agenticrs.agents.autoperf import (
    PerfBudgets,
    PerfReport,
    measure_candidate,
    measure_run,
    pareto_figure,
    pareto_front,
    record_perf,
)
from agenticrs.agents.candidate import Candidate
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.report import SECTION_TITLES, write_report
from agenticrs.progress import SILENT
from agenticrs.train.config import RunConfig
from agenticrs.train.run import Run
from agenticrs.train.workflow import train_run


# -- the Pareto front -------------------------------------------------------------------------------
def brute_force_front(points: list[tuple[float, float]]) -> list[int]:
    """The definition: i is on the front unless some j is at least as good on both and better on one."""
    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] >= b[0] and a[1] <= b[1] and a != b

    ok = [i for i, p in enumerate(points) if not any(math.isnan(v) for v in p)]
    return [i for i in ok if not any(dominates(points[j], points[i]) for j in ok)]


def test_pareto_front_on_hand_checked_points_with_ties_and_duplicates() -> None:
    points = [
        (0.80, 10.0),  # 0: dominated by 2 (same quality, faster)
        (0.85, 20.0),  # 1: on the front
        (0.80, 5.0),   # 2: on the front
        (0.85, 20.0),  # 3: a duplicate of 1: neither dominates the other, both on the front
        (0.90, 50.0),  # 4: on the front (best quality)
        (0.70, 5.0),   # 5: dominated by 2 (same latency, better quality)
        (0.90, 60.0),  # 6: dominated by 4 (same quality, faster)
        (math.nan, 1.0),  # 7: no quality: never on the front, dominates nothing
    ]
    assert pareto_front(points) == [1, 2, 3, 4]
    assert pareto_front([]) == []
    assert pareto_front([(0.5, 1.0)]) == [0]
    assert pareto_front([(0.5, 1.0), (0.5, 1.0), (0.5, 1.0)]) == [0, 1, 2]


def test_pareto_front_matches_the_definition_on_random_points_with_many_ties() -> None:
    rng = random.Random(0)
    for _ in range(200):
        points = [(float(rng.randint(0, 4)), float(rng.randint(0, 4))) for _ in range(rng.randint(0, 12))]
        assert pareto_front(points) == brute_force_front(points)


def test_pareto_figure_highlights_the_front() -> None:
    pytest.importorskip("plotly")
    points = [(0.80, 10.0), (0.85, 20.0), (0.80, 5.0)]
    figure = pareto_figure(points, ["#1", "#2", "#3"], pareto_front(points))
    dominated, front = figure.data
    assert list(dominated.text) == ["#1"] and list(front.text) == ["#3", "#2"]  # the front in latency order
    assert list(front.x) == [5.0, 20.0] and list(front.y) == [0.80, 0.85]
    with pytest.raises(ValueError, match="labels"):
        pareto_figure(points, ["#1"])


# -- budgets ------------------------------------------------------------------------------------------
def report(**changes: object) -> PerfReport:
    base = dict(latency_p50_ms=3.0, latency_p99_ms=4.5, parameters=12_000, memory_mb=2.5,
                export_bytes=3 * 1024 * 1024, export_format="onnx", device="cpu", details={})
    return PerfReport(**{**base, **changes})  # type: ignore[arg-type]


def test_budgets_name_the_budget_and_the_measured_value() -> None:
    assert PerfBudgets().violations(report()) == []
    within = PerfBudgets(max_latency_p99_ms=5, max_parameters=12_000, max_memory_mb=2.5, max_export_mb=3)
    assert within.violations(report()) == []  # at the budget is within it
    tight = PerfBudgets(max_latency_p99_ms=4, max_parameters=10_000, max_memory_mb=1, max_export_mb=2)
    found = tight.violations(report())
    assert len(found) == 4
    assert found[0].startswith("max_latency_p99_ms") and "4.500" in found[0] and "4.000" in found[0]
    assert found[1].startswith("max_parameters") and "12,000" in found[1] and "10,000" in found[1]
    assert found[2].startswith("max_memory_mb") and "2.500 MB" in found[2]
    assert found[3].startswith("max_export_mb") and "3.000 MB" in found[3] and "2.000 MB" in found[3]
    # a guardrail that cannot be checked does not pass
    unmeasured = PerfBudgets(max_export_mb=10).violations(report(export_bytes=None, export_format=None))
    assert len(unmeasured) == 1 and "max_export_mb" in unmeasured[0] and "not measured" in unmeasured[0]
    assert "nan" in PerfBudgets(max_latency_p99_ms=10).violations(report(latency_p99_ms=math.nan))[0]
    with pytest.raises(ValidationError, match="max_latency_ms"):
        PerfBudgets(max_latency_ms=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="max_parameters"):
        PerfBudgets(max_parameters=0)


# -- measurements of tiny trained runs ----------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> dict[str, Path]:
    """Two DNN runs on a tiny simulated world (two training steps): a narrow and a wide one."""
    folder = tmp_path_factory.mktemp("autoperf")
    sim = api.simulate("tiny", seed=5, out=folder / "sim")
    out = {}
    for name, units in (("small", [8]), ("big", [256, 256])):
        config = RunConfig.model_validate({"dataset": sim["ctr"], "model": "dnn", "smoke": True,
                                           "model_params": {"hidden_units": units}, "train": {"max_steps": 2, "seed": 1}})
        out[name] = train_run(config, folder / "runs", tiny_cache, SILENT).run.folder
    return out


def test_measure_run_on_a_trained_run(runs: dict[str, Path]) -> None:
    result = measure_run(runs["small"], rows=1000, repeats=5, export=False)
    model = Run(runs["small"]).load_model()
    assert 0 < result.latency_p50_ms <= result.latency_p99_ms
    assert result.parameters == sum(p.numel() for p in model.parameters())
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert result.details["activation_peak_bytes"] > 0
    assert result.memory_mb == pytest.approx((weights + result.details["activation_peak_bytes"]) / 2**20)
    assert result.device == "cpu" and result.export_bytes is None and result.export_format is None
    assert result.details["rows_source"].startswith("valid split")  # real rows, never the test split


@pytest.mark.slow  # the dynamo exporter takes about 10 s on a busy 2-core machine
def test_the_export_size_is_the_size_of_the_exported_file(runs: dict[str, Path], tmp_path: Path) -> None:
    result = measure_run(runs["small"], rows=200, repeats=1, export_dir=tmp_path)
    assert result.export_format == "onnx" and result.details["export_exporters"] == ["dynamo"]
    assert result.export_bytes == (tmp_path / f"{runs['small'].name}.onnx").stat().st_size


def test_a_bigger_model_measures_more_parameters_and_memory(runs: dict[str, Path]) -> None:
    small = measure_run(runs["small"], rows=1000, repeats=2, export=False)
    big = measure_run(runs["big"], rows=1000, repeats=2, export=False)
    assert big.parameters > small.parameters and big.memory_mb > small.memory_mb
    assert big.details["activation_peak_bytes"] > small.details["activation_peak_bytes"]  # 256-wide layers
    assert small.export_bytes is None and small.export_format is None
    both = measure_candidate([runs["small"], runs["big"]], rows=1000, repeats=2, export=False)
    assert both.parameters == small.parameters + big.parameters and both.details["members"] == 2
    assert both.memory_mb > big.memory_mb


def test_a_model_the_exporter_refuses_is_measured_by_its_state_dict(
    runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agenticrs.serve import export

    def refuse(*args: object, **kwargs: object) -> None:
        raise export.ExportError("dynamo: data-dependent shape; torchscript: unsupported operator")

    monkeypatch.setattr(export, "export_model", refuse)
    result = measure_run(runs["small"], rows=100, repeats=1)
    assert result.export_format == "torch"
    assert result.export_bytes == (runs["small"] / "weights.pt").stat().st_size
    assert "data-dependent shape" in result.details["export_reason"]


def test_bad_arguments_are_refused_by_name(runs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="run_dirs"):
        measure_candidate([])
    with pytest.raises(ValueError, match="repeats"):
        measure_run(runs["small"], repeats=0)
    with pytest.raises(ValueError, match="rows"):
        measure_run(runs["small"], rows=0)


# -- storage and the report -----------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[KnowledgeStore]:
    store = KnowledgeStore(f"sqlite:///{tmp_path / 'knowledge.db'}")
    try:
        yield store
    finally:
        store.close()


def intent_with_candidates(store: KnowledgeStore, count: int) -> tuple[int, list[int]]:
    with store.transaction() as tx:
        snapshot = tx.snapshot("sim-tiny", "fp", {"train": 100, "valid": 20})
        intent = tx.create_intent(snapshot_id=snapshot.id, text="cheaper models", objective="auc", proposer="builtin",
                                  seed=0, ensemble_size=2, settings={"dataset": "sim-tiny"})
        ids = []
        for i in range(count):
            candidate = Candidate(model="dnn", hidden_units=[32 * (i + 1)])
            row, _ = tx.add_candidate(intent.id, candidate.config_hash(), round=i, proposer="builtin",
                                      config=candidate.canonical().model_dump(mode="json"), status="trained")
            ids.append(row.id)
            for seed, auc in ((11, 0.60 + 0.02 * i), (12, 0.62 + 0.02 * i)):
                training = tx.start_training(row.id, "member", seed)
                tx.finish_training(training.id, {"valid": {"auc": auc}}, cost_s=1.0, epochs=1)
        tx.promote(intent.id, ids[0], 0, {"valid": {"auc": 0.605, "brier": 0.06}})
        return intent.id, ids


def test_record_perf_is_idempotent_per_candidate_and_device(store: KnowledgeStore) -> None:
    _intent, (cid, _other) = intent_with_candidates(store, 2)
    record_perf(store, cid, report())
    record_perf(store, cid, report(latency_p99_ms=99.0))  # the same device again: the first row stays
    record_perf(store, cid, report(device="cuda:0", latency_p99_ms=0.2))
    with store.transaction() as tx:
        rows = tx.perf_profiles(candidate_id=cid)
        assert [(r.device, r.latency_p99_ms) for r in rows] == [("cpu", 4.5), ("cuda:0", 0.2)]
        assert rows[0].parameters == 12_000 and rows[0].export_bytes == 3 * 1024 * 1024
        assert rows[0].export_format == "onnx"


def test_the_report_shows_quality_against_latency_with_the_front(store: KnowledgeStore, tmp_path: Path) -> None:
    intent_id, ids = intent_with_candidates(store, 3)
    assert "No serving-cost measurement" in views.perf_section(store, intent_id)
    # quality: #0 the champion's 2-ensemble 0.605; #1 member mean 0.63; #2 a recorded 2-ensemble AUC 0.70
    record_perf(store, ids[0], report(latency_p99_ms=2.0))
    record_perf(store, ids[1], report(latency_p99_ms=9.0))
    record_perf(store, ids[2], report(latency_p99_ms=5.0, details={"valid_auc": 0.70}))
    html = views.perf_section(store, intent_id)
    assert "<svg" in html and "quality vs p99 latency (cpu)" in html
    rows = html.split("<tbody>")[1].split("</tr>")
    assert "0.60500" in rows[0] and "2-ensemble" in rows[0] and "✓" in rows[0]
    assert "0.63000" in rows[1] and "member mean" in rows[1] and "✓" not in rows[1]  # #2 is better and faster
    assert "0.70000" in rows[2] and "✓" in rows[2]
    page = write_report(store, intent_id, tmp_path / "report.html").read_text()
    assert SECTION_TITLES["perf"] in page and "quality vs p99 latency" in page


def test_time_calls_counts_only_the_timed_repeats() -> None:
    from agenticrs.agents.space import time_calls

    calls = []
    times = time_calls(lambda: calls.append(torch.is_inference_mode_enabled()), repeats=4, warmup=2)
    assert len(times) == 4 and len(calls) == 6 and all(calls) and all(t >= 0 for t in times)
    with pytest.raises(ValueError, match="repeats"):
        time_calls(lambda: None, repeats=0)


def test_ensemble_members_are_timed_together(runs: dict[str, Path]) -> None:
    both = measure_candidate([runs["small"], runs["small"]], rows=100, repeats=3, export=False)
    assert both.details["runs"] == [str(runs["small"])] * 2 and len(both.details["models"]) == 2
    assert 0 < both.latency_p50_ms <= both.latency_p99_ms
