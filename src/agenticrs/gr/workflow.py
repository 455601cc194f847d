"""End-to-end sequential jobs: data → (item embeddings → semantic IDs) → model → trained run.

The CLI (`agenticrs train --task sequential`, `agenticrs recommend`) and `bench/gr_benchmark.py`
call these, so every entry point builds semantic IDs and run directories the same way.

Item content for the tokenizer (`tokenizer.source`):
- `text`: titles/genres/brands through all-MiniLM-L6-v2 (MovieLens, the simulator);
- `attributes`: TF-IDF + SVD of attribute bags (Amazon/Yelp S3-Rec attribute ids: no text);
- `collaborative`: the item table of a trained SASRec run (`tokenizer.collaborative_run`);
- `text+collaborative`: both, side by side (two modalities: what the `mmq` tokenizer reads; its
  `modality_dims` are set from them, and it is fine-tuned on the training part's next-item pairs);
- `auto`: text when most items have it, else attributes.
Embeddings are cached per data snapshot; the tokenizer, its statistics and the item ↔ ID table are
written into the run directory.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from agenticrs.config import dump_yaml, load_yaml
from agenticrs.data.cache import default_cache_root
from agenticrs.gr.base import SemanticIds, SequenceData
from agenticrs.gr.embeddings import cached_embeddings
from agenticrs.gr.mmq import behaviour_pairs
from agenticrs.gr.sequences import leave_one_out, pad_histories, resolve_sequences
from agenticrs.gr.tokenizers import TokenizerStats, make_tokenizer, semantic_ids
from agenticrs.gr.train import (
    SeqTrainResult,
    SequentialTrainConfig,
    config_semantic_ids,
    load_sequential_config,
    load_sequential_run,
    train_sequential,
)
from agenticrs.gr.zoo import (
    build_sequential,
    make_sequential_config,
    needs_semantic_ids,
    sequential_model_class,
)
from agenticrs.progress import SILENT, Reporter
from agenticrs.runtime import seed_everything
from agenticrs.train import distributed
from agenticrs.train.config import with_model_defaults
from agenticrs.train.run import SUMMARY, Run

TOKENIZER_FILE, TOKENIZER_STATS, JOB_FILE = "tokenizer.pt", "tokenizer.json", "job.yaml"


class TokenizerSettings(BaseModel):
    """How items become semantic IDs (for models that decode them, e.g. TIGER)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["rq_kmeans", "rq_vae", "pq", "mmq"] = "rq_kmeans"
    source: Literal["auto", "text", "attributes", "collaborative", "text+collaborative"] = "auto"
    levels: int = Field(default=3, ge=1)
    codebook_size: int = Field(default=256, ge=2)
    collision: Literal["digit", "reassign"] = "digit"
    attribute_dim: int = Field(default=64, ge=2)
    collaborative_run: Path | None = Field(default=None, description="a SASRec run whose item table to use")
    params: dict[str, Any] = Field(default_factory=dict, description="other tokenizer settings (e.g. epochs)")
    seed: int = 0


