"""Which setting names hold secrets (API keys, passwords, tokens): one rule for every layer that
prints, stores or reports settings (the CLI's error lines, the knowledge store, the HTML report)."""

from __future__ import annotations

from typing import Any

SECRET_KEYS = frozenset({"api_key", "apikey", "password", "passwd", "secret", "token", "access_token", "auth_token"})
_SECRET_SUFFIXES = ("_api_key", "_password", "_secret", "_token")


def is_secret_key(key: str) -> bool:
    name = key.lower()
    return name in SECRET_KEYS or name.endswith(_SECRET_SUFFIXES)


def scrub_secrets(value: Any) -> Any:
    """A copy of `value` (nested dicts and lists) without any secret-named key."""
    if isinstance(value, dict):
        return {k: scrub_secrets(v) for k, v in value.items() if not (isinstance(k, str) and is_secret_key(k))}
    if isinstance(value, list):
        return [scrub_secrets(v) for v in value]
    return value
