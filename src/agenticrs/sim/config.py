"""Typed settings of the simulated world; a preset is a named set of overrides.

Every number that shapes the ground truth lives here (or in `ScenarioConfig`), so the whole
world is reproducible from (config, seed) and its hash keys the generated files.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

GENERATOR_VERSION = 1


class ScenarioConfig(BaseModel):
    """One traffic scenario: where its candidates come from and how users react in it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    source: str = Field(description="candidate source: 'feed' (interests + popularity), 'search' (a query "
                        "subcategory), 'cart' (the subcategory of the user's latest behaviour)")
    traffic_share: float = Field(gt=0.0, description="prior share of requests (users' preferences vary around it)")
    slate_size: int = Field(ge=1, description="impressions shown per request")
    base_logit: float = Field(description="click base rate of the scenario")
    position_decay: float = Field(ge=0.0, description="click logit lost per log1p(position)")
    interest_weight: float = Field(description="weight of the user-item interest cosine")
    price_weight: float = Field(description="weight of price sensitivity x standardised log price")
    relevance_weight: float = Field(description="weight of the target's relevance to the history")


SCENARIOS: tuple[ScenarioConfig, ...] = (
    ScenarioConfig(name="home_feed", source="feed", traffic_share=0.55, slate_size=10, base_logit=-3.6,
                   position_decay=0.45, interest_weight=1.8, price_weight=0.25, relevance_weight=1.0),
    ScenarioConfig(name="search", source="search", traffic_share=0.30, slate_size=10, base_logit=-2.7,
                   position_decay=0.8, interest_weight=1.0, price_weight=0.6, relevance_weight=0.6),
    ScenarioConfig(name="cart_page", source="cart", traffic_share=0.15, slate_size=6, base_logit=-3.6,
                   position_decay=0.3, interest_weight=1.2, price_weight=0.35, relevance_weight=1.6),
)  # fmt: skip


# columns of the impression, user and item tables: a planted field must not take one of these names
LOG_COLUMNS = frozenset({
    "request_id", "ts", "day", "hour", "scenario", "user_id", "age", "gender", "city_tier", "query_cate_l2", "item_id",
    "cate_l1", "cate_l2", "brand", "price", "item_age_days", "position", "hist_item_id", "hist_cate_l2", "hist_type",
    "hist_ts", "click", "cart", "purchase", "purchase_ts", "delay_s", "gmv", "p_click", "p_cart", "p_purchase",
    "activity", "price_sensitivity", "preferred_cate_l1", "title", "cate_l1_name", "cate_l2_name", "brand_name",
    "launch_day", "popularity",
})  # fmt: skip


