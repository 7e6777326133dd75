"""Stochastic differential equations (chapter 1): forward processes with closed-form marginals,
Euler-Maruyama, and Anderson's reverse-time drift.

Forward SDE  dX = f(X, t) dt + g(t) dW,  t in [0, T], with marginals x_t = alpha(t) x0 + sigma(t) eps
(Eq. 1.4 of chapter 1). Reverse SDE (Anderson 1982, Eq. 1.5) and probability-flow ODE (Eq. 1.6) share
one drift,

    reverse_drift = f(x, t) - lam * g(t)^2 * score(x, t),   lam = 1: reverse SDE, lam = 1/2: ODE.

Every ``SDE`` is a ``schedules.ForwardProcess``, so losses and samplers treat it like DDPM's discrete
schedule. Time coefficients are broadcast with ``append_dims``, so 1-D, 2-D and image-shaped states
all go through the same code; noise is drawn on the state's device (``tensors.randn``).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._checks import check_generator, check_tensor
from .schedules import ForwardProcess, _coef
from .tensors import append_dims, as_time, randn

__all__ = ["SDE", "VPSDE", "VESDE", "OUSDE", "Trajectory", "euler_maruyama", "reverse_drift",
           "check_time_grid", "mixture_score_fn"]


class Trajectory(NamedTuple):
    """What every sampler returns with ``return_path=True``: the times ``ts`` (K,) (float64, CPU) and
    the states ``xs`` (K, *x.shape) at those times, first to last."""
    ts: torch.Tensor
    xs: torch.Tensor


def check_time_grid(ts, T: float | None = None, name: str = "ts") -> torch.Tensor:
    """A 1-D, finite, strictly monotone time grid (increasing or decreasing), inside [0, T] if T given.
    Returned as float64 on the CPU (grid times are read as Python floats)."""
    # Python numbers become float64 directly (through float32 they would lose digits)
    ts = ts.to("cpu") if isinstance(ts, torch.Tensor) else torch.as_tensor(ts, dtype=torch.float64, device="cpu")
    if ts.dtype == torch.bool:
        raise ValueError(f"{name} must be a grid of times, got a boolean tensor")
    ts = ts.double()
    if ts.ndim != 1 or len(ts) < 2:
        raise ValueError(f"{name} must be a 1-D grid of at least 2 times, got shape {tuple(ts.shape)}")
    if not torch.isfinite(ts).all():
        raise ValueError(f"{name} must be finite")
    d = ts[1:] - ts[:-1]
    if not ((d > 0).all() or (d < 0).all()):
        raise ValueError(f"{name} must be strictly monotone (all increasing or all decreasing)")
    if T is not None and (ts.min() < 0 or ts.max() > T * (1 + 1e-12)):
        raise ValueError(f"{name} must lie in [0, T] = [0, {T}], got [{ts.min().item()}, {ts.max().item()}]")
    return ts


def _time_tensor(t) -> torch.Tensor:
    """A time given to a coefficient function (float or tensor) as a floating tensor."""
    if isinstance(t, torch.Tensor):
        return t if t.is_floating_point() else t.double()
    return torch.tensor(float(t), dtype=torch.float64, device="cpu")


class SDE(ForwardProcess):
    """A forward SDE dX = f(X, t) dt + g(t) dW on [0, T] with Gaussian marginals given x0:
    x_t = alpha(t) x0 + sigma(t) eps. Subclasses define ``drift_coef`` (f = drift_coef(t) * x),
    ``diffusion``, ``alpha`` and ``sigma``, each taking t as a float or a tensor."""

    def _set_T(self, T) -> None:
        if isinstance(T, bool) or not isinstance(T, (int, float)) or not (math.isfinite(T) and T > 0):
            raise ValueError(f"T must be a positive, finite number, got {T!r}")
        self.T = float(T)

    def drift_coef(self, t):
        raise NotImplementedError

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        """f(x, t), same shape as x."""
        t = self.check_time(t, x)
        return _coef(self.drift_coef(t), x) * x

    def diffusion(self, t):
        raise NotImplementedError

    def prior_var(self) -> float:
        """The variance of the prior ``prior_sample`` draws: sigma(T)^2, which neglects the data's share
        alpha(T)^2 Var[x0] (subclasses whose alpha(T) is not small override this)."""
        return float(self.sigma(torch.tensor(self.T, dtype=torch.float64, device="cpu")) ** 2)

    def prior_sample(self, shape, *, generator: torch.Generator | None = None, dtype=torch.float32,
                     device=None) -> torch.Tensor:
        """x_T ~ N(0, prior_var() I), the approximate law of x_T from which the reverse process starts."""
        check_generator("generator", generator)
        return math.sqrt(self.prior_var()) * randn(shape, generator=generator, dtype=dtype, device=device)

    def marginal(self, mixture, t: float):
        """The exact law of x_t when x0 follows a ``GaussianMixture``: another mixture."""
        t = float(t)
        if not 0 <= t <= self.T:
            raise ValueError(f"t must lie in [0, T] = [0, {self.T}], got {t}")
        tt = torch.tensor(t, dtype=torch.float64, device="cpu")
        return mixture.noised(float(self.alpha(tt)), float(self.sigma(tt)))


class VPSDE(SDE):
    """Variance preserving: dX = -1/2 beta(t) X dt + sqrt(beta(t)) dW, beta linear from beta_min to
    beta_max (Song et al. 2021). alpha = exp(-1/2 int_0^t beta), sigma^2 = 1 - alpha^2."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        if not (0 < beta_min <= beta_max) or not math.isfinite(beta_max):
            raise ValueError(f"need 0 < beta_min <= beta_max < inf, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self._set_T(T)

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_alpha(self, t):
        return -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def drift_coef(self, t):
        return -0.5 * self.beta(_time_tensor(t))

    def diffusion(self, t):
        return torch.sqrt(self.beta(_time_tensor(t)))

    def alpha(self, t):
        return torch.exp(self._log_alpha(_time_tensor(t)))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(2 * self._log_alpha(_time_tensor(t))))

    def prior_var(self) -> float:
        return 1.0  # alpha(T)^2 Var[x0] + sigma(T)^2 -> 1 for unit-scale data


