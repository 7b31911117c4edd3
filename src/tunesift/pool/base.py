"""The contract every pool method follows (GOT-D and its baselines).

A pool method ranks every pool example for a target: ``rank(pool, target, context) -> Ranking``.
Scores are "higher = keep"; the order is the full ranking, best first, so selections of different
budgets are prefixes of one ranking (as in GOT-D's code).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar

import numpy as np

from tunesift.io.tables import TextSet


@dataclass
class Ranking:
    """What a pool method returns.

    Attributes:
        scores: (N,) higher = keep.
        order: (N,) permutation of the pool, best first.
        columns: extra (N,) columns for scores.parquet (e.g. ``gradient`` for GOT-D).
        info: entries for the manifest (solver convergence, domains kept, ...).
    """

    scores: np.ndarray
    order: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What a method may use besides the two text sets.

    ``embed(textset, role, indices=None)`` returns float32 embeddings of ``textset`` (or of its rows
    ``indices``), shape (n, d), cached on disk; ``role`` is "pool" or "target" so precomputed arrays
    can be used. ``timer`` records stage times.
    """

    rng: np.random.Generator
    budget: int
    embed: Callable[..., np.ndarray] | None = None
    timer: Any = None
    device: str = "cpu"
    progress: bool = True


class PoolMethod:
    """Base class: settings are dataclass fields; ``cli_options`` maps fields to CLI flags."""

    name: ClassVar[str] = ""
    uses_embeddings: ClassVar[bool] = False
    # field name -> (flag, help); the CLI adds these flags to the `gotd` command
    cli_options: ClassVar[dict[str, tuple[str, str]]] = {}

    def rank(self, pool: TextSet, target: TextSet, ctx: Context) -> Ranking:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)} if hasattr(self, "__dataclass_fields__") else {}

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup, seen: set[str]) -> None:
        for fname, (flag, help_) in cls.cli_options.items():
            if flag in seen:
                continue
            seen.add(flag)
            default = cls.__dataclass_fields__[fname].default
            if isinstance(default, bool):
                group.add_argument(flag, dest=fname, action=argparse.BooleanOptionalAction, default=None, help=help_)
            else:
                typ = type(default) if default is not None else str
                group.add_argument(flag, dest=fname, type=typ, default=None, help=f"{help_} (default: {default})")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "PoolMethod":
        kw = {f: getattr(args, f) for f in cls.cli_options if getattr(args, f, None) is not None}
        return cls(**kw)


def order_by_score(scores: np.ndarray) -> np.ndarray:
    """Indices by decreasing score; ties broken by index (stable), so runs are deterministic."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
