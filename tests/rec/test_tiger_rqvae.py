import json
import warnings

import numpy as np
import pytest
import torch

from tunesift.rec.tiger.rqvae import (
    RQVAE,
    RQVAESettings,
    assign_codes,
    codebook_usage,
    disambiguate,
    inertia,
    init_codebooks,
    kmeans,
    kmeans_plusplus,
    lloyd,
    nearest_codes,
    reseed_dead_codes,
    residual_quantize,
    train_rqvae,
)

torch.set_num_threads(1)

SMALL = dict(hidden=(32, 16), latent_dim=8, batch_size=64, kmeans_iters=10)


def _blobs(n_clusters=8, per_cluster=60, dim=16, spread=0.05, seed=0):
    """Well-separated Gaussian clusters: (n, dim) float32 points and (n,) labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_clusters), per_cluster)
    x = centres[labels] + spread * rng.normal(size=(labels.size, dim))
    perm = rng.permutation(labels.size)
    return x[perm].astype(np.float32), labels[perm]


# --------------------------------------------------------------------------------------------------
# disambiguation


def _extra_code_loop(codes):
    seen, extra = {}, []
    for row in map(tuple, codes):
        extra.append(seen.get(row, 0))
        seen[row] = seen.get(row, 0) + 1
    return np.array(extra)


def test_disambiguate_hand_built_example():
    codes = np.array([[1, 2], [3, 4], [1, 2], [5, 6], [3, 4], [1, 2], [7, 8]])
    out = disambiguate(codes)
    assert out.codes.tolist() == [[1, 2, 0], [3, 4, 0], [1, 2, 1], [5, 6, 0], [3, 4, 1], [1, 2, 2], [7, 8, 0]]
    assert out.collision_rate == pytest.approx(5 / 7)
    assert out.n_groups_with_collisions == 2
    assert out.max_group_size == 3
    assert out.codes.dtype == np.int64


def test_disambiguate_matches_a_plain_loop_and_rows_are_unique():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, size=(500, 3))  # 64 prefixes for 500 items: many collisions
    out = disambiguate(codes)
    assert np.array_equal(out.codes[:, :3], codes)
    assert np.array_equal(out.codes[:, 3], _extra_code_loop(codes))
    assert np.unique(out.codes, axis=0).shape[0] == 500
    _, counts = np.unique(codes, axis=0, return_counts=True)
    assert out.max_group_size == counts.max() and out.codes[:, 3].max() == counts.max() - 1
    assert out.n_groups_with_collisions == (counts > 1).sum()
    assert out.collision_rate == pytest.approx(counts[counts > 1].sum() / 500)


def test_disambiguate_without_collisions_and_edge_cases():
    out = disambiguate(torch.tensor([[0, 1], [1, 0], [1, 1]]))
    assert out.codes[:, 2].tolist() == [0, 0, 0]
    assert (out.collision_rate, out.n_groups_with_collisions, out.max_group_size) == (0.0, 0, 1)
    empty = disambiguate(np.zeros((0, 3), dtype=np.int64))
    assert empty.codes.shape == (0, 4) and empty.max_group_size == 0
    with pytest.raises(ValueError, match="codes"):
        disambiguate(np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match="codes"):
        disambiguate(np.zeros((5, 2)))


# --------------------------------------------------------------------------------------------------
# quantisation and k-means


def test_nearest_codes_match_a_brute_force_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g, dtype=torch.float64)
    codebook = torch.randn(40, 6, generator=g, dtype=torch.float64)
    brute = [min(range(40), key=lambda k: float(((x[i] - codebook[k]) ** 2).sum())) for i in range(300)]
    assert nearest_codes(x, codebook).tolist() == brute
    # float32: the chosen codeword is (within rounding) the nearest
    x32, c32 = x.float(), codebook.float()
    d = torch.cdist(x, codebook) ** 2
    chosen = d.gather(1, nearest_codes(x32, c32)[:, None]).squeeze(1)
    assert torch.allclose(chosen, d.min(1).values, rtol=0, atol=1e-4)


def test_residual_quantize_matches_a_loop():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(50, 4, generator=g, dtype=torch.float64)
    codebooks = torch.randn(3, 10, 4, generator=g, dtype=torch.float64)
    codes, z_q, residuals = residual_quantize(z, codebooks)
    for i in range(50):
        r, total = z[i].clone(), torch.zeros(4, dtype=torch.float64)
        for level in range(3):
            assert torch.allclose(residuals[i, level], r)
            k = int(torch.argmin(((codebooks[level] - r) ** 2).sum(1)))
            assert codes[i, level] == k
            r, total = r - codebooks[level, k], total + codebooks[level, k]
        assert torch.allclose(z_q[i], total)


def _numpy_lloyd(x, centroids, iters):
    c = centroids.copy()
    for _ in range(iters):
        a = ((x[:, None, :] - c[None]) ** 2).sum(2).argmin(1)
        for k in range(len(c)):
            if (a == k).any():
                c[k] = x[a == k].mean(0)
    return c


def test_lloyd_matches_a_plain_numpy_loop_from_the_same_start():
    x, _ = _blobs(n_clusters=12, per_cluster=40, dim=5, spread=0.3, seed=2)
    xt = torch.from_numpy(x).double()
    start = kmeans_plusplus(xt, 10, torch.Generator().manual_seed(0))
    ours, assignment = lloyd(xt, start, iters=15)
    reference = _numpy_lloyd(x.astype(np.float64), start.numpy(), iters=15)
    assert np.allclose(ours.numpy(), reference, atol=1e-10)
    assert torch.equal(assignment, nearest_codes(xt, ours))


def test_kmeans_plusplus_picks_data_points_and_handles_few_distinct_points():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).repeat(4, 1)
    centres = kmeans_plusplus(x, 5, torch.Generator().manual_seed(0))
    assert centres.shape == (5, 2)
    assert {tuple(c) for c in centres.tolist()} == {(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)}


def test_kmeans_is_as_good_as_scipy():
    from scipy.cluster.vq import kmeans2

    x, _ = _blobs(n_clusters=30, per_cluster=50, dim=8, spread=0.25, seed=3)
    xt = torch.from_numpy(x)
    ours = inertia(xt, kmeans(xt, 16, 20, torch.Generator().manual_seed(0))[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scipy_inertia = []
        for seed in range(3):
            c, _ = kmeans2(x.astype(np.float64), 16, iter=20, minit="++", seed=seed)
            scipy_inertia.append(inertia(xt.double(), torch.from_numpy(c)))
    assert ours <= 1.05 * float(np.median(scipy_inertia))


def test_init_codebooks_is_kmeans_level_by_level():
    from scipy.cluster.vq import kmeans2

    x, _ = _blobs(n_clusters=20, per_cluster=30, dim=12, spread=0.2, seed=4)
    xt = torch.from_numpy(x)
    torch.manual_seed(0)
    model = RQVAE(12, RQVAESettings(levels=2, codebook_size=8, **SMALL))
    inertias = init_codebooks(model, xt, iters=20, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        z = model.encode(xt)
        # the same k-means, with the generator in the same state, gives the same codebooks
        g = torch.Generator().manual_seed(7)
        first, assignment = kmeans(z, 8, 20, g)
        second, _ = kmeans(z - first[assignment], 8, 20, g)
    assert torch.allclose(model.codebooks[0], first) and torch.allclose(model.codebooks[1], second)
    # and it is as good as an independent k-means on the level-1 sample
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c, _ = kmeans2(z.double().numpy(), 8, iter=20, minit="++", seed=0)
    assert inertia(z, model.codebooks[0].detach()) <= 1.05 * inertia(z.double(), torch.from_numpy(c))
    codebook = model.codebooks[0].detach()
    residual = z - codebook[nearest_codes(z, codebook)]
    assert inertias[0] == pytest.approx(float((residual ** 2).sum(1).mean()), rel=1e-5)
    assert inertias[1] < inertias[0]


# --------------------------------------------------------------------------------------------------
# the model


def test_forward_loss_terms_follow_the_formula():
    torch.manual_seed(0)
    s = RQVAESettings(levels=2, codebook_size=5, commitment=0.3, **SMALL)
    model = RQVAE(6, s)
    x = torch.randn(20, 6)
    out = model(x)
    with torch.no_grad():
        z = model.encode(x)
        codes, z_q, residuals = model.quantize(z)
        x_hat = model.decode(z_q)
        e = torch.stack([model.codebooks[l, codes[:, l]] for l in range(2)], 1)
        q = ((residuals - e) ** 2).sum(2)
        expected = ((x - x_hat) ** 2).sum(1) + q.sum(1) + 0.3 * q.sum(1)
    assert torch.equal(out.codes, codes)
    assert torch.allclose(out.per_item, expected, atol=1e-5)
    assert out.total.item() == pytest.approx(expected.mean().item(), rel=1e-5)


def test_straight_through_gradients_reach_the_encoder():
    torch.manual_seed(0)
    model = RQVAE(6, RQVAESettings(levels=2, codebook_size=5, **SMALL))
    x = torch.randn(20, 6)
    model(x).reconstruction.mean().backward()  # the reconstruction alone, through z + sg(ẑ − z)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert model.codebooks.grad is None or model.codebooks.grad.abs().sum() == 0

    model.zero_grad(set_to_none=True)
    model(x).commitment.sum().backward()  # commitment trains the encoder, not the codewords
    assert model.encoder[0].weight.grad.abs().sum() > 0
    assert model.codebooks.grad is None or model.codebooks.grad.abs().sum() == 0

    model.zero_grad(set_to_none=True)
    model(x).codebook.sum().backward()  # the codebook term trains the codewords, not the encoder
    assert model.codebooks.grad.abs().sum() > 0
    assert model.encoder[0].weight.grad is None or model.encoder[0].weight.grad.abs().sum() == 0


def test_assign_codes_does_not_depend_on_the_batch_size():
    torch.manual_seed(0)
    model = RQVAE(6, RQVAESettings(levels=3, codebook_size=7, **SMALL))
    x = np.random.default_rng(0).normal(size=(101, 6)).astype(np.float32)
    a = assign_codes(model, x, batch_size=7)
    assert a.shape == (101, 3) and a.dtype == np.int64
    assert np.array_equal(a, assign_codes(model, x, batch_size=1000))
    with pytest.raises(ValueError, match="batch_size"):
        assign_codes(model, x, batch_size=0)


# --------------------------------------------------------------------------------------------------
# dead codes


@pytest.mark.parametrize("method", ["kmeans++", "uniform"])
def test_reseed_dead_codes_moves_unused_codewords_onto_residuals(method):
    x, _ = _blobs(n_clusters=8, per_cluster=30, dim=16, seed=5)
    xt = torch.from_numpy(x)
    torch.manual_seed(0)
    model = RQVAE(16, RQVAESettings(levels=2, codebook_size=8, **SMALL))
    init_codebooks(model, xt, iters=10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.codebooks[0, 4:] = 1e3  # far away: never chosen
    codes = assign_codes(model, xt)
    assert set(np.unique(codes[:, 0])) <= {0, 1, 2, 3}
    counts = torch.stack([torch.bincount(torch.from_numpy(codes[:, l]), minlength=8) for l in range(2)])
    before = codebook_usage(codes, 8)
    live = model.codebooks[0, :4].detach().clone()
    with torch.no_grad():
        z = model.encode(xt)
    resets = reseed_dead_codes(model, xt, counts, torch.Generator().manual_seed(0), method=method)
    assert resets == int((counts == 0).sum()) >= 4
    assert torch.equal(model.codebooks[0, :4], live)  # live codewords stay
    # every re-seeded level-1 codeword is some item's latent (its level-1 residual), no two the same
    for k in range(4, 8):
        assert torch.isclose(z, model.codebooks[0, k].detach()).all(1).any()
    assert torch.unique(model.codebooks[0].detach(), dim=0).shape[0] == 8
    after = codebook_usage(assign_codes(model, xt), 8)
    assert after[0] > before[0] and after[0] == 1.0
    with pytest.raises(ValueError, match="method"):
        reseed_dead_codes(model, xt, counts, torch.Generator(), method="random")


def test_kmeans_plusplus_continues_from_fixed_centres():
    x, labels = _blobs(n_clusters=6, per_cluster=40, dim=8, spread=0.02, seed=10)
    xt = torch.from_numpy(x)
    fixed = torch.stack([xt[labels == c].mean(0) for c in range(3)])  # clusters 0-2 already covered
    new = kmeans_plusplus(xt, 3, torch.Generator().manual_seed(0), centres=fixed)
    covered = {int(labels[int(torch.cdist(c[None], xt).argmin())]) for c in new}
    assert covered == {3, 4, 5}  # the new centres go to the uncovered clusters, one each


def test_training_reseeds_dead_codes_and_raises_usage():
    x, _ = _blobs(n_clusters=16, per_cluster=20, dim=16, seed=6)
    common = dict(levels=2, codebook_size=16, epochs=6, kmeans_init=False, seed=0, **SMALL)
    without = train_rqvae(x, RQVAESettings(dead_code_every=0, **common))
    with_reseeding = train_rqvae(x, RQVAESettings(dead_code_every=1, **common))
    assert without.dead_resets == 0 and with_reseeding.dead_resets > 0
    assert with_reseeding.usage[0] > without.usage[0]
    assert with_reseeding.usage.mean() > without.usage.mean()


# --------------------------------------------------------------------------------------------------
# training


def test_training_is_deterministic_under_the_seed():
    x, _ = _blobs(n_clusters=10, per_cluster=30, dim=16, spread=0.2, seed=7)
    s = dict(levels=2, codebook_size=8, epochs=4, dead_code_every=2, kmeans_sample=200, **SMALL)
    state = torch.random.get_rng_state()
    a = train_rqvae(x, RQVAESettings(seed=0, **s))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    b = train_rqvae(x, RQVAESettings(seed=0, **s))
    c = train_rqvae(x, RQVAESettings(seed=1, **s))
    assert np.array_equal(a.codes, b.codes) and a.losses == b.losses and a.dead_resets == b.dead_resets
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert not np.array_equal(a.codes, c.codes)


def test_a_read_only_array_trains_like_a_writable_one_without_a_warning():
    """The embedding cache is opened read-only (a memory map): training copies it, no torch warning."""
    x, _ = _blobs(n_clusters=6, per_cluster=20, dim=8, spread=0.2, seed=3)
    s = RQVAESettings(levels=2, codebook_size=4, epochs=2, seed=0, **SMALL)
    frozen = x.copy()
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = train_rqvae(frozen, s)
    assert np.array_equal(a.codes, train_rqvae(x, s).codes)


def test_clustered_data_level_one_codes_recover_the_clusters():
    x, labels = _blobs(n_clusters=8, per_cluster=60, dim=16, spread=0.05, seed=8)
    result = train_rqvae(x, RQVAESettings(levels=2, codebook_size=8, epochs=40, dead_code_every=5,
                                          **{**SMALL, "hidden": (128, 64), "latent_dim": 16}))
    first = result.codes[:, 0]
    dominant = []
    for cluster in range(8):
        values, counts = np.unique(first[labels == cluster], return_counts=True)
        assert counts.max() / counts.sum() >= 0.9  # purity
        dominant.append(values[counts.argmax()])
    assert len(set(dominant)) == 8  # each cluster its own code
    assert result.reconstruction_losses[-1] < 0.5 * result.reconstruction_losses[0]
    assert result.reconstruction < result.reconstruction_losses[0]
    assert len(result.losses) == 40 and result.codes.shape == (480, 2)
    assert result.usage[0] == 1.0
    # the stored state rebuilds the model that gave the codes
    assert np.array_equal(assign_codes(result.model(), x), result.codes)
    info = result.info()
    json.dumps(info)
    assert info["usage"] == pytest.approx(result.usage.tolist())
    assert {"collision_rate", "max_group_size", "n_groups_with_collisions", "dead_resets", "final_loss"} <= set(info)


def test_standardize_learns_the_input_statistics():
    x, _ = _blobs(n_clusters=4, per_cluster=20, dim=16, seed=9)
    x = x * 10 + 3
    result = train_rqvae(x, RQVAESettings(levels=1, codebook_size=4, epochs=2, standardize=True, **SMALL))
    assert np.allclose(result.state["input_mean"].numpy(), x.mean(0), atol=1e-4)
    assert np.allclose(result.state["input_scale"].numpy(), x.std(0), rtol=1e-4)
    assert np.array_equal(assign_codes(result.model(), x), result.codes)


def test_train_rejects_bad_embeddings():
    with pytest.raises(ValueError, match="embeddings"):
        train_rqvae(np.zeros(5, dtype=np.float32), RQVAESettings(**SMALL))
    with pytest.raises(ValueError, match="embeddings"):
        train_rqvae(np.full((4, 3), np.nan, dtype=np.float32), RQVAESettings(**SMALL))


@pytest.mark.parametrize("field, value", [
    ("levels", 0), ("codebook_size", 0), ("latent_dim", -1), ("epochs", 0), ("batch_size", 0),
    ("kmeans_iters", 0), ("kmeans_sample", 0), ("dead_code_every", -1), ("commitment", -0.1),
    ("lr", 0.0), ("weight_decay", -1.0), ("hidden", (32, 0)), ("levels", 1.5), ("commitment", float("nan")),
    ("reseed", "random"),
])
def test_settings_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        RQVAESettings(**{field: value})


def test_settings_take_hidden_widths_from_strings():
    assert RQVAESettings(hidden=("64", "32")).hidden == (64, 32)
    assert RQVAESettings(hidden=[64]).hidden == (64,)
    with pytest.raises(ValueError, match="`hidden`"):
        RQVAESettings(hidden=("64", "x"))
    with pytest.raises(ValueError, match="`hidden`"):
        RQVAESettings(hidden=64)
