"""Pre-promotion conversion data (CM-DCM) from a simulation with several promotions.

`write_prepromo_dataset(sim_dir, config, out_dir, ...)` keeps the pre-promotion clicks of the
simulator's logs with their promotion columns (`agenticrs.sim.promo.promotion_columns`: labels
y_dir, y_atc, y_del; days_to_promo; user-state counts) and splits them by promotion:

* the *current* promotion (`eval_promo`, default the last): its first `observed_days`
  pre-promotion days are observable training data with y_dir and y_atc but no y_del (the
  promotion has not happened yet: y_del is missing, so it leaves the loss); its remaining
  pre-promotion days are the `test` split, with every label (revealed on the promotion day);
* the *historical* promotions before it (`history=True`): every pre-promotion click with all
  three labels, in `train`. `history=False` is the ablation "no historical promotions";
  `include_current=False` leaves the current promotion's observed days out of `train` (the first stage
  of the spec's two-stage training: history first, then a fine-tune on the current days).

`valid` (early stopping) is a random `valid_fraction` of the training requests. Behaviour is
observable up to the click; labels are what the logs reveal by the promotion day.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from agenticrs.data.errors import DataError
from agenticrs.data.simulated import REQUEST_FIELDS, _fields
from agenticrs.data.spec import DatasetSpec, FieldSpec, ReaderOptions
from agenticrs.runtime.files import atomic_write, atomic_write_text
from agenticrs.sim.config import SimConfig
from agenticrs.sim.logs import SPLITS
from agenticrs.sim.promo import PROMO_LABELS, USER_STATE_COLUMNS, promotion_columns


def prepromo_clicks(sim_dir: str | Path, config: SimConfig) -> pa.Table:
    """Every pre-promotion click of a simulation folder, with the promotion columns."""
    sim_dir = Path(sim_dir)
    files = [sim_dir / f"clicks_{s}.parquet" for s in SPLITS]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise DataError(f"no simulator click logs at {absent[0]}", expected="a folder written by `agenticrs simulate`")
    table = promotion_columns(pa.concat_tables([pq.read_table(str(f)) for f in files]), config)
    return table.filter(pc.equal(table["pre_promo"], 1))


def _spec_fields(history_len: int) -> list[FieldSpec]:
    fields = _fields(history_len, list(PROMO_LABELS))
    fields = [f.model_copy(update={"optional": True}) if f.name == "y_del" else f for f in fields]
    return [
        *fields,
        FieldSpec(name="days_to_promo", kind="categorical"),
        *(FieldSpec(name=name, kind="numeric", transform="log1p") for name in USER_STATE_COLUMNS),
    ]


def write_prepromo_dataset(
    sim_dir: str | Path, config: SimConfig, out_dir: str | Path, eval_promo: int = -1, history: bool = True,
    observed_days: int = 1, valid_fraction: float = 0.1, seed: int = 0, name: str = "sim-prepromo",
    include_current: bool = True,
) -> DatasetSpec:  # fmt: skip
    """Write `prepromo_{train,valid,test}.parquet` and `prepromo.yaml` to `out_dir`; return the spec."""
    promotions = config.promotions
    k = eval_promo if eval_promo >= 0 else len(promotions) + eval_promo
    if not 0 <= k < len(promotions):
        raise ValueError(f"eval_promo {eval_promo} is not a promotion index (the config has {len(promotions)})")
    if not (history or include_current):
        raise ValueError("history=False and include_current=False leave no training data")
    if history and k == 0:
        raise ValueError("eval_promo is the first promotion: there is no historical promotion to learn from "
                         "(use a preset with several promotions, e.g. --preset promo, or history=False)")  # fmt: skip
    if not 0 <= observed_days < config.pre_promo_days:
        raise ValueError(f"observed_days ({observed_days}) must leave test days in the {config.pre_promo_days} "
                         "pre-promotion days")  # fmt: skip
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must lie in (0, 1); got {valid_fraction}")
    clicks = prepromo_clicks(sim_dir, config)
    promo = clicks["promo_index"].to_numpy()
    day = clicks["day"].to_numpy().astype(np.int64)
    cutoff = promotions[k] - config.pre_promo_days + observed_days  # first test day
    current = promo == k
    observed = current & (day < cutoff)
    test = current & (day >= cutoff)
    train = (observed if include_current else np.zeros_like(observed)) | ((promo < k) if history else np.zeros_like(observed))
    # the current promotion has not happened yet: its delayed conversions are unknown
    y_del = clicks["y_del"].to_numpy().astype(np.float32)
    clicks = clicks.set_column(clicks.schema.get_field_index("y_del"), "y_del",
                               pa.array(y_del, pa.float32(), mask=observed))  # fmt: skip
    requests = clicks["request_id"].to_numpy()
    unique = np.unique(requests[train])
    held = np.random.default_rng(seed).random(len(unique)) < valid_fraction
    valid = train & np.isin(requests, unique[held])
    parts = {"train": train & ~valid, "valid": valid, "test": test}
    empty = [s for s, mask in parts.items() if not mask.any()]
    if empty:
        raise DataError(f"the pre-promotion data has no rows in split(s) {empty}",
                        expected="a simulation with clicks before its promotions (a larger preset)")  # fmt: skip
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, mask in parts.items():
        path = out_dir / f"prepromo_{split}.parquet"
        with atomic_write(path) as handle:
            pq.write_table(clicks.filter(pa.array(mask)), handle, compression="zstd")
        files[split] = [str(path.resolve())]
    which = "promotions " + ", ".join(str(d) for d in promotions[:k]) if history else "no historical promotion"
    now = f"the first {observed_days} day(s) of" if include_current else "none of the pre-promotion days before"
    spec = DatasetSpec(
        name=name, files=files, reader=ReaderOptions(format="parquet"), fields=_spec_fields(config.history_len),
        group_key="user_id", request_key="request_id", request_fields=REQUEST_FIELDS,
        description=f"simulated pre-promotion clicks: train on {which} and {now} the "
        f"promotion on day {promotions[k]} (no y_del), test on its later pre-promotion days "
        f"(config {config.config_hash()}, seed {config.seed})",
    )  # fmt: skip
    atomic_write_text(out_dir / "prepromo.yaml", spec.to_yaml())
    return spec


def cached_prepromo_dataset(preset: str, cache_root: Path, seed: int = 0) -> DatasetSpec:
    """`sim-<preset>-prepromo`: the preset's simulation (generated once into the cache, as every
    `sim-*` data set) and its pre-promotion data set with `write_prepromo_dataset`'s defaults (the
    last promotion held out, its first pre-promotion day observed without y_del, the earlier
    promotions as history), written once beside it, keyed by the world's config hash."""
    from agenticrs.data.simulated import simulated_dataset, simulation_dir
    from agenticrs.sim.config import sim_preset

    config = sim_preset(preset, seed=seed)
    simulated_dataset(preset, "ctr", cache_root, seed=seed)  # generated unless the cache holds it
    sim_dir = simulation_dir(preset, cache_root, seed)
    out_dir = sim_dir / f"prepromo-{config.config_hash()}"
    if (out_dir / "prepromo.yaml").is_file():
        return DatasetSpec.from_yaml(out_dir / "prepromo.yaml")
    return write_prepromo_dataset(sim_dir, config, out_dir, name=f"sim-{preset}-prepromo", seed=seed)
