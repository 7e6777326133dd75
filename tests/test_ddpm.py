"""DDPM and DDIM against exact answers: on Gaussian data the optimal noise predictor is linear in x_t,
so every sampler's output law (or map) is known in closed form."""
import math

import pytest
import torch

from course_utils.ddpm import (
    ddim_invert,
    ddim_sample,
    ddpm_sample,
    dpm_solver_2m_sample,
    edm_sigmas,
    heun_sample,
    karras_timesteps,
    posterior,
    quadratic_timesteps,
    uniform_timesteps,
)
from course_utils.samplers import CallCounter
from course_utils.schedules import DiscreteSchedule, cosine_betas, linear_betas

M = torch.tensor([0.7, -1.2], dtype=torch.float64)  # data N(M, V I)
V = 0.3


def exact_eps(schedule, m=M, v=V):
    """E[eps | x_t] for x0 ~ N(m, v I): sqrt(1 - ab) (x - sqrt(ab) m) / (ab v + 1 - ab)."""
    def eps_model(x, t):
        ab = schedule.alpha(t) ** 2  # t must be a grid time: checks the sampler's time conversion too
        ab = ab.to(x.dtype)[:, None]
        return torch.sqrt(1 - ab) * (x - torch.sqrt(ab) * m) / (ab * v + 1 - ab)
    return eps_model


def exact_flow_map(schedule, x_T, i_start, m=M, v=V):
    """The probability-flow ODE's exact map from index i_start to clean data: with x~ = x / sqrt(ab) and
    sigma^2 = (1 - ab) / ab, x~ - m scales like sqrt(v + sigma^2)."""
    ab = float(schedule.alpha_bars[i_start])
    sig2 = (1 - ab) / ab
    return m + (x_T / math.sqrt(ab) - m) * math.sqrt(v / (v + sig2))


@pytest.fixture(scope="module")
def sched():
    return DiscreteSchedule(linear_betas(1000))


def test_ddpm_1000_steps_returns_the_data_law(sched):
    x_T = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = ddpm_sample(sched, exact_eps(sched), x_T, generator=torch.Generator().manual_seed(1))
    n = len(x)
    assert ((x.mean(0) - M).abs() < 4 * math.sqrt(V / n)).all(), x.mean(0)
    var_se = V * math.sqrt(2 / n)
    assert ((x.var(0) - V).abs() < 4 * var_se).all(), x.var(0)
    # the sampler without the data term (eps_hat = 0) must not pass: it gives the wrong law
    x_bad = ddpm_sample(sched, lambda x, t: torch.zeros_like(x), x_T, generator=torch.Generator().manual_seed(1))
    assert not ((x_bad.var(0) - V).abs() < 4 * var_se).all()


