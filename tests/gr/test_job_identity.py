"""When two sequential jobs are the same run: what `--resume`, `--keep-tiger` and a card's
`adopt_runs` rely on before reading a finished run back instead of training it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from agenticrs.gr.workflow import SequentialJob, find_finished_run, job_differences


def tiger_job(**changes) -> SequentialJob:
    raw = {"dataset": "amazon_beauty", "model": "tiger", "model_params": {"d_model": 64, "ffn_dim": 256},
           "train": {"seed": 2, "epochs": 20}, "name": "tiger-amazon_beauty-seed2",
           "tokenizer": {"source": "collaborative", "collaborative_run": "runs/sasrec-amazon_beauty-seed2"}}  # fmt: skip
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            raw[section] = {**raw[section], field: value}
        else:
            raw[section] = value
    return SequentialJob.model_validate(raw)


def test_the_name_does_not_count_and_a_changed_setting_is_named() -> None:
    assert job_differences(tiger_job(), tiger_job(name="tiger-tiger-amazon_beauty-seed2")) == []
    assert job_differences(tiger_job(), tiger_job(model_params__ffn_dim=512)) == ["model_params.ffn_dim"]
    assert job_differences(tiger_job(), tiger_job(train__seed=3, model_params__d_model=128)) == [
        "model_params.d_model", "train.seed"]  # fmt: skip
    assert job_differences(tiger_job(), tiger_job(dataset="amazon_sports")) == ["dataset"]


def test_a_training_default_left_unset_equals_the_same_value_written_out() -> None:
    explicit = tiger_job(train__monitor="ndcg@10")  # TIGER's default monitor, written out
    assert job_differences(tiger_job(), explicit) == []


def test_a_source_run_is_the_same_folder_whichever_way_it_is_written(tmp_path: Path) -> None:
    absolute = tiger_job(tokenizer__collaborative_run=str(Path("runs/sasrec-amazon_beauty-seed2").resolve()))
    assert job_differences(tiger_job(), absolute) == []
    assert job_differences(tiger_job(), tiger_job(tokenizer__collaborative_run="runs/sasrec-amazon_beauty-seed3")) == [
        "tokenizer.collaborative_run"]  # fmt: skip


def test_only_a_finished_run_of_the_same_job_is_found(tmp_path: Path) -> None:
    from agenticrs.config import dump_yaml

    def run_folder(name: str, job: SequentialJob, finished: bool) -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True)
        dump_yaml(job.model_dump(mode="json"), folder / "job.yaml")
        if finished:
            (folder / "weights.pt").write_bytes(b"w")
            (folder / "summary.json").write_text(
                '{"best_epoch": 3, "epochs_run": 4, "valid": {"ndcg@10": 0.04}, "test": {"recall@10": 0.058}, '
                '"train_seconds": 12.5, "stopped_by": "epochs", "steps": 40, "best_step": 30}')  # fmt: skip
        return folder

    run_folder("killed", tiger_job(), finished=False)
    run_folder("other", tiger_job(model_params__ffn_dim=512), finished=True)
    assert find_finished_run(tiger_job(), [tmp_path]) is None
    done = run_folder("done", tiger_job(name="elsewhere"), finished=True)
    folder, result = find_finished_run(tiger_job(), [tmp_path])
    assert folder == done and result.test == {"recall@10": 0.058} and result.stopped_by == "epochs"
    assert find_finished_run(tiger_job(), [done]) is not None  # a run folder itself, not only its parent
    assert os.path.isdir(folder)
    # at any depth: another reproduction's runs sit in reproduce/CARD/RUN
    shutil.rmtree(done)
    nested = run_folder("reproduce/tiger/tiger-tiger-amazon_beauty-seed1-0a1b", tiger_job(), finished=True)
    assert find_finished_run(tiger_job(), [tmp_path])[0] == nested


def test_a_model_setting_written_out_at_its_default_is_the_same_setting() -> None:
    grc = tiger_job(model="grc")
    assert job_differences(grc, tiger_job(model="grc", model_params__phase="sft")) == []  # GRC's default phase
    assert job_differences(grc, tiger_job(model="grc", model_params__phase="grpo")) == ["model_params.phase"]


def test_a_run_folder_holding_another_job_is_refused_not_overwritten(tmp_path: Path) -> None:
    import pytest

    from agenticrs.config import dump_yaml
    from agenticrs.gr.workflow import job_digest, run_or_resume_sequential_job

    folder = tmp_path / "tiger-run"
    folder.mkdir()
    dump_yaml(tiger_job(model_params__ffn_dim=512).model_dump(mode="json"), folder / "job.yaml")
    with pytest.raises(FileExistsError, match=r"tiger-run holds another job \(it differs in model_params.ffn_dim\)"):
        run_or_resume_sequential_job(tiger_job(), folder)
    assert (folder / "job.yaml").is_file()
    assert job_digest(tiger_job()) == job_digest(tiger_job(name="other")) != job_digest(tiger_job(train__seed=3))
    absolute = str(Path("runs/sasrec-amazon_beauty-seed2").resolve())
    assert job_digest(tiger_job()) == job_digest(tiger_job(tokenizer__collaborative_run=absolute))
