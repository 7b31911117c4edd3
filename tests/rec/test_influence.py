import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch.autograd.functional import hessian as autograd_hessian
from torch.func import functional_call

from tunesift.rec.influence import (
    LissaDivergedError,
    LissaSettings,
    exact_inverse_hvp,
    hessian_matrix,
    hessian_vector_product,
    influence_scores,
    lissa,
    mean_gradient,
    model_hvp,
    per_sample_dot,
    per_sample_gradient_norms,
    per_sample_gradients,
    split_parameters,
)
from tunesift.rec.sasrec import SASRec, SASRecConfig, training_tensors

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small():
    """A tiny SASRec (larger init so the Hessian is not negligible) and 30 training rows."""
    rng = np.random.default_rng(0)
    train = [[int(x) for x in rng.integers(1, 16, size=rng.integers(1, 10))] for _ in range(30)]
    tensors = training_tensors(train, 15, max_len=6, seed=0)
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=15, hidden_size=8, n_heads=2, max_len=6, init_range=0.5)).eval()
    return model, tensors.loss_batch(), model.influence_parameter_names()


def _loop_gradients(model, batch, names):
    params = dict(model.named_parameters())
    rows = []
    for i in range(batch[0].shape[0]):
        model.zero_grad()
        model(*(t[i : i + 1] for t in batch)).sum().backward()
        rows.append(torch.cat([params[n].grad.reshape(-1).clone() for n in names]))
    model.zero_grad()
    return torch.stack(rows)


@pytest.mark.parametrize("subset", ["default", "all"])
def test_per_sample_gradients_equal_plain_loop(small, subset):
    model, batch, default = small
    names = default if subset == "default" else [n for n, _ in model.named_parameters()]
    loop = _loop_gradients(model, batch, names)
    for size in (1, 7, 64):  # batch-size invariance
        got = per_sample_gradients(model, batch, names, batch_size=size)
        torch.testing.assert_close(got, loop, rtol=1e-4, atol=1e-6)  # float32 rounding at gradients of O(1)
    norms = per_sample_gradient_norms(model, batch, names, batch_size=5)
    torch.testing.assert_close(norms, loop.norm(dim=1), rtol=1e-4, atol=1e-7)
    assert (loop.abs().sum(1) > 0).sum() > 20  # most rows have targets: the check is not vacuous


