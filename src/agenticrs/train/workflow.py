"""End-to-end jobs on top of the layers: train a run, evaluate or score with a saved run.

The CLI, the demo, the benchmarks and (later) the agents call these, so that every entry point
processes data, builds models and writes run directories the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from torch import nn

from agenticrs.data.registry import resolve_dataset
from agenticrs.data.shards import SplitShard, split_nbytes
from agenticrs.data.spec import DatasetSpec
from agenticrs.features.actions import featured, fit_features
from agenticrs.features.pipeline import ProcessedDataset, process_dataset
from agenticrs.models.base import Model, build_model, make_config, model_class
from agenticrs.progress import SILENT, Reporter
from agenticrs.runtime import resolve_device, seed_everything
from agenticrs.runtime.files import atomic_write
from agenticrs.train import distributed
from agenticrs.train.config import RunConfig, with_model_defaults
from agenticrs.train.ctr import Conversion, evaluate, model_targets, predict_probs, with_conversion_metrics
from agenticrs.train.engine import TrainResult
from agenticrs.train.run import Run
from agenticrs.train.trainer import Trainer


@dataclass
class TrainedRun:
    run: Run
    model: Model
    result: TrainResult
    data: ProcessedDataset


def load_data(
    dataset: str, cache_dir: str | Path | None = None, reporter: Reporter = SILENT
) -> ProcessedDataset:
    spec = resolve_dataset(dataset, cache_dir=cache_dir, reporter=reporter)
    return process_dataset(spec, cache_dir, reporter=reporter)


def with_model_train_defaults(config: RunConfig) -> RunConfig:
    """The run config with the model's own training defaults (`Model.train_defaults`: e.g. warm-up
    for transformers) filled in wherever the user's config does not set that field."""
    defaults = model_class(config.model).train_defaults
    if not defaults:
        return config
    return config.model_copy(update={"train": with_model_defaults(config.train, defaults)})


