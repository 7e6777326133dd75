"""Exercise checkers for chapter 1: SDEs, Fokker-Planck and the reverse process."""
from __future__ import annotations

import torch

from ._common import _checker, _close, _Wrong

__all__ = [
    "check_wiener_paths",
    "check_ou_marginal",
    "check_vp_reverse_drift",
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
    if abs(dW.var().item() / h - 1) > 0.03:
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
def check_vp_reverse_drift(vp_reverse_drift):
    """Exercise 1.3: ``vp_reverse_drift(x, beta, score)`` -> Anderson's reverse drift of the VP SDE."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 2, generator=g, dtype=torch.float64)
    score = torch.randn(6, 2, generator=g, dtype=torch.float64)
    for beta in (0.5, 7.0):
        _close(vp_reverse_drift(x, beta, score), -0.5 * beta * x - beta * score, f"drift at beta={beta}")
    return "f - g^2 score = -beta x / 2 - beta score."


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
