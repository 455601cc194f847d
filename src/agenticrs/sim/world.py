"""The simulated world: catalogue, users, scenarios, calendar and the ground-truth behaviour model.

Everything is vectorised NumPy over arrays of (user, item, context) and seeded from the config:
the same `SimConfig` always builds the same world. `docs/simulator.md` has the equations; the
docstrings below name the symbols they implement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agenticrs.sampling import CategorySampler, cumulative_shares, draw_global
from agenticrs.sim import catalog
from agenticrs.sim.config import SimConfig

N_AGE, N_GENDER, N_CITY = 7, 2, 4
CLICK, CART, PURCHASE = 1, 2, 3  # behaviour types in histories
BEHAVIOUR_NAMES = {CLICK: "click", CART: "cart", PURCHASE: "purchase"}
SECONDS_PER_DAY = 86_400
ONLINE_EXTRA_DAYS = 7  # items keep launching this long after the log, for the online environment


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream])))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


def hour_profile() -> np.ndarray:
    """p(h) proportional to 1 + 0.6 cos(2 pi (h - 20) / 24): traffic peaks in the evening."""
    hours = np.arange(24)
    p = 1.0 + 0.6 * np.cos(2 * np.pi * (hours - 20) / 24)
    return p / p.sum()


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class History:
    """Each user's last K behaviours (oldest first, left-aligned, -1 padded), updated in place."""

    items: np.ndarray  # (n_users, K) int32
    types: np.ndarray  # (n_users, K) int8
    ts: np.ndarray  # (n_users, K) int64
    length: np.ndarray  # (n_users,) int32

    @classmethod
    def empty(cls, n_users: int, k: int) -> History:
        return cls(
            np.full((n_users, k), -1, np.int32), np.zeros((n_users, k), np.int8),
            np.zeros((n_users, k), np.int64), np.zeros(n_users, np.int32),
        )  # fmt: skip

    def copy(self) -> History:
        return History(self.items.copy(), self.types.copy(), self.ts.copy(), self.length.copy())

    @property
    def max_len(self) -> int:
        return self.items.shape[1]

    def append(self, users: np.ndarray, items: np.ndarray, types: np.ndarray, ts: np.ndarray) -> None:
        """Add events (any order) and keep each user's K most recent. Vectorised over users."""
        if len(users) == 0:
            return
        order = np.lexsort((ts, users))
        users, items, types, ts = users[order], items[order], types[order], ts[order]
        touched, first, added = np.unique(users, return_index=True, return_counts=True)
        k = self.max_len
        old_len = self.length[touched].astype(np.int64)
        total = old_len + added
        start = np.maximum(total - k, 0)
        new_len = np.minimum(total, k)
        j = np.arange(k)[None, :]
        idx = start[:, None] + j  # position in the virtual concatenation (old history, then new events)
        valid = j < new_len[:, None]
        from_old = valid & (idx < old_len[:, None])
        from_new = valid & ~from_old
        old_items, old_types, old_ts = self.items[touched], self.types[touched], self.ts[touched]
        new_pos = np.where(from_new, first[:, None] + idx - old_len[:, None], 0)
        old_pos = np.where(from_old, idx, 0)
        rows = np.arange(len(touched))[:, None]
        self.items[touched] = np.where(from_old, old_items[rows, old_pos], np.where(from_new, items[new_pos], -1))
        self.types[touched] = np.where(from_old, old_types[rows, old_pos], np.where(from_new, types[new_pos], 0))
        self.ts[touched] = np.where(from_old, old_ts[rows, old_pos], np.where(from_new, ts[new_pos], 0))
        self.length[touched] = new_len


