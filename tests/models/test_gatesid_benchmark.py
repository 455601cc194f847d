"""bench/gatesid_benchmark.py: the SID-only variants read their semantic-ID sizes from the command
line (the codebook-size ablation), and a run on a tiny generated world records them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from agenticrs.models.gatesid import GateSIDConfig
from bench_modules import load_bench


def test_sid_only_variants_default_to_gatesids_sizes_and_follow_the_requested_ones() -> None:
    bench = load_bench("gatesid_benchmark")
    default = bench.sid_action()
    assert (default["levels"], default["codebook"]) == (GateSIDConfig().sid_levels, GateSIDConfig().sid_codebook_size)

    class Schema:  # the three lists `variants` reads
        categorical_names = ["user_id", "item_id", "cate_l1", "cate_l2", "brand"]
        numeric: list[str] = []
        sequences = [type("Seq", (), {"name": "hist_item_id"})(), type("Seq", (), {"name": "hist_cate_l2"})()]

    table = bench.variants(Schema(), bench.sid_action(levels=2, codebook=64))
    model, params, actions = table["din-sid"]
    assert model == "din" and actions[0]["codebook"] == 64 and actions[0]["levels"] == 2
    # the user stays; the item id, its history and the raw content fields give way to two SID levels
    assert params["input_fields"] == ["user_id", "item_id__sid0", "item_id__sid1", "hist_item_id__sid0",
                                      "hist_item_id__sid1"]  # fmt: skip
    assert table["din"][2] == [] and table["gatesid"][2] == []  # only the -sid variants get the action


def test_sid_statistics_count_distinct_tuples_of_the_fitted_items_only() -> None:
    from agenticrs.features.actions import OOV_INDEX

    bench = load_bench("gatesid_benchmark")
    codes = [OOV_INDEX, OOV_INDEX,  # item 0: never seen in training
             5, 7, 5, 7,  # items 1 and 2 collide
             5, 8, 6, 7]  # fmt: skip
    assert bench.sid_statistics(codes, levels=2) == {"sid_items": 4, "sid_distinct_tuples": 3,
                                                     "sid_distinct_level0": 2}  # fmt: skip


@pytest.mark.slow
def test_a_codebook_override_reaches_the_trained_run_and_its_record(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AGENTICRS_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    bench = load_bench("gatesid_benchmark")
    out = tmp_path / "gatesid.json"
    args = ["--sim-preset", "tiny", "--variants", "din-sid", "--epochs", "1", "--sid-codebook", "8",
            "--sid-levels", "2", "--runs-dir", str(tmp_path / "runs"), "--json", str(out)]  # fmt: skip
    try:
        assert bench.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    (record,) = json.loads(out.read_text())
    assert record["variant"] == "din-sid" and record["features"][0]["codebook"] == 8
    assert record["features"][0]["levels"] == 2 and record["stopped_by"] == "epochs"
    assert 0 < record["sid_distinct_tuples"] <= min(record["sid_items"], 8 * 8)
    assert record["sid_distinct_level0"] <= 8
    assert 0.5 < record["auc"] < 1.0  # the tiny world's clicks carry signal that the SIDs and user reveal
    (run,) = (tmp_path / "runs").iterdir()
    (action,) = yaml.safe_load((run / "config.yaml").read_text())["features"]  # the run trained with them
    assert (action["kind"], action["levels"], action["codebook"]) == ("semantic_id", 2, 8)
