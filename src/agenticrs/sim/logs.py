"""Offline logs of the simulated world: impressions with every label, true probability and delay.

Days are simulated in rounds (`rounds_per_day`, 6 hours by default). A round's requests see the
histories as they stood when the round began (an offline feature store refreshed every few hours),
and the round's clicks, carts and purchases enter the histories when it ends; purchases delayed past
the round enter when their time comes. Every step is vectorised over the round's impressions; the
only Python loops run over days, rounds and scenarios.

Files (Parquet, zstd), one per split, written round by round so memory stays flat:
`impressions_{train,valid,test}.parquet` (every impression), `clicks_{split}.parquet` (clicked
impressions: the delayed-conversion task), `users.parquet`, `items.parquet` (with titles),
`events.parquet` and `sequences.txt` (every behaviour; clicks in S3-Rec format for next-item tasks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from agenticrs.runtime.files import atomic_write, atomic_write_text
from agenticrs.sim import catalog
from agenticrs.sim.config import SimConfig
from agenticrs.sim.world import (
    CART,
    CLICK,
    PURCHASE,
    SECONDS_PER_DAY,
    History,
    World,
    _rng,
    build_world,
    hour_profile,
    sigmoid,
)

SPLITS = ("train", "valid", "test")
# outcome and ground-truth columns: kept for evaluation, never fields of a spec
HIDDEN_COLUMNS = ("p_click", "p_cart", "p_purchase", "cart", "purchase", "purchase_ts", "delay_s", "gmv")


def traffic_multiplier(config: SimConfig, day: int) -> float:
    """More requests on a promotion day (x1.6) and in the days before it (x1.2)."""
    if config.is_promo_day(day):
        return 1.6
    return 1.2 if config.is_pre_promo(day) else 1.0


@dataclass
class Requests:
    """A set of requests: who, when and in which scenario (time-ordered)."""

    request_id: np.ndarray
    user: np.ndarray
    day: np.ndarray
    hour: np.ndarray
    ts: np.ndarray
    scenario: np.ndarray


def draw_requests(world: World, day: int, rng: np.random.Generator, first_id: int, users: np.ndarray | None = None,
                  rate_scale: float = 1.0) -> Requests:  # fmt: skip
    """Poisson(rate x activity x traffic) requests per user on `day`, at hours from the profile."""
    cfg = world.config
    pool = np.arange(world.n_users) if users is None else users
    lam = cfg.requests_per_user_day * rate_scale * traffic_multiplier(cfg, day) * world.user_activity[pool]
    user = np.repeat(pool, rng.poisson(lam))
    n = len(user)
    hour = rng.choice(24, size=n, p=hour_profile())
    ts = day * SECONDS_PER_DAY + hour * 3600 + rng.integers(0, 3600, n)
    scenario = (rng.random(n)[:, None] >= world.user_scenario_cum[user]).sum(1)
    scenario = np.minimum(scenario, len(cfg.scenarios) - 1)
    order = np.argsort(ts, kind="stable")
    return Requests(
        request_id=first_id + np.arange(n, dtype=np.int64), user=user[order], day=np.full(n, day, np.int64),
        hour=hour[order], ts=ts[order], scenario=scenario[order],
    )  # fmt: skip


@dataclass
class Slates:
    """Candidates of requests, one row per (request, candidate): contiguous per request."""

    request_index: np.ndarray  # row -> index into the Requests arrays
    item: np.ndarray
    slot: np.ndarray  # candidate index within its request (draw order)
    query_sub: np.ndarray  # -1: no query


def draw_slates(world: World, requests: Requests, history: History, rng: np.random.Generator,
                pool_size: Callable[[int], int]) -> Slates:  # fmt: skip
    """Candidates from each request's scenario source; `pool_size(scenario)` per request."""
    parts = []
    for s, scenario in enumerate(world.config.scenarios):
        idx = np.flatnonzero(requests.scenario == s)
        if len(idx) == 0:
            continue
        size = pool_size(s)
        day = int(requests.day[idx[0]])
        items, query = world.candidates(requests.user[idx], scenario.source, size, day, history, rng)
        parts.append((np.repeat(idx, size), items.ravel(), np.tile(np.arange(size), len(idx)), np.repeat(query, size)))
    if not parts:
        empty = np.zeros(0, np.int64)
        return Slates(empty, empty, empty, empty)
    request_index, item, slot, query = (np.concatenate(p) for p in zip(*parts))
    order = np.lexsort((slot, request_index))
    return Slates(request_index[order], item[order], slot[order], query[order])