class SequentialJob(BaseModel):
    """A sequential run: data set, model, training and (when needed) the tokenizer."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    model: str
    model_params: dict[str, Any] = Field(default_factory=dict)
    train: SequentialTrainConfig = Field(default_factory=SequentialTrainConfig)
    tokenizer: TokenizerSettings = Field(default_factory=TokenizerSettings)
    name: str | None = None
    init_from: str | None = Field(default=None, description="a finished run of the same model and data set whose "
                                  "weights (and semantic IDs) this run starts from; `model_params` override its "
                                  "settings: fine-tuning, e.g. GRC's GRPO phase after its SFT run")  # fmt: skip


# TrainConfig settings that only a CTR run reads (a sequential run's target is the next item)
CTR_ONLY_TRAIN_KEYS = ("label", "labels", "task_weights")


def check_sequential_settings(raw: dict, job: object) -> None:
    """A ValueError for a setting `train --task sequential` would accept and then ignore."""
    if raw.get("smoke"):
        raise ValueError("--smoke (smoke) has no effect with --task sequential; use small settings instead, e.g. "
                         "--set train.epochs=1 --set train.max_steps_per_epoch=20")
    for key in CTR_ONLY_TRAIN_KEYS:
        if key in (raw.get("train") or {}):
            raise ValueError(f"train.{key} has no effect with --task sequential (the target is the next item); "
                             "it is a CTR setting (--task ctr)")
    model = getattr(job, "model")  # noqa: B009 - a SequentialJob
    if raw.get("tokenizer") and not needs_semantic_ids(sequential_model_class(model)):
        key = next(iter(raw["tokenizer"]))
        raise ValueError(f"tokenizer.{key} has no effect: {model} uses no semantic IDs (only models that decode "
                         "them, e.g. tiger, have a tokenizer)")


def embedding_source(data: SequenceData, settings: TokenizerSettings) -> str:
    if settings.source != "auto":
        return settings.source
    has_text = sum(1 for text in data.item_text.values() if text and text.strip())
    if has_text >= 0.5 * data.num_items:
        return "text"
    if data.attributes is not None:
        return "attributes"
    raise ValueError(
        f"data set '{data.name}' has neither item text nor attribute bags; use tokenizer.source=collaborative "
        "with tokenizer.collaborative_run=<a SASRec run>"
    )


def item_embeddings(data: SequenceData, settings: TokenizerSettings, cache_dir: Path) -> tuple[np.ndarray, str]:
    """(num_items + 1, d) item content vectors for the tokenizer, and the source used."""
    source = embedding_source(data, settings)
    if source == "text+collaborative":
        parts = [item_embeddings(data, settings.model_copy(update={"source": s}), cache_dir)[0]
                 for s in ("text", "collaborative")]  # fmt: skip
        return np.hstack(parts), source
    if source == "text":
        return cached_embeddings("text", data, cache_dir), source
    if source == "attributes":
        if data.attributes is None:
            raise ValueError(f"data set '{data.name}' has no attribute bags (tokenizer.source=attributes)")
        return cached_embeddings("attribute", data, cache_dir, dim=settings.attribute_dim, seed=settings.seed), source
    if settings.collaborative_run is None:
        raise ValueError("tokenizer.source=collaborative needs tokenizer.collaborative_run (a trained SASRec run)")
    model, config = load_sequential_run(settings.collaborative_run)
    if config.num_items != data.num_items or not hasattr(model, "item_embeddings"):
        raise ValueError(f"{settings.collaborative_run} is not an item-embedding run of '{data.name}'")
    table = model.item_embeddings().detach()
    return cached_embeddings("collaborative", data, cache_dir, item_embedding_matrix=table), source


def build_semantic_ids(
    data: SequenceData, settings: TokenizerSettings, cache_dir: Path, folder: Path | None = None,
    reporter: Reporter = SILENT,
) -> tuple[SemanticIds, TokenizerStats, str]:
    """Fit the tokenizer on the items' content, add the collision digit, save what a run needs
    (`reporter`: a progress bar over the fit, per epoch for a tokenizer that trains, e.g. RQ-VAE)."""
    embeddings, source = item_embeddings(data, settings, cache_dir)
    params, fit_args = dict(settings.params), {}
    if settings.method == "mmq":
        if source != "text+collaborative" and "modality_dims" not in params:
            raise ValueError("tokenizer.method=mmq needs two modalities: tokenizer.source=text+collaborative "
                             "(or tokenizer.params.modality_dims)")  # fmt: skip
        if source == "text+collaborative":
            text_dim = cached_embeddings("text", data, cache_dir).shape[1]
            params.setdefault("modality_dims", (text_dim, embeddings.shape[1] - text_dim))
        train = leave_one_out(data).train  # behaviour-aware fine-tuning never sees validation/test targets
        fit_args["behaviour"] = behaviour_pairs(train.offsets, train.items)
    tokenizer = make_tokenizer(
        settings.method, levels=settings.levels, codebook_size=settings.codebook_size, seed=settings.seed, **params,
    )
    epochs = tokenizer.fit_epochs
    with reporter.task(f"tokenizer {settings.method} fit", total=epochs if epochs else 1) as task:
        if epochs:
            tokenizer.on_epoch = lambda done, of, loss: task.advance(1, epoch=f"{done}/{of}", loss=float(loss))
        tokenizer.fit(embeddings[1:], **fit_args)
        tokenizer.on_epoch = None
        if not epochs:
            task.advance(1)
    sids = semantic_ids(tokenizer, embeddings, collision=settings.collision)
    stats = tokenizer.stats(embeddings[1:])
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        tokenizer.save(folder / TOKENIZER_FILE)
        record = {"source": source, "method": settings.method, "vocab_sizes": list(sids.vocab_sizes),
                  "stats": stats.model_dump(mode="json")}
        (folder / TOKENIZER_STATS).write_text(json.dumps(record, indent=1))
    return sids, stats, source


def with_train_defaults(job: SequentialJob) -> SequentialJob:
    """The job with its model's training defaults where the job leaves a setting unset."""
    return job.model_copy(update={"train": with_model_defaults(
        job.train, sequential_model_class(job.model).train_defaults, explicit=job.train.model_fields_set)})


