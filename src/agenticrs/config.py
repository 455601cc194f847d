"""Typed configuration helpers: YAML in and out, and `--set a.b=c` overrides.

Every run prints and saves its effective configuration, so these helpers are shared by the CLI,
the trainer and (later) the agents.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from agenticrs.runtime.files import atomic_write_text


def parse_override_value(text: str) -> Any:
    """`--set` values are YAML scalars or lists: 1e-3, true, [400,400], adam."""
    try:
        return yaml.load(text, Loader=_OverrideLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return text


class _OverrideLoader(yaml.SafeLoader):
    """SafeLoader that also reads exponent-only floats (1e-3, 2E+4) as numbers, as YAML 1.2 does;
    PyYAML's YAML 1.1 resolver would leave them strings."""


_OverrideLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `config` with each `a.b.c=value` applied (nested dicts are created)."""
    result = _deep_copy(config)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override '{item}' is not of the form key=value (e.g. train.learning_rate=1e-3)")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ValueError(f"override '{item}' has an empty key")
        node = result
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ValueError(f"override '{item}': '{part}' is a value, not a section")
            node = child
        node[parts[-1]] = parse_override_value(value.strip())
    return result


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` with `update` laid over it, section by section (nested dicts merge, values replace)."""
    out = dict(base)
    for key, value in update.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def dump_yaml(data: dict[str, Any], path: str | Path | None = None) -> str:
    """YAML text of `data`; written atomically to `path` when one is given."""
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    if path is not None:
        atomic_write_text(path, text)
    return text