@dataclass
class Outcomes:
    """Ground truth and realised behaviour of shown impressions (row-aligned)."""

    p_click: np.ndarray
    p_cart: np.ndarray  # given a click
    p_purchase: np.ndarray  # given a click
    click: np.ndarray
    cart: np.ndarray
    purchase: np.ndarray
    purchase_ts: np.ndarray  # -1: none
    gmv: np.ndarray
    leak: np.ndarray | None = None  # the planted leak column's values (1-based; 0: missing), drawn after the outcome


DWELL_EDGES_S = (10.0, 30.0, 90.0, 270.0)  # the planted leak's buckets: <10 s, 10-30 s, ..., >=270 s


def dwell_buckets(outcomes: Outcomes, rng: np.random.Generator) -> np.ndarray:
    """The planted leak: a dwell-time bucket (1..5) of each clicked impression, 0 (missing) for the
    others. Dwell ~ LogNormal(median 20 s x e^1.0 if carted x e^0.7 if purchased, sigma 0.8): known
    only after the outcome, so offline it gives the click away and at serving time it is absent."""
    n = len(outcomes.click)
    log_dwell = np.log(20.0) + 1.0 * outcomes.cart + 0.7 * outcomes.purchase + 0.8 * rng.standard_normal(n)
    bucket = 1 + np.searchsorted(np.log(DWELL_EDGES_S), log_dwell, side="right")
    return np.where(outcomes.click, bucket, 0).astype(np.int8)


