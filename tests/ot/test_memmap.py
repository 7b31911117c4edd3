"""The solvers on a memory-mapped pool matrix, read block by block: the same potentials as in memory."""

import os

import numpy as np
import pytest
import torch

from otfixtures import centered, clouds
from tunesift.ot import HostRows, sinkhorn, solve_semidual


@pytest.fixture
def mapped(tmp_path):
    x, y, a, b = clouds(n=300, m=40, d=6, seed=3)
    np.save(tmp_path / "x.npy", x.numpy())
    return np.load(tmp_path / "x.npy", mmap_mode="r"), x, y, a, b


@pytest.fixture
def no_whole_conversion(monkeypatch):
    """Fail if the (N, d) matrix is handed to torch whole (it must be converted one block at a time)."""
    def guard(original):
        def checked(data, *args, **kwargs):
            if isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[0] >= 300:
                raise AssertionError(f"the whole matrix {data.shape} was converted")
            return original(data, *args, **kwargs)
        return checked

    for name in ("from_numpy", "as_tensor", "tensor"):
        monkeypatch.setattr(torch, name, guard(getattr(torch, name)))


@pytest.mark.parametrize("kw", [dict(), dict(momentum=1.3, relative_epsilon=True, epsilon=0.05),
                                dict(cost_memory_budget=10**8)])
def test_sinkhorn_on_a_memmap_equals_the_in_memory_solve(mapped, no_whole_conversion, kw):
    xm, x, y, a, b = mapped
    kw = {"epsilon": 0.5, "threshold": 1e-10, "max_iter": 5000, "block_size": 64, **kw}
    ref = sinkhorn(x, y, a, b, **kw)
    out = sinkhorn(xm, y, a.numpy(), b, **kw)  # float64 file: solved in float64, like the tensor
    assert out.f.dtype == torch.float64 and out.converged and out.n_iter == ref.n_iter
    assert torch.allclose(out.f, ref.f, rtol=0, atol=1e-12) and torch.allclose(out.g, ref.g, rtol=0, atol=1e-12)
    assert out.cost == pytest.approx(ref.cost, rel=1e-12) and out.cost_stored == ref.cost_stored


def test_semidual_on_a_memmap_equals_the_in_memory_solve(mapped, no_whole_conversion):
    xm, x, y, a, b = mapped
    kw = dict(epsilon=0.5, threshold=1e-9, max_iter=500, block_size=50)
    ref = solve_semidual(x, y, a, b, **kw)
    out = solve_semidual(HostRows(xm), y, a.numpy(), b, **kw)
    f0, g0 = centered(ref.f, ref.g)
    f1, g1 = centered(out.f, out.g)
    assert torch.allclose(f1, f0, rtol=0, atol=1e-12) and torch.allclose(g1, g0, rtol=0, atol=1e-12)


def resident_kb(name: str) -> int:
    """Resident KiB of this process's mappings of the file ``name`` (from /proc/self/smaps)."""
    kb, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                inside = line.rstrip().endswith(name)
            elif inside and line.startswith("Rss:"):
                kb += int(line.split()[1])
    return kb


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads /proc/self/smaps (Linux)")
def test_host_rows_release_the_pages_they_read(tmp_path):
    x = np.random.default_rng(0).standard_normal((65536, 64)).astype(np.float32)  # 16 MiB
    np.save(tmp_path / "big.npy", x)
    name = str(tmp_path / "big.npy")
    rows = HostRows(np.load(name, mmap_mode="r"))
    total, peak = 0.0, 0
    for start in range(0, 65536, 2048):  # 512 KiB blocks
        total += float(rows[start:start + 2048].double().sum())
        peak = max(peak, resident_kb(name))
    assert total == pytest.approx(float(x.astype(np.float64).sum()), rel=1e-9)
    assert peak <= 5 * 1024  # a block and the page cache's folios around it, not the 16 MiB
    assert resident_kb(name) <= 8  # and nothing of it once the sweep is over
    with pytest.raises(TypeError, match="contiguous row slices"):
        rows[::2]
    with pytest.raises(ValueError, match="2-D numpy array"):
        HostRows(np.zeros(3))


def test_gotd_selection_from_a_memmap_is_the_in_memory_one(tmp_path):
    from tunesift.io.tables import TextSet
    from tunesift.output import Timer
    from tunesift.pool.base import Context
    from tunesift.pool.gotd import GOTD

    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = (rng.standard_normal((30, 16)) + 0.3).astype(np.float32)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    np.save(tmp_path / "x.npy", x)
    pool, target = TextSet.from_texts([str(i) for i in range(500)]), TextSet.from_texts(["t"] * 30)

    def rank(pool_matrix):
        embed = lambda ts, role, idx=None: pool_matrix if role == "pool" else y  # noqa: E731
        ctx = Context(rng=np.random.default_rng(0), budget=50, embed=embed, timer=Timer())
        return GOTD(block_size=128).rank(pool, target, ctx)

    in_memory, mapped = rank(x), rank(np.load(tmp_path / "x.npy", mmap_mode="r"))
    assert np.array_equal(mapped.order, in_memory.order)
    assert np.array_equal(mapped.columns["gradient"], in_memory.columns["gradient"])  # the same blocks, the same bits
