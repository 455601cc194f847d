"""One generic registry for everything that is looked up by name: models of every task,
tokenizers, data sets, metrics, proposers.

Why one type: each kind of thing used to register in its own way (a dict here, a decorator that
silently overwrote there), so a duplicate name or a typo behaved differently per layer. Here a
duplicate name is always an error, an unknown name always lists the known ones, and a registry
may name a loader that imports the modules which register into it (lazily, so that importing a
registry never imports the whole zoo).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, with a clear error for duplicates and unknown names."""

    def __init__(self, kind: str, loader: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._loader = loader
        self._loaded = loader is None
        self._loading = False

    def _load(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            assert self._loader is not None
            self._loader()
            self._loaded = True
        finally:
            self._loading = False

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: T | None = None) -> T | Callable[[T], T]:
        """`registry.register("x", obj)`, or as a decorator `@registry.register("x")`.

        Registering the same object again under its name is a no-op (module reloads); another
        object under a taken name is a `ValueError` that names both."""

        def add(value: T) -> T:
            if not name or not isinstance(name, str):
                raise ValueError(f"a {self.kind} needs a non-empty string name, got {name!r}")
            current = self._entries.get(name)
            if current is not None and current is not value:
                raise ValueError(
                    f"{self.kind} name '{name}' is already registered by {_describe(current)}; "
                    f"cannot register {_describe(value)} under it"
                )
            self._entries[name] = value
            return value

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"unknown {self.kind} '{name}'; known: {known}") from None

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._entries.items())

    def values(self) -> list[T]:
        return [value for _, value in self.items()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def _describe(value: object) -> str:
    return getattr(value, "__qualname__", None) or repr(value)