def test_trimmed_chunks_give_the_same_gradients(small):
    from tunesift.rec.sasrec import length_order, trim_padding

    model, batch, names = small
    order = length_order(batch[0])
    rows = [t[order] for t in batch]
    plain = per_sample_gradients(model, rows, names, batch_size=6)
    trimmed = per_sample_gradients(model, rows, names, batch_size=6, prepare=trim_padding)
    torch.testing.assert_close(trimmed, plain, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(mean_gradient(model, rows, names, batch_size=6, prepare=trim_padding),
                               plain.mean(0), rtol=1e-4, atol=1e-8)
    norms = per_sample_gradient_norms(model, rows, None, batch_size=6, prepare=trim_padding)
    torch.testing.assert_close(norms, per_sample_gradient_norms(model, rows, None, batch_size=30), rtol=1e-4, atol=1e-7)


def test_mean_gradient_hessian_and_hvp_oracles(small):
    model, batch, names = small
    g = per_sample_gradients(model, batch, names)
    torch.testing.assert_close(mean_gradient(model, batch, names, batch_size=8), g.mean(0), rtol=1e-4, atol=1e-8)
    params, rest = split_parameters(model, names)
    weight = params[names[0]]

    def mean_loss(flat):
        return functional_call(model, {**rest, names[0]: flat.view_as(weight)}, tuple(batch)).mean()

    exact = autograd_hessian(mean_loss, weight.reshape(-1).clone())
    hessian = hessian_matrix(model, batch, names, batch_size=11, chunk_size=16)
    torch.testing.assert_close(hessian, exact, rtol=1e-4, atol=1e-7)
    vec = torch.randn(weight.numel(), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(hessian_vector_product(model, batch, vec, names), exact @ vec, rtol=1e-4, atol=1e-7)
    idx = np.array([3, 3, 17, 25])
    sub = tuple(t[torch.as_tensor(idx)] for t in batch)
    torch.testing.assert_close(model_hvp(model, batch, names)(idx, vec),
                               hessian_vector_product(model, sub, vec, names), rtol=1e-4, atol=1e-7)


def _quadratic(n=40, p=6, seed=0):
    """Per-sample losses ½θᵀA_iθ: per-sample Hessians A_i (PSD), mean H."""
    gen = torch.Generator().manual_seed(seed)
    factors = torch.randn(n, p, p, generator=gen, dtype=torch.float64) / p**0.5
    mats = factors @ factors.transpose(1, 2)  # (n, p, p)
    v = torch.randn(p, generator=gen, dtype=torch.float64)
    return mats, v


def test_lissa_full_batch_equals_damped_inverse():
    mats, v = _quadratic()
    hessian = mats.mean(0)
    s = LissaSettings(depth=2000, damping=0.01, scale=10.0)
    result = lissa(lambda idx, vec: hessian @ vec, v, mats.shape[0], s)
    exact = exact_inverse_hvp(hessian, v, s.damping * s.scale)
    torch.testing.assert_close(result.h, exact, rtol=1e-8, atol=1e-10)
    assert result.converged and result.norms.shape == (1, 2000)


def test_lissa_stochastic_converges_and_repeats_help():
    mats, v = _quadratic()
    exact = exact_inverse_hvp(mats.mean(0), v, 0.02 * 10.0)

    def hvp(idx, vec):
        return mats[torch.as_tensor(idx)].mean(0) @ vec

    errors = {}
    for repeats in (1, 8):
        res = lissa(hvp, v, mats.shape[0], LissaSettings(depth=400, damping=0.02, scale=10.0, batch_size=4,
                                                        repeats=repeats, seed=3))
        errors[repeats] = float((res.h - exact).norm() / exact.norm())
    assert errors[1] < 0.15 and errors[8] < 0.06 and errors[8] < errors[1]
    again = lissa(hvp, v, mats.shape[0], LissaSettings(depth=100, damping=0.02, scale=10.0, seed=3))
    same = lissa(hvp, v, mats.shape[0], LissaSettings(depth=100, damping=0.02, scale=10.0, seed=3))
    assert torch.equal(again.h, same.h)  # seeded


def test_lissa_detects_divergence_and_advises_scale():
    mats, v = _quadratic()
    big = mats * 100.0  # largest eigenvalue far above 2·scale
    with pytest.raises(LissaDivergedError, match="raise the scale"):
        lissa(lambda idx, vec: big[torch.as_tensor(idx)].mean(0) @ vec, v, big.shape[0],
              LissaSettings(depth=500, damping=0.01, scale=1.0))
    with pytest.raises(ValueError, match="`scale`"):
        LissaSettings(scale=0)


def test_lissa_on_model_matches_exact_solve(small):
    model, batch, names = small
    hessian = hessian_matrix(model, batch, names)
    v = mean_gradient(model, batch, names)
    s = LissaSettings(depth=150, damping=0.1, scale=10.0, batch_size=8, seed=0)
    exact = exact_inverse_hvp(hessian, v, s.damping * s.scale)
    full = model_hvp(model, batch, names)
    everyone = np.arange(batch[0].shape[0])
    deterministic = lissa(lambda idx, vec: full(everyone, vec), v, len(everyone), s)
    torch.testing.assert_close(deterministic.h, exact, rtol=1e-4, atol=1e-7)
    stochastic = lissa(full, v, len(everyone), s)
    assert float((stochastic.h - exact).norm() / exact.norm()) < 0.15
    g = per_sample_gradients(model, batch, names)
    rows = g.abs().sum(1) > 0
    assert spearmanr((g @ exact)[rows].numpy(), (g @ stochastic.h)[rows].numpy())[0] > 0.95


def test_influence_scores_exact_and_scoring_modes_agree(small):
    model, batch, names = small
    s = LissaSettings(damping=0.1, scale=10.0)
    exact = influence_scores(model, batch, names, solver="exact", lissa_settings=s, batch_size=7)
    g = per_sample_gradients(model, batch, names)
    v = g.mean(0)
    h = exact_inverse_hvp(hessian_matrix(model, batch, names), v, 1.0)
    np.testing.assert_allclose(exact.scores, (g @ h).double().numpy(), rtol=1e-4, atol=1e-9)
    jvp = influence_scores(model, batch, names, solver="exact", lissa_settings=s, scoring="jvp")
    np.testing.assert_allclose(jvp.scores, exact.scores, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(per_sample_dot(model, batch, h, names, batch_size=4), g @ h, rtol=1e-4, atol=1e-9)
    info = exact.info()
    assert info["solver"] == "exact" and info["n_parameters"] == 64 and "mean_gradient" in info["seconds"]
    with pytest.raises(ValueError, match="unknown parameter"):
        influence_scores(model, batch, ["nope"])


@pytest.mark.parametrize("extra", [[], ["blocks.1.attention.output.bias", "blocks.1.attention.norm.weight",
                                           "blocks.1.feed_forward.inner.weight", "blocks.1.feed_forward.norm.bias"]])
def test_positionwise_rows_give_the_full_models_numbers(small, extra):
    model, batch, default = small
    names = default + extra
    rows = model.positionwise_loss(batch, names, batch_size=7)
    rows.chunk_size = 5  # several row chunks
    assert rows.owner.numel() == int((batch[1] > 0).sum())
    torch.testing.assert_close(rows.mean_gradient(names), mean_gradient(model, batch, names), rtol=1e-4, atol=1e-7)
    full_hvp, row_hvp = model_hvp(model, batch, names), rows.hvp(names)
    vector = torch.randn(sum(dict(model.named_parameters())[n].numel() for n in names),
                         generator=torch.Generator().manual_seed(0))
    for idx in ([3], [0, 5, 5, 29], [int(np.argmin((batch[1] > 0).sum(1).numpy()))]):  # incl. duplicates, fewest targets
        torch.testing.assert_close(row_hvp(np.array(idx), vector), full_hvp(np.array(idx), vector),
                                   rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(rows.hessian(names), hessian_matrix(model, batch, names), rtol=1e-4, atol=1e-6)
    g = per_sample_gradients(model, batch, names)
    torch.testing.assert_close(rows.dot(names, vector), g @ vector, rtol=1e-4, atol=1e-6)
    s = LissaSettings(depth=60, damping=0.1, scale=10.0, batch_size=2)
    fast = influence_scores(model, batch, names, lissa_settings=s)
    slow = influence_scores(model, batch, names, lissa_settings=s, positionwise=False)
    assert (fast.path, slow.path) == ("positionwise", "full") and fast.info()["path"] == "positionwise"
    np.testing.assert_allclose(fast.scores, slow.scores, rtol=1e-3, atol=1e-7)


def test_positionwise_split_refuses_parameters_before_it(small):
    model, batch, _ = small
    for names in (["item_embeddings.weight"], ["blocks.1.attention.query.weight"], ["blocks.0.attention.output.weight"]):
        assert model.positionwise_loss(batch, names) is None
    result = influence_scores(model, batch, ["blocks.1.attention.key.weight"], solver="exact",
                              lissa_settings=LissaSettings(damping=0.1, scale=10.0))
    assert result.path == "full"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_follows_cuda_device(small):
    model, batch, names = small
    cpu = influence_scores(model, batch, names, solver="exact", lissa_settings=LissaSettings(damping=0.1, scale=10.0))
    gpu_model = SASRec(model.config).cuda().eval()
    gpu_model.load_state_dict(model.state_dict())
    gpu = influence_scores(gpu_model, [t.cuda() for t in batch], names, solver="exact",
                           lissa_settings=LissaSettings(damping=0.1, scale=10.0))
    np.testing.assert_allclose(gpu.scores, cpu.scores, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("size", [6, 5, 30])
def test_gradient_norms_of_every_parameter_match_a_loop_when_the_batch_is_as_long_as_a_sequence(small, size):
    # positions are looked up with (T,) ids shared by the batch: with B = T = 6 their shape looks per-sample
    model, batch, _ = small
    names = [n for n, _ in model.named_parameters()]
    loop = _loop_gradients(model, batch, names)
    norms = per_sample_gradient_norms(model, batch, None, batch_size=size)
    torch.testing.assert_close(norms, loop.norm(dim=1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("positionwise,scoring", [(True, "vmap"), (False, "vmap"), (False, "jvp")])
@pytest.mark.parametrize("solver", ["exact", "lissa"])
def test_chunked_influence_gives_the_one_pass_numbers(small, positionwise, scoring, solver):
    # several chunks: sums formed per chunk, rows built per chunk and, for LiSSA, per drawn sample —
    # the same numbers as one pass up to float rounding, and the same LiSSA draws
    model, batch, names = small
    s = LissaSettings(depth=80, damping=0.1, scale=10.0, batch_size=2)
    kw = dict(solver=solver, lissa_settings=s, batch_size=4, scoring=scoring, positionwise=positionwise)
    whole = influence_scores(model, batch, names, **kw)
    for chunk in (7, 1):
        parts = influence_scores(model, batch, names, chunk=chunk, **kw)
        assert parts.path == whole.path == ("positionwise" if positionwise else "full")
        np.testing.assert_allclose(parts.scores, whole.scores, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(parts.h, whole.h, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="`chunk` must be at least 1"):
        influence_scores(model, batch, names, chunk=0)
