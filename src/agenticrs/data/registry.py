"""Named data sets: the canonical public splits, the embedded synthetic default, and YAML specs.

Public data is read from a path (never shipped): $AGENTICRS_DATA_DIR, or a `shared/data` folder
found beside the working directory or the source checkout. The names live in `DATASETS`, an
`agenticrs.runtime.Registry` (a taken name is an error, an unknown one lists the known ones); the
sequence data sets of the generative recommenders have their own registry,
`agenticrs.gr.sequences.SEQUENCE_DATASETS`, because they load into another type.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agenticrs.data.adapters.bars import bars_spec
from agenticrs.data.cache import default_cache_root
from agenticrs.data.errors import DataError
from agenticrs.data.spec import DatasetSpec
from agenticrs.data.synthetic import generate_synthetic
from agenticrs.progress import SILENT, Reporter
from agenticrs.runtime.registry import Registry


def data_root() -> Path | None:
    """The folder of public data sets, or None when none is found."""
    env = os.environ.get("AGENTICRS_DATA_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *Path.cwd().parents, *here.parents]:
        candidate = base / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    task: str
    description: str
    build: Callable[[Path], DatasetSpec]  # cache dir -> spec
    requires: str | None = None  # folder under the data root; None: generated

    def location(self) -> Path | None:
        if self.requires is None:
            return None
        root = data_root()
        return root / self.requires if root else None

    def available(self) -> bool:
        if self.requires is None:
            return True
        location = self.location()
        return location is not None and location.exists()


def _public(folder: str, name: str, group_key: str) -> Callable[[Path], DatasetSpec]:
    def build(cache_dir: Path) -> DatasetSpec:
        root = data_root()
        if root is None or not (root / folder).exists():
            raise DataError(
                f"data set '{name}' needs {folder} under the data root, which was not found",
                expected="AGENTICRS_DATA_DIR pointing at the folder of public data sets (../shared/data)",
            )
        return bars_spec(root / folder, group_key=group_key, name=name)

    return build


def _simulated(preset: str, task: str) -> Callable[[Path], DatasetSpec]:
    def build(cache_dir: Path) -> DatasetSpec:
        from agenticrs.data.simulated import simulated_dataset

        return simulated_dataset(preset, task, cache_dir)

    return build


_SIM_TASKS = {
    "ctr": ("ctr + history + requests", "clicks on impressions of 3 scenarios, with behaviour histories"),
    "cvr_delayed": ("delayed cvr", "purchase given click, with click and (delayed) purchase times"),
    "sequential": ("next item", "next clicked item, leave-one-out over click sequences"),
    "multi_scenario": ("multi-scenario", "click and purchase labels across home feed, search and cart page"),
}
_SIM_SIZES = {"tiny": "~30k impressions, for tests", "small": "~200k impressions, seconds to generate",
              "medium": "~2.5M impressions", "large": ">= 10M impressions",
              "tiny-planted": "`tiny` with a planted cross (user_segment x item_style) and leak (dwell_bucket), for tests",
              "small-planted": "`small` with a planted cross (user_segment x item_style) and leak (dwell_bucket)"}


def _prepromo(preset: str) -> Callable[[Path], DatasetSpec]:
    def build(cache_dir: Path) -> DatasetSpec:
        from agenticrs.data.prepromo import cached_prepromo_dataset

        return cached_prepromo_dataset(preset, cache_dir)

    return build


def _synthetic(preset: str) -> Callable[[Path], DatasetSpec]:
    def build(cache_dir: Path) -> DatasetSpec:
        return generate_synthetic(preset, cache_dir / "generated" / f"synthetic-{preset}")

    return build


DATASETS: Registry[DatasetEntry] = Registry("data set")


def register_dataset(entry: DatasetEntry) -> DatasetEntry:
    """Make a data set available by its name (to `resolve_dataset`, `--dataset` and `agenticrs datasets`)."""
    return DATASETS.register(entry.name, entry)


for _entry in [
    DatasetEntry(
        "synthetic",
        "ctr + history",
        "embedded default: generated impressions with a known ground-truth click function (oracle AUC known)",
        _synthetic("default"),
    ),
    DatasetEntry("synthetic-tiny", "ctr + history", "a 20k-impression synthetic set for tests", _synthetic("tiny")),
    DatasetEntry(
        "synthetic-relevance",
        "ctr + history",
        "synthetic, clicks driven by the target's similarity to its closest history item (target attention wins)",
        _synthetic("relevance"),
    ),
    DatasetEntry(
        "frappe",
        "ctr",
        "Frappe app usage, canonical split (46,177 / 11,545 / 28,860), 10 categorical fields",
        _public("frappe_nfm/split", "frappe", "user"),
        requires="frappe_nfm/split",
    ),
    DatasetEntry(
        "movielens",
        "ctr",
        "MovieLens-100K rating>=4, canonical split (80,000 / 10,000 / 10,000), 8 categorical fields",
        _public("movielens_100k/ctr_split", "movielens", "user_id"),
        requires="movielens_100k/ctr_split",
    ),
    *(
        DatasetEntry(
            f"sim-{size}" if task == "ctr" else f"sim-{size}-{task}",
            kind,
            f"simulator ({about}): {what}",
            _simulated(size, task),
        )
        for size, about in _SIM_SIZES.items()
        for task, (kind, what) in _SIM_TASKS.items()
    ),
    DatasetEntry(
        "sim-promo-prepromo",
        "pre-promotion cvr",
        "simulator (`promo` preset, four promotions): pre-promotion clicks with direct, cart and delayed "
        "(promotion-day) purchase labels; train on the earlier promotions and the last one's first day (no "
        "delayed label yet), test on its later pre-promotion days (docs/conversion.md)",
        _prepromo("promo"),
    ),
]:
    register_dataset(_entry)


def resolve_dataset(
    name: str, cache_dir: str | Path | None = None, reporter: Reporter = SILENT
) -> DatasetSpec:
    """A registered name, or the path of a dataset-spec YAML file."""
    cache_root = Path(cache_dir) if cache_dir else default_cache_root()
    if name.endswith((".yaml", ".yml")) or Path(name).is_file():
        return DatasetSpec.from_yaml(name)
    if name not in DATASETS:
        raise DataError(
            f"unknown data set '{name}'",
            expected=f"one of {sorted(DATASETS)} or the path of a dataset-spec YAML file",
        )
    with reporter.task(f"prepare data set {name}"):
        return DATASETS[name].build(cache_root)
