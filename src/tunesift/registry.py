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

    Methods of one command may share a flag (``--strata`` of dealrec and ccs); its value reaches only
    the method that is run, and a flag of a method that is not run is refused
    (:class:`tunesift.settings.FlagTable`).
    """

    name: ClassVar[str] = ""
    # field name -> (flag, help)
    cli_options: ClassVar[dict[str, tuple[str, str]]] = {}

    def settings(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)} if hasattr(self, "__dataclass_fields__") else {}

    @classmethod
    def flags(cls) -> list:
        """The method's flags (:class:`tunesift.settings.Flag`), owned by its registered name."""
        from tunesift.settings import Flag

        out = []
        for fname, (flag, help_) in cls.cli_options.items():
            field_ = cls.__dataclass_fields__[fname]
            default = field_.default
            annotation = field_.type if isinstance(field_.type, str) else getattr(field_.type, "__name__", "")
            kind = "bool" if isinstance(default, bool) else next(
                (t for t in ("float", "int") if annotation.split("|")[0].strip() == t),
                type(default).__name__ if default is not None else "str")
            out.append(Flag(owner=cls.name, path=(fname,), flag=flag, help=help_, kind=kind, default=default,
                            choices=None))
        return out

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser, table: Any, registry: "Registry") -> None:
        """Add the flags of every method of ``registry`` to ``parser``, one group per method."""
        for name in registry:
            method = registry.get(name)
            if method.cli_options:
                table.add(parser.add_argument_group(f"{name} options"), method.flags(), shared=True)

    @classmethod
    def from_args(cls, args: argparse.Namespace, table: Any):
        """The method configured from the flags given for it (``table``: the parser's FlagTable)."""
        return cls(**table.values(args, cls.name))


# Methods that rank a text pool against a target (GOT-D and its baselines): tunesift.pool
POOL_METHODS: Registry = Registry("pool method")
# Methods that score and select recommendation samples (DEALRec and its baselines): tunesift.rec
REC_METHODS: Registry = Registry("rec method")
# Where per-example stages run, chunk by chunk (in this process, or on Ray actors): tunesift.executor
EXECUTORS: Registry = Registry("executor")
