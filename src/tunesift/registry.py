"""One registry per role, so adding a method is one file plus one registration line.

The CLI reads its choices from these registries: there is no second table to edit.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any, Callable, ClassVar, Generic, Iterator, TypeVar

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


class Method:
    """Base of registered methods: settings are dataclass fields; ``cli_options`` maps fields to flags.

    Flags are shared across the methods of one command, so each is added once (``seen``).
    """

    name: ClassVar[str] = ""
    # field name -> (flag, help)
    cli_options: ClassVar[dict[str, tuple[str, str]]] = {}

    def settings(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)} if hasattr(self, "__dataclass_fields__") else {}

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup, seen: set[str]) -> None:
        for fname, (flag, help_) in cls.cli_options.items():
            if flag in seen:
                continue
            seen.add(flag)
            field_ = cls.__dataclass_fields__[fname]
            default = field_.default
            if isinstance(default, bool):
                group.add_argument(flag, dest=fname, action=argparse.BooleanOptionalAction, default=None, help=help_)
                continue
            annotation = field_.type if isinstance(field_.type, str) else getattr(field_.type, "__name__", "")
            typ = next((t for t in (float, int) if annotation.split("|")[0].strip() == t.__name__),
                       type(default) if default is not None else str)
            group.add_argument(flag, dest=fname, type=typ, default=None, help=f"{help_} (default: {default})")

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        kw = {f: getattr(args, f) for f in cls.cli_options if getattr(args, f, None) is not None}
        return cls(**kw)


# Methods that rank a text pool against a target (GOT-D and its baselines): tunesift.pool
POOL_METHODS: Registry = Registry("pool method")
# Methods that score and select recommendation samples (DEALRec and its baselines): tunesift.rec
REC_METHODS: Registry = Registry("rec method")
