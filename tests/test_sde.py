import math

import numpy as np
import pytest
import torch

from course_utils import metrics
from course_utils.data import GaussianMixture, example_mixture
from course_utils.fokker_planck import fokker_planck_1d
from course_utils.samplers import (
    CallCounter,
    naive_reverse_sample,
    probability_flow_sample,
    reverse_sde_sample,
    reverse_time_grid,
)
from course_utils.sde import OUSDE, VESDE, VPSDE, euler_maruyama, mixture_score_fn, reverse_drift

D64 = torch.float64
SDES = [VPSDE(), VESDE(0.01, 10.0), OUSDE(1.5, 0.8, T=2.0)]


def fit_slope(h, err):
    h, err = np.log(np.asarray(h)), np.log(np.asarray(err))
    return float(np.polyfit(h, err, 1)[0])


def test_euler_maruyama_strong_order_on_geometric_brownian_motion():
    """Higham (2001): dX = lam X dt + mu X dW, X(T) = X0 exp((lam - mu^2/2) T + mu W(T))."""
    lam, mu, T, M = 2.0, 1.0, 1.0, 4000
    g = torch.Generator().manual_seed(0)
    n_fine = 2 ** 9
    dW = math.sqrt(T / n_fine) * torch.randn(n_fine, M, 1, generator=g, dtype=D64)
    x0 = torch.ones(M, 1, dtype=D64)
    exact = x0 * torch.exp(torch.tensor((lam - 0.5 * mu ** 2) * T)) * torch.exp(mu * dW.sum(0))
    hs, errs = [], []
    for R in [1, 2, 4, 8, 16]:
        n = n_fine // R
        coarse = dW.reshape(n, R, M, 1).sum(1)  # the same Brownian path, coarser increments
        xT = euler_maruyama(lambda x, t: lam * x, lambda x, t: mu * x, x0, torch.linspace(0, T, n + 1), dW=coarse)
        hs.append(T / n)
        errs.append((xT - exact).abs().mean().item())
    assert abs(fit_slope(hs, errs) - 0.5) < 0.1


def test_euler_maruyama_weak_order_on_geometric_brownian_motion():
    lam, mu, T, M = 2.0, 0.1, 1.0, 200_000
    g = torch.Generator().manual_seed(1)
    x0 = torch.ones(M, 1, dtype=D64)
    hs, errs = [], []
    for n in [2 ** 5, 2 ** 6, 2 ** 7, 2 ** 8, 2 ** 9]:
        xT = euler_maruyama(lambda x, t: lam * x, lambda x, t: mu * x, x0, torch.linspace(0, T, n + 1), generator=g)
        hs.append(T / n)
        errs.append(abs(xT.mean().item() - math.exp(lam * T)))
    assert abs(fit_slope(hs, errs) - 1.0) < 0.2


def test_euler_maruyama_shapes_path_and_backwards_time():
    x0 = torch.zeros(5, 3, 4, 4)
    ts, path = euler_maruyama(lambda x, t: -x, lambda x, t: torch.ones(x.shape[0]), x0, torch.linspace(1, 0, 11),
                              generator=torch.Generator().manual_seed(0), return_path=True)
    assert path.shape == (11, 5, 3, 4, 4) and torch.equal(ts, torch.linspace(1, 0, 11).double())
    # the increments have variance |dt| = 0.1 whichever way time runs
    assert abs((path[1] - path[0]).var().item() - 0.1) < 0.03