class PlantedSignals(BaseModel):
    """Known answers for feature search (AutoFeature's benchmark): a cross the click function uses
    and a column that leaks the outcome.

    The cross: a user attribute and an item attribute (`cross_fields`), each uniform over
    `cross_values` values and drawn at world creation from their own random streams, are logged;
    the click logit gains `cross_weight * s(a, b)` with `s` a pseudo-random +-1 per PAIR of values,
    balanced so that every value of either field meets as many +1 as -1: each field alone carries
    (almost) no signal, only the pair does. The leak: `leak_column`, a dwell-time bucket drawn after
    the outcome, present for clicked impressions only (missing for the others and for every row the
    online environment serves, whose outcome is unknown)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cross_fields: tuple[str, str] = Field(
        default=("user_segment", "item_style"),
        description="names of the logged (user attribute, item attribute) whose pair the click function uses",
    )
    cross_values: int = Field(default=8, ge=2, le=64, description="values of each planted field (even)")
    cross_weight: float = Field(default=1.0, ge=0.0, le=10.0, description="logit added (+) or removed (-) by the pair")
    leak_column: str | None = Field(default="dwell_bucket", description="the leaked post-outcome column (None: no leak)")

    @model_validator(mode="after")
    def _check(self) -> PlantedSignals:
        names = [*self.cross_fields, *([self.leak_column] if self.leak_column else [])]
        for name in names:
            if not name.isidentifier() or name in LOG_COLUMNS:
                raise ValueError(f"planted field name {name!r} must be an identifier that is not a log column")
        if len(set(names)) != len(names):
            raise ValueError(f"planted field names must differ: {names}")
        if self.cross_values % 2:
            raise ValueError(f"planted.cross_values must be even (half the pairs +1, half -1); got {self.cross_values}")
        return self


class SimConfig(BaseModel):
    """The world: catalogue, users, calendar, behaviour model. Defaults are the `small` preset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=0, ge=0)
    # --- catalogue -----------------------------------------------------------------------
    n_items: int = Field(default=3000, ge=50, description="items launched before day 0")
    new_items_per_day: int = Field(default=30, ge=0, description="cold-start items launched each day")
    subcategories_per_top: int = Field(default=5, ge=1, le=5)
    brands_per_top: int = Field(default=6, ge=1)
    latent_dim: int = Field(default=16, ge=2)
    popularity_exponent: float = Field(default=0.9, ge=0.0, description="Zipf exponent of the exposure prior")
    launch_ramp_days: float = Field(default=4.0, gt=0.0, description="days for a new item's exposure to ramp up")
    # --- users ---------------------------------------------------------------------------
    n_users: int = Field(default=3000, ge=10)
    requests_per_user_day: float = Field(default=0.5, gt=0.0, description="mean requests per user and day")
    activity_sigma: float = Field(default=0.8, ge=0.0)
    drift_per_day: float = Field(default=0.03, ge=0.0, description="radians per day the interest vector turns")
    history_len: int = Field(default=30, ge=1, description="K: behaviours kept per impression")
    # --- calendar ------------------------------------------------------------------------
    n_days: int = Field(default=14, ge=3)
    promo_day: int = Field(default=9, ge=1, description="the promotion day (0-based); unused when `promo_days` is set")
    promo_days: tuple[int, ...] | None = Field(
        default=None, min_length=1, max_length=64,
        description="several promotion days (0-based, increasing, each with its own pre-promotion window); "
        "None: the single `promo_day`",
    )
    pre_promo_days: int = Field(default=3, ge=0, description="days before each promotion when purchases are deferred")
    valid_days: int = Field(default=1, ge=1)
    test_days: int = Field(default=1, ge=1)
    rounds_per_day: int = Field(default=4, ge=1, description="histories refresh between rounds of a day")
    # --- behaviour -----------------------------------------------------------------------
    defer_prob: float = Field(default=0.9, ge=0.0, le=1.0, description="P(a pre-promotion purchase waits for the promotion)")
    defer_prob_no_cart: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="P(a pre-promotion purchase without a cart waits for the promotion); None: `defer_prob`",
    )
    defer_user_sigma: float = Field(
        default=0.0, ge=0.0, le=5.0,
        description="spread (logit scale) of users' own propensity to defer around `defer_prob` (0: everyone alike)",
    )
    promo_discount: float = Field(default=0.2, ge=0.0, lt=1.0)
    delay_median_hours: float = Field(default=8.0, gt=0.0)
    delay_sigma: float = Field(default=1.3, gt=0.0)
    # feature-dependent delays (all 0: delays independent of the features, the older presets)
    delay_price_weight: float = Field(
        default=0.0, ge=-5.0, le=5.0,
        description="the delay's log-normal median is scaled by exp(w z_i), z_i the item's standardised log price "
        "(> 0: dearer items take longer to buy)",
    )
    delay_category_sigma: float = Field(
        default=0.0, ge=0.0, le=5.0,
        description="the median is also scaled by exp(sigma g_c), g_c ~ N(0, 1) drawn once per top category",
    )
    defer_price_weight: float = Field(
        default=0.0, ge=-10.0, le=10.0,
        description="shift of the pre-promotion deferral logit by w s_u z_i (price-sensitive users wait for the "
        "promotion's discount on dear items)",
    )
    attribution_days: float = Field(default=7.0, gt=0.0)
    scenarios: tuple[ScenarioConfig, ...] = SCENARIOS
    planted: PlantedSignals | None = Field(
        default=None, description="a planted cross and a planted leak column (None: the ordinary world)"
    )
    # --- writing -------------------------------------------------------------------------
    row_group_rows: int = Field(default=262_144, ge=1024)

    @model_validator(mode="after")
    def _check(self) -> SimConfig:
        if self.promo_days is None:
            if self.promo_day - self.pre_promo_days < 0:
                raise ValueError(f"promo_day ({self.promo_day}) must leave {self.pre_promo_days} pre-promotion days")
            if self.promo_day >= self.train_days:
                raise ValueError(f"promo_day ({self.promo_day}) must fall in the training days (< {self.train_days})")
        else:
            days = self.promo_days
            if days[0] - self.pre_promo_days < 0:
                raise ValueError(f"promo_days: the first promotion ({days[0]}) must leave {self.pre_promo_days} "
                                 "pre-promotion days")  # fmt: skip
            gaps = [b - a for a, b in zip(days, days[1:])]
            if any(g <= self.pre_promo_days for g in gaps):
                raise ValueError(f"promo_days {list(days)}: promotions must be increasing and more than pre_promo_days "
                                 f"({self.pre_promo_days}) apart, so that pre-promotion windows do not overlap")  # fmt: skip
            if days[-1] >= self.n_days:
                raise ValueError(f"promo_days: the last promotion ({days[-1]}) must fall in the log (< n_days = {self.n_days})")
        if len(self.scenarios) < 1:
            raise ValueError("at least one scenario is required")
        return self

    @property
    def train_days(self) -> int:
        return self.n_days - self.valid_days - self.test_days

    def split_of_day(self, day: int) -> str:
        if day < self.train_days:
            return "train"
        return "valid" if day < self.train_days + self.valid_days else "test"

    @property
    def promotions(self) -> tuple[int, ...]:
        """The promotion days, increasing (`promo_days`, or the single `promo_day`)."""
        return self.promo_days if self.promo_days is not None else (self.promo_day,)

    def next_promo(self, day):
        """The first promotion day on or after `day` (an int or an array of days); -1 after the last."""
        days = np.asarray(self.promotions)
        index = np.searchsorted(days, day, side="left")
        return np.where(index < len(days), days[np.minimum(index, len(days) - 1)], -1)

    def days_to_promo(self, day):
        """Days until the next promotion (0 on a promotion day); -1 after the last promotion."""
        nxt = self.next_promo(day)
        return np.where(nxt >= 0, nxt - np.asarray(day), -1)

    def is_promo_day(self, day):
        """Whether `day` (an int or an array of days) is a promotion day."""
        return np.isin(day, self.promotions) if np.ndim(day) else day in self.promotions

    def is_pre_promo(self, day):
        """Whether `day` (an int or an array of days) is one of the pre-promotion days of a promotion."""
        nxt = self.next_promo(day)
        return (nxt >= 0) & (nxt - self.pre_promo_days <= day) & (day < nxt)

    def config_hash(self) -> str:
        config = self.model_dump(mode="json")
        for name, default in _ADDED_DEFAULTS.items():  # fields added later: absent at their default (same hash)
            if config.get(name) == default:
                config.pop(name)
        payload = {"generator_version": GENERATOR_VERSION, "config": config}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# fields added after presets were first hashed, with the default that leaves the world unchanged
