"""64-bit FNV-1a over Arrow strings matches a pure-Python reference."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from agenticrs.features.hashing import fnv1a_64

_OFFSET = 0xCBF29CE484222325
_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1


def reference(value: str | None) -> int:
    h = _OFFSET
    for byte in (value or "").encode("utf-8"):
        h ^= byte
        h = (h * _PRIME) & _MASK
    return h


def _random_strings(rng: random.Random, n: int) -> list[str | None]:
    alphabet = (
        [chr(c) for c in range(0x20, 0x7F)]
        + list("éüßñøåçÆ")
        + list("中文字符日本語한국어")
        + ["\U0001f600", "\U0001f680", "\u0000", "\n", "\t"]
    )
    out: list[str | None] = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.08:
            out.append(None)
        elif roll < 0.15:
            out.append("")
        else:
            out.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))))
    return out


def test_known_vectors():
    values = pa.array(["", "a", "foobar"])
    assert fnv1a_64(values).tolist() == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8]


@pytest.mark.parametrize("arrow_type", [pa.string(), pa.large_string()])
def test_matches_reference_on_random_unicode(arrow_type):
    rng = random.Random(1234)
    values = _random_strings(rng, 2000)
    got = fnv1a_64(pa.array(values, arrow_type))
    assert got.dtype == np.uint64
    assert got.shape == (len(values),)
    assert got.tolist() == [reference(v) for v in values]


def test_nulls_hash_as_empty_string():
    got = fnv1a_64(pa.array([None, "", None], pa.string()))
    assert got.tolist() == [_OFFSET] * 3


def test_all_empty_and_empty_array():
    assert fnv1a_64(pa.array(["", ""])).tolist() == [_OFFSET, _OFFSET]
    assert fnv1a_64(pa.array([], pa.string())).tolist() == []
    assert fnv1a_64(pa.chunked_array([], pa.string())).tolist() == []


def test_sliced_and_chunked_arrays():
    rng = random.Random(7)
    values = _random_strings(rng, 500)
    full = pa.array(values)
    sliced = full.slice(123, 200)
    assert fnv1a_64(sliced).tolist() == [reference(v) for v in values[123:323]]
    chunked = pa.chunked_array([full.slice(0, 10), full.slice(10, 300), full.slice(310)])
    assert fnv1a_64(chunked).tolist() == [reference(v) for v in values]


def test_independent_of_batch_composition():
    """A value hashes the same whatever else is in its array (stable across chunks and runs)."""
    rng = random.Random(99)
    values = [v for v in _random_strings(rng, 300) if v is not None]
    alone = [int(fnv1a_64(pa.array([v]))[0]) for v in values[:50]]
    together = fnv1a_64(pa.array(values)).tolist()[:50]
    reversed_ = fnv1a_64(pa.array(values[::-1])).tolist()[::-1][:50]
    assert alone == together == reversed_