@dataclass
class World:
    """Latent truth of the simulation (0-based indices; files add 1 to entity ids)."""

    config: SimConfig
    # catalogue
    item_top: np.ndarray
    item_sub: np.ndarray
    item_brand: np.ndarray
    item_attribute: np.ndarray
    item_colour: np.ndarray
    item_price: np.ndarray
    item_price_z: np.ndarray  # standardised log price
    item_latent: np.ndarray  # (n_items, d), unit norm
    item_appeal: np.ndarray
    item_popularity: np.ndarray  # Zipf exposure prior w_i
    item_launch_day: np.ndarray
    item_title: list[str]
    brand_quality: np.ndarray
    brand_names: list[str]
    sub_latent: np.ndarray  # (n_subs, d)
    # users
    user_interest0: np.ndarray  # (n_users, d) unit
    user_interest1: np.ndarray  # (n_users, d) unit, orthogonal to interest0 (drift direction)
    user_price_sensitivity: np.ndarray
    user_activity: np.ndarray
    user_scenario_cum: np.ndarray  # (n_users, S) cumulative scenario preference
    user_pref_top: np.ndarray  # (n_users, 3) preferred top categories, -1 padded
    user_pref_cum: np.ndarray  # (n_users, 3)
    user_age: np.ndarray
    user_gender: np.ndarray
    user_city: np.ndarray
    user_defer_z: np.ndarray  # N(0, 1): the user's own propensity to defer a purchase (scaled by defer_user_sigma)
    top_delay_z: np.ndarray  # N(0, 1) per top category: its delay factor (scaled by delay_category_sigma)
    # context effects
    age_effect: np.ndarray
    gender_effect: np.ndarray
    city_effect: np.ndarray
    hour_effect: np.ndarray
    # planted signals (`config.planted`; None in the ordinary world): the two planted attributes
    # (0-based values) and the +-1 sign of each pair of their values
    user_planted: np.ndarray | None = None
    item_planted: np.ndarray | None = None
    planted_sign: np.ndarray | None = None  # (K, K) int8, every row and column sums to 0
    _samplers: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ sizes & names
    @property
    def n_items(self) -> int:
        return len(self.item_top)

    @property
    def n_users(self) -> int:
        return len(self.user_activity)

    @property
    def n_tops(self) -> int:
        return len(catalog.TOP_CATEGORIES)

    @property
    def n_subs(self) -> int:
        return self.n_tops * self.config.subcategories_per_top

    @property
    def scenario_names(self) -> list[str]:
        return [s.name for s in self.config.scenarios]

    def scenario_array(self, attribute: str) -> np.ndarray:
        return np.array([getattr(s, attribute) for s in self.config.scenarios], dtype=np.float64)

    # ------------------------------------------------------------------ latent state
    def interest(self, users: np.ndarray, day: np.ndarray | float) -> np.ndarray:
        """u(d) = u0 cos(theta d) + u1 sin(theta d): unit vectors turning slowly (interest drift)."""
        angle = self.config.drift_per_day * np.asarray(day, dtype=np.float64)
        angle = np.broadcast_to(angle, np.shape(users))[:, None]
        return self.user_interest0[users] * np.cos(angle) + self.user_interest1[users] * np.sin(angle)

    def exposure_weights(self, day: int) -> np.ndarray:
        """w_i * ramp(age)^2 for launched items, 0 before launch: new items start with little exposure."""
        age = day - self.item_launch_day
        ramp = np.clip((age + 1) / self.config.launch_ramp_days, 0.0, 1.0) ** 2
        return np.where(age >= 0, self.item_popularity * ramp, 0.0)

    def samplers(self, day: int) -> tuple[np.ndarray, CategorySampler, CategorySampler]:
        """(global cumulative shares, per-top sampler, per-sub sampler) of day `day`'s exposure."""
        if day not in self._samplers:
            if len(self._samplers) > 4:
                self._samplers.clear()
            w = self.exposure_weights(day)
            self._samplers[day] = (
                cumulative_shares(w),
                CategorySampler.build(self.item_top, w, self.n_tops),
                CategorySampler.build(self.item_sub, w, self.n_subs),
            )
        return self._samplers[day]

    # ------------------------------------------------------------------ ground truth
    def relevance(self, items: np.ndarray, hist_items: np.ndarray, hist_len: np.ndarray) -> np.ndarray:
        """R = max_j 1{sub(h_j) = sub(i)} (1 + cos(v_i, v_hj)) / 2 over the history (0 if no match)."""
        k = hist_items.shape[1]
        valid = np.arange(k)[None, :] < hist_len[:, None]
        safe = np.where(valid, hist_items, 0)
        same_sub = valid & (self.item_sub[safe] == self.item_sub[items][:, None])
        cos = np.einsum("nd,nkd->nk", self.item_latent[items], self.item_latent[safe])
        return np.where(same_sub, (1.0 + cos) / 2.0, 0.0).max(axis=1, initial=0.0)

    def click_logit(
        self, users: np.ndarray, items: np.ndarray, scenario: np.ndarray, position: np.ndarray,
        hour: np.ndarray, day: np.ndarray, relevance: np.ndarray,
    ) -> np.ndarray:  # fmt: skip
        """f = base_s + a_i + q_brand + e_age + e_gender + e_city + e_hour + w_int,s cos(u(d), v_i)
        - w_price,s sens_u z_i - decay_s log1p(pos) + w_rel,s R + 0.25 [promotion day]."""
        cos = np.einsum("nd,nd->n", self.interest(users, day), self.item_latent[items])
        promo = np.asarray(self.config.is_promo_day(np.asarray(day))).astype(np.float64)
        return (
            self.scenario_array("base_logit")[scenario]
            + self.item_appeal[items]
            + self.brand_quality[self.item_brand[items]]
            + self.age_effect[self.user_age[users]]
            + self.gender_effect[self.user_gender[users]]
            + self.city_effect[self.user_city[users]]
            + self.hour_effect[hour]
            + self.scenario_array("interest_weight")[scenario] * cos
            - self.scenario_array("price_weight")[scenario] * self.user_price_sensitivity[users] * self.item_price_z[items]
            - self.scenario_array("position_decay")[scenario] * np.log1p(position)
            + self.scenario_array("relevance_weight")[scenario] * relevance
            + 0.25 * promo
            + self.planted_cross(users, items)
        )

    def planted_cross(self, users: np.ndarray, items: np.ndarray) -> np.ndarray | float:
        """w s(a_u, b_i): the planted pair's logit (`config.planted`), 0.0 in the ordinary world."""
        planted = self.config.planted
        if planted is None or self.planted_sign is None:
            return 0.0
        sign = self.planted_sign[self.user_planted[users], self.item_planted[items]]
        return planted.cross_weight * sign.astype(np.float64)

    def conversion_probabilities(
        self, users: np.ndarray, items: np.ndarray, day: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(P(cart | click), P(buy | cart), P(buy | click, no cart)).

        Pre-promotion days raise carting (+1.2) and the intent to buy from the cart (+0.8): users
        plan purchases for the promotion. The promotion day raises both purchase paths."""
        day = np.asarray(day)
        cos = np.einsum("nd,nd->n", self.interest(users, day), self.item_latent[items])
        price = self.user_price_sensitivity[users] * self.item_price_z[items]
        pre = np.broadcast_to(self.config.is_pre_promo(day), cos.shape).astype(np.float64)
        promo = np.broadcast_to(self.config.is_promo_day(day), cos.shape).astype(np.float64)
        p_cart = sigmoid(-1.0 + 0.8 * cos - 0.3 * price + 1.2 * pre + 0.3 * promo)
        p_buy_cart = sigmoid(-0.3 + 0.8 * cos - 0.5 * price + 0.8 * pre + 0.9 * promo)
        p_buy_direct = sigmoid(-2.8 + 0.6 * cos - 0.5 * price + 0.8 * promo)
        return p_cart, p_buy_cart, p_buy_direct

    def price_paid(self, items: np.ndarray, purchase_day: np.ndarray) -> np.ndarray:
        discount = np.where(self.config.is_promo_day(np.asarray(purchase_day)), self.config.promo_discount, 0.0)
        return self.item_price[items] * (1.0 - discount)

    def defer_probability(self, users: np.ndarray, cart: np.ndarray,
                          items: np.ndarray | None = None) -> np.ndarray | float:  # fmt: skip
        """P(a pre-promotion purchase waits for the promotion): `defer_prob` after a cart,
        `defer_prob_no_cart` without one, shifted on the logit scale per user by
        `defer_user_sigma` z_u and by `defer_price_weight` s_u z_i (the user's price sensitivity
        times the item's standardised log price; needs `items`). The scalar `defer_prob` when no
        knob is set (the draws of older presets)."""
        cfg = self.config
        by_price = cfg.defer_price_weight != 0.0 and items is not None
        if cfg.defer_prob_no_cart is None and cfg.defer_user_sigma == 0.0 and not by_price:
            return cfg.defer_prob
        base = np.where(cart, cfg.defer_prob, cfg.defer_prob if cfg.defer_prob_no_cart is None else cfg.defer_prob_no_cart)
        if cfg.defer_user_sigma == 0.0 and not by_price:
            return base
        logit = np.log(np.clip(base, 1e-6, 1 - 1e-6) / np.clip(1.0 - base, 1e-6, 1.0))
        if cfg.defer_user_sigma != 0.0:
            logit = logit + cfg.defer_user_sigma * self.user_defer_z[users]
        if by_price:
            logit = logit + cfg.defer_price_weight * self.user_price_sensitivity[users] * self.item_price_z[items]
        return sigmoid(logit)

    def delay_median_scale(self, items: np.ndarray) -> np.ndarray | float:
        """The factor on the delay's log-normal median of each item's purchases:
        exp(`delay_price_weight` z_i + `delay_category_sigma` g_top(i)); 1.0 when both are 0."""
        cfg = self.config
        if cfg.delay_price_weight == 0.0 and cfg.delay_category_sigma == 0.0:
            return 1.0
        return np.exp(cfg.delay_price_weight * self.item_price_z[items]
                      + cfg.delay_category_sigma * self.top_delay_z[self.item_top[items]])  # fmt: skip

    def purchase_delay(self, click_day: np.ndarray, click_ts: np.ndarray, rng: np.random.Generator,
                       users: np.ndarray | None = None, cart: np.ndarray | None = None,
                       items: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Seconds from click to purchase: log-normal (median 8 h; 1/7 of that on a promotion
        day; times `delay_median_scale(items)` where the delays depend on the item), capped by
        the attribution window; on pre-promotion days the purchase waits for the next promotion
        day with probability `defer_probability(users, cart, items)` (at an hour drawn from the
        traffic profile). The random draws are the same whatever the knobs."""
        cfg = self.config
        n = len(click_ts)
        click_day = np.asarray(click_day)
        median = np.where(cfg.is_promo_day(click_day), cfg.delay_median_hours / 7.0, cfg.delay_median_hours) * 3600.0
        if items is not None:
            median = median * self.delay_median_scale(items)
        delay = median * np.exp(cfg.delay_sigma * rng.standard_normal(n))
        delay = np.minimum(delay, cfg.attribution_days * SECONDS_PER_DAY - 1.0)
        pre = cfg.is_pre_promo(click_day)
        if users is None or cart is None:
            p_defer = self.defer_probability(np.zeros(n, np.int64), np.ones(n, bool))
        else:
            p_defer = self.defer_probability(users, cart, items)
        defer = pre & (rng.random(n) < p_defer)
        hour = rng.choice(24, size=n, p=hour_profile())
        promo_time = cfg.next_promo(click_day) * SECONDS_PER_DAY + hour * 3600 + rng.integers(0, 3600, n)
        return np.where(defer, promo_time - click_ts, np.round(delay)).astype(np.int64)

    # ------------------------------------------------------------------ candidates
    def candidates(
        self, users: np.ndarray, source: str, size: int, day: int, history: History, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """(items (R, size), query subcategory (R,), -1 when none) for requests of one source.

        feed: half the slots from a preferred top category, half from the whole catalogue, both by
        exposure; search: a query subcategory ~ softmax(4 cos(u(d), subcategory)) and items of it;
        cart: the subcategory of the user's latest behaviour (60%) and its top category (40%).
        Draws are de-duplicated within a request: twice as many are drawn from the source and
        from the whole catalogue as a fallback (a small subcategory cannot fill a large pool),
        and the first `size` distinct are kept.
        """
        n = len(users)
        draws = 2 * size
        cum, by_top, by_sub = self.samplers(day)
        query = np.full(n, -1, np.int64)
        if source == "feed":
            r = rng.random((n, draws))
            slot = (rng.random((n, draws))[..., None] >= self.user_pref_cum[users][:, None, :]).sum(-1)
            top = np.take_along_axis(np.broadcast_to(self.user_pref_top[users][:, None, :], (n, draws, 3)),
                                     np.minimum(slot, 2)[..., None], axis=-1)[..., 0]  # fmt: skip
            from_interest = (rng.random((n, draws)) < 0.5) & (top >= 0)
            items = np.where(from_interest, by_top.draw(np.maximum(top, 0), r), draw_global(cum, r))
        elif source == "search":
            scores = 4.0 * self.interest(users, day) @ self.sub_latent.T
            gumbel = -np.log(-np.log(rng.random(scores.shape).clip(1e-12, 1 - 1e-12)))
            query = np.argmax(scores + gumbel, axis=1)
            items = by_sub.draw(np.repeat(query[:, None], draws, axis=1), rng.random((n, draws)))
        elif source == "cart":
            latest = history.items[users, np.maximum(history.length[users] - 1, 0)]
            scores = 4.0 * self.interest(users, day) @ self.sub_latent.T
            gumbel = -np.log(-np.log(rng.random(scores.shape).clip(1e-12, 1 - 1e-12)))
            fallback = np.argmax(scores + gumbel, axis=1)
            anchor = np.where(history.length[users] > 0, self.item_sub[np.maximum(latest, 0)], fallback)
            r = rng.random((n, draws))
            same_sub = rng.random((n, draws)) < 0.6
            anchor_top = anchor // self.config.subcategories_per_top
            items = np.where(
                same_sub,
                by_sub.draw(np.repeat(anchor[:, None], draws, axis=1), r),
                by_top.draw(np.repeat(anchor_top[:, None], draws, axis=1), r),
            )
        else:
            raise ValueError(f"unknown candidate source '{source}'")
        fallback = draw_global(cum, rng.random((n, 2 * size)))
        return _first_distinct(np.concatenate([items, fallback], axis=1), size), query

    def logging_order(self, users: np.ndarray, items: np.ndarray, day: int, rng: np.random.Generator) -> np.ndarray:
        """The logged production policy: rank by log exposure + cos(u, v) + Gumbel noise.
        Returns each candidate's position (R, M)."""
        n, m = items.shape
        cos = np.einsum("nd,nmd->nm", self.interest(users, day), self.item_latent[items])
        score = np.log(self.exposure_weights(day)[items] + 1e-9) + cos
        score = score - np.log(-np.log(rng.random((n, m)).clip(1e-12, 1 - 1e-12)))
        order = np.argsort(-score, axis=1)
        position = np.empty_like(order)
        np.put_along_axis(position, order, np.arange(m)[None, :].repeat(n, 0), axis=1)
        return position

    # ------------------------------------------------------------------ histories
    def warmup_history(self) -> History:
        """Up to K behaviours per user in the 30 days before day 0, drawn from their interests."""
        cfg = self.config
        rng = _rng(cfg.seed, 50)
        k = cfg.history_len
        counts = rng.integers(0, k + 1, self.n_users)
        users = np.repeat(np.arange(self.n_users), counts)
        n = len(users)
        _, by_top, _ = self.samplers(-1)
        slot = (rng.random(n)[:, None] >= self.user_pref_cum[users]).sum(1)
        top = self.user_pref_top[users, np.minimum(slot, 2)]
        top = np.where(top >= 0, top, self.user_pref_top[users, 0])
        items = by_top.draw(top, rng.random(n))
        types = np.where(rng.random(n) < 0.15, CART, CLICK).astype(np.int8)
        types[rng.random(n) < 0.04] = PURCHASE
        ts = -rng.integers(1, 30 * SECONDS_PER_DAY, n)
        history = History.empty(self.n_users, k)
        history.append(users, items.astype(np.int32), types, ts)
        return history


def _first_distinct(items: np.ndarray, size: int) -> np.ndarray:
    """The first `size` distinct values of each row, in draw order (repeats fill if too few)."""
    n, m = items.shape
    order = np.argsort(items, axis=1, kind="stable")
    sorted_items = np.take_along_axis(items, order, axis=1)
    dup_sorted = np.zeros_like(sorted_items, dtype=bool)
    dup_sorted[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
    duplicate = np.empty_like(dup_sorted)
    np.put_along_axis(duplicate, order, dup_sorted, axis=1)
    keep_order = np.argsort(duplicate, axis=1, kind="stable")  # distinct first, in draw order
    return np.take_along_axis(items, keep_order[:, :size], axis=1)


def balanced_signs(k: int, rng: np.random.Generator, switches_per_cell: int = 4) -> np.ndarray:
    """A pseudo-random (k, k) +-1 matrix whose every row and column sums to 0 (k even).

    Starts from a circulant band (+1 where (i + j) mod k < k/2), permutes rows and columns, then
    applies random 2x2 switches ([[+,-],[-,+]] <-> [[-,+],[+,-]]), which keep every margin: with
    uniform, independent values of the two fields, neither field alone moves the click rate."""
    if k < 2 or k % 2:
        raise ValueError(f"balanced_signs needs an even k >= 2; got {k}")
    index = np.arange(k)
    sign = np.where((index[:, None] + index[None, :]) % k < k // 2, 1, -1).astype(np.int8)
    sign = sign[rng.permutation(k)][:, rng.permutation(k)]
    for r1, r2, c1, c2 in rng.integers(0, k, (switches_per_cell * k * k, 4)):
        block = sign[np.ix_([r1, r2], [c1, c2])]
        if r1 != r2 and c1 != c2 and block[0, 0] == block[1, 1] == -block[0, 1] == -block[1, 0]:
            sign[np.ix_([r1, r2], [c1, c2])] = -block
    return sign


def _stratified_values(weight: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Values 0..k-1, uniform and random, but balanced by `weight` (activity, popularity): the
    entities sorted by weight are dealt a random permutation of the k values per block of k, so
    every value gets about the same share of traffic and a planted field alone stays uninformative."""
    n = len(weight)
    blocks = -(-n // k)
    values = np.argsort(rng.random((blocks, k)), axis=1).ravel()[:n]
    out = np.empty(n, np.int64)
    out[np.argsort(-weight, kind="stable")] = values
    return out


def build_world(config: SimConfig) -> World:
    """Entities and effect tables for `config` (deterministic for its seed)."""
    cfg = config
    rng_item, rng_user, rng_effect = _rng(cfg.seed, 1), _rng(cfg.seed, 2), _rng(cfg.seed, 3)
    d = cfg.latent_dim
    n_tops = len(catalog.TOP_CATEGORIES)
    per_top = cfg.subcategories_per_top
    n_subs = n_tops * per_top
    n_brands = n_tops * cfg.brands_per_top

    # --- category / attribute geometry
    top_latent = _unit(rng_item.standard_normal((n_tops, d)))
    sub_top = np.repeat(np.arange(n_tops), per_top)
    sub_latent = _unit(np.sqrt(0.6) * top_latent[sub_top] + np.sqrt(0.4) * _unit(rng_item.standard_normal((n_subs, d))))
    attribute_latent = _unit(rng_item.standard_normal((n_tops * catalog.ATTRIBUTES_PER_TOP, d)))
    sub_log_price = rng_item.uniform(2.0, 6.0, n_subs)
    brand_premium = rng_item.normal(0.0, 1.0, n_brands)
    brand_quality = rng_effect.normal(0.0, 0.25, n_brands)

    # --- items: the initial catalogue, then new launches every day (cold start)
    n_new = cfg.new_items_per_day * (cfg.n_days + ONLINE_EXTRA_DAYS)
    n_items = cfg.n_items + n_new
    sub = rng_item.integers(0, n_subs, n_items)
    sub[:n_subs] = np.arange(n_subs)  # every subcategory has launched items at day 0
    top = sub // per_top
    brand = top * cfg.brands_per_top + rng_item.integers(0, cfg.brands_per_top, n_items)
    attribute = top * catalog.ATTRIBUTES_PER_TOP + rng_item.integers(0, catalog.ATTRIBUTES_PER_TOP, n_items)
    colour = rng_item.integers(0, len(catalog.COLOURS), n_items)
    latent = _unit(
        np.sqrt(0.6) * sub_latent[sub] + np.sqrt(0.2) * attribute_latent[attribute]
        + np.sqrt(0.2) * _unit(rng_item.standard_normal((n_items, d)))
    )  # fmt: skip
    price = np.round(np.exp(sub_log_price[sub] + 0.3 * brand_premium[brand] + 0.35 * rng_item.standard_normal(n_items)), 2)
    price = np.maximum(price, 0.99)
    log_price = np.log(price)
    price_z = (log_price - log_price.mean()) / log_price.std()
    rank = rng_item.permutation(n_items) + 1
    popularity = rank.astype(np.float64) ** -cfg.popularity_exponent
    log_pop = np.log(popularity)
    appeal = rng_item.normal(0.0, 0.25, n_items) + 0.15 * (log_pop - log_pop.mean()) / log_pop.std()
    launch = np.empty(n_items, np.int64)
    launch[: cfg.n_items] = -rng_item.integers(1, 366, cfg.n_items)
    launch[cfg.n_items :] = np.repeat(np.arange(cfg.n_days + ONLINE_EXTRA_DAYS), cfg.new_items_per_day)
    names = catalog.brand_names(n_brands, rng_item)

    # --- users
    n_users = cfg.n_users
    n_pref = rng_user.integers(1, 4, n_users)
    pref = np.argsort(rng_user.random((n_users, n_tops)), axis=1)[:, :3]
    weights = rng_user.dirichlet(np.ones(3), n_users) * (np.arange(3)[None, :] < n_pref[:, None])
    weights /= weights.sum(1, keepdims=True)
    pref_top = np.where(np.arange(3)[None, :] < n_pref[:, None], pref, -1)
    pref_cum = np.where(pref_top >= 0, np.cumsum(weights, axis=1), 2.0)
    taste = _unit(np.einsum("uk,ukd->ud", weights, top_latent[np.maximum(pref_top, 0)]))
    interest0 = _unit(np.sqrt(0.75) * taste + np.sqrt(0.25) * _unit(rng_user.standard_normal((n_users, d))))
    other = rng_user.standard_normal((n_users, d))
    other -= np.einsum("ud,ud->u", other, interest0)[:, None] * interest0
    interest1 = _unit(other)
    activity = rng_user.lognormal(0.0, cfg.activity_sigma, n_users)
    activity /= activity.mean()
    shares = np.array([s.traffic_share for s in cfg.scenarios])
    scenario_pref = rng_user.dirichlet(5.0 * shares / shares.sum(), n_users)
    planted: dict[str, np.ndarray] = {}
    if cfg.planted is not None:  # its own stream: the ordinary world's draws are unchanged
        rng_planted = _rng(cfg.seed, 6)
        k = cfg.planted.cross_values
        planted = {"user_planted": _stratified_values(activity, k, rng_planted),
                   "item_planted": _stratified_values(popularity, k, rng_planted),
                   "planted_sign": balanced_signs(k, rng_planted)}  # fmt: skip
    return World(
        config=cfg,
        item_top=top, item_sub=sub, item_brand=brand, item_attribute=attribute, item_colour=colour,
        item_price=price, item_price_z=price_z, item_latent=latent.astype(np.float64), item_appeal=appeal,
        item_popularity=popularity, item_launch_day=launch,
        item_title=catalog.titles(sub, attribute, brand, colour, per_top, names),
        brand_quality=brand_quality, brand_names=names, sub_latent=sub_latent,
        user_interest0=interest0, user_interest1=interest1,
        user_price_sensitivity=rng_user.lognormal(-0.3, 0.4, n_users), user_activity=activity,
        user_scenario_cum=np.cumsum(scenario_pref, axis=1), user_pref_top=pref_top, user_pref_cum=pref_cum,
        user_age=rng_user.choice(N_AGE, n_users, p=[0.05, 0.2, 0.25, 0.2, 0.15, 0.1, 0.05]),
        user_gender=rng_user.integers(0, N_GENDER, n_users),
        user_city=rng_user.choice(N_CITY, n_users, p=[0.2, 0.3, 0.3, 0.2]),
        user_defer_z=_rng(cfg.seed, 4).standard_normal(n_users),  # its own stream: older draws unchanged
        top_delay_z=_rng(cfg.seed, 5).standard_normal(n_tops),  # its own stream too
        age_effect=rng_effect.normal(0, 0.15, N_AGE), gender_effect=rng_effect.normal(0, 0.1, N_GENDER),
        city_effect=rng_effect.normal(0, 0.15, N_CITY), hour_effect=rng_effect.normal(0, 0.12, 24),
        **planted,
    )  # fmt: skip
