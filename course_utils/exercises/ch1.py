"""Exercise checkers for chapter 1: SDEs, Fokker-Planck and the reverse process."""
from __future__ import annotations

import math

import torch

from ._common import _checker, _close, _Wrong

__all__ = [
    "check_wiener_paths",
    "check_ou_marginal",
    "check_gaussian_flow",
    "check_stationary_log_density",
]


@_checker
def check_wiener_paths(wiener_paths):
    """Exercise 1.1: ``wiener_paths(n_paths, n_steps, T, generator)`` -> (n_paths, n_steps + 1) Brownian
    paths on the grid t_k = k T / n_steps, starting at 0."""
    W = torch.as_tensor(wiener_paths(20_000, 50, 2.0, torch.Generator().manual_seed(0)), dtype=torch.float64)
    if W.shape != (20_000, 51):
        raise _Wrong(f"expected shape (n_paths, n_steps + 1) = (20000, 51), got {tuple(W.shape)}")
    if W[:, 0].abs().max() > 0:
        raise _Wrong("paths must start at W(0) = 0")
    dW = W[:, 1:] - W[:, :-1]
    h = 2.0 / 50
    if abs(dW.var().item() / h - 1) > 0.01:  # 10^6 increments: the standard error is 0.14%
        raise _Wrong(f"increments should have variance h = {h}, got {dW.var().item():.4f}")
    if abs(W[:, -1].var().item() / 2.0 - 1) > 0.05:
        raise _Wrong(f"Var W(T) should be T = 2, got {W[:, -1].var().item():.3f}")
    corr = torch.corrcoef(torch.stack([dW[:, 10], dW[:, 11]]))[0, 1].item()
    if abs(corr) > 0.05:
        raise _Wrong(f"consecutive increments should be independent, but their correlation is {corr:.3f}")
    kurt = ((dW - dW.mean()) ** 4).mean().item() / dW.var().item() ** 2
    if abs(kurt - 3) > 0.15:
        raise _Wrong(f"increments should be Gaussian (kurtosis 3), got kurtosis {kurt:.2f}")
    return "Gaussian, independent increments of variance h; Var W(T) = T."


@_checker
def check_ou_marginal(ou_marginal):
    """Exercise 1.2: ``ou_marginal(theta, s, x0, t)`` -> (mean, variance) of X_t for dX = -theta X dt + s dW."""
    from ..sde import OUSDE
    for theta, s, x0, t in [(1.0, 1.0, 2.0, 0.5), (0.3, 2.0, -1.0, 3.0), (4.0, 0.5, 0.7, 0.1)]:
        ou = OUSDE(theta, s, T=10.0)
        tt = torch.tensor(t, dtype=torch.float64)
        mean, var = ou_marginal(theta, s, x0, t)
        _close(mean, ou.alpha(tt) * x0, f"mean at theta={theta}, s={s}, x0={x0}, t={t}")
        _close(var, ou.sigma(tt) ** 2, f"variance at theta={theta}, s={s}, x0={x0}, t={t}")
    return "mean x0 e^{-theta t} and variance s^2 (1 - e^{-2 theta t}) / (2 theta)."


@_checker
def check_gaussian_flow(gaussian_flow):
    """Exercise 1.3: ``gaussian_flow(x_T, m, v, n_steps)``: Euler's method on the probability-flow ODE of
    ``VPSDE()`` from t = 1 down to t = 1e-3 for 1-D data N(m, v), with the closed-form score of
    p_t = N(alpha m, alpha^2 v + sigma^2); x_T has shape (n,)."""
    from ..sde import VPSDE
    vp = VPSDE()

    def coefs(t):
        tt = torch.tensor(t, dtype=torch.float64)
        return vp.alpha(tt).item(), vp.sigma(tt).item()
    (a_T, s_T), (a_0, s_0) = coefs(1.0), coefs(1e-3)
    g = torch.Generator().manual_seed(4)
    for m, v in [(1.5, 0.25), (-0.7, 2.0)]:
        sd_T = math.sqrt(a_T ** 2 * v + s_T ** 2)
        x_T = a_T * m + sd_T * torch.randn(20_000, generator=g, dtype=torch.float64)  # exactly p_T
        got = torch.as_tensor(gaussian_flow(x_T.clone(), m, v, 1000), dtype=torch.float64)
        if got.shape != x_T.shape:
            raise _Wrong(f"expected shape {tuple(x_T.shape)}, got {tuple(got.shape)}")
        # the exact flow of a Gaussian is affine: standardise at T, rescale at t_min
        exact = a_0 * m + math.sqrt(a_0 ** 2 * v + s_0 ** 2) / sd_T * (x_T - a_T * m)
        err = (got - exact).abs().max().item()
        if not err < 0.01:
            raise _Wrong(f"for N({m}, {v}) the points land up to {err:.3g} away from the exact flow "
                         f"(mean {got.mean().item():.3f}, variance {got.var().item():.4g}; want {m}, {v}). "
                         "Check the 1/2 in front of g^2 and the sign of the score.")
    return "the prior's points flow onto N(m, v): mean and variance restored, to Euler's O(h) error."


@_checker
def check_stationary_log_density(stationary_log_density):
    """Exercise 1.4: ``stationary_log_density(x, g)``: log of the stationary density (up to a constant)
    of dX = (X - X^3) dt + g dW."""
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    for g in (0.6, 1.2):
        got = torch.as_tensor(stationary_log_density(x, g), dtype=torch.float64)
        want = -2.0 * (x ** 4 / 4 - x ** 2 / 2) / g ** 2
        if got.shape != want.shape:
            raise _Wrong(f"expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
        _close(got - got.max(), want - want.max(), f"log-density shape at g={g}", atol=1e-6)
    return "p(x) is proportional to exp(-2 U(x) / g^2) with U = x^4/4 - x^2/2: the flux f p - g^2 p' / 2 vanishes."
