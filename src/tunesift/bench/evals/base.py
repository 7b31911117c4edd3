"""How ``tunesift bench gotd`` scores a pre-fine-tuned model: one class per evaluation, one registry.

An evaluation (``--eval NAME``) says which objective the model must have, which bench settings are its
own (and refused with another evaluation), what it adds to the bench's identity, how it scores one run
and how its results are labelled. The bench calls these hooks and never names an evaluation: adding one is
a module with a registered subclass of :class:`WarmupEval` (imported in ``tunesift.bench.evals``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tunesift.registry import WARMUP_EVALS

if TYPE_CHECKING:
    from tunesift.bench.gotd import GotdBench, GotdBenchConfig

DEFAULT_EVAL = "finetune"


class WarmupEval:
    """One evaluation of the warm-up bench, built for one bench (``setup``, then ``evaluate`` per run).

    Class attributes:
        name: the ``--eval`` value it is registered under.
        objective: the pre-fine-tuning objective the model must support ("mlm", "causal").
        own_settings: :class:`GotdBenchConfig` fields only this evaluation uses: set to anything but their
            default with another evaluation, they are refused; recorded in the bench's identity only here.
        seeded_baseline: whether ``none`` (no pre-fine-tuning) depends on the seed (labels drawn per
            seed); if not, it runs once, on the first seed.
        scale_settings: scale name -> the scale's defaults this evaluation replaces (a causal LM for the
            encoder default; budgets and seeds sized from this evaluation's measured cost); flags given on
            the command line still win.
        title: appended to the results' title and metric label.
    """

    name: ClassVar[str] = ""
    objective: ClassVar[str] = "mlm"
    own_settings: ClassVar[tuple[str, ...]] = ()
    seeded_baseline: ClassVar[bool] = True
    scale_settings: ClassVar[dict[str, dict[str, Any]]] = {}
    title: ClassVar[str] = ""

    def __init__(self, config: "GotdBenchConfig"):
        self.config = config

    @classmethod
    def check_config(cls, config: "GotdBenchConfig") -> None:
        """Raise ``ValueError`` for settings this evaluation cannot run with (before any data is read)."""

    def setup(self, bench: "GotdBench") -> list[str]:
        """Read what the evaluation needs from the bench's task; the extra texts a tokenizer fitted on the
        bench's data must cover (prompts, verbalizers)."""
        return []

    def check_model(self, bench: "GotdBench") -> None:
        """Raise ``ValueError`` if the resolved model (``bench.model_path``) cannot be evaluated this way."""

    def settings(self) -> dict[str, Any]:
        """What this evaluation adds to the bench's identity (compared on resume)."""
        return {}

    def evaluate(self, bench: "GotdBench", model: Any, seed: int, record: dict) -> tuple[np.ndarray, dict]:
        """Score one run: ``model`` is the pre-fine-tuned language model (None: no pre-fine-tuning).
        Adds its figures to ``record``; returns the (N,) predictions on ``bench.test`` and extra per-example
        arrays for ``per_example.npz``."""
        raise NotImplementedError

    def report(self, bench: "GotdBench") -> dict[str, Any]:
        """How results are shown: ``metrics`` and ``cost`` (record fields), ``protocol`` and ``training``
        (sentences for results.md)."""
        raise NotImplementedError


def evaluation(name: str) -> type[WarmupEval]:
    return WARMUP_EVALS.get(name)


def evaluation_names() -> list[str]:
    return WARMUP_EVALS.names()
