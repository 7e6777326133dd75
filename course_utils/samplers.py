"""Samplers: plain functions that take callables and return the final x (chapter 1 onwards).

* ``reverse_sde_sample``: Euler-Maruyama on Anderson's reverse-time SDE, from t = T down to t_min.
* ``probability_flow_sample``: the probability-flow ODE through torchdiffeq (adaptive or fixed-step).
"""
from __future__ import annotations

import torch
from torchdiffeq import odeint

from ._checks import check_positive_int
from .sde import SDE, euler_maruyama, reverse_drift

__all__ = ["reverse_time_grid", "reverse_sde_sample", "probability_flow_sample", "slerp", "ode_interpolate"]


def reverse_time_grid(sde: SDE, n_steps: int, t_min: float = 1e-3) -> torch.Tensor:
    """n_steps + 1 equally spaced times from T down to t_min (the small cutoff avoids t = 0, where
    the score of data with a tiny noise level is stiff)."""
    check_positive_int("n_steps", n_steps)
    if not 0 <= t_min < sde.T:
        raise ValueError(f"t_min must lie in [0, T) = [0, {sde.T}), got {t_min}")
    return torch.linspace(sde.T, t_min, n_steps + 1, dtype=torch.float64)


def reverse_sde_sample(sde: SDE, score_fn, x_T: torch.Tensor, n_steps: int = 500, t_min: float = 1e-3,
                       generator: torch.Generator | None = None, return_path: bool = False,
                       lam: float = 1.0):
    """Integrate dX = [f - lam g^2 score] dt + g dW backwards from T to t_min by Euler-Maruyama.

    lam = 1 is Anderson's reverse SDE; lam = 0 is the naive "flip the sign of time" reverse, which
    fails (chapter 1, section 5). ``score_fn(x, t)`` takes t as a (B,) tensor.
    """
    ts = reverse_time_grid(sde, n_steps, t_min)
    return euler_maruyama(lambda x, t: reverse_drift(sde, score_fn, x, t, lam),
                          lambda x, t: sde.diffusion(torch.as_tensor(t)),
                          x_T, ts, generator=generator, return_path=return_path)


def probability_flow_sample(sde: SDE, score_fn, x_T: torch.Tensor, t_min: float = 1e-3,
                            method: str = "dopri5", n_steps: int | None = None, rtol: float = 1e-5,
                            atol: float = 1e-5, return_path: bool = False, n_saved: int = 11):
    """Integrate the probability-flow ODE dx/dt = f - 1/2 g^2 score from T to t_min with torchdiffeq.

    Adaptive ``method`` (dopri5) uses rtol/atol; a fixed-step method (euler, midpoint, rk4) takes
    ``n_steps`` equal steps. Returns x at t_min, or with ``return_path`` a tuple (times, path) of
    ``n_saved`` snapshots. The number of score evaluations is in ``probability_flow_sample.nfe``.
    """
    counter = {"nfe": 0}

    def velocity(t, x):
        counter["nfe"] += 1
        # adaptive solvers may evaluate a stage slightly past the last output time: stay in [0, T]
        return reverse_drift(sde, score_fn, x, t.clamp(0.0, sde.T), 0.5)

    ts = torch.linspace(sde.T, t_min, n_saved if return_path else 2, dtype=x_T.dtype)
    options = None
    if method in ("euler", "midpoint", "rk4"):
        check_positive_int("n_steps", n_steps)
        options = dict(step_size=(sde.T - t_min) / n_steps)
    elif n_steps is not None:
        raise ValueError(f"n_steps is for fixed-step methods; method={method!r} chooses its own steps")
    path = odeint(velocity, x_T, ts, method=method, rtol=rtol, atol=atol, options=options)
    probability_flow_sample.nfe = counter["nfe"]
    return (ts, path) if return_path else path[-1]


probability_flow_sample.nfe = 0


def slerp(z_a: torch.Tensor, z_b: torch.Tensor, n: int) -> torch.Tensor:
    """n points on the great circle from z_a to z_b (both (D,)), keeping the norm typical of Gaussian
    noise: (n, D). Linear interpolation would pass through low-norm points the prior rarely produces."""
    check_positive_int("n", n)
    if z_a.shape != z_b.shape or z_a.ndim != 1:
        raise ValueError(f"z_a and z_b must be 1-D of the same shape, got {tuple(z_a.shape)}, {tuple(z_b.shape)}")
    cos = torch.dot(z_a, z_b) / (z_a.norm() * z_b.norm())
    omega = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    w = torch.linspace(0, 1, n, dtype=z_a.dtype)[:, None]
    return (torch.sin((1 - w) * omega) * z_a + torch.sin(w * omega) * z_b) / torch.sin(omega)


def ode_interpolate(sde: SDE, score_fn, z_a: torch.Tensor, z_b: torch.Tensor, n: int = 9, **ode_kwargs):
    """Decode n noise points between z_a and z_b (slerp at t = T) with the probability-flow ODE: a
    deterministic, continuous path of data points (chapter 2). Returns (n, D)."""
    return probability_flow_sample(sde, score_fn, slerp(z_a, z_b, n), **ode_kwargs)
