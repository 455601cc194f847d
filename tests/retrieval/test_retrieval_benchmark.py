"""bench/retrieval_benchmark.py: the per-seed table end to end on the tiny simulator (every
retriever, the run's IVF index row, resume with --append), and the summary over seeds against a
hand computation."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench_modules import load_bench


def _row(dataset: str, retriever: str, seed: int, r50: float, r200: float) -> dict:
    return {"dataset": dataset, "retriever": retriever, "seed": seed, "recall@50": r50, "recall@200": r200,
            "ndcg@50": r50 / 2, "stopped_by": "patience" if retriever == "two_tower" else None}  # fmt: skip


def test_summary_is_the_mean_and_sd_over_seeds_with_the_paired_difference_from_the_two_tower() -> None:
    bench = load_bench("retrieval_benchmark")
    records = [_row("d", "two_tower", s, r50, 0.5) for s, r50 in ((1, 0.30), (2, 0.32), (3, 0.31))]
    records += [_row("d", "popularity", s, r50, 0.4) for s, r50 in ((1, 0.20), (2, 0.21), (3, 0.25))]
    summary = {row["retriever"]: row for row in bench.summarise_retrieval(records)}
    pop, tower = summary["popularity"], summary["two_tower"]
    assert pop["seeds"] == [1, 2, 3] and pop["recall@50"] == pytest.approx(0.22)
    assert pop["recall@50_std"] == pytest.approx(np.std([0.20, 0.21, 0.25], ddof=1))
    d = np.array([0.20 - 0.30, 0.21 - 0.32, 0.25 - 0.31])
    half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)  # t(0.975, 2)
    effect = pop["vs_two_tower_recall@50"]
    assert effect["mean"] == pytest.approx(d.mean()) and effect["low"] == pytest.approx(d.mean() - half)
    assert effect["high"] == pytest.approx(d.mean() + half)
    assert "vs_two_tower_recall@50" not in tower and tower["stopped_by"] == "patience" and pop["stopped_by"] is None
    assert "truth_click_recall@50" not in pop  # a metric no seed has is left out, not reported as 0


@pytest.mark.slow
def test_the_table_runs_every_retriever_through_the_saved_index_and_resumes(tmp_path: Path, monkeypatch) -> None:
    bench = load_bench("retrieval_benchmark")
    monkeypatch.setenv("AGENTICRS_CACHE_DIR", str(tmp_path / "cache"))
    out, runs = tmp_path / "retrieval.json", tmp_path / "runs"
    argv = ["retrieval_benchmark.py", "--datasets", "sim-tiny", "--seeds", "1", "--first-seed", "3",
            "--sasrec-budget-s", "3", "--sasrec-loss", "sampled", "--sasrec-negatives", "64",
            "--two-tower-epochs", "1", "--truth-users", "40", "--no-ann", "--append", "--runs-dir", str(runs),
            "--json", str(out)]  # fmt: skip
    threads = torch.get_num_threads()
    monkeypatch.setattr(sys, "argv", argv)
    try:
        bench.main()
        first = json.loads(out.read_text())
        rows = {r["retriever"]: r for r in first["retrieval"]}
        assert list(rows) == ["popularity", "co-occurrence", "sasrec", "two_tower", "two_tower+ivf"]
        assert {r["seed"] for r in rows.values()} == {3}
        assert rows["sasrec"]["loss"] == "sampled" and rows["sasrec"]["num_negatives"] == 64
        assert rows["two_tower+ivf"]["index"]["kind"] == "ivf" and 0 < rows["two_tower+ivf"]["ann_recall@100"] <= 1
        for row in rows.values():
            assert 0 <= row["ndcg@50"] <= row["recall@50"] <= row["recall@200"] <= 1
            assert 0 <= row["truth_click_recall@50"] <= 1
        assert (runs / "sim-tiny" / "seed3" / "two_tower" / "index").is_dir()
        assert {r["retriever"] for r in first["summary"]} == set(rows)
        # resume: the recorded (data set, seed) is not trained again
        (runs / "sim-tiny" / "seed3" / "sasrec" / "weights.pt").unlink()
        bench.main()
        assert json.loads(out.read_text())["retrieval"] == first["retrieval"]
        assert not (runs / "sim-tiny" / "seed3" / "sasrec" / "weights.pt").exists()
        # one row family at another learning rate, named by it, in a file of its own
        other = tmp_path / "lr.json"
        monkeypatch.setattr(sys, "argv", [*argv[:-1], str(other), "--retrievers", "two_tower", "--two-tower-lr", "0.003"])
        bench.main()
        rows = {r["retriever"]: r for r in json.loads(other.read_text())["retrieval"]}
        assert list(rows) == ["two_tower lr 0.003", "two_tower lr 0.003+ivf"]
        assert rows["two_tower lr 0.003"]["learning_rate"] == 0.003
        assert (runs / "sim-tiny" / "seed3" / "two_tower_lr_0.003" / "index").is_dir()
    finally:
        torch.set_num_threads(threads)
