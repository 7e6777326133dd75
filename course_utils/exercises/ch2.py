"""Exercise checkers for chapter 2: score matching."""
from __future__ import annotations

import math

import torch

from ._common import _checker, _close, _Wrong

__all__ = [
    "check_fisher_divergence_1d",
    "check_ssm_one_projection",
    "check_tweedie_denoise",
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
def check_ssm_one_projection(ssm_one_projection):
    """Exercise 2.2: ``ssm_one_projection(score_fn, x, v)`` = v^T (grad s) v + 1/2 (v^T s)^2 per example."""
    from ..losses import ssm_loss
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    want = ssm_loss(net, x, kind="gaussian", generator=g)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)  # the same probe
    got = ssm_one_projection(net, x, v)
    _close(torch.as_tensor(got).detach(), want.detach(), "per-example sliced score-matching loss")
    return "matches course_utils.losses.ssm_loss with the same projection."


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
