"""Validated inputs of an entropic OT problem between two weighted point clouds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tunesift.ot.cost import HostRows, mean_cost

# masses may be off by this much from summing to 1 (then they are renormalised)
MASS_SUM_TOLERANCE = 1e-4


@dataclass
class Problem:
    """Points, masses and the absolute epsilon, all on ``x``'s device and dtype.

    Attributes:
        x: (N, d) first point cloud: a tensor, or :class:`HostRows` read one block at a time.
        y: (M, d) second point cloud.
        a: (N,) positive masses summing to 1.
        b: (M,) likewise.
        log_a: (N,) ``log a``.
        log_b: (M,) ``log b``.
        epsilon: absolute regularisation.
    """

    x: torch.Tensor | HostRows
    y: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    log_a: torch.Tensor
    log_b: torch.Tensor
    epsilon: float

    @property
    def neg_entropy(self) -> float:
        """``<a, log a> + <b, log b>`` in float64 (used by the ott-jax cost convention)."""
        return float((self.a.double() * self.log_a.double()).sum() + (self.b.double() * self.log_b.double()).sum())


def _as_points(value: Any, name: str, like: torch.Tensor | HostRows | None) -> torch.Tensor | HostRows:
    if like is None and isinstance(value, np.memmap):
        value = HostRows(value)  # read block by block, never converted whole
    if isinstance(value, HostRows):
        if value.shape[0] == 0 or value.shape[1] == 0:
            raise ValueError(f"{name} must be a non-empty 2-D array of points (n, d), got shape {tuple(value.shape)}")
        if not all_finite(value):
            raise ValueError(f"{name} contains non-finite values (nan or inf)")
        return value
    if isinstance(value, np.ndarray) or not isinstance(value, torch.Tensor):
        value = torch.as_tensor(np.asarray(value))
    value = value.detach()  # the solvers work in place on buffers: no autograd graph
    if like is None:
        if not (value.is_floating_point()) or value.dtype in (torch.float16, torch.bfloat16):
            value = value.to(torch.float32)  # log-domain iterations need at least float32
    else:
        if value.device != like.device:
            raise ValueError(f"{name} is on {value.device} but x is on {like.device}; put both on one device")
        value = value.to(like.dtype)
    if value.ndim != 2 or value.shape[0] == 0 or value.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array of points (n, d), got shape {tuple(value.shape)}")
    if not all_finite(value):
        raise ValueError(f"{name} contains non-finite values (nan or inf)")
    return value


def all_finite(value: torch.Tensor | HostRows, rows: int = 4096) -> bool:
    """Whether every entry is finite, checked in row blocks (no full-size boolean temporary)."""
    return all(bool(torch.isfinite(value[start:start + rows]).all()) for start in range(0, value.shape[0], rows))


def _as_masses(value: Any, name: str, n: int, like: torch.Tensor) -> torch.Tensor:
    if value is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    if isinstance(value, torch.Tensor):
        value = value.detach().to(device=like.device, dtype=like.dtype)
    else:
        value = torch.as_tensor(np.asarray(value, dtype=np.float64)).to(device=like.device, dtype=like.dtype)
    if value.ndim != 1 or value.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match the points, got {tuple(value.shape)}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains non-finite values (nan or inf)")
    if not bool((value > 0).all()):
        raise ValueError(f"{name} must be strictly positive (drop points of zero mass instead)")
    total = float(value.double().sum())
    if abs(total - 1.0) > MASS_SUM_TOLERANCE:
        raise ValueError(f"{name} must sum to 1 (within {MASS_SUM_TOLERANCE}), sums to {total:.6g}")
    return value / value.sum()


def check_positive(value: Any, name: str, integer: bool = False, allow_zero: bool = False) -> None:
    """ValueError naming ``name`` unless ``value`` is a finite positive number (an int if ``integer``)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value) == int(value)
    if ok:
        ok = math.isfinite(float(value)) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        kind = "integer" if integer else "number"
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} {kind}, got {value!r}")


def make_problem(x: Any, y: Any, a: Any = None, b: Any = None, *, epsilon: float = 0.1,
                 relative_epsilon: bool = False) -> Problem:
    """Validate the inputs and resolve epsilon.

    Args:
        x: (N, d) points (tensor or array); its device and floating dtype are used throughout
            (float32 when it is not a float tensor or is half precision). A ``np.memmap`` or a
            :class:`~tunesift.ot.cost.HostRows` stays on the host and is read one block of rows at a
            time (a memmap: float64 if it holds float64, else float32, on the CPU).
        y: (M, d) points on the same device.
        a: (N,) masses, default uniform ``1/N``.
        b: (M,) masses, default uniform ``1/M``.
        epsilon: absolute regularisation, or a fraction of the mean cost if ``relative_epsilon``.
        relative_epsilon: scale ``epsilon`` by the mean of ``C`` (computed in closed form).

    Raises:
        ValueError: naming the offending argument.
    """
    x = _as_points(x, "x", None)
    y = _as_points(y, "y", x)
    if y.shape[1] != x.shape[1]:
        raise ValueError(f"y has dimension {y.shape[1]} but x has dimension {x.shape[1]}")
    a_ = _as_masses(a, "a", x.shape[0], x)
    b_ = _as_masses(b, "b", y.shape[0], x)
    check_positive(epsilon, "epsilon")
    eps = float(epsilon)
    if relative_epsilon:
        scale = mean_cost(x, y)
        if not scale > 0:
            raise ValueError("relative_epsilon needs a positive mean cost, but x and y coincide (mean cost 0)")
        eps *= scale
    return Problem(x=x, y=y, a=a_, b=b_, log_a=a_.log(), log_b=b_.log(), epsilon=eps)