@pytest.mark.parametrize("sde", SDES, ids=["VP", "VE", "OU"])
def test_marginal_coefficients_solve_the_moment_odes(sde):
    """For dX = c(t) X dt + g(t) dW: d alpha/dt = c alpha and d sigma^2/dt = 2 c sigma^2 + g^2."""
    t = torch.linspace(0.05, 0.95, 19, dtype=D64) * sde.T
    h = 1e-6
    dalpha = (sde.alpha(t + h) - sde.alpha(t - h)) / (2 * h)
    dvar = (sde.sigma(t + h) ** 2 - sde.sigma(t - h) ** 2) / (2 * h)
    c = sde.drift_coef(t)
    torch.testing.assert_close(dalpha, c * sde.alpha(t), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(dvar, 2 * c * sde.sigma(t) ** 2 + sde.diffusion(t) ** 2, rtol=1e-6, atol=1e-6)
    z = torch.zeros(1, dtype=D64)
    assert sde.alpha(z).item() == pytest.approx(1.0) and sde.sigma(z).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("sde", SDES, ids=["VP", "VE", "OU"])
def test_euler_maruyama_particles_match_closed_form_marginals(sde):
    M, n = 100_000, 1000
    x0 = torch.full((M, 1), 1.5, dtype=D64)
    t_end = 0.5 * sde.T
    xt = euler_maruyama(sde.drift, lambda x, t: sde.diffusion(torch.tensor(t)), x0,
                        torch.linspace(0, t_end, n + 1, dtype=D64), generator=torch.Generator().manual_seed(2))
    tt = torch.tensor(t_end, dtype=D64)
    mean, var = (sde.alpha(tt) * 1.5).item(), (sde.sigma(tt) ** 2).item()
    se_mean, se_var = math.sqrt(var / M), var * math.sqrt(2 / M)
    # Monte Carlo (4 standard errors) plus Euler's O(h) bias (1% of the variance)
    assert abs(xt.mean().item() - mean) < 4 * se_mean + 0.01 * math.sqrt(var)
    assert abs(xt.var().item() - var) < 4 * se_var + 0.01 * var


def test_perturb_broadcasts_over_images_and_points():
    sde = VPSDE()
    t = torch.tensor([0.1, 0.5, 0.9])
    for shape in [(3, 2), (3, 1, 4, 4)]:
        x0, eps = torch.randn(shape), torch.randn(shape)
        xt = sde.perturb(x0, t, eps)
        for i in range(3):
            torch.testing.assert_close(xt[i], sde.alpha(t[i]) * x0[i] + sde.sigma(t[i]) * eps[i])
        assert sde.drift(x0, t).shape == shape


def test_fokker_planck_solver_matches_exact_ou_marginals():
    gm = GaussianMixture(torch.tensor([[-2.0], [1.5]], dtype=D64), torch.tensor([[[0.1]], [[0.3]]], dtype=D64),
                         torch.tensor([0.4, 0.6], dtype=D64))
    ou = OUSDE(theta=1.0, s=1.0, T=5.0)
    x = np.linspace(-6, 6, 601)
    p0 = gm.log_prob(torch.tensor(x)[:, None]).exp().numpy()
    ts = [0.0, 0.1, 0.5, 1.0, 3.0]
    P = fokker_planck_1d(lambda x, t: -x, lambda t: 1.0, p0, x, ts)
    for k, t in enumerate(ts):
        exact = ou.marginal(gm, t).log_prob(torch.tensor(x)[:, None]).exp().numpy()
        assert np.abs(P[k] - exact).max() < 2e-3 * exact.max()
        assert abs(P[k].sum() * (x[1] - x[0]) - 1) < 1e-9  # no probability is lost


def test_fokker_planck_bad_input():
    x = np.linspace(-1, 1, 11)
    with pytest.raises(ValueError, match="p0 must have the shape of x"):
        fokker_planck_1d(lambda x, t: 0 * x, lambda t: 1.0, np.ones(5), x, [0, 1])
    with pytest.raises(ValueError, match="x must be uniform"):
        fokker_planck_1d(lambda x, t: 0 * x, lambda t: 1.0, np.ones(3), np.array([0, 1, 3.0]), [0, 1])
    with pytest.raises(ValueError, match="ts must be a 1-D increasing"):
        fokker_planck_1d(lambda x, t: 0 * x, lambda t: 1.0, np.ones(11), x, [1, 0])
    with pytest.raises(ValueError, match="g\\(t\\) must be finite and non-negative"):
        fokker_planck_1d(lambda x, t: 0 * x, lambda t: -1.0, np.ones(11), x, [0, 1])


def sample_quality(x, gm, reference_logp):
    ratio, dw, dlogp = metrics.sample_quality(x, gm, reference_logp, generator=torch.Generator().manual_seed(9))
    return ratio, dw, abs(dlogp)


@pytest.fixture(scope="module")
def truth():
    gm = example_mixture()
    return gm, gm.log_prob(gm.sample(400_000, torch.Generator().manual_seed(3))).mean().item()


def test_reverse_sde_with_exact_score_recovers_the_data(truth):
    gm, ref = truth
    sde = VPSDE()
    g = torch.Generator().manual_seed(4)
    x = reverse_sde_sample(sde, mixture_score_fn(sde, gm), sde.prior_sample((20_000, 2), generator=g), n_steps=500,
                           generator=g)
    ratio, dw, dlogp = sample_quality(x, gm, ref)
    assert ratio < 1.5 and dw < 0.02 and dlogp < 0.03, (ratio, dw, dlogp)
    # flipping the sign of time instead of using Anderson's drift fails by orders of magnitude
    flipped = naive_reverse_sample(sde, sde.prior_sample((20_000, 2), generator=g), n_steps=500, generator=g)
    assert sample_quality(flipped, gm, ref)[0] > 10 * max(ratio, 1.0)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(0.01, 10.0)], ids=["VP", "VE"])
