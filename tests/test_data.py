import math

import pytest
import torch

from course_utils import append_dims, seed_everything
from course_utils.data import TOY_2D_NAMES, GaussianMixture, example_mixture, toy_2d


def gmm64():
    return example_mixture(torch.float64)


@pytest.mark.parametrize("name", TOY_2D_NAMES)
def test_toy_2d_shapes_and_reproducible(name):
    a = toy_2d(name, 500, torch.Generator().manual_seed(1))
    b = toy_2d(name, 500, torch.Generator().manual_seed(1))
    assert a.shape == (500, 2) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert a.abs().max() < 4.5 and torch.isfinite(a).all()


def test_toy_2d_bad_input():
    with pytest.raises(ValueError, match="name must be one of"):
        toy_2d("mooons", 10)
    with pytest.raises(ValueError, match="n must be a positive int"):
        toy_2d("moons", 0)
    with pytest.raises(TypeError, match="generator"):
        toy_2d("moons", 10, generator=0)


def test_log_prob_single_gaussian_matches_torch():
    mean = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    cov = torch.tensor([[[2.0, 0.3], [0.3, 0.5]]], dtype=torch.float64)
    gm = GaussianMixture(mean, cov, torch.ones(1, dtype=torch.float64))
    x = torch.randn(20, 2, dtype=torch.float64)
    ref = torch.distributions.MultivariateNormal(mean[0], cov[0]).log_prob(x)
    torch.testing.assert_close(gm.log_prob(x), ref)


def test_log_prob_mixture_matches_torch_mixture_same_family():
    gm = gmm64()
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=gm.weights),
        torch.distributions.MultivariateNormal(gm.means, gm.covs))
    x = torch.randn(50, 2, dtype=torch.float64) * 2
    torch.testing.assert_close(gm.log_prob(x), ref.log_prob(x))


def test_density_integrates_to_one():
    gm = gmm64()
    xs = torch.linspace(-6, 6, 601, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, xs, indexing="xy")
    p = gm.log_prob(torch.stack([X.ravel(), Y.ravel()], 1)).exp()
    h = (xs[1] - xs[0]).item()
    assert abs(p.sum().item() * h * h - 1.0) < 1e-6


def test_score_equals_autograd_of_log_prob():
    gm = gmm64()
    x = (torch.randn(40, 2, dtype=torch.float64) * 2).requires_grad_(True)
    auto = torch.autograd.grad(gm.log_prob(x).sum(), x)[0]
    torch.testing.assert_close(gm.score(x.detach()), auto)


def test_sample_moments_and_weights():
    gm = gmm64()
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x = gm.sample(n, g)
    mean = (gm.weights[:, None] * gm.means).sum(0)
    second = sum(w * (c + torch.outer(m, m)) for w, m, c in zip(gm.weights, gm.means, gm.covs))
    cov = second - torch.outer(mean, mean)
    # standard error of a mean coordinate is sqrt(var / n) ~ 0.003: 5 standard errors
    assert (x.mean(0) - mean).abs().max() < 5 * math.sqrt(cov.diagonal().max() / n)
    assert (torch.cov(x.T) - cov).abs().max() < 0.01


def test_noised_matches_monte_carlo_moments():
    gm = gmm64()
    g = torch.Generator().manual_seed(2)
    alpha, sigma = 0.6, 0.8
    x0 = gm.sample(200_000, g)
    xt = alpha * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    y = gm.noised(alpha, sigma).sample(200_000, g)
    assert (xt.mean(0) - y.mean(0)).abs().max() < 0.01
    assert (torch.cov(xt.T) - torch.cov(y.T)).abs().max() < 0.015
    # and the exact density of the noised law explains the Monte Carlo points as well as its own
    lp_mc = gm.noised(alpha, sigma).log_prob(xt).mean()
    lp_own = gm.noised(alpha, sigma).log_prob(y).mean()
    assert abs(lp_mc - lp_own) < 0.01


