"""Exercise checkers for chapter 3: DDPM and DDIM."""
from __future__ import annotations

import math

import torch

from ._common import _checker, _close, _Wrong

__all__ = [
    "check_forward_variance",
    "check_posterior_mean_var",
    "check_ddim_step",
    "check_vlb_weight",
]


def _betas():
    from ..schedules import linear_betas
    return linear_betas(1000)


@_checker
def check_forward_variance(forward_variance):
    """Exercise 3.1: ``forward_variance(betas)`` -> (N,) Var(x_i | x0) per coordinate after each step of
    x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) eps, starting from x0 (variance 0)."""
    from ..schedules import alpha_bars, cosine_betas
    for betas in (_betas(), cosine_betas(200), torch.tensor([0.5, 0.1, 0.9], dtype=torch.float64)):
        got = torch.as_tensor(forward_variance(betas), dtype=torch.float64)
        _close(got, 1 - alpha_bars(betas), f"Var(x_i | x0) for {len(betas)} betas", atol=1e-10, rtol=1e-8)
    # and the recursion it describes, simulated
    g = torch.Generator().manual_seed(1)
    betas = torch.tensor([0.3, 0.2, 0.4], dtype=torch.float64)
    x = torch.zeros(400_000, dtype=torch.float64)
    for b in betas:
        x = math.sqrt(1 - b) * x + math.sqrt(b) * torch.randn(len(x), generator=g, dtype=torch.float64)
    got = float(torch.as_tensor(forward_variance(betas))[-1])
    if abs(got - x.var().item()) > 0.01:
        raise _Wrong(f"after 3 steps you give {got:.4f}, a simulation gives {x.var().item():.4f}")
    return "the variance is 1 - prod(1 - beta): what is left of x0's weight squared, subtracted from 1."


@_checker
def check_posterior_mean_var(posterior_mean_var):
    """Exercise 3.2: ``posterior_mean_var(x0, xt, ab_prev, ab, beta)`` -> (mean, var) of q(x_{i-1} | x_i, x0)."""
    from ..ddpm import posterior
    from ..schedules import DiscreteSchedule
    sched = DiscreteSchedule(_betas())
    x0 = torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64)
    xt = torch.tensor([0.2, 0.3, -2.0], dtype=torch.float64)
    for i in (1, 10, 300, 999):
        ab_prev, ab, beta = sched.alpha_bars[i - 1].item(), sched.alpha_bars[i].item(), sched.betas[i].item()
        mean, var = posterior_mean_var(x0, xt, ab_prev, ab, beta)
        want_mean, want_var = posterior(sched, x0, xt, i)
        _close(mean, want_mean, f"the posterior mean at i = {i}", atol=1e-9, rtol=1e-7)
        _close(float(var), want_var, f"the posterior variance at i = {i}", atol=1e-12, rtol=1e-7)
    return "matches the course's closed form (which the tests check against sampling)."


@_checker
def check_ddim_step(ddim_step):
    """Exercise 3.3: ``ddim_step(x, eps_hat, ab, ab_next, eta, z)`` -> x at the next (less noisy) index."""
    from ..ddpm import ddim_sample
    from ..schedules import DiscreteSchedule
    sched = DiscreteSchedule(_betas())
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 2, generator=g, dtype=torch.float64)
    eps_hat = 0.3 * x  # any fixed prediction
    for i, s, eta in [(800, 600, 0.0), (800, 600, 1.0), (500, 499, 0.5), (20, -1, 0.0)]:
        z = torch.randn(6, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        ab, ab_next = sched.alpha_bars[i].item(), (1.0 if s < 0 else sched.alpha_bars[s].item())
        got = ddim_step(x, eps_hat, ab, ab_next, eta, z)
        steps = [i] if s < 0 else [i, s]
        want = ddim_sample(sched, lambda x_, t_: 0.3 * x_, x, timesteps=steps, eta=eta,
                           generator=torch.Generator().manual_seed(4), return_path=True).xs[1]
        _close(got, want, f"the step from index {i} to {s} with eta = {eta}", atol=1e-9, rtol=1e-7)
    return "your step is DDIM's; with eta = 0 it adds no noise, with eta = 1 it is DDPM's posterior step."


@_checker
def check_vlb_weight(vlb_weight):
    """Exercise 3.4: ``vlb_weight(beta, ab, var)`` = w such that KL(q(x_{i-1}|x_i,x0) || p(x_{i-1}|x_i)) =
    w |eps - eps_hat|^2 + (a term free of eps_hat), for p with the eps-parameterised mean and variance var."""
    from ..schedules import DiscreteSchedule
    sched = DiscreteSchedule(_betas())
    g = torch.Generator().manual_seed(5)
    for i in (1, 100, 900):
        ab_prev, ab, beta = sched.alpha_bars[i - 1].item(), sched.alpha_bars[i].item(), sched.betas[i].item()
        for var in (beta, (1 - ab_prev) / (1 - ab) * beta):
            x0, eps = torch.randn(4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
            xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
            q_mean = (xt - beta / math.sqrt(1 - ab) * eps) / math.sqrt(1 - beta)
            kls = []
            for eps_hat in (eps, eps + 0.3, eps - 0.7 * torch.ones(4, dtype=torch.float64)):
                p_mean = (xt - beta / math.sqrt(1 - ab) * eps_hat) / math.sqrt(1 - beta)
                kls.append(((q_mean - p_mean) ** 2).sum().item() / (2 * var))  # the eps_hat-dependent part
            for k, eps_hat in enumerate((eps + 0.3, eps - 0.7 * torch.ones(4, dtype=torch.float64))):
                w = float(vlb_weight(beta, ab, var))
                want = kls[k + 1] - kls[0]
                got = w * ((eps - eps_hat) ** 2).sum().item()
                if abs(got - want) > 1e-9 * max(1.0, abs(want)):
                    raise _Wrong(f"at i = {i}, variance {var:.3g}: your weight gives {got:.6g}, the KL's difference "
                                 f"is {want:.6g}")
    from ..schedules import alpha_bars
    ab = alpha_bars(_betas())
    betas = _betas()
    w = [float(vlb_weight(betas[i].item(), ab[i].item(), betas[i].item())) for i in (1, 999)]
    return (f"the VLB weights the noise error by beta^2 / (2 var (1 - beta)(1 - alpha_bar)): {w[0]:.3g} at i = 1 "
            f"against {w[1]:.3g} at i = 999 with var = beta, which L_simple replaces by 1.")
