"""Bad inputs and damaged run directories give one clear error naming the file or field (issue 14,
defects 6 and 7): bad model settings and an unusable device are refused before any data is
processed or any run directory is written; a truncated `weights.pt`, a corrupt `config.yaml` and
their kin name the file and what is wrong; `predict` refuses to write into a folder or over its
own input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from agenticrs.runtime import resolve_device
from agenticrs.train.config import RunConfig, TrainConfig
from agenticrs.train.run import Run
from agenticrs.train.workflow import evaluate_run, predict_files, resume_run, train_run


@pytest.fixture(scope="module")
def trained(tiny_synthetic, tiny_cache, tmp_path_factory):
    config = RunConfig(
        dataset="synthetic-tiny",
        model="deepfm",
        smoke=True,
        train=TrainConfig(batch_size=512, epochs=1, max_steps_per_epoch=5, eval_batch_size=3000),
    )
    return train_run(config, tmp_path_factory.mktemp("runs"), tiny_cache, data=tiny_synthetic)


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    """A copy of the trained run, free to damage."""
    return Path(shutil.copytree(trained.run.folder, tmp_path / "run"))


def unlabelled_test_file(trained, folder: Path) -> Path:
    table = pq.read_table(trained.data.spec.files["test"][0]).drop_columns(["click"])
    path = folder / "x.parquet"
    pq.write_table(table, path)
    return path


# ----------------------------------------------------------------------- bad settings, early


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"embedding_dim": -3}, r"embedding_dim: Input should be greater than or equal to 1 \(got -3\)"),
        ({"embedding_dim": 0}, r"embedding_dim: .*greater than or equal to 1 \(got 0\)"),
        ({"hidden_units": [0]}, r"hidden_units\.0: .*greater than or equal to 1 \(got 0\)"),
        ({"dropout": 1.5}, r"dropout: Input should be less than 1"),
        ({"activation": "swish"}, r"activation: Input should be 'relu'"),
    ],
)
def test_bad_model_settings_are_refused_before_any_data_or_run_directory(tmp_path, params, expected) -> None:
    # the data set does not exist: the model's config is checked first, so its error is the one seen
    config = RunConfig(dataset="no-such-dataset", model="deepfm", model_params=params)
    with pytest.raises(ValueError, match=rf"invalid config for model 'deepfm': {expected}"):
        train_run(config, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_cuda_without_a_gpu_is_one_clear_error_before_anything_is_written(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine with a GPU
    with pytest.raises(ValueError, match="no CUDA device is available") as caught:
        resolve_device("cuda")
    assert "device=cpu" in str(caught.value) and "\n" not in str(caught.value)
    assert resolve_device("auto") == torch.device("cpu")
    config = RunConfig(dataset="no-such-dataset", model="deepfm", train=TrainConfig(device="cuda"))
    with pytest.raises(ValueError, match="device 'cuda' was asked for but no CUDA device is available"):
        train_run(config, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_a_device_name_that_is_not_one_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="device 'gpu0' is not a device name"):
        resolve_device("gpu0")


def test_infinite_training_numbers_are_refused() -> None:
    for field in ("learning_rate", "min_delta", "grad_clip", "time_budget_s"):
        with pytest.raises(ValueError, match="finite number"):
            TrainConfig(**{field: float("inf")})
    with pytest.raises(ValueError, match="finite number"):
        TrainConfig(learning_rate=float("nan"))


# ----------------------------------------------------------------------- damaged run directories


@pytest.mark.parametrize("keep", [0, 100, 0.5])
def test_a_truncated_weights_file_names_the_file(run_copy, tiny_cache, keep) -> None:
    weights = run_copy / "weights.pt"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(ValueError, match=r"weights\.pt cannot be read as saved weights \(truncated or corrupt\)") as caught:
        Run(run_copy).load_weights()
    assert str(weights) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ValueError, match=r"weights\.pt cannot be read"):
        evaluate_run(run_copy, "test", cache_dir=tiny_cache)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: [deepfm\ndataset: x\n", r"is not a valid run config: .*Error"),  # YAML syntax
        ("- just\n- a list\n", r"is not a valid run config: .*expected a mapping"),
        ("dataset: synthetic-tiny\n", r"is not a valid run config: model: Field required"),
        ("dataset: synthetic-tiny\nmodel: deepfm\ntrain: {epochs: -1}\n", r"train\.epochs: Input should be greater"),
    ],
)
def test_a_corrupt_config_yaml_names_the_file_and_the_problem(run_copy, text, expected) -> None:
    (run_copy / "config.yaml").write_text(text)
    with pytest.raises(ValueError, match=expected) as caught:
        _ = Run(run_copy).config
    assert str(run_copy / "config.yaml") in str(caught.value) and "\n" not in str(caught.value)


def test_binary_garbage_in_config_yaml_names_the_file(run_copy, tmp_path) -> None:
    (run_copy / "config.yaml").write_bytes(b"\xff\xfe\x00garbage\x9c")
    with pytest.raises(ValueError, match=r"config\.yaml is not a valid run config"):
        predict_files(run_copy, [str(tmp_path / "whatever.csv")])


def test_weights_that_do_not_match_the_config_name_both_files(run_copy) -> None:
    config = (run_copy / "config.yaml").read_text()
    (run_copy / "config.yaml").write_text(config.replace("smoke: true", "smoke: false"))
    with pytest.raises(ValueError, match=r"weights\.pt does not match the model .*config\.yaml describes \('deepfm'\)"):
        Run(run_copy).load_model()


@pytest.mark.parametrize(
    ("name", "content", "read", "expected"),
    [
        ("summary.json", '{"test": {"auc": 0.7', lambda run: run.summary, r"summary\.json is not valid JSON"),
        ("summary.json", "[1, 2]", lambda run: run.summary, r"summary\.json is not a valid summary"),
        ("schema.json", "{}", lambda run: run.schema, r"schema\.json is not a valid schema"),
        ("encoder.json", "not json", lambda run: run.encoder, r"encoder\.json is not a valid saved encoder"),
        ("dataset.yaml", "name: [", lambda run: run.spec, r"dataset\.yaml is not a valid dataset spec"),
        ("checkpoint.pt", "PK\x03\x04 torn", lambda run: run.load_checkpoint(), r"checkpoint\.pt cannot be read"),
        ("metrics.jsonl", '{"step": 1}\n{"step": 2, "auc"', lambda run: run.metrics_log(), r"metrics\.jsonl, line 2"),
    ],
)
def test_every_damaged_file_is_named(run_copy, name, content, read, expected) -> None:
    (run_copy / name).write_text(content)
    with pytest.raises(ValueError, match=expected) as caught:
        read(Run(run_copy))
    assert "\n" not in str(caught.value)


def test_a_missing_run_directory_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="run directory .*nowhere does not exist"):
        _ = Run(tmp_path / "nowhere").config
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resume_run(tmp_path / "nowhere")


# ----------------------------------------------------------------------- predict's output


def test_predict_refuses_a_folder_as_output_before_scoring(tmp_path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    # the run does not exist: the output is checked first
    with pytest.raises(ValueError, match=r"the output .*out is a folder; give a file name"):
        predict_files(tmp_path / "no-run", [str(tmp_path / "x.csv")], out=folder)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(ValueError, match=r"a-file is a file, not a folder"):
        predict_files(tmp_path / "no-run", [str(tmp_path / "x.csv")], out=blocked / "p.csv")


def test_predict_refuses_to_replace_its_own_input(trained, tmp_path, monkeypatch) -> None:
    data = unlabelled_test_file(trained, tmp_path)
    before = data.read_bytes()
    with pytest.raises(ValueError, match="is also an input file .*refusing to replace the input"):
        predict_files(trained.run.folder, [str(data)], out=data)
    monkeypatch.chdir(tmp_path)  # another spelling of the same file
    with pytest.raises(ValueError, match="is also an input file"):
        predict_files(trained.run.folder, [str(data)], out=Path("sub/../x.parquet"))
    link = tmp_path / "link.parquet"
    link.symlink_to(data)
    with pytest.raises(ValueError, match="is also an input file"):
        predict_files(trained.run.folder, [str(data)], out=link)
    assert data.read_bytes() == before


def test_predict_writes_its_csv_when_the_output_is_fine(trained, tmp_path, tiny_cache) -> None:
    data = unlabelled_test_file(trained, tmp_path)
    out = tmp_path / "new" / "predictions.csv"
    probs = predict_files(trained.run.folder, [str(data)], cache_dir=tiny_cache, out=out)
    written = pacsv.read_csv(out).column("prediction").to_numpy()
    assert written.shape == probs.shape and np.allclose(written, probs)