def embedding_tables(model: Model) -> str:
    """One line on the model's embedding tables (rows, width, float32 size), said before training:
    the table size is what hashing (`hash_buckets`) and frequency filtering (`min_count`) bound."""
    tables = [m.weight for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
    rows = sum(t.shape[0] for t in tables)
    values = sum(t.numel() for t in tables)
    return (f"embedding tables: {len(tables)} tables, {rows:,} rows, {values:,} values "
            f"({values * 4 / (1 << 20):,.1f} MB float32) of {sum(p.numel() for p in model.parameters()):,} parameters")


def train_run(
    config: RunConfig,
    runs_dir: str | Path = "runs",
    cache_dir: str | Path | None = None,
    reporter: Reporter = SILENT,
    data: ProcessedDataset | None = None,
) -> TrainedRun:
    """Process the data set (cached), build the model, train it and write the run directory.

    The model's config and the device are checked first: a bad value is one clear error before
    any data is processed or any run directory is created.

    In a torch.distributed group (`agenticrs train --nproc N`), rank 0 processes the data set
    first (the others then read its cache), every rank trains on its own slice of the training
    split with `train.batch_size / N` rows per step (the configured batch is the global one), and
    rank 0 alone creates and writes the run directory; the other ranks return `run=None`."""
    make_config(config.model, config.model_params, smoke=config.smoke)  # ValueError naming the field
    resolve_device(config.train.device)  # ValueError when e.g. cuda is asked for without a GPU
    ctx = distributed.current()
    config = with_model_train_defaults(config)
    train_config = config.train
    if ctx.active:
        train_config = train_config.model_copy(
            update={"batch_size": distributed.local_batch_size(train_config.batch_size, ctx.world_size)})
        if not ctx.is_main:
            distributed.barrier()  # rank 0 processes (and caches) the data set first
    data = data or load_data(config.dataset, cache_dir, reporter)
    if ctx.active and ctx.is_main:
        distributed.barrier()
    # feature actions: fitted on the train split only, applied to every split as a view (the cache
    # is untouched); the fitted state is saved with the run, so scoring applies exactly the same
    fitted = fit_features(config.features, data) if config.features else None
    data = featured(data, fitted)
    seed_everything(config.train.seed)  # the initial weights are part of what the seed fixes
    model = build_model(config.model, data.schema, config.model_params, smoke=config.smoke)
    run = None
    if ctx.is_main:
        run = Run.create(runs_dir, config.name or f"{config.model}-{data.spec.name}")
        run.write_setup(config, data.spec, data.encoder, fitted)
    splits = dict(data.splits)
    if ctx.active:
        splits["train"] = SplitShard.of_rank(data.split("train"), ctx.rank, ctx.world_size)
    budget = None if train_config.memory_budget_mb is None else train_config.memory_budget_mb * (1 << 20)
    for name, split in splits.items():
        if budget is not None and split_nbytes(split) > budget:
            reporter.log(f"{name}: {split_nbytes(split) / (1 << 20):,.0f} MB > train.memory_budget_mb: read from the "
                         f"memory-mapped cache ({'shuffled blocks' if name == 'train' else 'in order'})")
        elif ctx.is_main or name == "train":  # only rank 0 evaluates: the others never read valid or test
            split.load_in_memory()
    reporter.log(embedding_tables(model))
    result = Trainer(train_config, reporter).fit(model, replace(data, splits=splits), run)
    return TrainedRun(run=run, model=model, result=result, data=data)  # type: ignore[arg-type]


def resume_run(
    run_dir: str | Path, cache_dir: str | Path | None = None, reporter: Reporter = SILENT
) -> TrainedRun:
    """Continue a run that was killed: same config and data, from its last checkpoint (the
    result equals that of an uninterrupted run)."""
    run = Run(run_dir)
    if not run.folder.is_dir():
        raise FileNotFoundError(f"run directory {run.folder} does not exist")
    if not run.has_checkpoint():
        raise FileNotFoundError(f"{run.folder} has no checkpoint.pt to resume from (finished, or never started)")
    config = run.config
    resolve_device(config.train.device)
    data = featured(load_data(config.dataset, cache_dir, reporter), run.features)
    seed_everything(config.train.seed)
    model = build_model(config.model, data.schema, config.model_params, smoke=config.smoke)
    for split in data.splits.values():
        split.load_in_memory()
    result = Trainer(config.train, reporter).fit(model, data, run, resume=True)
    return TrainedRun(run=run, model=model, result=result, data=data)


def _with_files(spec: DatasetSpec, split: str, files: list[str]) -> DatasetSpec:
    return spec.model_copy(update={"files": {"train": [], split: [str(Path(f).resolve()) for f in files]}})


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    files: list[str] | None = None,
    cache_dir: str | Path | None = None,
    reporter: Reporter = SILENT,
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics and predictions of a saved run on one of its splits, or on other labelled files."""
    run = Run(run_dir)
    config, spec = run.config, run.spec
    device = resolve_device(config.train.device)
    if files:
        spec, split = _with_files(spec, "eval", files), "eval"
    elif split not in spec.files:
        raise KeyError(f"the run's data set has no split '{split}' (has {sorted(spec.files)})")
    else:
        spec = spec.model_copy(update={"files": {"train": [], split: spec.files[split]}})
    data = featured(process_dataset(spec, cache_dir, encoder=run.encoder, reporter=reporter), run.features)
    model = run.load_model(device)
    summary, labels = run.summary, list(run.schema.labels)
    heads = list(summary.get("labels") or [])
    if summary.get("label") is None and heads:  # a multi-task run: its heads, targets and funnel
        conversion = Conversion.from_json(summary["conversion"], heads) if summary.get("conversion") else None
        return evaluate(
            model, data.split(split), with_conversion_metrics(config.train.metrics, conversion),
            config.train.eval_batch_size, [labels.index(n) for n in heads], device, reporter, label_names=heads,
            targets=model_targets(model), conversion=conversion,
        )  # fmt: skip
    label_index = labels.index(summary.get("label") or labels[0])
    return evaluate(
        model, data.split(split), config.train.metrics, config.train.eval_batch_size, label_index, device, reporter
    )


def check_output_path(out: str | Path, inputs: list[str] | list[Path]) -> Path:
    """Where predictions may be written: a file (not a folder, not under a file) that is none of
    the input files, so scoring can never replace its own input. Returns the path."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(
            f"the output {out} is a folder; give a file name for the predictions CSV (e.g. {out / 'predictions.csv'})"
        )
    blocking = next((parent for parent in out.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise ValueError(f"the output {out} cannot be written: {blocking} is a file, not a folder")
    for source in map(Path, inputs):
        same = out.resolve() == source.resolve() or (out.exists() and source.exists() and out.samefile(source))
        if same:
            raise ValueError(
                f"the output {out} is also an input file ({source}); refusing to replace the input: "
                "write the predictions to another file"
            )
    return out


def write_predictions(out: str | Path, probs: np.ndarray) -> None:
    """Two columns, `row` (the input row's 0-based position, over the input files in order) and
    `prediction`, an unquoted header, written atomically (never a half-written CSV)."""
    probs = np.asarray(probs, dtype=np.float64)
    table = pa.table({"row": np.arange(len(probs), dtype=np.int64), "prediction": probs})
    with atomic_write(out, "wb") as handle:
        handle.write(b"row,prediction\n")  # Arrow quotes a header it writes; these names need no quotes
        pacsv.write_csv(table, handle, pacsv.WriteOptions(include_header=False, quoting_style="none"))


def predict_files(
    run_dir: str | Path,
    files: list[str],
    cache_dir: str | Path | None = None,
    reporter: Reporter = SILENT,
    out: str | Path | None = None,
) -> np.ndarray:
    """Click probabilities of a saved run for unlabelled (or labelled) files, in row order.

    With `out`, the predictions are also written there as CSV (`write_predictions`); the path is
    checked before anything is scored (`check_output_path`: not a folder, not an input file)."""
    if out is not None:
        check_output_path(out, files)
    run = Run(run_dir)
    config = run.config
    device = resolve_device(config.train.device)
    spec = _with_files(run.spec, "predict", files)
    data = process_dataset(spec, cache_dir, encoder=run.encoder, with_labels=False, reporter=reporter)
    data = featured(data, run.features)  # the run's fitted feature actions, as in training
    model = run.load_model(device)
    probs = predict_probs(model, data.split("predict"), config.train.eval_batch_size, device, reporter)
    if out is not None:
        write_predictions(out, probs)
    return probs