def test_ddim_eta1_on_every_index_is_ddpm_draw_for_draw(sched):
    x_T = torch.randn(500, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a = ddpm_sample(sched, exact_eps(sched), x_T, generator=torch.Generator().manual_seed(3))
    b = ddim_sample(sched, exact_eps(sched), x_T, timesteps=range(999, -1, -1), eta=1.0,
                    generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, b, atol=1e-10, rtol=1e-8), (a - b).abs().max()
    c = ddim_sample(sched, exact_eps(sched), x_T, n_steps=1000, eta=0.5, generator=torch.Generator().manual_seed(3))
    assert (a - c).abs().max() > 0.1  # a different eta is a different sampler


def ddim_output_variance(schedule, steps, eta, v=V):
    """Per-coordinate variance of ddim_sample's output for x_T ~ N(0, I) and the exact eps on N(m, v I):
    each step is affine in x with Gaussian noise, x_s = A x_i + b + sigma z, so Var_s = A^2 Var_i + sigma^2."""
    var = 1.0
    for k, i in enumerate(steps):
        s = steps[k + 1] if k + 1 < len(steps) else -1
        ab = schedule.alpha_bars[i].item()
        ab_s = 1.0 if s < 0 else schedule.alpha_bars[s].item()
        d_eps = math.sqrt(1 - ab) / (ab * v + 1 - ab)            # d eps_hat / dx
        d_x0 = (1 - math.sqrt(1 - ab) * d_eps) / math.sqrt(ab)     # d x0_hat / dx
        sigma = eta * math.sqrt((1 - ab_s) / (1 - ab)) * math.sqrt(1 - ab / ab_s)
        A = math.sqrt(ab_s) * d_x0 + math.sqrt(1 - ab_s - sigma ** 2) * d_eps
        var = A ** 2 * var + sigma ** 2
    return var


def test_ddim_stochastic_few_steps_has_its_predicted_variance(sched):
    """With eta > 0 and few steps DDIM is not exact in law: a Gaussian step around E[x0 | x_t] ignores
    the uncertainty of x0 given x_t, so the output is under-dispersed; the exact linear-Gaussian
    recursion predicts by how much, and the deficit vanishes as the steps shrink."""
    x_T = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    n = len(x_T)
    for eta, n_steps in [(1.0, 20), (0.5, 20), (1.0, 200)]:
        steps = uniform_timesteps(1000, n_steps)
        predicted = ddim_output_variance(sched, steps, eta)
        x = ddim_sample(sched, exact_eps(sched), x_T, timesteps=steps, eta=eta,
                        generator=torch.Generator().manual_seed(5))
        assert ((x.mean(0) - M).abs() < 4 * math.sqrt(predicted / n)).all(), (eta, n_steps, x.mean(0))
        assert ((x.var(0) - predicted).abs() < 4 * predicted * math.sqrt(2 / n)).all(), (eta, n_steps, x.var(0))
    deficit = {n_steps: V - ddim_output_variance(sched, uniform_timesteps(1000, n_steps), 1.0) for n_steps in (20, 200)}
    assert deficit[20] > 0.05 and deficit[200] < deficit[20] / 5, deficit


def test_ddim_eta0_is_euler_on_the_probability_flow_ode_and_heun_is_second_order(sched):
    x_T = torch.randn(2000, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    truth = exact_flow_map(sched, x_T, 999)
    err = {}
    for n in (10, 20, 40):
        err["ddim", n] = (ddim_sample(sched, exact_eps(sched), x_T, n_steps=n) - truth).abs().max().item()
        err["heun", n] = (heun_sample(sched, exact_eps(sched), x_T, n_steps=n) - truth).abs().max().item()
    # first order: halving the step roughly halves the error; second order: roughly quarters it
    assert 1.6 < err["ddim", 20] / err["ddim", 40] < 2.5, err
    assert err["heun", 20] / err["heun", 40] > 3.0, err
    assert err["heun", 40] < err["ddim", 40] / 10, err
    x = ddim_sample(sched, exact_eps(sched), x_T, n_steps=1000)
    assert (x - truth).abs().max() < 2 * err["ddim", 40] * 40 / 1000  # still first order at 1000 steps


def test_dpm_solver_2m_is_second_order_at_one_evaluation_per_step(sched):
    x_T = torch.randn(2000, 2, generator=torch.Generator().manual_seed(16), dtype=torch.float64)
    truth = exact_flow_map(sched, x_T, 999)
    err = {}
    for n in (20, 40, 80):
        grid = karras_timesteps(sched, n)
        model = CallCounter(exact_eps(sched))
        err["2m", n] = (dpm_solver_2m_sample(sched, model, x_T, timesteps=grid) - truth).abs().max().item()
        assert model.calls == len(grid)
        err["ddim", n] = (ddim_sample(sched, exact_eps(sched), x_T, timesteps=grid) - truth).abs().max().item()
    assert err["2m", 40] / err["2m", 80] > 3.0, err          # second order (once the steps are small)
    assert err["ddim", 40] / err["ddim", 80] < 2.5, err      # where DDIM is first order
    assert err["2m", 20] < err["ddim", 20] / 2, err          # at the same number of evaluations
    # its first step is DDIM's
    one = dpm_solver_2m_sample(sched, exact_eps(sched), x_T, timesteps=[999, 500], return_path=True).xs[1]
    assert torch.allclose(one, ddim_sample(sched, exact_eps(sched), x_T, timesteps=[999, 500], return_path=True).xs[1])


def test_ddim_euler_identity_in_sigma_coordinates(sched):
    """One DDIM step (eta = 0) is one Euler step of dx~/dsigma = eps_hat, exactly."""
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    i, s = 600, 300
    sig = edm_sigmas(sched)
    step = ddim_sample(sched, exact_eps(sched), x, timesteps=[i, s], return_path=True).xs[1]
    ab_i, ab_s = sched.alpha_bars[i].item(), sched.alpha_bars[s].item()
    t_i = sched.time(torch.full((7,), i), dtype=torch.float64)
    euler = (x / math.sqrt(ab_i) + (sig[s] - sig[i]) * exact_eps(sched)(x, t_i)) * math.sqrt(ab_s)
    assert torch.allclose(step, euler, atol=1e-12)


def test_network_evaluations_counted(sched):
    x_T = torch.randn(4, 2, dtype=torch.float64)
    for sampler, n, expected in [(ddim_sample, 10, 10), (heun_sample, 10, 19)]:
        model = CallCounter(exact_eps(sched))
        sampler(sched, model, x_T, n_steps=n)
        assert model.calls == expected
    model = CallCounter(exact_eps(sched))
    ddpm_sample(sched, model, x_T)
    assert model.calls == 1000


def test_ddim_invert_then_sample_returns_the_input(sched):
    x0 = M + math.sqrt(V) * torch.randn(1000, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    errs = {}
    for n in (20, 100, 1000):
        z = ddim_invert(sched, exact_eps(sched), x0, n_steps=n)
        back = ddim_sample(sched, exact_eps(sched), z, n_steps=n)
        errs[n] = (back - x0).pow(2).mean().sqrt().item()
    # the round trip's error is the inversion's first-order discretisation error: it shrinks like 1 / steps
    assert errs[100] < errs[20] / 3 and errs[1000] < errs[100] / 5 and errs[1000] < 0.01, errs
    # the inverted noise is the exact flow's preimage up to the same first-order error
    z = ddim_invert(sched, exact_eps(sched), x0, n_steps=1000)
    assert (exact_flow_map(sched, z, 999) - x0).abs().max() < 5e-3


def test_posterior_matches_sampling(sched):
    """q(x_{i-1} | x_i, x0) in closed form against a regression of sampled x_{i-1} on x_i for fixed x0."""
    g = torch.Generator().manual_seed(9)
    x0, n = 0.8, 400_000
    for i in (1, 50, 500, 999):
        ab_prev, beta = sched.alpha_bars[i - 1].item(), sched.betas[i].item()
        x_prev = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * torch.randn(n, generator=g, dtype=torch.float64)
        x_i = math.sqrt(1 - beta) * x_prev + math.sqrt(beta) * torch.randn(n, generator=g, dtype=torch.float64)
        design = torch.stack([x_i, torch.ones_like(x_i)], 1)
        coef = torch.linalg.lstsq(design, x_prev[:, None]).solution.flatten()
        resid_var = (x_prev - design @ coef).var().item()
        mean0, var = posterior(sched, torch.tensor(x0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), i)
        mean1, _ = posterior(sched, torch.tensor(x0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64), i)
        slope, intercept = (mean1 - mean0).item(), mean0.item()
        assert abs(coef[0].item() - slope) < 5e-3 * max(1.0, slope), (i, coef, slope)
        assert abs(coef[1].item() - intercept) < 5e-3, (i, coef, intercept)
        assert abs(resid_var / var - 1) < 0.02, (i, resid_var, var)


def test_tweedie_is_exact_on_gaussian_data(sched):
    x = torch.randn(100, 2, dtype=torch.float64)
    for i in (0, 100, 900):
        t = sched.time(torch.full((100,), i), dtype=torch.float64)
        ab = sched.alpha_bars[i].item()
        x0_hat = (x - math.sqrt(1 - ab) * exact_eps(sched)(x, t)) / math.sqrt(ab)
        posterior_mean = M + math.sqrt(ab) * V * (x - math.sqrt(ab) * M) / (ab * V + 1 - ab)  # Gaussian conditioning
        assert torch.allclose(x0_hat, posterior_mean, atol=1e-9)


def test_images_and_callbacks(sched):
    x_T = torch.randn(3, 1, 4, 4)
    seen = []
    out = ddim_sample(sched, lambda x, t: torch.zeros_like(x), x_T, n_steps=5, callback=seen.append)
    assert out.shape == x_T.shape and len(seen) == 5
    assert [d["i"] for d in seen] == list(range(5)) and seen[0]["t"] == 1.0
    assert all(d["x0_hat"].shape == x_T.shape for d in seen)
    path = heun_sample(sched, lambda x, t: torch.zeros_like(x), x_T, n_steps=5, return_path=True)
    assert path.xs.shape == (6, 3, 1, 4, 4) and path.ts[-1] == 0.0


def test_timestep_grids(sched):
    assert uniform_timesteps(1000, 5) == [999, 749, 500, 250, 0]
    assert uniform_timesteps(1000, 1000) == list(range(999, -1, -1))
    q = quadratic_timesteps(1000, 5)
    assert q == [999, 562, 250, 62, 0]
    k = karras_timesteps(sched, 10)
    assert k[0] == 999 and k[-1] == 0 and all(b < a for a, b in zip(k[:-1], k[1:]))
    cos = DiscreteSchedule(cosine_betas(1000))
    assert karras_timesteps(cos, 18)[0] == 999


def test_bad_input(sched):
    eps = exact_eps(sched)
    x = torch.randn(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="strictly decreasing"):
        ddim_sample(sched, eps, x, timesteps=[500, 500, 0])
    with pytest.raises(ValueError, match=r"\[0, N - 1\]"):
        ddim_sample(sched, eps, x, timesteps=[1000, 0])
    with pytest.raises(ValueError, match="exactly one"):
        ddim_sample(sched, eps, x)
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(sched, eps, x, n_steps=5, eta=-1.0)
    with pytest.raises(ValueError, match="more noise"):
        ddim_sample(sched, eps, x, n_steps=5, eta=5.0)
    with pytest.raises(TypeError, match="DiscreteSchedule"):
        ddpm_sample(linear_betas(10), eps, x)
    with pytest.raises(ValueError, match="x's shape"):
        ddim_sample(sched, lambda x, t: x[:, :1], x, n_steps=3)
    with pytest.raises(ValueError, match="variance"):
        ddpm_sample(sched, eps, x, variance="learned")
    with pytest.raises(ValueError, match="x_T"):
        ddpm_sample(sched, eps, torch.randn(3))
    with pytest.raises(ValueError, match=r"\[1, N - 1\]"):
        posterior(sched, x, x, 0)
