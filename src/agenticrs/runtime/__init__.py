"""The layer below everything: one registry type, seeding, devices and atomic files.

Every other package imports from here and this package imports from none of them, so a
registry, a seed or a file write means the same thing in the data layer, the models, the
engine and the agents.
"""

from __future__ import annotations

from typing import Any

from agenticrs.runtime.files import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text
from agenticrs.runtime.registry import Registry

# seeding and devices import torch: loaded on first use, so the data layer stays torch-free
_LAZY = {"resolve_device": "devices", "rng_state": "seeding", "seed_everything": "seeding", "set_rng_state": "seeding"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"agenticrs.runtime.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'agenticrs.runtime' has no attribute {name!r}")

__all__ = [
    "Registry",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "resolve_device",
    "rng_state",
    "seed_everything",
    "set_rng_state",
]
