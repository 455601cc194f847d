"""Raw files -> fitted encoder -> cached columnar splits, keyed by spec and file fingerprints.

A second run with the same spec and the same files skips processing entirely. The training split
is parsed once: while the encoder is fitted, the parsed columns are spilled to an Arrow IPC file
that the transform pass then reads back memory-mapped, so CSV parsing is never done twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from agenticrs.data.cache import SplitArrays, SplitWriter, default_cache_root, publish
from agenticrs.data.fingerprint import fingerprint
from agenticrs.data.readers import Chunk, iter_split, require_file
from agenticrs.data.spec import DatasetSpec
from agenticrs.features.encoder import ENCODER_VERSION, FeatureEncoder
from agenticrs.features.schema import FeatureSchema
from agenticrs.progress import SILENT, Reporter

ENCODER_FILE = "encoder.json"
# bumped when processing starts rejecting input it used to accept (2: infinite numbers), so that a
# cache written before cannot serve data that processing would now refuse
CHECKS_VERSION = 2


@dataclass
class ProcessedDataset:
    """A processed data set: the fitted encoder, its schema and the memory-mapped splits."""

    spec: DatasetSpec
    encoder: FeatureEncoder
    folder: Path
    splits: dict[str, SplitArrays] = field(default_factory=dict)
    process_seconds: float = 0.0
    from_cache: bool = False

    @property
    def schema(self) -> FeatureSchema:
        return self.encoder.schema()

    def split(self, name: str) -> SplitArrays:
        if name not in self.splits:
            raise KeyError(f"split '{name}' not in data set '{self.spec.name}' (has {sorted(self.splits)})")
        return self.splits[name]

    @property
    def total_rows(self) -> int:
        return sum(s.rows for s in self.splits.values())


def cache_key(spec: DatasetSpec, encoder: FeatureEncoder | None, with_labels: bool) -> str:
    files = [p for split in sorted(spec.files) for p in spec.files[split]]
    encoder_digest = (
        hashlib.sha256(json.dumps(encoder.to_dict(), sort_keys=True).encode()).hexdigest()[:16] if encoder else None
    )
    settings = {
        "spec": spec.model_dump(mode="json"),
        "encoder": encoder_digest,
        "version": ENCODER_VERSION,
        "checks": CHECKS_VERSION,
        "labels": with_labels,
    }
    return fingerprint(files, settings)


def _columns(spec: DatasetSpec, with_labels: bool) -> list[str]:
    label_sources = {f.source for f in spec.labels}
    return [c for c in spec.source_columns if with_labels or c not in label_sources]


class _Spill:
    """Tee of parsed training chunks, replayed for the transform pass.

    Chunks stay in memory up to `memory_budget` bytes; the rest goes to an Arrow IPC stream on
    disk (streams allow each batch its own dictionaries), so memory stays bounded for any size.
    """

    def __init__(self, path: Path, memory_budget: int) -> None:
        self.path = path
        self.memory_budget = memory_budget
        self.in_memory: list[Chunk] = []
        self.in_memory_bytes = 0
        self.on_disk: list[tuple[str, int]] = []
        self.writer: pa.ipc.RecordBatchStreamWriter | None = None

    def tee(self, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
        for chunk in chunks:
            if not self.on_disk and self.in_memory_bytes + chunk.table.nbytes <= self.memory_budget:
                self.in_memory.append(chunk)
                self.in_memory_bytes += chunk.table.nbytes
            else:
                if self.writer is None:
                    self.writer = pa.ipc.new_stream(str(self.path), chunk.table.schema)
                self.writer.write_table(chunk.table.combine_chunks())
                self.on_disk.append((chunk.file, chunk.first_row))
            yield chunk
        if self.writer is not None:
            self.writer.close()

    def replay(self) -> Iterator[Chunk]:
        while self.in_memory:
            yield self.in_memory.pop(0)  # released as soon as it is encoded
        if not self.on_disk:
            return
        # read through a file, not a memory map: a map's pages count in this process's RSS until it
        # is closed, so the peak memory would grow with the data set (the spill is as large as train)
        with pa.ipc.open_stream(pa.OSFile(str(self.path))) as reader:
            for (file, first_row), batch in zip(self.on_disk, reader, strict=True):
                yield Chunk(file, first_row, pa.Table.from_batches([batch]))


def spill_budget() -> int:
    """Bytes of parsed training data kept in memory between the two passes ($AGENTICRS_SPILL_MB)."""
    return int(float(os.environ.get("AGENTICRS_SPILL_MB", "1024")) * (1 << 20))


def process_dataset(
    spec: DatasetSpec,
    cache_root: str | Path | None = None,
    *,
    encoder: FeatureEncoder | None = None,
    with_labels: bool = True,
    reporter: Reporter = SILENT,
    force: bool = False,
) -> ProcessedDataset:
    """Fit (unless `encoder` is given) and apply the encoder to every split, with caching."""
    cache_root = Path(cache_root) if cache_root else default_cache_root()
    for files in spec.files.values():
        for file in files:
            require_file(file)  # a missing or empty file is named before anything is fingerprinted
    key = cache_key(spec, encoder, with_labels)
    final = cache_root / f"{spec.name}-{key}"
    if final.exists() and force:
        shutil.rmtree(final)
    if (final / ENCODER_FILE).exists():
        return _load(spec, final, from_cache=True)

    started = time.perf_counter()
    tmp = cache_root / f".{spec.name}-{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        columns = _columns(spec, with_labels)
        float_columns = {f.source for f in spec.fields if f.kind in ("numeric", "label")}
        replays: dict[str, Iterator[Chunk]] = {}
        if encoder is None:
            spill = _Spill(tmp / "train.spill.arrows", spill_budget())
            encoder = FeatureEncoder(spec)
            with reporter.task(f"{spec.name}: fit encoder on train") as task:
                chunks = prefetch(iter_split(spec.files["train"], spec.reader, columns, float_columns))
                parsed = map(encoder.parse_chunk, chunks)
                encoder.fit(_counted(spill.tee(parsed), task))
            replays["train"] = spill.replay()
        for split, files in spec.files.items():
            if not files:
                continue
            source = replays.get(split) or prefetch(iter_split(files, spec.reader, columns, float_columns))
            writer = SplitWriter(tmp / "splits" / split)
            with reporter.task(f"{spec.name}: encode {split}") as task:
                for chunk in source:
                    writer.append(encoder.transform(chunk))
                    task.advance(chunk.num_rows, rows=writer.rows)
            writer.close()
        (tmp / "train.spill.arrows").unlink(missing_ok=True)
        encoder.save(tmp / ENCODER_FILE)
        (tmp / "process.json").write_text(
            json.dumps({"seconds": time.perf_counter() - started, "spec": spec.model_dump(mode="json")})
        )
        publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    dataset = _load(spec, final, from_cache=False)
    dataset.process_seconds = time.perf_counter() - started
    return dataset


def prefetch(chunks: Iterator[Chunk], depth: int = 2) -> Iterator[Chunk]:
    """Read the next chunks in a background thread while the current one is encoded."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for chunk in chunks:
                buffer.put(chunk)
        except BaseException as exc:  # handed to the consumer, raised there
            buffer.put(exc)
        buffer.put(done)

    threading.Thread(target=produce, daemon=True, name="agenticrs-read").start()
    while True:
        item = buffer.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _counted(chunks: Iterator[Chunk], task) -> Iterator[Chunk]:
    rows = 0
    for chunk in chunks:
        rows += chunk.num_rows
        task.advance(chunk.num_rows, rows=rows)
        yield chunk


def _load(spec: DatasetSpec, folder: Path, from_cache: bool) -> ProcessedDataset:
    encoder = FeatureEncoder.load(folder / ENCODER_FILE)
    splits = {p.name: SplitArrays(p) for p in sorted((folder / "splits").iterdir()) if (p / "meta.json").exists()}
    info = json.loads((folder / "process.json").read_text()) if (folder / "process.json").exists() else {}
    return ProcessedDataset(
        spec=spec,
        encoder=encoder,
        folder=folder,
        splits=splits,
        process_seconds=float(info.get("seconds", 0.0)),
        from_cache=from_cache,
    )
