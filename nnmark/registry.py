"""Name -> class registries: the CLI, the benchmark and the tests all enumerate them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from nnmark.errors import NNMarkError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection filled by a decorator; duplicate names fail loudly.

    >>> R: Registry[type] = Registry("thing")
    >>> @R.register("a")
    ... class A: ...
    >>> R.names(), R.get("a") is A, R.find("b")
    (['a'], True, None)
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise NNMarkError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def find(self, name: str) -> T | None:
        """The entry named `name`, or None: for callers where a missing name is not an error."""
        return self._items.get(name)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
