"""Sinkhorn over parts of the pool (tunesift.ot.parts) against the one-part solve of the same problem."""

import sys

import numpy as np
import pytest
import torch

from tunesift.ot import sinkhorn
from tunesift.executor.drivers import sinkhorn_on
from tunesift.ot.parts import split_rows, whole_npy_file


def unit_rows(n, d, seed, shift=0.0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32) + shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_split_rows_covers_the_rows_in_order():
    assert split_rows(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert split_rows(2, 5) == [(0, 1), (1, 2)]
    with pytest.raises(ValueError, match="parts"):
        split_rows(3, 0)


@pytest.mark.parametrize("kw", [dict(epsilon=0.1), dict(epsilon=0.05, momentum=1.3),
                                dict(epsilon=0.05, relative_epsilon=True), dict(epsilon=0.1, block_size=16)])
def test_parts_give_the_one_part_potentials(kw, split_executor):
    x, y = unit_rows(301, 8, 0), unit_rows(40, 8, 1, shift=0.5)
    one = sinkhorn_on(None, x, y, threshold=1e-5, max_iter=3000, **kw)
    ref = sinkhorn(torch.from_numpy(x), torch.from_numpy(y), threshold=1e-5, max_iter=3000, **kw)
    torch.testing.assert_close(one.f, ref.f, rtol=0, atol=0)  # one part is the plain solve
    for parts in (2, 3, 7):
        split = sinkhorn_on(split_executor(parts), x, y, threshold=1e-5, max_iter=3000, **kw)
        assert split.converged and split.n_iter == one.n_iter and split.epsilon == pytest.approx(one.epsilon)
        torch.testing.assert_close(split.f, one.f, rtol=0, atol=1e-5)
        torch.testing.assert_close(split.g, one.g, rtol=0, atol=1e-5)
        assert split.cost == pytest.approx(one.cost, rel=1e-5)
        assert split.transport_cost == pytest.approx(one.transport_cost, rel=1e-5)
        assert split.errors == pytest.approx(one.errors, rel=1e-3, abs=1e-6)
        k = 50  # the selection: the same top rows
        assert set(np.argsort(split.f.numpy())[:k]) == set(np.argsort(one.f.numpy())[:k])


def test_parts_read_their_rows_from_the_memory_mapped_file(tmp_path, split_executor):
    x, y = unit_rows(200, 6, 2), unit_rows(30, 6, 3)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert whole_npy_file(mm) == str(tmp_path / "x.npy")
    assert whole_npy_file(mm[:100]) is None and whole_npy_file(x) is None and whole_npy_file(mm[[0, 1]]) is None
    one = sinkhorn_on(None, x, y, epsilon=0.1, threshold=1e-6)
    split = sinkhorn_on(split_executor(4), mm, y, epsilon=0.1, threshold=1e-6)
    torch.testing.assert_close(split.f, one.f, rtol=0, atol=1e-5)


def test_parts_fall_back_to_the_exact_column_pass(monkeypatch, split_executor):
    parts_module = sys.modules["tunesift.ot.parts"]
    calls = []
    original = parts_module.column_lse_sweep
    monkeypatch.setattr(parts_module, "column_lse_sweep", lambda *args: calls.append(1) or original(*args))
    rng = np.random.default_rng(7)
    x = rng.normal(size=(60, 2)).astype(np.float32)
    y = (rng.normal(size=(20, 2)) + 3.0).astype(np.float32)  # costs ~80 at epsilon 0.05: below float32's range
    one = sinkhorn_on(None, x, y, epsilon=0.05, threshold=1e-4, max_iter=5000)
    split = sinkhorn_on(split_executor(3), x, y, epsilon=0.05, threshold=1e-4, max_iter=5000)
    assert calls and one.converged and split.converged
    fa, fb = one.f - one.f.mean(), split.f - split.f.mean()
    torch.testing.assert_close(fb, fa, rtol=0, atol=2e-3)


def test_non_finite_rows_of_a_part_are_named(split_executor):
    x, y = unit_rows(50, 4, 4), unit_rows(10, 4, 5)
    x[37, 1] = np.nan
    with pytest.raises(ValueError, match="rows 25..49 contain non-finite"):
        sinkhorn_on(split_executor(2), x, y, epsilon=0.1)
