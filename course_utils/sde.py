"""Stochastic differential equations (chapter 1): forward processes with closed-form marginals,
Euler-Maruyama, and Anderson's reverse-time drift.

Forward SDE  dX = f(X, t) dt + g(t) dW,  t in [0, T], with marginals x_t = alpha(t) x0 + sigma(t) eps
(Eq. 1.4 of chapter 1). Reverse SDE (Anderson 1982, Eq. 1.5) and probability-flow ODE (Eq. 1.6) share
one drift,

    reverse_drift = f(x, t) - lam * g(t)^2 * score(x, t),   lam = 1: reverse SDE, lam = 1/2: ODE.

Time coefficients are broadcast with ``append_dims``, so 1-D, 2-D and image-shaped states all go
through the same code.
"""
from __future__ import annotations

import math

import torch

from . import append_dims
from ._checks import check_generator

__all__ = ["SDE", "VPSDE", "VESDE", "OUSDE", "euler_maruyama", "reverse_drift", "check_time_grid",
           "mixture_score_fn"]


def _as_time(t, x: torch.Tensor) -> torch.Tensor:
    """t as a (B,) tensor matching x's batch (a float or 0-d tensor is repeated)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a scalar or have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
    return t


def _coef(c, x: torch.Tensor) -> torch.Tensor:
    """A time coefficient (scalar or (B,)) in x's dtype, broadcastable against x (B, *D)."""
    c = torch.as_tensor(c, dtype=x.dtype, device=x.device)
    return append_dims(c, x.ndim) if c.ndim == 1 else c


def check_time_grid(ts, T: float | None = None) -> torch.Tensor:
    """A 1-D, finite, strictly monotone time grid (increasing or decreasing), inside [0, T] if T given."""
    ts = torch.as_tensor(ts)
    if not ts.is_floating_point():
        ts = ts.double()
    if ts.ndim != 1 or len(ts) < 2:
        raise ValueError(f"ts must be a 1-D grid of at least 2 times, got shape {tuple(ts.shape)}")
    if not torch.isfinite(ts).all():
        raise ValueError("ts must be finite")
    d = ts[1:] - ts[:-1]
    if not ((d > 0).all() or (d < 0).all()):
        raise ValueError("ts must be strictly monotone (all increasing or all decreasing)")
    if T is not None and (ts.min() < 0 or ts.max() > T * (1 + 1e-12)):
        raise ValueError(f"ts must lie in [0, T] = [0, {T}], got [{ts.min().item()}, {ts.max().item()}]")
    return ts


