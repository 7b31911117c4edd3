"""The evaluations of ``tunesift bench gotd`` (``--eval``): :mod:`.base` has the interface and registry."""

from tunesift.bench.evals.base import DEFAULT_EVAL, WARMUP_EVALS, WarmupEval, evaluation, evaluation_names

__all__ = ["DEFAULT_EVAL", "WARMUP_EVALS", "WarmupEval", "evaluation", "evaluation_names"]
