"""Sequential / generative recommenders; importing the package registers every model module.

One model per file: adding a model is adding a file that uses `@register_sequential`.
"""

from __future__ import annotations

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