def test_probability_flow_ode_with_exact_score_recovers_the_data(truth, sde):
    gm, ref = truth
    g = torch.Generator().manual_seed(5)
    score = CallCounter(mixture_score_fn(sde, gm))
    x = probability_flow_sample(sde, score, sde.prior_sample((20_000, 2), generator=g))
    ratio, dw, dlogp = sample_quality(x, gm, ref)
    assert ratio < 1.5 and dw < 0.02 and dlogp < 0.03, (ratio, dw, dlogp)
    assert 20 < score.calls <= 500


def test_sde_and_ode_share_intermediate_marginals():
    gm = example_mixture()
    sde = VPSDE()
    score = mixture_score_fn(sde, gm)
    g = torch.Generator().manual_seed(6)
    x_T = sde.prior_sample((20_000, 2), generator=g)
    t_mid = 0.3  # stop both samplers at t = 0.3 and compare with the exact marginal there
    xs = reverse_sde_sample(sde, score, x_T, n_steps=350, t_min=t_mid, generator=g)
    xo = probability_flow_sample(sde, score, x_T, t_min=t_mid)
    exact = sde.marginal(gm, t_mid)
    ref = exact.log_prob(exact.sample(200_000, g)).mean().item()
    for x in (xs, xo):
        assert abs(exact.log_prob(x).mean().item() - ref) < 0.03
        assert (x.mean(0) - exact.sample(200_000, g).mean(0)).abs().max() < 0.03


def test_reverse_drift_values():
    sde = VPSDE()
    x = torch.randn(4, 2)
    score = lambda x, t: -x  # noqa: E731  (N(0, I) is stationary for VP)
    t = torch.full((4,), 0.4)
    beta = sde.beta(0.4)
    torch.testing.assert_close(reverse_drift(sde, score, x, t, 1.0), -0.5 * beta * x + beta * x)
    torch.testing.assert_close(reverse_drift(sde, score, x, t, 0.5), torch.zeros_like(x))


