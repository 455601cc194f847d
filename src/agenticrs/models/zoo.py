"""Imports every model module of this package so that each registers its name.

One model per file: adding a model is adding a file that uses `@register`; nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil

import agenticrs.models as _package

_NOT_MODELS = {"base", "blocks", "gen_backbone", "layers", "zoo"}

for _info in sorted(pkgutil.iter_modules(_package.__path__), key=lambda m: m.name):
    if _info.name not in _NOT_MODELS and not _info.name.startswith("_"):
        importlib.import_module(f"agenticrs.models.{_info.name}")
