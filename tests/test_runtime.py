"""The runtime layer: the one registry type, atomic file writes, seeding and RNG state."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from agenticrs.runtime import (
    Registry,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    rng_state,
    seed_everything,
    set_rng_state,
)
from agenticrs.runtime.files import atomic_save


class _A: ...


class _B: ...


# ------------------------------------------------------------------------------------ registry


def test_registry_rejects_a_second_object_under_a_taken_name():
    registry: Registry[type] = Registry("widget")
    registry.register("a", _A)
    with pytest.raises(ValueError, match=r"widget name 'a' is already registered by _A.*_B"):
        registry.register("a", _B)
    assert registry["a"] is _A


def test_registry_allows_registering_the_same_object_again():
    registry: Registry[type] = Registry("widget")
    assert registry.register("a", _A) is _A
    assert registry.register("a", _A) is _A  # a module reload registers again
    assert registry.names() == ["a"] and len(registry) == 1


def test_registry_decorator_and_lookups():
    registry: Registry[type] = Registry("widget")

    @registry.register("b")
    class Local: ...

    registry.register("a", _A)
    assert registry.get("b") is Local and "b" in registry and "zzz" not in registry
    assert list(registry) == ["a", "b"] and registry.items() == [("a", _A), ("b", Local)]
    with pytest.raises(ValueError, match="non-empty string name"):
        registry.register("", _B)


def test_registry_unknown_name_lists_the_known_ones():
    registry: Registry[int] = Registry("gadget")
    registry.register("one", 1)
    registry.register("two", 2)
    with pytest.raises(KeyError, match="unknown gadget 'three'; known: one, two"):
        registry.get("three")
    with pytest.raises(KeyError, match="known: none"):
        Registry("empty").get("x")


def test_registry_lazy_loader_runs_once_and_only_when_asked():
    calls = []
    registry: Registry[int] = Registry("lazy", loader=lambda: (calls.append(1), registry.register("x", 1)))
    assert calls == []  # creating (and registering into) a registry loads nothing
    assert registry.get("x") == 1 and "x" in registry and registry.names() == ["x"] and len(registry) == 1
    assert calls == [1]


def test_registry_loader_that_fails_is_retried():
    attempts = []

    def loader() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ImportError("first import fails")
        registry.register("x", 1)

    registry: Registry[int] = Registry("flaky", loader=loader)
    with pytest.raises(ImportError):
        registry.names()
    assert registry.names() == ["x"] and len(attempts) == 2


# --------------------------------------------------------------------------------- atomic files


def _stray(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "a.txt"  # missing folders are created
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and _stray(path.parent) == []
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    atomic_write_json(path, {"k": [1, 2]})
    assert json.loads(path.read_text()) == {"k": [1, 2]}


def test_atomic_write_keeps_the_old_content_when_the_writer_raises(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path, "w") as handle:
            handle.write("half of the new")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no stray temp file


def test_atomic_write_of_a_new_file_leaves_nothing_when_the_writer_raises(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "new.bin") as handle:
            handle.write(b"x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match="'wb' or 'w'"):
        with atomic_write(tmp_path / "a", "a"):
            pass


def test_atomic_save_through_a_writer_function(tmp_path):
    path = tmp_path / "t.pt"
    atomic_save(path, lambda handle: torch.save({"x": torch.arange(3)}, handle))
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(3))
    atomic_save(tmp_path / "a.npy", lambda handle: np.save(handle, np.eye(2)))
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.eye(2))
    assert _stray(tmp_path) == []


# ------------------------------------------------------------------------------------- seeding


def _draws() -> tuple[float, np.ndarray, torch.Tensor]:
    return random.random(), np.random.rand(3), torch.rand(3)


def _same(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_seed_everything_makes_draws_repeat():
    seed_everything(7)
    first = _draws()
    seed_everything(7)
    assert _same(first, _draws())
    seed_everything(8)
    assert not _same(first, _draws())
    seed_everything(2**40 + 7)  # seeds beyond NumPy's 32 bits are accepted


def test_rng_state_round_trips():
    seed_everything(3)
    state = rng_state()
    expected = _draws()
    _draws()  # move every generator on
    set_rng_state(state)
    assert _same(expected, _draws())
