"""bench/serve_benchmark.py's summary over repeats: medians, the repeats that met the target,
the highest rate within it and the highest rate sustained, on hand-made records."""

from __future__ import annotations

from bench_modules import load_bench


def record(rate, p50, p99, achieved=None, errors=0, repeat=0):
    return {"rate": rate, "p50_ms": p50, "p99_ms": p99, "achieved_rps": achieved if achieved is not None else rate,
            "errors": errors, "repeat": repeat}  # fmt: skip


def test_summary_takes_medians_over_repeats_and_counts_the_repeats_within_target() -> None:
    bench = load_bench("serve_benchmark")
    records = [
        {"rate": "sequential", "p50_ms": 5.0, "p99_ms": 6.0, "achieved_rps": 190.0, "errors": 0},
        record(50.0, 6.0, 8.0, repeat=0), record(50.0, 7.0, 15.0, repeat=1), record(50.0, 6.5, 9.0, repeat=2),
        record(100.0, 6.0, 9.5, repeat=0), record(100.0, 6.0, 9.9, repeat=1), record(100.0, 6.0, 30.0, repeat=2),
        # within the target once of three: not the capacity, but sustained (served, p99 < 50 ms)
        record(150.0, 7.0, 12.0, repeat=0), record(150.0, 7.0, 11.0, repeat=1), record(150.0, 7.0, 9.0, repeat=2),
        # one repeat falls behind: not sustained
        record(200.0, 9.0, 40.0, repeat=0), record(200.0, 9.0, 45.0, achieved=180.0, repeat=1),
        record(200.0, 9.0, 30.0, repeat=2),
        record(250.0, 90.0, 900.0, achieved=240.0, repeat=0),
    ]
    summary = bench.summarise(records, target_ms=10.0)
    assert summary["sequential"]["p50_ms"] == 5.0
    at50, at100, at150 = (summary["rates"][r] for r in (50.0, 100.0, 150.0))
    assert (at50["p50_ms"], at50["p99_ms"], at50["p99_max_ms"], at50["within_target"]) == (6.5, 9.0, 15.0, 2)
    assert (at100["p99_ms"], at100["within_target"]) == (9.9, 2)
    assert (at150["p99_ms"], at150["within_target"]) == (11.0, 1)
    assert summary["rates"][200.0]["served"] == 0.9
    assert summary["max_rate_within_target"] == 100.0
    assert summary["max_sustained_rate"] == 150.0
    assert bench._cell(at100, repeats=3) == "6.0 / 9.9 (2/3)" and bench._cell(at100, repeats=1) == "6.0 / 9.9"


def test_summary_of_a_model_that_never_meets_the_target() -> None:
    bench = load_bench("serve_benchmark")
    summary = bench.summarise([record(50.0, 12.0, 20.0)], target_ms=10.0)
    assert summary["max_rate_within_target"] is None and summary["max_sustained_rate"] == 50.0
    assert bench.summarise([], target_ms=10.0) is None


def test_cpu_steal_share_between_two_readings() -> None:
    bench = load_bench("serve_benchmark")
    assert bench._cpu_steal_share((10, 1000), (30, 1200)) == 0.1
    assert bench._cpu_steal_share(None, (30, 1200)) is None and bench._cpu_steal_share((10, 1000), (10, 1000)) is None
    reading = bench._cpu_steal()
    assert reading is None or (0 <= reading[0] <= reading[1])