def test_noised_parameters_exact():
    gm = gmm64()
    nz = gm.noised(0.5, 2.0)
    torch.testing.assert_close(nz.means, 0.5 * gm.means)
    torch.testing.assert_close(nz.covs, 0.25 * gm.covs + 4.0 * torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(nz.weights, gm.weights)


def test_entropy_of_single_gaussian():
    cov = torch.tensor([[[1.5, 0.2], [0.2, 0.7]]], dtype=torch.float64)
    gm = GaussianMixture(torch.zeros(1, 2, dtype=torch.float64), cov, torch.ones(1, dtype=torch.float64))
    exact = 0.5 * torch.logdet(2 * math.pi * math.e * cov[0]).item()
    est, se = gm.entropy_estimate(100_000, torch.Generator().manual_seed(0))
    assert abs(est - exact) < 4 * se


def test_gaussian_mixture_bad_input():
    m = torch.zeros(2, 2)
    c = torch.eye(2).repeat(2, 1, 1)
    w = torch.ones(2)
    with pytest.raises(ValueError, match="weights must be finite and positive"):
        GaussianMixture(m, c, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="weights must be finite and positive"):
        GaussianMixture(m, c, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture(m, torch.stack([torch.eye(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]])]), w)
    with pytest.raises(ValueError, match="symmetric"):
        GaussianMixture(m, torch.stack([torch.eye(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]])]), w)
    with pytest.raises(ValueError, match="covs must have shape"):
        GaussianMixture(m, torch.eye(2), w)
    with pytest.raises(ValueError, match="weights must have shape"):
        GaussianMixture(m, c, torch.ones(3))
    with pytest.raises(ValueError, match="means must have shape"):
        GaussianMixture(torch.zeros(2), c, w)
    gm = GaussianMixture(m, c, w)
    with pytest.raises(ValueError, match="x must have last dimension 2"):
        gm.log_prob(torch.zeros(4, 3))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        gm.score(torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="alpha must be"):
        gm.noised(-1.0, 1.0)
    with pytest.raises(ValueError, match="sigma must be"):
        gm.noised(1.0, float("nan"))
    with pytest.raises(ValueError, match="n must be a positive int"):
        gm.sample(-3)


def test_seed_everything_and_append_dims():
    seed_everything(5)
    a = torch.randn(3)
    seed_everything(5)
    assert torch.equal(a, torch.randn(3))
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
    assert append_dims(torch.ones(4), 4).shape == (4, 1, 1, 1)
    assert append_dims(torch.ones(4), 2).shape == (4, 1)
    with pytest.raises(ValueError, match="ndim"):
        append_dims(torch.ones(4, 2), 1)


def test_digits_split_is_fixed_disjoint_and_scaled():
    from course_utils.data import digits
    x_tr, y_tr = digits("train")
    x_te, y_te = digits("test")
    x_all, y_all = digits("all")
    assert x_tr.shape == (1437, 1, 8, 8) and x_te.shape == (360, 1, 8, 8) and x_all.shape == (1797, 1, 8, 8)
    assert torch.bincount(y_te).tolist() == [36] * 10
    assert x_all.min() == -1.0 and x_all.max() == 1.0
    # 17 grey levels 0..16 map to k / 8 - 1
    assert torch.allclose(torch.round((x_all + 1) * 8), (x_all + 1) * 8)
    # disjoint: no held-out image appears in the training split (the raw set has no exact duplicates here)
    flat_tr, flat_te = x_tr.flatten(1), x_te.flatten(1)
    assert (torch.cdist(flat_te, flat_tr).min(1).values > 0).all()
    # the same split every call
    x_te2, y_te2 = digits("test")
    assert torch.equal(x_te, x_te2) and torch.equal(y_te, y_te2)
    x16, _ = digits("test", size=16)
    assert x16.shape == (360, 1, 16, 16) and x16.min() >= -1 and x16.max() <= 1


def test_digits_bad_input():
    from course_utils.data import digits
    with pytest.raises(ValueError, match="split"):
        digits("validation")
    with pytest.raises(ValueError, match="size"):
        digits(size=32)


def test_tint_colours_the_ink_and_keeps_its_intensity():
    from course_utils.data import hue_colours, tint, tinted_digits
    torch.testing.assert_close(hue_colours(torch.tensor([0.0, 1 / 3, 2 / 3, 1 / 6])),
                               torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=torch.float64),
                               atol=1e-6, rtol=0)
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3)
    out = tint(x, torch.tensor([1 / 6], dtype=torch.float64))  # yellow ink
    torch.testing.assert_close(out[0, :, 0], torch.tensor([[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], [-1.0, -1.0, -1.0]]))
    imgs, labels, hues = tinted_digits("test")
    assert imgs.shape == (360, 3, 8, 8) and imgs.min() >= -1 and imgs.max() <= 1 and len(hues) == 360
    with pytest.raises(ValueError, match="hues"):
        tint(x, torch.zeros(2))