class VESDE(SDE):
    """Variance exploding: dX = g(t) dW with g(t) = s(t) sqrt(2 log(s_max / s_min)),
    s(t) = s_min (s_max / s_min)^t. Exactly, sigma(t)^2 = int_0^t g^2 = s(t)^2 - s_min^2; alpha = 1."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 10.0, T: float = 1.0):
        if not (0 < sigma_min < sigma_max) or not math.isfinite(sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._set_T(T)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def _s(self, t):
        return self.sigma_min * torch.exp(_time_tensor(t) * self._log_ratio)

    def drift_coef(self, t):
        return torch.zeros_like(_time_tensor(t))

    def diffusion(self, t):
        return self._s(t) * math.sqrt(2 * self._log_ratio)

    def alpha(self, t):
        return torch.ones_like(_time_tensor(t))

    def sigma(self, t):
        return torch.sqrt(self._s(t) ** 2 - self.sigma_min ** 2)


class OUSDE(SDE):
    """Ornstein-Uhlenbeck: dX = -theta X dt + s dW. alpha = e^{-theta t},
    sigma^2 = s^2 (1 - e^{-2 theta t}) / (2 theta); stationary law N(0, s^2 / (2 theta))."""

    def __init__(self, theta: float = 1.0, s: float = 1.0, T: float = 5.0):
        if not (theta > 0 and s > 0):
            raise ValueError(f"theta and s must be positive, got theta={theta}, s={s}")
        self.theta, self.s = float(theta), float(s)
        self._set_T(T)

    def drift_coef(self, t):
        return torch.full_like(_time_tensor(t), -self.theta)

    def diffusion(self, t):
        return torch.full_like(_time_tensor(t), self.s)

    def alpha(self, t):
        return torch.exp(-self.theta * _time_tensor(t))

    def sigma(self, t):
        return self.s * torch.sqrt(-torch.expm1(-2 * self.theta * _time_tensor(t)) / (2 * self.theta))

    def prior_var(self) -> float:
        return self.s ** 2 / (2 * self.theta)


def euler_maruyama(f, g, x0: torch.Tensor, ts, *, generator: torch.Generator | None = None,
                   dW: torch.Tensor | None = None, return_path: bool = False, callback=None):
    """Euler-Maruyama for dX = f(X, t) dt + g(X, t) dW along the grid ``ts`` (Eq. 1.2):

        x_{k+1} = x_k + f(x_k, t_k) (t_{k+1} - t_k) + g(x_k, t_k) sqrt(|t_{k+1} - t_k|) z_k,  z_k ~ N(0, I).

    Both coefficients are evaluated at the *start* of each step (that is what makes the scheme Ito).
    ``ts`` may decrease (integrating backwards in time, as the reverse SDE does). ``f(x, t)`` and
    ``g(x, t)`` get t as a Python float; ``g`` returns a scalar, a (B,) tensor, or a tensor of x's
    shape (state-dependent noise, e.g. geometric Brownian motion). ``dW`` optionally gives the Brownian
    increments (len(ts) - 1, *x0.shape) to use instead of fresh ones (strong-convergence studies).
    ``callback(dict(i=k, t=t_k, x=x_k))`` is called before each step. Returns x at ts[-1], or with
    ``return_path`` a ``Trajectory(ts, xs)`` with xs of shape (len(ts), *x0.shape).
    """
    ts = check_time_grid(ts)
    check_tensor("x0", x0)
    check_generator("generator", generator)
    if dW is not None and (not isinstance(dW, torch.Tensor) or dW.shape != (len(ts) - 1, *x0.shape)):
        got = tuple(dW.shape) if isinstance(dW, torch.Tensor) else type(dW).__name__
        raise ValueError(f"dW must have shape (len(ts) - 1, *x0.shape) = {(len(ts) - 1, *x0.shape)}, got {got}")
    if dW is not None and dW.dtype != x0.dtype:
        raise ValueError(f"dW must have x0's dtype {x0.dtype}, got {dW.dtype}")
    x = x0
    path = [x0] if return_path else None
    for k in range(len(ts) - 1):
        t, h = ts[k].item(), (ts[k + 1] - ts[k]).item()
        drift = f(x, t)
        if not isinstance(drift, torch.Tensor) or drift.shape != x.shape:
            got = tuple(drift.shape) if isinstance(drift, torch.Tensor) else type(drift).__name__
            raise ValueError(f"f(x, t) must have the shape of x {tuple(x.shape)}, got {got}")
        gx = torch.as_tensor(g(x, t), dtype=x.dtype, device=x.device)
        if not torch.isfinite(gx).all() or (gx < 0).any():
            raise ValueError(f"g(x, t) must be finite and non-negative; at t = {t:.4g} it is not")
        if gx.ndim == 1 and x.ndim > 1:
            gx = append_dims(gx, x.ndim)
        if callback is not None:
            callback(dict(i=k, t=t, x=x))
        if dW is not None:
            noise = dW[k].to(x.device)
        else:
            noise = math.sqrt(abs(h)) * randn(x.shape, like=x, generator=generator)
        x = x + drift * h + gx * noise
        if return_path:
            path.append(x)
    return Trajectory(ts, torch.stack(path)) if return_path else x


def _score(score_fn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    s = score_fn(x, t)
    if not isinstance(s, torch.Tensor) or s.shape != x.shape:
        got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise ValueError(f"score_fn must return the shape of x {tuple(x.shape)}, got {got}")
    return s


def drift_from_score(sde: SDE, x: torch.Tensor, t: torch.Tensor, score: torch.Tensor, lam: float) -> torch.Tensor:
    """f(x, t) - lam g(t)^2 score for a score already evaluated at (x, t) (t a checked (B,) tensor)."""
    return sde.drift(x, t) - lam * _coef(sde.diffusion(t), x) ** 2 * score


def reverse_drift(sde: SDE, score_fn, x: torch.Tensor, t, lam: float = 1.0) -> torch.Tensor:
    """f(x, t) - lam g(t)^2 score(x, t): lam = 1 gives Anderson's reverse SDE, lam = 1/2 the
    probability-flow ODE (chapter 1, Eqs. 1.5 and 1.6). Integrate it with *decreasing* time."""
    tt = sde.check_time(t, x)
    return drift_from_score(sde, x, tt, _score(score_fn, x, tt), lam)


def mixture_score_fn(sde: SDE, mixture):
    """score_fn(x, t) = the exact score of the forward marginal p_t when x0 ~ ``mixture``
    (a GaussianMixture): p_t is the mixture noised with alpha(t), sigma(t). t may vary per example.
    The noised mixtures are cached by time, so a sampler's repeated grid times cost one build each."""
    cache = {}

    def score_fn(x, t):
        t = as_time(t, x)
        out = torch.empty_like(x)
        for tv in torch.unique(t).tolist():
            if tv not in cache:
                if len(cache) >= 4096:  # per-example random times (a loss) would grow it forever
                    cache.clear()
                cache[tv] = sde.marginal(mixture, tv)
            idx = t == tv
            out[idx] = cache[tv].score(x[idx]).to(x.dtype)
        return out
    return score_fn