def run_sequential_job(
    job: SequentialJob,
    runs_dir: str | Path = "runs",
    cache_dir: str | Path | None = None,
    reporter: Reporter = SILENT,
    data: SequenceData | None = None,
    folder: str | Path | None = None,
) -> tuple[Path | None, SeqTrainResult]:
    """Load the data, build semantic IDs if the model decodes them, train and write the run.

    The run directory follows the one naming rule of every task (`Run.create`, as a CTR run):
    `RUNS_DIR/<name or model-dataset>-<time>-<random>`, new each time, so that re-running a job
    never collides. `folder` writes to that exact directory instead (it must be empty or absent).

    In a torch.distributed group (`train --task sequential --nproc N`) rank 0 loads (and caches)
    the data first, every rank trains its own users with `batch_size / N` per step
    (`SequentialTask`), and rank 0 alone writes the run directory; the other ranks return None
    for it. For models that decode semantic IDs (TIGER) rank 0 fits the tokenizer (into its run
    directory) and broadcasts the IDs, so every rank builds the same model."""
    cache = Path(cache_dir) if cache_dir else default_cache_root()
    ctx = distributed.current()
    if ctx.active and not ctx.is_main:
        distributed.barrier()  # rank 0 loads (and caches) the data set first
    data = data or resolve_sequences(job.dataset, cache)
    if ctx.active and ctx.is_main:
        distributed.barrier()
    if not ctx.is_main:
        folder = None
    elif folder is not None:
        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()):
            raise FileExistsError(f"run directory {folder} already exists; choose another --runs-dir or name")
    else:
        folder = Run.create(runs_dir, job.name or f"{job.model}-{Path(data.name).name}").folder  # a path's last part
    sids = None
    if job.init_from is not None:
        sids = config_semantic_ids(job.init_from)  # the starting run's IDs: its weights decode them
    elif needs_semantic_ids(sequential_model_class(job.model)):
        if ctx.is_main:
            reporter.log(f"semantic IDs: {job.tokenizer.method} on {embedding_source(data, job.tokenizer)} embeddings")
            sids, stats, source = build_semantic_ids(data, job.tokenizer, cache, folder, reporter)  # type: ignore[arg-type]
            reporter.log(
                f"tokenizer ({source}): usage {', '.join(f'{u:.2f}' for u in stats.usage)}, collision rate "
                f"{stats.collision_rate:.3f}, relative error {stats.relative_error:.3f}"
            )
        sids = distributed.broadcast_object_from_main(sids)  # one tokenizer fit; every rank decodes the same IDs
    job = with_train_defaults(job)
    seed_everything(job.train.seed)  # the initial weights are part of what the seed fixes
    model = _build(job, data, sids)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        dump_yaml(job.model_dump(mode="json"), folder / JOB_FILE)
    result = train_sequential(model, data, job.train, folder, reporter, semantic_ids=sids)
    return folder, result


def read_job(folder: str | Path) -> SequentialJob:
    """The job a sequential run folder ran (its job.yaml); a damaged one is an error naming the file."""
    path = Path(folder) / JOB_FILE
    try:
        return SequentialJob.model_validate(load_yaml(path))
    except Exception as exc:
        raise ValueError(f"{path} is not a sequential job: {exc}") from exc


# fields of a job that name a run rather than decide what it computes
_NAMING_FIELDS = ("name",)
# fields that hold a path to another run: equal when they resolve to the same folder
_RUN_PATH_FIELDS = {("tokenizer", "collaborative_run"), ("init_from",)}


