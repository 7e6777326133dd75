"""Exercise checkers for chapter 2: score matching."""
from __future__ import annotations

import math

import torch

from ._common import _checker, _close, _Wrong

__all__ = [
    "check_fisher_divergence_1d",
    "check_dsm_linear_minimiser",
    "check_tweedie_denoise",
    "check_dsm_floor",
]


@_checker
def check_fisher_divergence_1d(fisher_divergence_1d):
    """Exercise 2.1: ``fisher_divergence_1d(m1, v1, m2, v2)`` = 1/2 E_p[(s_q - s_p)^2] for
    p = N(m1, v1), q = N(m2, v2) (v: variances)."""
    g = torch.Generator().manual_seed(2)
    for m1, v1, m2, v2 in [(0.0, 1.0, 0.0, 1.0), (0.5, 2.0, -1.0, 0.5), (1.0, 0.3, 1.0, 0.9)]:
        x = m1 + math.sqrt(v1) * torch.randn(400_000, generator=g, dtype=torch.float64)
        mc = 0.5 * (((x - m1) / v1 - (x - m2) / v2) ** 2)
        got = float(fisher_divergence_1d(m1, v1, m2, v2))
        se = mc.std().item() / math.sqrt(len(x))
        if abs(got - mc.mean().item()) > 5 * se + 1e-9:
            raise _Wrong(f"for p = N({m1}, {v1}), q = N({m2}, {v2}) you give {got:.4f}, but a Monte Carlo "
                         f"estimate is {mc.mean():.4f} +- {se:.4f}")
    return "matches Monte Carlo estimates, and is 0 for identical Gaussians."


@_checker
def check_dsm_linear_minimiser(dsm_linear_minimiser):
    """Exercise 2.2: ``dsm_linear_minimiser(m, v, sigma)`` -> (a, b): the minimiser of the DSM objective
    E|a x~ + b + eps / sigma|^2, x~ = x + sigma eps, x ~ N(m, v), over linear models s(x~) = a x~ + b."""
    g = torch.Generator().manual_seed(5)
    for m, v, sigma in [(1.0, 0.5, 0.3), (-2.0, 2.0, 1.0)]:
        a, b = (float(c) for c in dsm_linear_minimiser(m, v, sigma))
        # the DSM objective itself, sampled: its least-squares fit over (a, b) on a million pairs
        x = m + math.sqrt(v) * torch.randn(1_000_000, generator=g, dtype=torch.float64)
        eps = torch.randn(1_000_000, generator=g, dtype=torch.float64)
        x_tilde, target = x + sigma * eps, -eps / sigma
        design = torch.stack([x_tilde, torch.ones_like(x_tilde)], 1)
        fit = torch.linalg.lstsq(design, target[:, None]).solution.flatten()
        _close([a, b], fit, f"(a, b) against the sampled DSM objective's least-squares fit at m={m}, v={v}, "
               f"sigma={sigma}", atol=2e-2 / sigma, rtol=2e-2)
        _close([a, b], [-1 / (v + sigma ** 2), m / (v + sigma ** 2)],
               "(a, b) against the score of the noised data N(m, v + sigma^2)", atol=1e-9, rtol=1e-9)
    return "DSM's minimiser is the score of N(m, v + sigma^2): the noised data, not the clean data."


@_checker
def check_tweedie_denoise(tweedie_denoise):
    """Exercise 2.3: ``tweedie_denoise(xt, score, alpha, sigma)`` = E[x0 | xt] = (xt + sigma^2 score) / alpha."""
    mu = torch.tensor([0.5, -1.0], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    for alpha, sigma in [(0.9, 0.3), (0.5, 0.8)]:
        cov_t = alpha ** 2 * cov + sigma ** 2 * torch.eye(2, dtype=torch.float64)
        xt = alpha * mu + torch.randn(6, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov_t).T
        score = -(xt - alpha * mu) @ torch.linalg.inv(cov_t)
        # Gaussian conditioning: E[x0 | xt] = mu + alpha Sigma (alpha^2 Sigma + sigma^2 I)^{-1} (xt - alpha mu)
        want = mu + (xt - alpha * mu) @ torch.linalg.inv(cov_t) @ (alpha * cov)
        _close(tweedie_denoise(xt, score, alpha, sigma), want, f"E[x0 | xt] at alpha={alpha}, sigma={sigma}")
    return "equals the Gaussian posterior mean: the score is a denoiser."


@_checker
def check_dsm_floor(dsm_floor):
    """Exercise 2.4: ``dsm_floor(v, alpha, sigma, lam)`` = lam E[(-eps / sigma - d/dx log p_t(x_t))^2], the
    DSM loss of the exact score at one time, for 1-D data N(0, v) and x_t = alpha x0 + sigma eps."""
    g = torch.Generator().manual_seed(6)
    for v, alpha, sigma in [(1.0, 0.999, 0.01), (0.5, 0.8, 0.6), (2.0, 0.05, 0.999)]:
        x0 = math.sqrt(v) * torch.randn(1_000_000, generator=g, dtype=torch.float64)
        eps = torch.randn(1_000_000, generator=g, dtype=torch.float64)
        xt = alpha * x0 + sigma * eps
        per_example = (-eps / sigma + xt / (alpha ** 2 * v + sigma ** 2)) ** 2  # the exact score of N(0, a^2 v + s^2)
        for lam, lam_name in [(1.0, "lambda = 1"), (sigma ** 2, "lambda = sigma^2")]:
            mc = lam * per_example
            se = mc.std().item() / math.sqrt(len(mc))
            got = float(dsm_floor(v, alpha, sigma, lam))
            if abs(got - mc.mean().item()) > 5 * se + 1e-12:
                raise _Wrong(f"at v={v}, alpha={alpha}, sigma={sigma}, {lam_name}: you give {got:.5g}, a Monte "
                             f"Carlo estimate of the exact score's DSM loss is {mc.mean():.5g} +- {se:.2g}")
    from ..sde import VPSDE
    vp = VPSDE()
    t = torch.tensor([1e-3, 1.0], dtype=torch.float64)
    a, s = vp.alpha(t), vp.sigma(t)
    plain = [float(dsm_floor(1.0, a[k].item(), s[k].item(), 1.0)) for k in range(2)]
    weighted = [float(dsm_floor(1.0, a[k].item(), s[k].item(), s[k].item() ** 2)) for k in range(2)]
    return (f"matches Monte Carlo. For unit-variance data under the VP SDE the floor at t = 0.001 and t = 1 is "
            f"{plain[0]:.3g} and {plain[1]:.2g} with lambda = 1, {weighted[0]:.3g} and {weighted[1]:.2g} with "
            f"lambda = sigma^2.")
