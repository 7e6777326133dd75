"""Forward processes x_t = alpha(t) x0 + sigma(t) eps, continuous (SDEs, chapter 1) and discrete
(DDPM, chapter 3), behind one interface so that one loss and one sampler serve both.

``ForwardProcess`` is that interface: ``T``, ``alpha(t)``, ``sigma(t)``, ``perturb(x0, t, eps)``,
``sample_times(n, like=x0)`` (training times), ``t_min`` (the default lower cut-off), and the two
conversions every sampler needs, ``x0_from_eps`` and ``x0_from_score`` (Tweedie's formula). Time is
always continuous, t in [0, T], a floating-point tensor.

DDPM's schedule (Ho et al. 2020) lives on the grid t_k = k / N, k = 0..N (T = 1): the 0-based step
index i of ``alpha_bars`` (alpha_bar[i] = prod_{s <= i} (1 - beta[s])) is time t = (i + 1) / N, and
t = 0 is clean data (alpha_bar = 1). ``DiscreteSchedule.time(i)`` is the one place where a step index
becomes a time; networks therefore see t in (0, 1] for chapter 2's SDEs and chapter 3's DDPM alike.
"""
from __future__ import annotations

import math

import torch

from ._checks import check_positive_int, check_tensor
from .tensors import append_dims, as_time, rand, randint, time_dtype

__all__ = ["T_MIN", "check_t_min", "ForwardProcess", "linear_betas", "cosine_betas", "alpha_bars",
           "DiscreteSchedule"]

T_MIN = 1e-3
"""The default small-time cut-off of continuous processes: the score of data noised by sigma(t) -> 0
is stiff, so losses draw t from (T_MIN, T] and samplers stop at T_MIN."""


def check_t_min(t_min, T: float) -> float:
    """t_min as a float in [0, T), or a ValueError naming it."""
    if isinstance(t_min, bool) or not isinstance(t_min, (int, float)) or not 0 <= t_min < T:
        raise ValueError(f"t_min must lie in [0, T) = [0, {T}), got {t_min!r}")
    return float(t_min)