def job_differences(wanted: SequentialJob, found: SequentialJob) -> list[str]:
    """The settings in which two jobs differ (`section` or `section.key`), after each model's
    training defaults are filled in; the run name does not count, and paths to other runs count
    as equal when they resolve to the same folder. Empty: the same run."""
    a, b = (_with_all_defaults(job) for job in (wanted, found))
    differing: list[str] = []
    for section, value in a.items():
        if section in _NAMING_FIELDS:
            continue
        other = b.get(section)
        if isinstance(value, dict) and isinstance(other, dict):
            for key in sorted(set(value) | set(other)):
                if not _same_setting((section, key), value.get(key), other.get(key)):
                    differing.append(f"{section}.{key}")
        elif not _same_setting((section,), value, other):
            differing.append(section)
    return differing


def _with_all_defaults(job: SequentialJob) -> dict[str, Any]:
    """The job as data with the model's own defaults filled in: its training defaults and its
    typed config's (a setting written out at its default value is the same setting left unset)."""
    data = with_train_defaults(job).model_dump(mode="json")
    try:
        data["model_params"] = make_sequential_config(job.model, job.model_params).model_dump(mode="json")
    except ValueError:  # settings this version no longer accepts: compared as written
        pass
    return data


def _same_setting(where: tuple[str, ...], a: Any, b: Any) -> bool:
    if where in _RUN_PATH_FIELDS and a is not None and b is not None:
        return Path(a).resolve() == Path(b).resolve()
    return a == b


def job_digest(job: SequentialJob) -> str:
    """A short fingerprint of what the job computes (not its name): equal jobs, equal digests."""
    data = _with_all_defaults(job)
    for section in _NAMING_FIELDS:
        data.pop(section, None)
    for where in _RUN_PATH_FIELDS:  # the same source run however its path is written
        holder = data if len(where) == 1 else data.get(where[0], {})
        if holder.get(where[-1]) is not None:
            holder[where[-1]] = str(Path(holder[where[-1]]).resolve())
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_or_resume_sequential_job(
    job: SequentialJob, folder: str | Path, cache_dir: str | Path | None = None, reporter: Reporter = SILENT,
    data: SequenceData | None = None,
) -> tuple[Path, SeqTrainResult]:  # fmt: skip
    """The job in `folder`, however far it got before: a finished run of this job is read back, a
    killed one continues from its checkpoint, anything else there (a run killed before its first
    checkpoint) is started again. Why: a reproduction killed after hours of an Amazon run should not
    lose them. A folder holding another job is refused (naming the settings that differ)."""
    folder = Path(folder)
    if (folder / JOB_FILE).is_file():
        found = read_job(folder)
        differing = job_differences(job, found)
        if differing:
            raise FileExistsError(f"{folder} holds another job (it differs in {', '.join(differing)})")
        if (finished := finished_sequential_result(folder)) is not None:
            return folder, finished
        if Run(folder).has_checkpoint():
            reporter.log(f"resuming {folder} from its checkpoint")
            return folder, resume_sequential_job(folder, cache_dir, reporter, data=data)
    if folder.exists():
        shutil.rmtree(folder)
    ran, result = run_sequential_job(job, cache_dir=cache_dir, reporter=reporter, data=data, folder=folder)
    return ran or folder, result


def finished_sequential_result(folder: str | Path) -> SeqTrainResult | None:
    """The result of a finished sequential run, read back from its summary (None when the run has
    no summary and weights: it did not finish). A damaged summary is an error naming the file."""
    run = Run(Path(folder))
    if not ((run.folder / SUMMARY).is_file() and run.has_weights()):
        return None
    summary = run.summary
    fields = ("best_epoch", "epochs_run", "valid", "test", "train_seconds", "stopped_by", "steps", "best_step")
    return SeqTrainResult(**{key: summary[key] for key in fields}, run_dir=run.folder)


def find_finished_run(job: SequentialJob, folders: list[Path]) -> tuple[Path, SeqTrainResult] | None:
    """A finished run of exactly this job among `folders` and the run folders below them at any
    depth (the run directories a benchmark wrote, or another reproduction's `reproduce/CARD/RUN`),
    with its result; None when there is none. Why: a run that `bench/gr_benchmark.py` trained for
    hours is the same run a card's reproduction asks for."""
    for root in folders:
        candidates = sorted(path.parent for path in Path(root).rglob(JOB_FILE)) if Path(root).is_dir() else []
        for folder in candidates:
            if job_differences(job, read_job(folder)):
                continue
            result = finished_sequential_result(folder)
            if result is not None:
                return folder, result
    return None


