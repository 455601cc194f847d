"""bench/gr_table.py: the README's table and its paired per-seed effects, on hand-built records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.bench_modules import load_bench


def record(model: str, seed: int, recall10: float, dataset: str = "amazon_beauty", **extra) -> dict:
    metrics = {key: 0.0 for key in ["recall@5", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"]}
    return {"model": model, "model_label": f"{model} (collaborative IDs)", "dataset": dataset, "seed": seed,
            **metrics, "recall@10": recall10, "train_s_per_epoch": 10.0, "beam_latency_ms_per_user": None,
            **extra}  # fmt: skip


def write(path: Path, records: list[dict]) -> str:
    path.write_text(json.dumps(records))
    return str(path)


def test_paired_effect_pairs_seeds_across_files(tmp_path: Path, capsys) -> None:
    gr_table = load_bench("gr_table")
    # d = 0.01, 0.01, 0.03: mean 0.0167, sd 0.011547, t(0.975, 2) = 4.3027 -> half-width 0.0287
    first = write(tmp_path / "a.json", [record("mdgr", 1, 0.05), record("tiger", 1, 0.04)])
    second = write(tmp_path / "b.json", [record("mdgr", 2, 0.06), record("mdgr", 3, 0.07)])
    third = write(tmp_path / "c.json", [record("tiger", 2, 0.05), record("tiger", 3, 0.04),
                                        record("tiger", 4, 0.09)])  # fmt: skip
    assert gr_table.main(["--paired", "mdgr", "tiger", first, second, third]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "amazon_beauty: mdgr - tiger, seeds 1, 2, 3"  # seed 4 has no MDGR: left out
    [recall10] = [line for line in lines if line.strip().startswith("recall@10")]
    assert "0.0600 vs 0.0433: +0.0167 [-0.0120, +0.0454] not shown" in recall10
    assert not any("valid_ndcg@10" in line for line in lines)  # absent from the records: not printed


def test_paired_effect_skips_a_metric_an_evaluation_only_record_left_null(tmp_path: Path, capsys) -> None:
    gr_table = load_bench("gr_table")
    path = write(tmp_path / "a.json", [record("tiger", seed, 0.04, **{"valid_ndcg@10": 0.02}) for seed in (1, 2)]
                 + [record("grc", seed, 0.03, **{"valid_ndcg@10": None}) for seed in (1, 2)])  # fmt: skip
    assert gr_table.main(["--paired", "grc", "tiger", path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.strip().startswith("recall@10") for line in lines)
    assert not any("valid_ndcg@10" in line or "nan" in line for line in lines)


def test_paired_effect_refuses_a_seed_recorded_twice(tmp_path: Path) -> None:
    gr_table = load_bench("gr_table")
    first = write(tmp_path / "a.json", [record("mdgr", 1, 0.05), record("tiger", 1, 0.04)])
    again = write(tmp_path / "rerun.json", [record("tiger", 1, 0.06)])
    with pytest.raises(SystemExit, match=r"two records of amazon_beauty seed 1: .*a\.json.*rerun\.json"):
        gr_table.main(["--paired", "mdgr", "tiger", first, again])
    with pytest.raises(SystemExit, match="no data set has a seed with both 'mdgr' and 'hstu'"):
        gr_table.main(["--paired", "mdgr", "hstu", first])


def test_table_averages_seeds_of_one_label(tmp_path: Path, capsys) -> None:
    gr_table = load_bench("gr_table")
    path = write(tmp_path / "a.json", [record("tiger", 1, 0.04), record("tiger", 2, 0.06)])
    assert gr_table.main([path]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    assert row.startswith("| amazon_beauty | tiger (collaborative IDs) | 2 | 0.0000 ± 0.0000 | 0.0500 ± 0.0100 |")


def test_table_by_model_joins_labels_that_differ_between_files(tmp_path: Path, capsys) -> None:
    gr_table = load_bench("gr_table")
    relabelled = {**record("tiger", 2, 0.06), "model_label": "tiger (collaborative IDs) [3x1024 IDs]"}
    path = write(tmp_path / "a.json", [record("tiger", 1, 0.04), relabelled])
    assert gr_table.main([path]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4  # by label: two rows of one seed each
    assert gr_table.main(["--by", "model", path]) == 0
    [row] = capsys.readouterr().out.splitlines()[2:]
    assert row.startswith("| amazon_beauty | tiger | 2 | 0.0000 ± 0.0000 | 0.0500 ± 0.0100 |")


def test_table_leaves_the_training_time_of_evaluation_only_records_blank(tmp_path: Path, capsys) -> None:
    """Another decoding of a trained run (e.g. GRC's drafts only) has no training time of its own."""
    gr_table = load_bench("gr_table")
    decoding = {**record("grc", 1, 0.05), "model_label": "grc (drafts only)", "train_s_per_epoch": None}
    path = write(tmp_path / "a.json", [record("tiger", 1, 0.04), decoding])
    assert gr_table.main([path]) == 0
    tiger, drafts = capsys.readouterr().out.splitlines()[2:]
    assert tiger.endswith("| 10 |  |") and drafts.endswith("|  |  |")


def test_curve_averages_each_number_of_steps_over_seeds(tmp_path: Path, capsys) -> None:
    """The quality–steps curve: one row per number of decoding steps, seeds averaged point by point."""
    gr_table = load_bench("gr_table")

    def point(steps: int, recall10: float, ms: float) -> dict:
        return {"steps": steps, "schedule": "warmup", **{key: 0.0 for key in gr_table.KEYS},
                "recall@10": recall10, "latency_ms_per_user": ms}  # fmt: skip

    first = record("mdgr", 1, 0.05, steps_curve=[point(1, 0.04, 1.0), point(2, 0.05, 3.0)])
    second = record("mdgr", 2, 0.07, steps_curve=[point(1, 0.06, 2.0), point(2, 0.07, 5.0)])
    path = write(tmp_path / "a.json", [first, second, record("tiger", 1, 0.08)])  # TIGER: no curve, no row
    assert gr_table.main(["--curve", path]) == 0
    one, two = capsys.readouterr().out.splitlines()[2:]
    assert one.startswith("| amazon_beauty | mdgr (collaborative IDs) | 1 | warmup | 2 | 0.0000 ± 0.0000 | 0.0500 ± 0.0100 |")
    assert one.endswith("| 1.5 |") and two.endswith("| 4.0 |") and "| 0.0600 ± 0.0100 |" in two
    with pytest.raises(SystemExit, match="no record in these files has a steps_curve"):
        gr_table.main(["--curve", write(tmp_path / "b.json", [record("tiger", 1, 0.08)])])