def test_sde_bad_inputs():
    sde = VPSDE()
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="ts must be strictly monotone"):
        euler_maruyama(lambda x, t: x, lambda x, t: 1.0, x, torch.tensor([0.0, 0.5, 0.3]))
    with pytest.raises(ValueError, match="ts must be finite"):
        euler_maruyama(lambda x, t: x, lambda x, t: 1.0, x, torch.tensor([0.0, float("inf")]))
    with pytest.raises(ValueError, match="ts must be a 1-D grid"):
        euler_maruyama(lambda x, t: x, lambda x, t: 1.0, x, torch.tensor([0.0]))
    with pytest.raises(ValueError, match="g\\(x, t\\) must be finite and non-negative"):
        euler_maruyama(lambda x, t: x, lambda x, t: -1.0, x, torch.linspace(0, 1, 3))
    with pytest.raises(ValueError, match="g\\(x, t\\) must be finite and non-negative"):
        euler_maruyama(lambda x, t: x, lambda x, t: float("nan"), x, torch.linspace(0, 1, 3))
    with pytest.raises(ValueError, match="f\\(x, t\\) must have the shape of x"):
        euler_maruyama(lambda x, t: x[:, :1], lambda x, t: 1.0, x, torch.linspace(0, 1, 3))
    with pytest.raises(ValueError, match="dW must have shape"):
        euler_maruyama(lambda x, t: x, lambda x, t: 1.0, x, torch.linspace(0, 1, 3), dW=torch.zeros(3, 4, 2))
    with pytest.raises(ValueError, match="t must be a scalar or have shape \\(B,\\)"):
        sde.drift(x, torch.zeros(5))
    with pytest.raises(ValueError, match="t must lie in \\[0, T\\]"):
        sde.perturb(x, 1.5, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="t must lie in \\[0, T\\]"):
        reverse_drift(sde, lambda x, t: x, x, -0.1)
    with pytest.raises(ValueError, match="eps must have the shape of x0"):
        sde.perturb(x, 0.5, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="score_fn must return the shape of x"):
        reverse_drift(sde, lambda x, t: x[:, :1], x, 0.5)
    with pytest.raises(ValueError, match="t_min must lie in"):
        reverse_sde_sample(sde, lambda x, t: x, x, n_steps=10, t_min=1.5)
    with pytest.raises(ValueError, match="n_steps must be a positive int"):
        reverse_sde_sample(sde, lambda x, t: x, x, n_steps=0)
    with pytest.raises(ValueError, match="eta must be a finite number >= 0"):
        reverse_sde_sample(sde, lambda x, t: x, x, eta=-1.0)
    with pytest.raises(ValueError, match="method must be one of"):
        probability_flow_sample(sde, lambda x, t: x, x, method="rk45")
    with pytest.raises(ValueError, match="n_steps must be a positive int"):
        probability_flow_sample(sde, lambda x, t: x, x, method="euler")
    with pytest.raises(ValueError, match="t_min must lie in"):
        probability_flow_sample(sde, lambda x, t: x, x, t_min=-0.1)
    with pytest.raises(ValueError, match=r"x_T must have shape \(B, \*D\)"):
        reverse_sde_sample(sde, lambda x, t: x, torch.zeros(4))
    with pytest.raises(TypeError, match="x_T must be a torch.Tensor"):
        probability_flow_sample(sde, lambda x, t: x, [[0.0, 0.0]])
    # a time grid given where a keyword belongs is refused, not integrated from T to 100
    with pytest.raises(TypeError):
        probability_flow_sample(sde, lambda x, t: x, x, 100)
    with pytest.raises(TypeError):
        reverse_sde_sample(sde, lambda x, t: x, x, 100)
    from course_utils.schedules import DiscreteSchedule, linear_betas
    with pytest.raises(TypeError, match="sde must be a course_utils.sde.SDE"):
        reverse_sde_sample(DiscreteSchedule(linear_betas(10)), lambda x, t: x, x)
    with pytest.raises(ValueError, match="dW must have x0's dtype"):
        euler_maruyama(lambda x, t: x, lambda x, t: 1.0, x, [0.0, 1.0], dW=torch.zeros(1, 4, 2, dtype=D64))
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        probability_flow_sample(sde, lambda x, t: x, x, generator=1)
    for bad_T in (0.0, -1.0, float("inf")):
        for make in (VPSDE, VESDE, OUSDE):
            with pytest.raises(ValueError, match="T must be a positive, finite number"):
                make(T=bad_T)
    with pytest.raises(ValueError, match="n_steps is for fixed-step methods"):
        probability_flow_sample(sde, lambda x, t: x, x, n_steps=10)
    with pytest.raises(ValueError, match="beta_min"):
        VPSDE(beta_min=-1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        VESDE(sigma_min=5.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="theta and s must be positive"):
        OUSDE(theta=0.0)
    with pytest.raises(ValueError, match="t must lie in"):
        sde.marginal(example_mixture(), 2.0)


def test_slerp_and_ode_interpolation():
    from course_utils.samplers import ode_interpolate, slerp
    g = torch.Generator().manual_seed(11)
    a, b = torch.randn(2, generator=g, dtype=D64), torch.randn(2, generator=g, dtype=D64)
    path = slerp(a, b, 5)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    # for endpoints of equal norm: constant norm, and the angle split into equal parts
    b_eq = b * a.norm() / b.norm()
    path_eq = slerp(a, b_eq, 5)
    assert (path_eq.norm(dim=1) - a.norm()).abs().max() < 1e-9
    cos = lambda u, v: torch.dot(u, v) / (u.norm() * v.norm())  # noqa: E731
    angles = [torch.arccos(cos(path_eq[i], path_eq[i + 1])).item() for i in range(4)]
    assert max(angles) - min(angles) < 1e-7
    gm, sde = example_mixture(), VPSDE()
    xs = ode_interpolate(sde, mixture_score_fn(sde, gm), a.float(), b.float(), n=5)
    assert xs.shape == (5, 2)
    ends = probability_flow_sample(sde, mixture_score_fn(sde, gm), torch.stack([a, b]).float())
    torch.testing.assert_close(xs[[0, -1]], ends, atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="z_a and z_b must be 1-D"):
        slerp(torch.zeros(2), torch.zeros(3), 4)


def test_euler_maruyama_steps_are_exact_ito_steps():
    """Two hand-computed steps with a time-dependent drift, state-dependent noise and given dW: both
    coefficients must be taken at the start of each step (evaluating them at its end is a different,
    implicit scheme), forwards and backwards in time."""
    f = lambda x, t: t * x + 1.0  # noqa: E731
    g = lambda x, t: (1.0 + t) * x  # noqa: E731
    x0 = torch.tensor([[0.7, 1.3]], dtype=D64)
    dW = torch.tensor([[[0.11, -0.05]], [[-0.2, 0.3]]], dtype=D64)
    for ts in ([0.3, 0.5, 0.9], [0.9, 0.6, 0.1]):
        x1 = x0 + f(x0, ts[0]) * (ts[1] - ts[0]) + g(x0, ts[0]) * dW[0]
        x2 = x1 + f(x1, ts[1]) * (ts[2] - ts[1]) + g(x1, ts[1]) * dW[1]
        got = euler_maruyama(f, g, x0, ts, dW=dW, return_path=True)
        torch.testing.assert_close(got.xs, torch.stack([x0, x1, x2]), rtol=0, atol=1e-15)
        torch.testing.assert_close(got.ts, torch.tensor(ts, dtype=D64))
        seen = []
        euler_maruyama(f, g, x0, ts, dW=dW, callback=lambda d, seen=seen: seen.append((d["i"], d["t"], d["x"].clone())))
        assert [(i, t) for i, t, _ in seen] == [(0, ts[0]), (1, ts[1])]  # the state each step starts from
        torch.testing.assert_close(seen[1][2], x1, rtol=0, atol=1e-15)
    # fresh noise: one step has mean x0 + f h and variance g^2 |h|
    g_ = torch.Generator().manual_seed(12)
    xs = euler_maruyama(f, g, x0.expand(200_000, 2), [0.3, 0.1], generator=g_)
    h = -0.2
    torch.testing.assert_close(xs.mean(0), (x0 + f(x0, 0.3) * h)[0], atol=4 * 1.69 * math.sqrt(0.2 / 2e5), rtol=0)
    torch.testing.assert_close(xs.var(0), (g(x0, 0.3) ** 2 * abs(h))[0], rtol=0.02, atol=0)


def test_sampler_grids_and_callbacks():
    sde, n = VPSDE(), 7
    grid = reverse_time_grid(sde, n, t_min=0.05)
    assert len(grid) == n + 1 and grid[0].item() == sde.T and grid[-1].item() == 0.05
    torch.testing.assert_close(grid[:-1] - grid[1:], torch.full((n,), (sde.T - 0.05) / n, dtype=D64))
    gm = example_mixture()
    score = CallCounter(mixture_score_fn(sde, gm))
    x_T = sde.prior_sample((64, 2), generator=torch.Generator().manual_seed(13))
    seen = []
    out = reverse_sde_sample(sde, score, x_T, n_steps=n, t_min=0.05, generator=torch.Generator().manual_seed(14),
                             callback=seen.append, return_path=True)
    assert score.calls == n and len(seen) == n and out.xs.shape == (n + 1, 64, 2)
    assert [d["i"] for d in seen] == list(range(n)) and torch.equal(out.ts, grid)
    assert [d["t"] for d in seen] == grid[:-1].tolist()
    for d, x in zip(seen, out.xs[:-1]):  # the callback sees the state the network saw ...
        assert torch.equal(d["x"], x)
    # ... and Tweedie's estimate E[x0 | x_t] = (x_t + sigma^2 score) / alpha, exactly for the exact score
    d = seen[3]
    t = torch.tensor(d["t"])
    a, s = sde.alpha(t).item(), sde.sigma(t).item()
    torch.testing.assert_close(d["x0_hat"], (d["x"] + s ** 2 * mixture_score_fn(sde, gm)(d["x"], t)) / a)
    # the probability-flow sampler: one callback per score evaluation, a Trajectory of n_saved snapshots
    score, seen = CallCounter(mixture_score_fn(sde, gm)), []
    out = probability_flow_sample(sde, score, x_T, method="rk4", n_steps=5, callback=seen.append,
                                  return_path=True, n_saved=3)
    assert score.calls == len(seen) == 20 and out.xs.shape == (3, 64, 2)  # rk4: 4 evaluations a step
    torch.testing.assert_close(out.ts, torch.tensor([1.0, 0.5005, 0.001], dtype=D64))
    # the naive reverse takes the same grid
    assert naive_reverse_sample(sde, x_T, n_steps=n, return_path=True).xs.shape == (n + 1, 64, 2)
    # fixed-step ODE solves take exactly n_steps steps (a step size can round up to n_steps + 1)
    for n_steps in range(1, 130):
        for dtype in (torch.float32, D64):
            counter = CallCounter(lambda x, t: -x)
            probability_flow_sample(sde, counter, x_T[:2].to(dtype), method="euler", n_steps=n_steps)
            assert counter.calls == n_steps, (n_steps, dtype, counter.calls)


def test_eta_zero_is_the_probability_flow_ode_by_euler():
    """eta = 0 of the reverse family is Euler's method on the probability-flow ODE: the same numbers as
    torchdiffeq's fixed-step Euler on the same grid."""
    gm, sde = example_mixture(D64), VPSDE()
    score = mixture_score_fn(sde, gm)
    x_T = sde.prior_sample((500, 2), generator=torch.Generator().manual_seed(15), dtype=D64)
    a = reverse_sde_sample(sde, score, x_T, n_steps=40, eta=0.0, generator=torch.Generator().manual_seed(0))
    b = probability_flow_sample(sde, score, x_T, method="euler", n_steps=40)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    # (a different eta changes the paths but not the law: test_eta_family_has_the_data_marginals)


def test_eta_family_has_the_data_marginals(truth):
    gm, ref = truth
    sde = VPSDE()
    g = torch.Generator().manual_seed(16)
    for eta in (0.5, 2.0):
        x = reverse_sde_sample(sde, mixture_score_fn(sde, gm), sde.prior_sample((20_000, 2), generator=g),
                               n_steps=500, eta=eta, generator=g)
        ratio, dw, dlogp = sample_quality(x, gm, ref)
        assert ratio < 1.5 and dw < 0.02 and dlogp < 0.05, (eta, ratio, dw, dlogp)


def test_mixture_score_fn_equals_the_noised_mixture_score():
    gm, sde = example_mixture(D64), VESDE(0.01, 10.0)
    score = mixture_score_fn(sde, gm)
    x = torch.randn(6, 2, dtype=D64)
    t = torch.tensor([0.1, 0.5, 0.1, 0.9, 0.5, 0.1], dtype=D64)
    for _ in range(2):  # the second call reads the cache
        out = score(x, t)
        for i in range(6):
            torch.testing.assert_close(out[i], sde.marginal(gm, t[i].item()).score(x[i:i + 1])[0])