def resume_sequential_job(
    folder: str | Path, cache_dir: str | Path | None = None, reporter: Reporter = SILENT,
    data: SequenceData | None = None,
) -> SeqTrainResult:  # fmt: skip
    """Continue a killed sequential run from its checkpoint (same job, same semantic IDs)."""
    folder = Path(folder)
    if not (folder / JOB_FILE).is_file() or not (folder / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"{folder} is not a sequential run that can resume ({JOB_FILE} and checkpoint.pt)")
    job = read_job(folder)
    cache = Path(cache_dir) if cache_dir else default_cache_root()
    data = data or resolve_sequences(job.dataset, cache)
    _, config = load_sequential_config(folder)
    sids = config_semantic_ids(folder)
    seed_everything(job.train.seed)
    model = _build(job.model_copy(update={"model_params": config.model_params}), data, sids)
    return train_sequential(model, data, job.train, folder, reporter, semantic_ids=sids, resume=True)


def _build(job: SequentialJob, data: SequenceData, sids: SemanticIds | None) -> torch.nn.Module:
    """The job's model: new, or (`init_from`) with the starting run's settings under the job's
    `model_params` and its trained weights."""
    if job.init_from is None:
        return build_sequential(job.model, data.num_items, job.model_params, semantic_ids=sids)
    _, source_config = load_sequential_config(job.init_from)
    if source_config.model != job.model or source_config.num_items != data.num_items:
        raise ValueError(f"init_from {job.init_from} is a {source_config.model} run over {source_config.num_items} "
                         f"items; this run trains {job.model} on {job.dataset} ({data.num_items} items): a run can only "
                         "start from a run of the same model and catalogue")  # fmt: skip
    model = build_sequential(job.model, data.num_items, {**source_config.model_params, **job.model_params},
                             semantic_ids=sids)  # fmt: skip
    model.load_state_dict(Run(job.init_from).load_weights("cpu"))  # the starting run's best weights, not a second model
    model.start_fine_tuning()
    return model


def _top_items(model, data: SequenceData, users: list[int], k: int, batch_size: int = 1024) -> dict[int, list[int]]:
    """Top-k next items per user after their whole sequence, batched."""
    rows_of = {int(u): i for i, u in enumerate(data.users.tolist())}
    missing = [u for u in users if int(u) not in rows_of]
    if missing:
        raise KeyError(f"user {missing[0]} is not in data set '{data.name}' "
                       f"(user ids {data.users.min()}..{data.users.max()})")
    max_len = getattr(model.config, "max_len", 50)
    out: dict[int, list[int]] = {}
    model.eval()
    for first in range(0, len(users), batch_size):
        chunk = [int(u) for u in users[first : first + batch_size]]
        rows = np.array([rows_of[u] for u in chunk], dtype=np.int64)
        starts, ends = data.offsets[rows], data.offsets[rows + 1]
        flat = np.concatenate([data.items[s:e] for s, e in zip(starts, ends, strict=True)])
        offsets = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
        batch = {"history": torch.from_numpy(pad_histories(offsets, flat, max_len)),
                 "user": torch.tensor(chunk, dtype=torch.long)}
        with torch.no_grad():
            top = model.recommend(batch, k)
        out.update({u: top[i].tolist() for i, u in enumerate(chunk)})
    return out


def recommend_for_users(
    run_dir: str | Path, users: list[int], k: int = 10, cache_dir: str | Path | None = None
) -> dict[int, list[int]]:
    """Top-k next items of a sequential run for each user of its data set (after their whole
    sequence), in batched passes. An unknown user is a KeyError naming it."""
    model, config = load_sequential_run(run_dir)
    data = resolve_sequences(config.dataset, Path(cache_dir) if cache_dir else default_cache_root())
    return _top_items(model, data, list(users), k)


def recommend_for_user(
    run_dir: str | Path, user: int, k: int = 10, cache_dir: str | Path | None = None
) -> tuple[list[int], list[str], list[int]]:
    """Top-k next items for a user of the run's data set (after their whole sequence),
    their text where the data has it, and the history used."""
    model, config = load_sequential_run(run_dir)
    data = resolve_sequences(config.dataset, Path(cache_dir) if cache_dir else default_cache_root())
    items = _top_items(model, data, [int(user)], k)[int(user)]
    row = int(np.flatnonzero(data.users == user)[0])
    history = data.items[int(data.offsets[row]) : int(data.offsets[row + 1])].tolist()
    return items, [data.item_text.get(int(i), "") for i in items], history
