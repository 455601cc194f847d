"""ONNX export (`agenticrs.serve.export`) and the ONNX backends of `Scorer`: every CTR model of the
zoo either exports with fp32 parity on the test split or is refused with `ExportError`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from agenticrs import api
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.cli.main import app
from agenticrs.models.base import model_class
from agenticrs.progress import SILENT
from agenticrs.serve.export import ExportError, export_onnx, file_sha256, latency_profile, load_report, record_export
from agenticrs.train.config import RunConfig
from agenticrs.train.scoring import Scorer
from agenticrs.train.workflow import train_run

# served eagerly: sort's data-dependent request grouping (neither exporter traces it with a dynamic
# batch); sgctr's inference-time refinement (dynamo cannot trace it, ONNX Runtime lacks an op the
# TorchScript export emits)
NOT_EXPORTABLE = {"sort", "sgctr"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> dict:
    """A tiny simulated world; runs are trained on first use (smoke-sized models, two steps)."""
    folder = tmp_path_factory.mktemp("export")
    sim = api.simulate("tiny", seed=5, out=folder / "sim5")
    rows = pd.read_parquet(folder / "sim5" / "impressions_test.parquet")
    runs: dict[str, Path] = {}

    def run(model: str) -> Path:
        if model not in runs:
            # a conversion model (ESMM) needs the click and purchase labels of the same impressions
            task = "multi_scenario" if model_class(model).inputs.min_labels > 1 else "ctr"
            config = RunConfig.model_validate({"dataset": sim[task], "model": model, "smoke": True,
                                               "train": {"max_steps": 2, "seed": 1}})
            runs[model] = train_run(config, folder / "runs", tiny_cache, SILENT).run.folder
        return runs[model]

    return {"folder": folder, "sim": sim, "rows": rows, "run": run, "cache": tiny_cache}


# a model that needs more labels than the simulator's impression specs carry (CM-DCM's direct, cart
# and delayed conversions) is exported in its own test, on data that has them (tests/models/test_cmdcm.py)
EXPORTED_HERE = [m for m in api.models("ctr") if model_class(m).inputs.min_labels <= 2]


@pytest.mark.parametrize("model", EXPORTED_HERE)
def test_every_ctr_model_exports_with_parity_or_says_why_not(world: dict, model: str) -> None:
    run = world["run"](model)
    if model in NOT_EXPORTABLE:
        with pytest.raises(ExportError, match=f"model '{model}'.*cannot be exported.*backend='torch'"):
            export_onnx(run, cache_dir=world["cache"], latency_sizes=())
        assert not (run / "export" / "model.onnx").exists()
        return
    report = export_onnx(run, cache_dir=world["cache"], latency_sizes=())
    assert report.parity_max_abs_diff <= 1e-5 and report.test_rows > 0
    assert Path(report.path).is_file() and report.sha256 == file_sha256(report.path)
    rows = world["rows"].head(300)
    eager = Scorer(run).score(rows)
    onnx = Scorer(run, backend="onnx", threads=1)
    np.testing.assert_allclose(onnx.score(rows), eager, atol=1e-5, rtol=0)
    # the serving contract: encode requests separately, concatenate, score once (any batch size)
    parts = [onnx.encode(rows.iloc[a:b]) for a, b in ((0, 1), (1, 120), (120, 300))]
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    np.testing.assert_allclose(onnx.score_encoded(joined), eager, atol=1e-5, rtol=0)


def test_int8_export_reports_its_auc_and_is_recorded(world: dict, tmp_path: Path) -> None:
    run = world["run"]("deepfm")
    report = export_onnx(run, quantize=True, cache_dir=world["cache"], latency_sizes=(1, 50), latency_repeats=3)
    assert report.quantized and Path(report.int8_path).is_file()
    assert report.int8_size_bytes < report.size_bytes  # int8 weights
    assert 0.3 < report.auc_int8 < 1 and abs(report.auc_change_int8) < 0.05
    assert report.auc_change_int8 == pytest.approx(report.auc_int8 - report.auc_onnx)
    assert set(report.latency) == {"torch", "onnx", "onnx-int8"}
    assert set(report.latency["onnx"]) == {"1", "50"} and report.latency["onnx"]["50"]["p50_ms"] > 0
    assert load_report(run) == report  # export.json holds the same figures
    int8 = Scorer(run, backend="onnx-int8").score(world["rows"].head(50))
    assert int8.shape == (50,) and np.isfinite(int8).all()

    store = KnowledgeStore(f"sqlite:///{tmp_path / 'k.db'}")
    try:
        ids = record_export(store, report)
        with store.transaction() as tx:
            rows = {row.path: row for row in tx.artifacts(kind="export")}
            assert sorted(row.id for row in rows.values()) == sorted(ids)
            fp32, q8 = rows[report.path], rows[report.int8_path]
            assert fp32.sha256 == file_sha256(report.path) and fp32.size_bytes == Path(report.path).stat().st_size
            assert q8.sha256 == file_sha256(report.int8_path) and q8.details["quantized"] is True
            assert fp32.details["format"] == "onnx" and fp32.details["exporter"] == report.exporter
            assert fp32.details["parity_max_abs_diff"] == report.parity_max_abs_diff
            assert fp32.details["auc_int8"] == report.auc_int8 and "onnx" in fp32.details["latency"]
        assert record_export(store, report) == ids  # a re-export refreshes the same rows
    finally:
        store.close()


def test_latency_profile_tiles_rows_up_to_each_size(world: dict) -> None:
    scorer = Scorer(world["run"]("lr"))
    profile = latency_profile(scorer, world["rows"].head(7), sizes=(1, 20), repeats=2)
    assert set(profile) == {"1", "20"}
    assert all(v["p99_ms"] >= v["p50_ms"] > 0 and v["model_p50_ms"] > 0 for v in profile.values())


def test_a_missing_export_says_how_to_make_it(world: dict) -> None:
    run = world["run"]("sort")  # never exported (see NOT_EXPORTABLE)
    with pytest.raises(FileNotFoundError, match=r"model\.onnx is missing.*agenticrs export"):
        Scorer(run, backend="onnx")
    with pytest.raises(FileNotFoundError, match=r"model\.int8\.onnx is missing.*--int8"):
        Scorer(run, backend="onnx-int8")
    with pytest.raises(ValueError, match="unknown scoring backend 'tensorrt'"):
        Scorer(run, backend="tensorrt")


def test_cli_exports_records_and_renders_errors_in_one_line(world: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    run = world["run"]("lr")
    db = f"sqlite:///{tmp_path / 'k.db'}"
    result = runner.invoke(app, ["export", str(run), "--int8", "--db", db, "--repeats", "2",
                                 "--cache-dir", str(world["cache"])])
    assert result.exit_code == 0, result.output
    assert "onnx-int8" in result.output and "recorded as artifact(s) 1, 2" in result.output
    assert (run / "export" / "export.json").is_file()
    failed = runner.invoke(app, ["export", str(world["folder"] / "no-such-run")])
    assert failed.exit_code == 2 and failed.output.count("error:") == 1
    refused = runner.invoke(app, ["export", str(run), "--candidate", "3"])
    assert refused.exit_code == 2 and "--candidate needs --db" in refused.output
