"""Typed settings of the simulated world; a preset is a named set of overrides.

Every number that shapes the ground truth lives here (or in `ScenarioConfig`), so the whole
world is reproducible from (config, seed) and its hash keys the generated files.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

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
    promo_day: int = Field(default=9, ge=1, description="the promotion day (0-based)")
    pre_promo_days: int = Field(default=3, ge=0, description="days before the promotion when purchases are deferred")
    valid_days: int = Field(default=1, ge=1)
    test_days: int = Field(default=1, ge=1)
    rounds_per_day: int = Field(default=4, ge=1, description="histories refresh between rounds of a day")
    # --- behaviour -----------------------------------------------------------------------
    defer_prob: float = Field(default=0.9, ge=0.0, le=1.0, description="P(a pre-promotion purchase waits for the promotion)")
    promo_discount: float = Field(default=0.2, ge=0.0, lt=1.0)
    delay_median_hours: float = Field(default=8.0, gt=0.0)
    delay_sigma: float = Field(default=1.3, gt=0.0)
    attribution_days: float = Field(default=7.0, gt=0.0)
    scenarios: tuple[ScenarioConfig, ...] = SCENARIOS
    # --- writing -------------------------------------------------------------------------
    row_group_rows: int = Field(default=262_144, ge=1024)

    @model_validator(mode="after")
    def _check(self) -> SimConfig:
        if self.promo_day - self.pre_promo_days < 0:
            raise ValueError(f"promo_day ({self.promo_day}) must leave {self.pre_promo_days} pre-promotion days")
        if self.promo_day >= self.train_days:
            raise ValueError(f"promo_day ({self.promo_day}) must fall in the training days (< {self.train_days})")
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

    def is_pre_promo(self, day):
        """Whether `day` (an int or an array of days) is one of the pre-promotion days."""
        return (self.promo_day - self.pre_promo_days <= day) & (day < self.promo_day)

    def config_hash(self) -> str:
        payload = {"generator_version": GENERATOR_VERSION, "config": self.model_dump(mode="json")}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


PRESETS: dict[str, dict[str, Any]] = {
    # a few seconds; the default behind `make demo` and the tests
    "small": {},
    "tiny": {"n_users": 600, "n_items": 800, "new_items_per_day": 10, "history_len": 15},
    "medium": {"n_users": 20_000, "n_items": 20_000, "new_items_per_day": 150, "n_days": 21, "promo_day": 15,
               "requests_per_user_day": 0.6, "history_len": 40},
    # >= 10M impressions
    "large": {"n_users": 60_000, "n_items": 60_000, "new_items_per_day": 400, "n_days": 30, "promo_day": 22,
              "requests_per_user_day": 0.7, "history_len": 20},
}  # fmt: skip


def sim_preset(name: str, **overrides: Any) -> SimConfig:
    """The config of a named preset ('tiny', 'small', 'medium', 'large') with overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown simulator preset '{name}'; known presets: {', '.join(PRESETS)}")
    return SimConfig(**{**PRESETS[name], **overrides})
