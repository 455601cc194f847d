"""Hierarchical hashing: the count-min sketch never under-counts and its lower bound holds at the
stated probability; the heavy-hitter summary is exact for heavy keys and bounded for the rest."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from agenticrs.train.testtime.sketch import CountMinSketch, HashingConfig, HeavyHitters, HierarchicalHashing


def _zipf_stream(n: int, keys: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, keys + 1) ** 1.1
    return rng.choice(keys, size=n, p=weights / weights.sum()).astype(np.uint64) * np.uint64(7919) + np.uint64(3)


def _stream_in_chunks(sketch: CountMinSketch, heavy: HeavyHitters | None, stream: np.ndarray, chunk: int) -> None:
    for start in range(0, len(stream), chunk):
        unique, counts = np.unique(stream[start:start + chunk], return_counts=True)
        sketch.add(unique, counts)
        if heavy is not None:
            heavy.update(unique, counts.astype(np.int64))


def test_count_min_never_under_counts_and_its_lower_bound_holds_at_the_stated_probability():
    violations, queries = 0, 0
    for depth in (1, 2, 3):
        for seed in range(8):
            stream = _zipf_stream(20_000, 3_000, seed)
            sketch = CountMinSketch(depth=depth, width=128, seed=seed)
            _stream_in_chunks(sketch, None, stream, 4096)
            keys, true = np.unique(stream, return_counts=True)
            assert (sketch.estimate(keys) >= true).all()  # never under-counts, whatever the hashing
            assert sketch.total == len(stream)
            bad = int((sketch.lower(keys) > true).sum())
            assert bad / len(keys) <= sketch.delta  # P(lower > true) <= e^-D
            violations, queries = violations + bad, queries + len(keys)
    assert queries > 0 and violations / queries <= math.exp(-1)


def test_count_min_bound_is_epsilon_n():
    sketch = CountMinSketch(depth=4, width=1000)
    assert sketch.epsilon == pytest.approx(math.e / 1000) and sketch.delta == pytest.approx(math.exp(-4))
    sketch.add(np.array([1, 2], dtype=np.uint64), np.array([500, 5]))
    # ε·N = 2.7: the lower bound of a key counted 5 times is at least 5 - 2 (no collision here: min over 4 rows)
    assert sketch.lower(np.array([2], dtype=np.uint64))[0] >= 3


def test_heavy_hitters_are_exact_for_heavy_keys_and_bounded_for_all():
    stream = _zipf_stream(50_000, 20_000, 1)
    capacity = 200
    heavy = HeavyHitters(capacity)
    _stream_in_chunks(CountMinSketch(2, 64), heavy, stream, 5_000)
    keys, true = np.unique(stream, return_counts=True)
    truth = dict(zip(keys.tolist(), true.tolist()))
    found, count, error = heavy.lookup(keys)
    held = np.isin(keys, heavy.keys)
    assert (found == held).all()
    assert (count[found] >= true[found]).all() and (count[found] - error[found] <= true[found]).all()
    assert (true[~found] <= heavy.floor).all()  # a key without an entry is at most the summary's minimum
    heavy_keys = keys[true > len(stream) / capacity]
    assert len(heavy_keys) > 10
    f, c, e = heavy.lookup(heavy_keys)
    assert f.all() and (e == 0).all()
    assert c.tolist() == [truth[k] for k in heavy_keys.tolist()]  # exact counts


def test_heavy_hitter_bounds_hold_on_an_adversarial_stream():
    """Heavy keys arrive last, after the summary filled with light ones: bounded, never under-counted."""
    light = np.arange(1, 5_001, dtype=np.uint64)
    late = np.repeat(np.arange(10_001, 10_006, dtype=np.uint64), 400)
    stream = np.concatenate([light, late])
    heavy = HeavyHitters(50)
    _stream_in_chunks(CountMinSketch(2, 64), heavy, stream, 1000)
    keys, true = np.unique(stream, return_counts=True)
    found, count, error = heavy.lookup(keys)
    assert set(range(10_001, 10_006)) <= set(heavy.keys.tolist())
    assert (count[found] >= true[found]).all() and (count[found] - error[found] <= true[found]).all()


def _categorical(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.zipf(1.6, rows) % 50, rng.integers(0, 5, rows), rng.zipf(1.3, rows) % 300], axis=1)


def test_hierarchical_bounds_bracket_exact_counts_of_every_order():
    cat = _categorical(6000, 0)
    config = HashingConfig(max_order=3, depth=3, width=256, heap_capacity=40, chunk_rows=1000)
    hph = HierarchicalHashing.build(cat, ["a", "b", "c"], config, labels=(cat[:, 1] > 2).astype(float))
    assert hph.orders == [1, 2, 3] and hph.rows == 6000
    for order in hph.orders:
        keys = hph.keys(cat, order)
        unique, true = np.unique(keys, return_counts=True)
        exact = true[np.searchsorted(unique, keys)]
        bounds = hph.bounds(cat, order)
        assert (bounds.upper >= exact).all()  # never under-counts
        assert (bounds.lower[bounds.exact] == exact[bounds.exact]).all()
        assert np.mean(bounds.lower > exact) <= math.exp(-config.depth)


def test_a_large_summary_makes_every_count_exact_and_unseen_rows_zero():
    cat = _categorical(2000, 1)
    hph = HierarchicalHashing.build(cat, ["a", "b", "c"], HashingConfig(width=64, heap_capacity=100_000, chunk_rows=300))
    for order in (1, 2):
        keys = hph.keys(cat, order)
        unique, true = np.unique(keys, return_counts=True)
        bounds = hph.bounds(cat, order)
        assert bounds.exact.all() and (bounds.lower == true[np.searchsorted(unique, keys)]).all()
    unseen = np.array([[10_000, 10_000, 10_000]])
    assert hph.bounds(unseen, 1).upper.tolist() == [[0, 0, 0]]


def test_one_pass_in_any_chunking_gives_the_same_sketch_and_it_saves_and_loads(tmp_path):
    cat = _categorical(3000, 2)
    one = HierarchicalHashing.build(cat, ["a", "b", "c"], HashingConfig(width=128, heap_capacity=10_000, chunk_rows=3000))
    many = HierarchicalHashing.build(cat, ["a", "b", "c"], HashingConfig(width=128, heap_capacity=10_000, chunk_rows=250))
    for order in (1, 2):
        assert np.array_equal(one.sketches[order].table, many.sketches[order].table)
        assert np.array_equal(one.heavy[order].counts, many.heavy[order].counts)
    one.save(tmp_path / "h.npz")
    loaded = HierarchicalHashing.load(tmp_path / "h.npz")
    for order in (1, 2):
        assert np.array_equal(loaded.bounds(cat, order).lower, one.bounds(cat, order).lower)
    assert loaded.nbytes == one.nbytes and loaded.saturation(2) == one.saturation(2)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a saved hierarchical-hashing file"):
        HierarchicalHashing.load(tmp_path / "bad.npz")


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValidationError, match="max_order"):
        HashingConfig(max_order=4)
    with pytest.raises(ValueError, match="depth >= 1"):
        CountMinSketch(0, 10)
    with pytest.raises(ValueError, match="capacity >= 1"):
        HeavyHitters(0)
    with pytest.raises(ValueError, match="3 columns but 2 field names"):
        HierarchicalHashing.build(_categorical(10, 0), ["a", "b"])