def realise(world: World, user: np.ndarray, item: np.ndarray, scenario: np.ndarray, position: np.ndarray,
            hour: np.ndarray, day: np.ndarray, ts: np.ndarray, history: History,
            uniforms: np.ndarray, delay_rng: np.random.Generator) -> Outcomes:  # fmt: skip
    """Truth and outcomes; `uniforms` (n, 3) are the click / cart / purchase draws (common random
    numbers in A/B tests: the same draws give the same outcome when the probability is the same)."""
    relevance = world.relevance(item, history.items[user], history.length[user])
    p_click = sigmoid(world.click_logit(user, item, scenario, position, hour, day, relevance))
    p_cart, p_buy_cart, p_buy_direct = world.conversion_probabilities(user, item, day)
    click = uniforms[:, 0] < p_click
    cart = click & (uniforms[:, 1] < p_cart)
    purchase = click & (uniforms[:, 2] < np.where(cart, p_buy_cart, p_buy_direct))
    purchase_ts = np.full(len(item), -1, np.int64)
    if purchase.any():
        buyers = np.flatnonzero(purchase)
        purchase_ts[buyers] = ts[buyers] + world.purchase_delay(day[buyers], ts[buyers], delay_rng, user[buyers], cart[buyers],
                                                                  item[buyers])  # fmt: skip
    gmv = np.where(purchase, world.price_paid(item, purchase_ts // SECONDS_PER_DAY), 0.0)
    p_purchase = p_cart * p_buy_cart + (1 - p_cart) * p_buy_direct
    return Outcomes(p_click, p_cart, p_purchase, click, cart, purchase, purchase_ts, gmv)


def _list_column(matrix: np.ndarray, lengths: np.ndarray, value_type: pa.DataType, offset: int = 0) -> pa.ListArray:
    k = matrix.shape[1]
    mask = np.arange(k)[None, :] < lengths[:, None]
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(matrix[mask] + offset, type=value_type))


def impression_table(world: World, requests: Requests, slates: Slates, position: np.ndarray, history: History,
                     outcomes: Outcomes | None) -> pa.Table:  # fmt: skip
    """The rows as model-readable columns (1-based ids; 0-based position), plus hidden truth columns."""
    r = slates.request_index
    user, item = requests.user[r], slates.item
    hist_items = history.items[user]
    hist_len = history.length[user].astype(np.int64)
    day = requests.day[r]
    scenario_names = pa.array(world.scenario_names, pa.string())
    query = slates.query_sub
    columns: dict[str, pa.Array] = {
        "request_id": pa.array(requests.request_id[r]),
        "ts": pa.array(requests.ts[r]),
        "day": pa.array(day, pa.int16()),
        "hour": pa.array(requests.hour[r], pa.int8()),
        "scenario": pa.DictionaryArray.from_arrays(pa.array(requests.scenario[r], pa.int8()), scenario_names),
        "user_id": pa.array(user + 1, pa.int32()),
        "age": pa.array(world.user_age[user], pa.int8()),
        "gender": pa.array(world.user_gender[user], pa.int8()),
        "city_tier": pa.array(world.user_city[user], pa.int8()),
        **_planted_column(world, 0, user),
        "query_cate_l2": pa.array(query + 1, pa.int16(), mask=query < 0),
        "item_id": pa.array(item + 1, pa.int32()),
        "cate_l1": pa.array(world.item_top[item] + 1, pa.int16()),
        "cate_l2": pa.array(world.item_sub[item] + 1, pa.int16()),
        "brand": pa.array(world.item_brand[item] + 1, pa.int16()),
        **_planted_column(world, 1, item),
        "price": pa.array(world.item_price[item], pa.float32()),
        "item_age_days": pa.array(day - world.item_launch_day[item], pa.int32()),
        "position": pa.array(position, pa.int8()),
        "hist_item_id": _list_column(hist_items, hist_len, pa.int32(), offset=1),
        "hist_cate_l2": _list_column(world.item_sub[np.maximum(hist_items, 0)], hist_len, pa.int16(), offset=1),
        "hist_type": _list_column(history.types[user], hist_len, pa.int8()),
        "hist_ts": _list_column(history.ts[user], hist_len, pa.int64()),
    }
    if outcomes is not None:
        delay = np.where(outcomes.purchase, outcomes.purchase_ts - requests.ts[r], -1)
        columns.update({
            "click": pa.array(outcomes.click.astype(np.int8)),
            "cart": pa.array(outcomes.cart.astype(np.int8)),
            "purchase": pa.array(outcomes.purchase.astype(np.int8)),
            "purchase_ts": pa.array(outcomes.purchase_ts, mask=~outcomes.purchase),
            "delay_s": pa.array(delay, pa.int64(), mask=~outcomes.purchase),
            "gmv": pa.array(outcomes.gmv, pa.float32()),
            "p_click": pa.array(outcomes.p_click, pa.float32()),
            "p_cart": pa.array(outcomes.p_cart, pa.float32()),
            "p_purchase": pa.array(outcomes.p_purchase, pa.float32()),
        })  # fmt: skip
    leak = world.config.planted.leak_column if world.config.planted is not None else None
    if leak is not None:  # missing wherever the outcome is unknown (serving) or was no click
        values = outcomes.leak if outcomes is not None and outcomes.leak is not None else np.zeros(len(item), np.int8)
        columns[leak] = pa.array(values, pa.int8(), mask=values == 0)
    return pa.table(columns)


def _planted_column(world: World, side: int, index: np.ndarray) -> dict[str, pa.Array]:
    """The planted cross's user (side 0) or item (side 1) attribute as a 1-based column; {} without one."""
    planted = world.config.planted
    if planted is None:
        return {}
    values = world.user_planted if side == 0 else world.item_planted
    return {planted.cross_fields[side]: pa.array(values[index] + 1, pa.int8())}


@dataclass
class _Events:
    """Behaviours waiting to enter the histories (purchases delayed past their round)."""

    user: list = field(default_factory=list)
    item: list = field(default_factory=list)
    type: list = field(default_factory=list)
    ts: list = field(default_factory=list)

    def add(self, user, item, type_, ts) -> None:
        self.user.append(user), self.item.append(item), self.type.append(type_), self.ts.append(ts)

    def arrays(self) -> tuple[np.ndarray, ...]:
        if not self.user:
            z = np.zeros(0, np.int64)
            return z, z, z.astype(np.int8), z
        return (np.concatenate(self.user), np.concatenate(self.item), np.concatenate(self.type).astype(np.int8),
                np.concatenate(self.ts))  # fmt: skip


def behaviour_events(user: np.ndarray, item: np.ndarray, ts: np.ndarray, outcomes: Outcomes,
                     rng: np.random.Generator) -> tuple[np.ndarray, ...]:  # fmt: skip
    """Click (seconds after the impression), cart (minutes after the click) and purchase events."""
    clicked = np.flatnonzero(outcomes.click)
    click_ts = ts[clicked] + rng.integers(2, 120, len(clicked))
    carted = np.flatnonzero(outcomes.cart)
    cart_ts = ts[carted] + rng.integers(150, 1800, len(carted))
    bought = np.flatnonzero(outcomes.purchase)
    users = np.concatenate([user[clicked], user[carted], user[bought]])
    items = np.concatenate([item[clicked], item[carted], item[bought]])
    types = np.concatenate([np.full(len(clicked), CLICK), np.full(len(carted), CART), np.full(len(bought), PURCHASE)])
    times = np.concatenate([click_ts, cart_ts, outcomes.purchase_ts[bought]])
    return users, items, types.astype(np.int8), times


@dataclass
class GenerationResult:
    world: World
    history: History  # histories at the end of the log (the online environment starts here)
    rows: dict[str, int]
    clicks: dict[str, int]
    requests: int
    seconds: float
    files: dict[str, Path]


class _SplitWriters:
    """One streaming Parquet writer per split, each into an atomic file: published when the
    generation finishes, removed when it fails (a context manager)."""

    def __init__(self, out_dir: Path, prefix: str) -> None:
        self.out_dir, self.prefix = out_dir, prefix
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.rows = dict.fromkeys(SPLITS, 0)
        self._files = ExitStack()

    def path(self, split: str) -> Path:
        return self.out_dir / f"{self.prefix}_{split}.parquet"

    def write(self, split: str, table: pa.Table) -> None:
        if split not in self.writers:
            handle = self._files.enter_context(atomic_write(self.path(split)))
            self.writers[split] = pq.ParquetWriter(handle, table.schema, compression="zstd")
        self.writers[split].write_table(table)
        self.rows[split] += table.num_rows

    def __enter__(self) -> _SplitWriters:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            for writer in self.writers.values():
                writer.close()  # the footers
        except BaseException as error:  # a file without its footer must not be published
            self._files.__exit__(type(error), error, error.__traceback__)
            raise
        self._files.__exit__(exc_type, exc, tb)  # publishes the files, or removes them on an error


def generate_logs(config: SimConfig, out_dir: str | Path, progress: Callable[[int, int], None] | None = None
                  ) -> GenerationResult:  # fmt: skip
    """Simulate `config.n_days` days and write the tables to `out_dir` (see the module docstring)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world = build_world(config)
    history = world.warmup_history()
    all_events = _Events()
    k = history.max_len
    warm = np.arange(k)[None, :] < history.length[:, None]
    all_events.add(np.nonzero(warm)[0], history.items[warm].astype(np.int64), history.types[warm], history.ts[warm])
    pending = _Events()
    rng_req, rng_slate, rng_draw, rng_event = (_rng(config.seed, s) for s in (10, 11, 12, 13))
    leaks = config.planted is not None and config.planted.leak_column is not None
    rng_leak = _rng(config.seed, 14)  # the planted leak's own stream: the other draws are unchanged
    slate_sizes = [s.slate_size for s in config.scenarios]
    next_id, n_requests = 1, 0
    round_seconds = SECONDS_PER_DAY // config.rounds_per_day
    with _SplitWriters(out_dir, "impressions") as impressions, _SplitWriters(out_dir, "clicks") as clicks:
        for day in range(config.n_days):
            requests = draw_requests(world, day, rng_req, next_id)
            next_id += len(requests.user)
            n_requests += len(requests.user)
            split = config.split_of_day(day)
            for round_ in range(config.rounds_per_day):
                start = day * SECONDS_PER_DAY + round_ * round_seconds
                end = start + round_seconds
                in_round = (requests.ts >= start) & (requests.ts < end)
                if not in_round.any():
                    pending = _flush(history, pending, end)
                    continue
                sub = Requests(*(getattr(requests, f)[in_round] for f in Requests.__dataclass_fields__))
                slates = draw_slates(world, sub, history, rng_slate, lambda s: slate_sizes[s])
                r = slates.request_index
                user = sub.user[r]
                n_candidates = np.bincount(r, minlength=len(sub.user))
                position = _logged_positions(world, sub, slates, n_candidates, rng_slate)
                outcomes = realise(
                    world, user, slates.item, sub.scenario[r], position, sub.hour[r], sub.day[r], sub.ts[r],
                    history, rng_draw.random((len(r), 3)), rng_event,
                )  # fmt: skip
                if leaks:
                    outcomes.leak = dwell_buckets(outcomes, rng_leak)
                table = impression_table(world, sub, slates, position, history, outcomes)
                impressions.write(split, table)
                if outcomes.click.any():
                    clicks.write(split, table.filter(pa.array(outcomes.click)))
                ev = behaviour_events(user, slates.item, sub.ts[r], outcomes, rng_event)
                all_events.add(*ev)
                pending.add(*ev)
                pending = _flush(history, pending, end)
            if progress is not None:
                progress(day + 1, config.n_days)
    files = {f"impressions_{s}": impressions.path(s) for s in SPLITS}
    files.update({f"clicks_{s}": clicks.path(s) for s in SPLITS})
    files.update(_write_entities(world, all_events, out_dir))
    return GenerationResult(
        world=world, history=history, rows=impressions.rows, clicks=clicks.rows, requests=n_requests,
        seconds=time.perf_counter() - started, files=files,
    )  # fmt: skip


def _flush(history: History, pending: _Events, end: int) -> _Events:
    """Move the behaviours that happened before `end` into the histories; return the rest.

    Called at the end of every round, so the histories a round sees hold exactly the behaviours
    before the round began, appended in time order."""
    user, item, type_, ts = pending.arrays()
    due = ts < end
    history.append(user[due], item[due].astype(np.int32), type_[due], ts[due])
    rest = _Events()
    if (~due).any():
        rest.add(user[~due], item[~due], type_[~due], ts[~due])
    return rest


def _logged_positions(world: World, requests: Requests, slates: Slates, n_candidates: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Positions given by the logging policy, computed per scenario (slates of one size)."""
    position = np.empty(len(slates.item), np.int64)
    starts = np.r_[0, np.cumsum(n_candidates)[:-1]]
    for size in np.unique(n_candidates[n_candidates > 0]):
        reqs = np.flatnonzero(n_candidates == size)
        rows = starts[reqs][:, None] + np.arange(size)[None, :]
        day = int(requests.day[reqs[0]])
        position[rows] = world.logging_order(requests.user[reqs], slates.item[rows], day, rng)
    return position


def _write_entities(world: World, events: _Events, out_dir: Path) -> dict[str, Path]:
    """users.parquet, items.parquet (with titles), events.parquet and sequences.txt (clicks)."""
    cfg = world.config
    tops = np.array(catalog.top_names(), dtype=object)
    subs = np.array(catalog.subcategory_names(cfg.subcategories_per_top), dtype=object)
    users = pa.table({
        "user_id": pa.array(np.arange(world.n_users) + 1, pa.int32()),
        "age": pa.array(world.user_age, pa.int8()),
        "gender": pa.array(world.user_gender, pa.int8()),
        "city_tier": pa.array(world.user_city, pa.int8()),
        "activity": pa.array(world.user_activity, pa.float32()),
        "price_sensitivity": pa.array(world.user_price_sensitivity, pa.float32()),
        "preferred_cate_l1": pa.array([[int(t) + 1 for t in row if t >= 0] for row in world.user_pref_top],
                                      pa.list_(pa.int16())),
    })  # fmt: skip
    if cfg.planted is not None:
        users = users.append_column(cfg.planted.cross_fields[0], pa.array(world.user_planted + 1, pa.int8()))
    items = pa.table({
        "item_id": pa.array(np.arange(world.n_items) + 1, pa.int32()),
        "title": pa.array(world.item_title, pa.string()),
        "cate_l1": pa.array(world.item_top + 1, pa.int16()),
        "cate_l2": pa.array(world.item_sub + 1, pa.int16()),
        "cate_l1_name": pa.array(tops[world.item_top].tolist(), pa.string()),
        "cate_l2_name": pa.array(subs[world.item_sub].tolist(), pa.string()),
        "brand": pa.array(world.item_brand + 1, pa.int16()),
        "brand_name": pa.array(np.array(world.brand_names, dtype=object)[world.item_brand].tolist(), pa.string()),
        "price": pa.array(world.item_price, pa.float32()),
        "launch_day": pa.array(world.item_launch_day, pa.int32()),
        "popularity": pa.array(world.item_popularity, pa.float32()),
    })  # fmt: skip
    if cfg.planted is not None:
        items = items.append_column(cfg.planted.cross_fields[1], pa.array(world.item_planted + 1, pa.int8()))
    user, item, type_, ts = events.arrays()
    order = np.lexsort((ts, user))
    user, item, type_, ts = user[order], item[order], type_[order], ts[order]
    events_table = pa.table({
        "user_id": pa.array(user + 1, pa.int32()), "item_id": pa.array(item + 1, pa.int32()),
        "behaviour": pa.array(type_, pa.int8()), "ts": pa.array(ts, pa.int64()),
    })  # fmt: skip
    paths = {"users": out_dir / "users.parquet", "items": out_dir / "items.parquet", "events": out_dir / "events.parquet"}
    for key, table in (("users", users), ("items", items), ("events", events_table)):
        with atomic_write(paths[key]) as handle:
            pq.write_table(table, handle, compression="zstd")
    paths["sequences"] = out_dir / "sequences.txt"
    _write_click_sequences(user[type_ == CLICK], item[type_ == CLICK], paths["sequences"], min_length=3)
    return paths


def _write_click_sequences(user: np.ndarray, item: np.ndarray, path: Path, min_length: int) -> None:
    """S3-Rec format: `user item item ...` per line, time order, users with >= min_length clicks."""
    if len(user) == 0:
        atomic_write_text(path, "")
        return
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    lengths = np.diff(np.r_[starts, len(user)])
    keep = np.repeat(lengths >= min_length, lengths)
    user, item = user[keep], item[keep]
    if len(user) == 0:
        atomic_write_text(path, "")
        return
    tokens = (item + 1).astype(str).astype(object)
    first = np.r_[True, user[1:] != user[:-1]]
    prefix = np.where(first, np.char.add("\n", (user + 1).astype(str)).astype(object) + " ", " ")
    text = "".join((prefix + tokens).tolist()).lstrip("\n") + "\n"
    atomic_write_text(path, text)
