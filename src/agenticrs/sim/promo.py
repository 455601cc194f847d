"""Promotion-relative columns of the simulator's click logs (the CM-DCM setting).

`promotion_columns(table, config)` derives, from the logged columns alone (`day`, `cart`,
`purchase`, `purchase_ts` and the behaviour history), per click (`promotion_features`: the
observable part alone, for candidates online):

* `promo_index` — index of the next promotion in `config.promotions` (-1 after the last one);
* `days_to_promo` — days until that promotion (0 on the promotion day, -1 after the last one);
* `pre_promo` — 1 when the click falls in a promotion's pre-promotion window;
* `y_atc` — added to cart after the click (`cart`);
* `y_del` — delayed conversion: a pre-promotion click whose purchase happens on its promotion day;
* `y_dir` — direct conversion: a purchase that is not delayed to the promotion (`purchase` and
  not `y_del`; for a pre-promotion click, bought before the promotion day);
* user-state counts over the history the impression saw: `hist_len` (browse depth), `hist_carts`,
  `hist_purchases` and `hist_promo_purchases` (purchases made on a promotion day: the user's
  historical promotion purchase propensity).

Everything is observable when the click happens except the three labels. The labels of a
promotion's pre-promotion clicks are complete once its promotion day has passed.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agenticrs.sim.config import SimConfig
from agenticrs.sim.world import CART, PURCHASE, SECONDS_PER_DAY

PROMO_LABELS = ("y_dir", "y_atc", "y_del")
USER_STATE_COLUMNS = ("hist_len", "hist_carts", "hist_purchases", "hist_promo_purchases")
FEATURE_REQUIRED = ("day", "hist_type", "hist_ts")
REQUIRED = (*FEATURE_REQUIRED, "cart", "purchase", "purchase_ts")


def _per_row_counts(values: pa.ChunkedArray, mask: np.ndarray, rows: int) -> np.ndarray:
    """Count of True `mask` entries per row of a list column (`mask` over its flattened values)."""
    parents = np.concatenate([np.zeros(0, np.int64), *(c.to_numpy() for c in pc.list_parent_indices(values).chunks)])
    return np.bincount(parents[mask], minlength=rows).astype(np.int32)


def promotion_features(table: pa.Table, config: SimConfig) -> pa.Table:
    """`table` with the observable promotion columns (no labels): promo_index, days_to_promo,
    pre_promo and the user-state counts. Works on the online environment's candidate tables too."""
    missing = [c for c in FEATURE_REQUIRED if c not in table.column_names]
    if missing:
        raise ValueError(f"promotion_features: the table lacks column(s) {missing}; pass the simulator's logs")
    table = table.combine_chunks()
    rows = table.num_rows
    day = table["day"].to_numpy().astype(np.int64)
    promo = config.next_promo(day)
    index = np.searchsorted(np.asarray(config.promotions), day, side="left")
    promo_index = np.where(promo >= 0, index, -1)
    pre = config.is_pre_promo(day)
    types = pc.list_flatten(table["hist_type"]).to_numpy()
    ts = pc.list_flatten(table["hist_ts"]).to_numpy()
    promo_purchase = (types == PURCHASE) & config.is_promo_day(np.floor_divide(ts, SECONDS_PER_DAY))
    columns = {
        "promo_index": pa.array(promo_index, pa.int16()),
        "days_to_promo": pa.array(config.days_to_promo(day), pa.int16()),
        "pre_promo": pa.array(pre.astype(np.int8)),
        "hist_len": pa.array(pc.list_value_length(table["hist_type"]).fill_null(0).to_numpy().astype(np.int32)),
        "hist_carts": pa.array(_per_row_counts(table["hist_type"], types == CART, rows)),
        "hist_purchases": pa.array(_per_row_counts(table["hist_type"], types == PURCHASE, rows)),
        "hist_promo_purchases": pa.array(_per_row_counts(table["hist_type"], promo_purchase, rows)),
    }
    for name, column in columns.items():
        table = table.append_column(name, column)
    return table


def promotion_columns(table: pa.Table, config: SimConfig) -> pa.Table:
    """`table` (impressions or clicks of the simulator) with the promotion features and labels."""
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ValueError(f"promotion_columns: the table lacks column(s) {missing}; pass the simulator's logs")
    table = promotion_features(table, config)
    day = table["day"].to_numpy().astype(np.int64)
    pre = table["pre_promo"].to_numpy() == 1
    purchase = table["purchase"].to_numpy().astype(bool)
    purchase_day = table["purchase_ts"].fill_null(-1).to_numpy() // SECONDS_PER_DAY
    y_del = purchase & pre & (purchase_day == config.next_promo(day))
    y_dir = purchase & ~y_del
    labels = {"y_dir": y_dir, "y_atc": table["cart"].to_numpy().astype(bool), "y_del": y_del}
    for name, values in labels.items():
        table = table.append_column(name, pa.array(values.astype(np.int8)))
    return table