_ADDED_DEFAULTS: dict[str, Any] = {"promo_days": None, "defer_prob_no_cart": None, "defer_user_sigma": 0.0,
                                   "delay_price_weight": 0.0, "delay_category_sigma": 0.0, "defer_price_weight": 0.0,
                                   "planted": None}

PRESETS: dict[str, dict[str, Any]] = {
    # a few seconds; the default behind `make demo` and the tests
    "small": {},
    "tiny": {"n_users": 600, "n_items": 800, "new_items_per_day": 10, "history_len": 15},
    # `tiny` / `small` with a planted cross (user_segment x item_style) and a planted leak
    # (dwell_bucket): the answers AutoFeature must find (docs/simulator.md, "Planted signals")
    "tiny-planted": {"n_users": 600, "n_items": 800, "new_items_per_day": 10, "history_len": 15,
                     "planted": {"cross_weight": 1.0}},
    "small-planted": {"planted": {"cross_weight": 1.0}},
    "medium": {"n_users": 20_000, "n_items": 20_000, "new_items_per_day": 150, "n_days": 21, "promo_day": 15,
               "requests_per_user_day": 0.6, "history_len": 40},
    # >= 10M impressions
    "large": {"n_users": 60_000, "n_items": 60_000, "new_items_per_day": 400, "n_days": 30, "promo_day": 22,
              "requests_per_user_day": 0.7, "history_len": 20},
    # `medium` with conversion delays that depend on the features (the streaming delayed-feedback
    # comparison, docs/conversion.md): the delay's median grows with the item's price and varies
    # by top category, and price-sensitive users defer dear pre-promotion purchases more
    "delays": {"n_users": 20_000, "n_items": 20_000, "new_items_per_day": 150, "n_days": 21, "promo_day": 15,
               "requests_per_user_day": 0.6, "history_len": 40, "delay_price_weight": 1.0,
               "delay_category_sigma": 1.0, "defer_price_weight": 1.5},
    # `delays` without the promotion calendar's effect on the stream: the promotion moves to day 1
    # (inside any pre-training period) with no pre-promotion days, so no purchase is deferred and
    # every streamed day is ordinary: the stationary delay process ES-DFM's weights assume
    # (docs/conversion.md, "A steady stream"; stream it with --pretrain-days 12, as `delays`)
    "steady": {"n_users": 20_000, "n_items": 20_000, "new_items_per_day": 150, "n_days": 21, "promo_day": 1,
               "pre_promo_days": 0, "requests_per_user_day": 0.6, "history_len": 40, "delay_price_weight": 1.0,
               "delay_category_sigma": 1.0, "defer_price_weight": 1.5},
    # `delays` with four times the users: about 1,900 clicks per hourly window (two optimiser
    # steps at batch 1024) for the streaming comparison's "more clicks per window"
    "busy": {"n_users": 80_000, "n_items": 20_000, "new_items_per_day": 150, "n_days": 21, "promo_day": 15,
             "requests_per_user_day": 0.6, "history_len": 40, "delay_price_weight": 1.0,
             "delay_category_sigma": 1.0, "defer_price_weight": 1.5},
    # several promotions (CM-DCM: learn from earlier promotions' pre-promotion windows, predict the
    # last one's); impulse purchases without a cart rarely wait, users differ in deferring
    "promo": {"n_users": 6000, "n_items": 4000, "new_items_per_day": 20, "n_days": 32,
              "promo_days": (7, 15, 23, 30), "defer_prob_no_cart": 0.3, "defer_user_sigma": 1.5, "history_len": 20},
}  # fmt: skip


def sim_preset(name: str, **overrides: Any) -> SimConfig:
    """The config of a named preset (`PRESETS`: 'tiny', 'small', 'medium', ...) with overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown simulator preset '{name}'; known presets: {', '.join(PRESETS)}")
    return SimConfig(**{**PRESETS[name], **overrides})
