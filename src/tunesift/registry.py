"""Every registry of plug-ins, and the one list of the modules that fill them.

A role (pool method, rec method, backbone, executor, warm-up evaluation) is one :class:`Registry` below,
declared with the modules that register into it. A registry imports its modules the first time it is
asked what it holds, with no silent skip: a plug-in that fails to import fails the command that needs it,
loudly, naming the module. Adding a plug-in is its module (a class under ``@REGISTRY.register("name")``)
plus its module's name in the registry's list here; the CLI, ``--help``, the benches' method lists and the
registry-wide conformance tests read the registries, so nothing else is edited.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import fields
from typing import Any, Callable, ClassVar, Generic, Iterator, Sequence, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of implementations of one role (e.g. pool methods, rec methods).

    Args:
        role: what an entry is, for messages ("pool method").
        plugins: the modules whose import registers this role's entries; imported on the first look-up
            (not at import of this module, so a command loads only what it uses). Their entries list
            first, in this order, then entries registered from elsewhere (a test's plug-in) in the order
            they were registered — the same order however the modules happened to be imported.
    """

    def __init__(self, role: str, plugins: Sequence[str] = ()):
        self.role = role
        self.plugins = tuple(plugins)
        self._items: dict[str, T] = {}
        self._loaded = not self.plugins

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.role} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def load(self) -> None:
        """Import every plug-in module of the role (once); an import error propagates unchanged."""
        if self._loaded:
            return
        self._loaded = True  # before the imports: a plug-in module may itself ask the registry
        try:
            for module in self.plugins:
                importlib.import_module(module)
        except BaseException:
            self._loaded = False
            raise

    def get(self, name: str) -> T:
        self.load()
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.role} {name!r}; expected one of {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        self.load()
        rank = {m: i for i, m in enumerate(self.plugins)}
        position = {n: i for i, n in enumerate(self._items)}
        return sorted(self._items, key=lambda n: (rank.get(getattr(self._items[n], "__module__", None),
                                                           len(rank)), position[n]))

    def __contains__(self, name: str) -> bool:
        self.load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


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


# Methods that rank a text pool against a target (GOT-D and its baselines)
POOL_METHODS: Registry = Registry("pool method", plugins=(
    "tunesift.pool.random", "tunesift.pool.gotd", "tunesift.pool.dsir", "tunesift.pool.knn", "tunesift.pool.tsds"))
# Methods that score and select recommendation samples (DEALRec and its baselines)
REC_METHODS: Registry = Registry("rec method", plugins=("tunesift.rec.methods",))
# The recommenders DEALRec selects for: what is fine-tuned, and how effort and evaluation are done
REC_BACKBONES: Registry = Registry("backbone", plugins=("tunesift.rec.bigrec.backbone", "tunesift.rec.tiger.backbone"))
# Where per-example stages run, chunk by chunk (in this process, or on Ray actors)
EXECUTORS: Registry = Registry("executor", plugins=("tunesift.executor.local", "tunesift.executor.ray"))
# How `bench gotd` scores a warmed-up model
WARMUP_EVALS: Registry = Registry("warm-up evaluation", plugins=("tunesift.bench.evals.finetune",
                                                                 "tunesift.bench.evals.zeroshot"))