class SDE:
    """A forward SDE dX = f(X, t) dt + g(t) dW on [0, T] with Gaussian marginals given x0:
    x_t = alpha(t) x0 + sigma(t) eps. Subclasses define ``drift_coef`` (f = drift_coef(t) * x),
    ``diffusion``, ``alpha`` and ``sigma``; t is a float or a (B,) tensor."""

    T: float = 1.0

    def drift_coef(self, t):
        raise NotImplementedError

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        """f(x, t), same shape as x."""
        t = self._t(t, x)
        return _coef(self.drift_coef(t), x) * x

    def diffusion(self, t):
        raise NotImplementedError

    def alpha(self, t):
        raise NotImplementedError

    def sigma(self, t):
        raise NotImplementedError

    def _t(self, t, x):
        t = _as_time(t, x)
        if (t < 0).any() or (t > self.T * (1 + 1e-12)).any():
            raise ValueError(f"t must lie in [0, T] = [0, {self.T}], got values in "
                             f"[{t.min().item():.4g}, {t.max().item():.4g}]")
        return t

    def perturb(self, x0: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """x_t = alpha(t) x0 + sigma(t) eps (exact sample of the forward marginal given x0)."""
        if eps.shape != x0.shape:
            raise ValueError(f"eps must have the shape of x0 {tuple(x0.shape)}, got {tuple(eps.shape)}")
        t = self._t(t, x0)
        return _coef(self.alpha(t), x0) * x0 + _coef(self.sigma(t), x0) * eps

    def prior_sample(self, shape, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        """Approximate x_T ~ N(0, (alpha(T)^2 + sigma(T)^2) I) for standardised data; see subclasses."""
        check_generator("generator", generator)
        s = math.sqrt(self.prior_var())
        return s * torch.randn(shape, generator=generator, dtype=dtype)

    def prior_var(self) -> float:
        t = torch.tensor(float(self.T), dtype=torch.float64)
        return float(self.sigma(t) ** 2)

    def marginal(self, mixture, t: float):
        """The exact law of x_t when x0 follows a ``GaussianMixture``: another mixture."""
        t = float(t)
        if not 0 <= t <= self.T:
            raise ValueError(f"t must lie in [0, T] = [0, {self.T}], got {t}")
        tt = torch.tensor(t, dtype=torch.float64)
        return mixture.noised(float(self.alpha(tt)), float(self.sigma(tt)))


class VPSDE(SDE):
    """Variance preserving: dX = -1/2 beta(t) X dt + sqrt(beta(t)) dW, beta linear from beta_min to
    beta_max (Song et al. 2021). alpha = exp(-1/2 int_0^t beta), sigma^2 = 1 - alpha^2."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        if not (0 < beta_min <= beta_max) or not math.isfinite(beta_max):
            raise ValueError(f"need 0 < beta_min <= beta_max < inf, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max, self.T = float(beta_min), float(beta_max), float(T)

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def drift_coef(self, t):
        return -0.5 * self.beta(t)

    def diffusion(self, t):
        return torch.sqrt(torch.as_tensor(self.beta(t)))

    def alpha(self, t):
        t = torch.as_tensor(t)
        return torch.exp(-0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min)

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(-0.5 * t ** 2 * (self.beta_max - self.beta_min) - t * self.beta_min))

    def prior_var(self) -> float:
        return 1.0  # alpha(T)^2 Var[x0] + sigma(T)^2 -> 1 for unit-scale data


class VESDE(SDE):
    """Variance exploding: dX = g(t) dW with g(t) = s(t) sqrt(2 log(s_max / s_min)),
    s(t) = s_min (s_max / s_min)^t. Exactly, sigma(t)^2 = int_0^t g^2 = s(t)^2 - s_min^2; alpha = 1."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 10.0, T: float = 1.0):
        if not (0 < sigma_min < sigma_max) or not math.isfinite(sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max, self.T = float(sigma_min), float(sigma_max), float(T)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def _s(self, t):
        return self.sigma_min * torch.exp(torch.as_tensor(t) * self._log_ratio)

    def drift_coef(self, t):
        return torch.zeros_like(torch.as_tensor(t))

    def diffusion(self, t):
        return self._s(t) * math.sqrt(2 * self._log_ratio)

    def alpha(self, t):
        return torch.ones_like(torch.as_tensor(t))

    def sigma(self, t):
        return torch.sqrt(self._s(t) ** 2 - self.sigma_min ** 2)


class OUSDE(SDE):
    """Ornstein-Uhlenbeck: dX = -theta X dt + s dW. alpha = e^{-theta t},
    sigma^2 = s^2 (1 - e^{-2 theta t}) / (2 theta); stationary law N(0, s^2 / (2 theta))."""

    def __init__(self, theta: float = 1.0, s: float = 1.0, T: float = 5.0):
        if not (theta > 0 and s > 0):
            raise ValueError(f"theta and s must be positive, got theta={theta}, s={s}")
        self.theta, self.s, self.T = float(theta), float(s), float(T)

    def drift_coef(self, t):
        return torch.full_like(torch.as_tensor(t), -self.theta)

    def diffusion(self, t):
        return torch.full_like(torch.as_tensor(t), self.s)

    def alpha(self, t):
        return torch.exp(-self.theta * torch.as_tensor(t))

    def sigma(self, t):
        return self.s * torch.sqrt(-torch.expm1(-2 * self.theta * torch.as_tensor(t)) / (2 * self.theta))

    def prior_var(self) -> float:
        return self.s ** 2 / (2 * self.theta)


def euler_maruyama(f, g, x0: torch.Tensor, ts, generator: torch.Generator | None = None,
                   return_path: bool = False, dW: torch.Tensor | None = None):
    """Euler-Maruyama for dX = f(X, t) dt + g(X, t) dW along the grid ``ts`` (Eq. 1.2):

        x_{k+1} = x_k + f(x_k, t_k) (t_{k+1} - t_k) + g(x_k, t_k) sqrt(|t_{k+1} - t_k|) z_k,  z_k ~ N(0, I).

    ``ts`` may decrease (integrating backwards in time, as the reverse SDE does). ``g`` returns a
    scalar, a (B,) tensor, or a tensor of x's shape (state-dependent noise, e.g. geometric Brownian
    motion). ``dW`` optionally gives the Brownian increments (len(ts) - 1, *x0.shape) to use instead
    of fresh ones (strong-convergence studies). Returns x at ts[-1], or the whole path
    (len(ts), *x0.shape) with ``return_path``.
    """
    ts = check_time_grid(ts)
    check_generator("generator", generator)
    if dW is not None and dW.shape != (len(ts) - 1, *x0.shape):
        raise ValueError(f"dW must have shape (len(ts) - 1, *x0.shape) = {(len(ts) - 1, *x0.shape)}, "
                         f"got {tuple(dW.shape)}")
    x = x0
    path = [x0] if return_path else None
    for k in range(len(ts) - 1):
        t, h = ts[k].item(), (ts[k + 1] - ts[k]).item()
        drift = f(x, t)
        if drift.shape != x.shape:
            raise ValueError(f"f(x, t) must have the shape of x {tuple(x.shape)}, got {tuple(drift.shape)}")
        gx = torch.as_tensor(g(x, t), dtype=x.dtype, device=x.device)
        if not torch.isfinite(gx).all() or (gx < 0).any():
            raise ValueError(f"g(x, t) must be finite and non-negative; at t = {t:.4g} it is not")
        if gx.ndim == 1 and x.ndim > 1:
            gx = append_dims(gx, x.ndim)
        noise = dW[k] if dW is not None else \
            math.sqrt(abs(h)) * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = x + drift * h + gx * noise
        if return_path:
            path.append(x)
    return torch.stack(path) if return_path else x


def reverse_drift(sde: SDE, score_fn, x: torch.Tensor, t, lam: float = 1.0) -> torch.Tensor:
    """f(x, t) - lam g(t)^2 score(x, t): lam = 1 gives Anderson's reverse SDE, lam = 1/2 the
    probability-flow ODE (chapter 1, Eqs. 1.5 and 1.6). Integrate it with *decreasing* time."""
    tt = sde._t(t, x)
    s = score_fn(x, tt)
    if s.shape != x.shape:
        raise ValueError(f"score_fn must return the shape of x {tuple(x.shape)}, got {tuple(s.shape)}")
    g2 = _coef(sde.diffusion(tt), x) ** 2
    return sde.drift(x, tt) - lam * g2 * s


def mixture_score_fn(sde: SDE, mixture):
    """score_fn(x, t) = the exact score of the forward marginal p_t when x0 ~ ``mixture``
    (a GaussianMixture): p_t is the mixture noised with alpha(t), sigma(t). t may vary per example."""
    def score_fn(x, t):
        t = _as_time(t, x)
        out = torch.empty_like(x)
        for tv in torch.unique(t):
            idx = t == tv
            out[idx] = sde.marginal(mixture, float(tv)).score(x[idx]).to(x.dtype)
        return out
    return score_fn