def _coef(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (B,) time coefficient on x's device and in x's dtype, broadcastable against x (B, *D)."""
    return append_dims(c.to(device=x.device, dtype=x.dtype), x.ndim)


class ForwardProcess:
    """x_t = alpha(t) x0 + sigma(t) eps on t in [0, T]. Subclasses set ``T`` and ``t_min`` and
    define ``alpha(t)`` and ``sigma(t)`` for a floating tensor t; ``sample_times`` may be overridden
    (a discrete schedule draws grid times)."""

    T: float = 1.0
    t_min: float = T_MIN

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_time(self, t, x: torch.Tensor) -> torch.Tensor:
        """t (a float or a (B,) floating tensor) as a (B,) tensor on x's device, inside [0, T]."""
        t = as_time(t, x)
        if (t < 0).any() or (t > self.T * (1 + 1e-6)).any():
            raise ValueError(f"t must lie in [0, T] = [0, {self.T}], got values in "
                             f"[{t.min().item():.4g}, {t.max().item():.4g}]")
        return t

    def perturb(self, x0: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """x_t = alpha(t) x0 + sigma(t) eps: an exact sample of the forward marginal given x0 (Eq. 1.4)."""
        check_tensor("x0", x0)
        if not isinstance(eps, torch.Tensor) or eps.shape != x0.shape:
            got = tuple(eps.shape) if isinstance(eps, torch.Tensor) else type(eps).__name__
            raise ValueError(f"eps must have the shape of x0 {tuple(x0.shape)}, got {got}")
        t = self.check_time(t, x0)
        return _coef(self.alpha(t), x0) * x0 + _coef(self.sigma(t), x0) * eps

    def sample_times(self, n: int, *, like: torch.Tensor, t_min: float | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """n training times uniform in (t_min, T] (default t_min: ``self.t_min``), on ``like``'s
        device, in ``tensors.time_dtype(like)``."""
        check_positive_int("n", n)
        t_min = check_t_min(self.t_min if t_min is None else t_min, self.T)
        u = rand((n,), like=like, generator=generator, dtype=time_dtype(like))
        t = t_min + (self.T - t_min) * (1 - u)  # 1 - u lies in (0, 1]
        # rounding may land exactly on t_min when u is near 1: keep the interval open at t_min
        lo = torch.tensor(t_min, dtype=t.dtype, device="cpu")
        return t.clamp(min=torch.nextafter(lo, lo + 1).item())

    def x0_from_eps(self, x: torch.Tensor, t, eps_hat: torch.Tensor) -> torch.Tensor:
        """The clean-data estimate implied by a noise prediction: (x_t - sigma eps_hat) / alpha."""
        t = self.check_time(t, x)
        return (x - _coef(self.sigma(t), x) * eps_hat) / _coef(self.alpha(t), x)

    def x0_from_score(self, x: torch.Tensor, t, score: torch.Tensor) -> torch.Tensor:
        """Tweedie's formula: E[x0 | x_t] = (x_t + sigma^2 grad log p_t(x_t)) / alpha (chapter 2)."""
        t = self.check_time(t, x)
        return (x + _coef(self.sigma(t), x) ** 2 * score) / _coef(self.alpha(t), x)


# ------------------------------------------------------------------------------ DDPM's schedules
def _check_T(T) -> int:
    return check_positive_int("T", T)


def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """beta_1..beta_T linear from ``beta_start`` to ``beta_end`` (Ho et al. 2020), float64 (T,)."""
    _check_T(T)
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64, device="cpu")


def cosine_betas(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021): alpha_bar(t) = cos^2(pi/2 (t/T + s) / (1 + s)) / (same at 0), and
    beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1), clipped at ``max_beta``. float64 (T,)."""
    _check_T(T)
    if not (s >= 0 and 0 < max_beta < 1):
        raise ValueError(f"need s >= 0 and 0 < max_beta < 1, got s={s}, max_beta={max_beta}")
    k = torch.arange(T + 1, dtype=torch.float64, device="cpu")
    f = torch.cos((k / T + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def _check_betas(betas) -> torch.Tensor:
    betas = torch.as_tensor(betas, device="cpu")
    if betas.ndim != 1 or len(betas) == 0 or not betas.is_floating_point():
        raise ValueError(f"betas must be a non-empty 1-D floating tensor, got shape {tuple(betas.shape)}")
    if not (torch.isfinite(betas).all() and (betas > 0).all() and (betas < 1).all()):
        raise ValueError("betas must lie in (0, 1), got values in "
                         f"[{betas.min().item():.4g}, {betas.max().item():.4g}]")
    return betas.double()


def alpha_bars(betas) -> torch.Tensor:
    """alpha_bar[i] = prod_{s <= i} (1 - beta[s]), 0-based; float64, same length as betas."""
    return torch.cumprod(1 - _check_betas(betas), 0)


class DiscreteSchedule(ForwardProcess):
    """DDPM's discrete forward process q(x_i | x0) = N(sqrt(alpha_bar[i]) x0, (1 - alpha_bar[i]) I) as
    a ``ForwardProcess`` on the time grid t = k / N (k = 0..N, T = 1; see the module docstring).

    ``alpha(t)`` and ``sigma(t)`` accept only grid times (anything else is an error, not a silent
    rounding); ``sample_times`` draws k uniformly from 1..N, as DDPM's training does.
    """

    T = 1.0
    t_min = 0.0

    def __init__(self, betas):
        self.betas = _check_betas(betas)
        self.alpha_bars = alpha_bars(self.betas)  # (N,), 0-based
        self.N = len(self.betas)
        # alpha_bar on the grid k = 0..N, k = 0 being clean data
        self._ab_grid = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars])

    def time(self, index, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The continuous time of 0-based step index ``index`` (an int or an integer tensor):
        t = (index + 1) / N; index -1 is t = 0 (clean data). Returns ``dtype`` on index's device."""
        index = torch.as_tensor(index, device=index.device if isinstance(index, torch.Tensor) else "cpu")
        if index.is_floating_point() or index.dtype == torch.bool:
            raise TypeError(f"index must be an integer step index, got dtype {index.dtype}")
        if (index < -1).any() or (index >= self.N).any():
            raise ValueError(f"index must lie in [-1, N - 1] = [-1, {self.N - 1}], got values in "
                             f"[{index.min().item()}, {index.max().item()}]")
        return ((index + 1).double() / self.N).to(dtype)

    def index(self, t) -> torch.Tensor:
        """The 0-based step index of grid time t (int64, on t's device); -1 for t = 0."""
        t = torch.as_tensor(t, device=t.device if isinstance(t, torch.Tensor) else "cpu")
        if not t.is_floating_point():
            raise TypeError(f"t must be continuous time (floating point), got dtype {t.dtype}")
        if not torch.isfinite(t).all():
            raise ValueError("t must be finite")
        k = torch.round(t.double() * self.N)
        if (t < 0).any() or (t > self.T * (1 + 1e-6)).any() or ((t.double() * self.N - k).abs() > 1e-3).any():
            raise ValueError(f"t must be a grid time k / N of this schedule (N = {self.N}, k = 0..N), got "
                             f"values in [{t.min().item():.6g}, {t.max().item():.6g}] that are not; "
                             "convert step indices with DiscreteSchedule.time(index)")
        return k.long() - 1

    def _alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        ab = self._ab_grid.to(t.device)[self.index(t) + 1]
        return ab.to(t.dtype)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(self._alpha_bar(t))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1 - self._alpha_bar(t))

    def sample_times(self, n: int, *, like: torch.Tensor, t_min: float | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """n grid times k / N with k uniform over the grid points in (t_min, 1] (default: k = 1..N)."""
        check_positive_int("n", n)
        t_min = check_t_min(self.t_min if t_min is None else t_min, self.T)
        dtype = time_dtype(like)
        grid = self.time(torch.arange(-1, self.N, device="cpu"), dtype=dtype)  # t_k = k / N, k = 0..N, as returned
        t_min_ = torch.tensor([t_min], dtype=dtype, device="cpu")
        k_lo = int(torch.searchsorted(grid, t_min_, right=True))  # the first k with t_k > t_min
        k = randint(k_lo, self.N + 1, (n,), like=like, generator=generator)
        return self.time(k - 1, dtype=dtype)

    def __repr__(self):
        return f"DiscreteSchedule(N={self.N}, beta in [{self.betas.min().item():.3g}, {self.betas.max().item():.3g}])"
