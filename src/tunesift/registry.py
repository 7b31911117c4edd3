"""One registry per role, so adding a method is one file plus one registration line.

The CLI reads its choices from these registries: there is no second table to edit.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of implementations of one role (e.g. pool methods, rec methods)."""

    def __init__(self, role: str):
        self.role = role
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.role} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.role} {name!r}; expected one of {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)


# Methods that rank a text pool against a target (GOT-D and its baselines): tunesift.pool
POOL_METHODS: Registry = Registry("pool method")
# Methods that score and select recommendation samples (DEALRec and its baselines): tunesift.rec
REC_METHODS: Registry = Registry("rec method")
