"""Samplers: plain functions that take callables and return the final x (chapter 1 onwards).

One signature for all of them: ``sampler(process, model_fn, x_T, *, <grid>, generator=None,
callback=None, return_path=False)``. Everything after ``x_T`` is keyword-only; the time grid is
validated; ``callback(dict(i=..., t=..., x=..., x0_hat=...))`` is called once per network evaluation
with the state the network saw and the clean-data estimate it implies; with ``return_path`` every
sampler returns a ``Trajectory(ts, xs)``. To count network evaluations, wrap the model in
``CallCounter`` (or count the callback's calls).

* ``reverse_sde_sample``: Euler-Maruyama on the family dX = [f - (1 + eta^2)/2 g^2 score] dt + eta g dW-bar,
  from t = T down to t_min; eta = 1 is Anderson's reverse SDE, eta = 0 the probability-flow ODE.
* ``naive_reverse_sample``: the wrong reverse (flip the sign of time, keep f and g), for chapter 1.
* ``probability_flow_sample``: the probability-flow ODE through torchdiffeq (adaptive or fixed-step).
* ``ddpm_sample``, ``ddim_sample``, ``ddim_invert``, ``heun_sample``, ``dpm_solver_2m_sample``: chapter 3's
  discrete-time samplers for a noise predictor on a ``DiscreteSchedule`` (defined in ``ddpm.py``).
* ``langevin``, ``annealed_langevin``: chapter 4's MCMC, which needs a score and no forward process
  (its signature is ``(score_fn, x, *, ...)``).
"""
from __future__ import annotations

import math

import torch
from torchdiffeq import odeint

from ._checks import check_generator, check_positive_int, check_tensor
from .ddpm import ddim_invert, ddim_sample, ddpm_sample, dpm_solver_2m_sample, heun_sample  # chapter 3
from .ode import ODE_ATOL, ODE_RTOL
from .schedules import T_MIN, check_t_min
from .sde import SDE, Trajectory, _score, drift_from_score, euler_maruyama

__all__ = ["ddpm_sample", "ddim_sample", "ddim_invert", "heun_sample", "dpm_solver_2m_sample",
           "CallCounter", "reverse_time_grid", "reverse_sde_sample", "naive_reverse_sample",
           "probability_flow_sample", "slerp", "ode_interpolate", "Trajectory", "langevin", "annealed_langevin",
           "geometric_sigmas"]

FIXED_STEP_METHODS = ("euler", "midpoint", "rk4")
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")


class CallCounter:
    """Wrap a callable and count its calls (network evaluations, NFE): ``score = CallCounter(net)``,
    run a sampler with ``score``, then read ``score.calls``."""

    def __init__(self, fn):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def reverse_time_grid(sde: SDE, n_steps: int, t_min: float = T_MIN) -> torch.Tensor:
    """n_steps + 1 equally spaced times from T down to t_min (float64, CPU). The small cut-off avoids
    t = 0, where the score of data with a tiny noise level is stiff."""
    check_positive_int("n_steps", n_steps)
    t_min = check_t_min(t_min, sde.T)
    return torch.linspace(sde.T, t_min, n_steps + 1, dtype=torch.float64, device="cpu")


def _check_sde(sde):
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a course_utils.sde.SDE (VPSDE, VESDE, OUSDE), got {type(sde).__name__}")


def _check_x_T(x_T):
    check_tensor("x_T", x_T)
    if x_T.ndim < 2:
        raise ValueError(f"x_T must have shape (B, *D), got {tuple(x_T.shape)}")
    return x_T


def reverse_sde_sample(sde: SDE, score_fn, x_T: torch.Tensor, *, n_steps: int = 500, t_min: float = T_MIN,
                       eta: float = 1.0, generator: torch.Generator | None = None, callback=None,
                       return_path: bool = False):
    """Integrate dX = [f - (1 + eta^2)/2 g^2 score] dt + eta g dW-bar from T down to t_min by
    Euler-Maruyama on ``reverse_time_grid(sde, n_steps, t_min)``.

    Every eta >= 0 has the data's marginals (the Fokker-Planck equation is the same): eta = 1 is
    Anderson's reverse SDE (Eq. 1.5), eta = 0 the probability-flow ODE by Euler's method (Eq. 1.6).
    ``score_fn(x, t)`` takes t as a (B,) floating tensor.
    """
    _check_sde(sde)
    _check_x_T(x_T)
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    ts = reverse_time_grid(sde, n_steps, t_min)
    lam = (1 + eta ** 2) / 2
    seen = {}

    def f(x, t):
        tt = sde.check_time(t, x)
        s = _score(score_fn, x, tt)
        seen.update(t=tt, score=s)
        return drift_from_score(sde, x, tt, s, lam)

    def g(x, t):
        return eta * sde.diffusion(torch.tensor(t, dtype=torch.float64, device="cpu"))

    def on_step(info):  # euler_maruyama calls this after f(x_k, t_k): add the Tweedie estimate
        callback(dict(info, x0_hat=sde.x0_from_score(info["x"], seen["t"], seen["score"])))

    return euler_maruyama(f, g, x_T, ts, generator=generator, return_path=return_path,
                          callback=None if callback is None else on_step)


def naive_reverse_sample(sde: SDE, x_T: torch.Tensor, *, n_steps: int = 500, t_min: float = T_MIN,
                         generator: torch.Generator | None = None, callback=None, return_path: bool = False):
    """The *wrong* reverse process of chapter 1, section 5: run dX = f dt + g dW with time decreasing,
    i.e. flip the sign of time and keep the forward coefficients (no score). It does not invert the
    forward process; this function exists to show that. It has no model argument (it uses no score);
    otherwise it has the samplers' signature. ``callback`` gets x0_hat = None."""
    _check_sde(sde)
    _check_x_T(x_T)
    ts = reverse_time_grid(sde, n_steps, t_min)

    def g(x, t):
        return sde.diffusion(torch.tensor(t, dtype=torch.float64, device="cpu"))

    def on_step(info):
        callback(dict(info, x0_hat=None))

    return euler_maruyama(sde.drift, g, x_T, ts, generator=generator, return_path=return_path,
                          callback=None if callback is None else on_step)


def probability_flow_sample(sde: SDE, score_fn, x_T: torch.Tensor, *, t_min: float = T_MIN,
                            method: str = "dopri5", n_steps: int | None = None, rtol: float = ODE_RTOL,
                            atol: float = ODE_ATOL, generator: torch.Generator | None = None, callback=None,
                            return_path: bool = False, n_saved: int = 11):
    """Integrate the probability-flow ODE dx/dt = f - 1/2 g^2 score from T down to t_min with torchdiffeq.

    An adaptive ``method`` (dopri5, ...) uses rtol/atol; a fixed-step method (euler, midpoint, rk4)
    takes exactly ``n_steps`` equal steps on ``reverse_time_grid(sde, n_steps, t_min)``. ``callback`` is
    called at every evaluation of the velocity (for an adaptive solver that includes its trial
    stages), with ``i`` counting evaluations. ``generator`` is accepted for the common sampler
    signature and unused: the ODE draws nothing. Returns x at t_min, or with ``return_path`` a
    ``Trajectory`` of ``n_saved`` equally spaced snapshots (between grid points of a fixed-step
    method, torchdiffeq interpolates linearly).
    """
    _check_sde(sde)
    _check_x_T(x_T)
    check_generator("generator", generator)
    t_min = check_t_min(t_min, sde.T)
    if method in FIXED_STEP_METHODS:
        check_positive_int("n_steps", n_steps)

        def grid(func, y0, t):  # exactly n_steps equal steps (a step_size can round up to one more);
            # torchdiffeq hands over its own time axis (negated when time decreases): split that
            return torch.linspace(t[0].item(), t[-1].item(), n_steps + 1, dtype=t.dtype, device=t.device)
        options = dict(grid_constructor=grid)
    elif method in ADAPTIVE_METHODS:
        if n_steps is not None:
            raise ValueError(f"n_steps is for fixed-step methods {FIXED_STEP_METHODS}; method={method!r} "
                             "chooses its own steps")
        options = None
    else:
        raise ValueError(f"method must be one of {FIXED_STEP_METHODS + ADAPTIVE_METHODS}, got {method!r}")
    check_positive_int("n_saved", n_saved)
    if return_path and n_saved < 2:
        raise ValueError(f"n_saved must be at least 2 with return_path, got {n_saved}")
    count = [0]

    def velocity(t, x):
        # adaptive solvers may evaluate a stage slightly past the last output time: stay in [0, T]
        tt = sde.check_time(t.clamp(0.0, sde.T), x)
        s = _score(score_fn, x, tt)
        if callback is not None:
            callback(dict(i=count[0], t=float(tt[0]), x=x, x0_hat=sde.x0_from_score(x, tt, s)))
        count[0] += 1
        return drift_from_score(sde, x, tt, s, 0.5)

    ts = torch.linspace(sde.T, t_min, n_saved if return_path else 2, dtype=torch.float64, device="cpu")
    path = odeint(velocity, x_T, ts.to(device=x_T.device, dtype=x_T.dtype), method=method, rtol=rtol,
                  atol=atol, options=options)
    return Trajectory(ts, path) if return_path else path[-1]


def slerp(z_a: torch.Tensor, z_b: torch.Tensor, n: int) -> torch.Tensor:
    """n points on the great circle from z_a to z_b (both (D,)), keeping the norm typical of Gaussian
    noise: (n, D). Linear interpolation would pass through low-norm points the prior rarely produces."""
    check_positive_int("n", n)
    check_tensor("z_a", z_a)
    check_tensor("z_b", z_b)
    if z_a.shape != z_b.shape or z_a.ndim != 1:
        raise ValueError(f"z_a and z_b must be 1-D of the same shape, got {tuple(z_a.shape)}, {tuple(z_b.shape)}")
    cos = torch.dot(z_a, z_b) / (z_a.norm() * z_b.norm())
    omega = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    w = torch.linspace(0, 1, n, dtype=z_a.dtype, device=z_a.device)[:, None]
    return (torch.sin((1 - w) * omega) * z_a + torch.sin(w * omega) * z_b) / torch.sin(omega)


def ode_interpolate(sde: SDE, score_fn, z_a: torch.Tensor, z_b: torch.Tensor, *, n: int = 9, **ode_kwargs):
    """Decode n noise points between z_a and z_b (slerp at t = T) with the probability-flow ODE: a
    deterministic, continuous path of data points (chapter 2). Returns (n, D)."""
    return probability_flow_sample(sde, score_fn, slerp(z_a, z_b, n), **ode_kwargs)


# ------------------------------------------------------------------------------ Langevin MCMC (chapter 4)
def _positive(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return float(v)


def langevin(score_fn, x: torch.Tensor, *, step_size: float, n_steps: int, temperature: float = 1.0,
             generator: torch.Generator | None = None, callback=None, return_path: bool = False):
    """Unadjusted Langevin dynamics (Eq. 4.1): Euler-Maruyama on dX = 1/2 grad log p(X) dt + sqrt(tau) dW,

        x_{k+1} = x_k + (step_size / 2) score(x_k) + sqrt(tau step_size) z_k,   z_k ~ N(0, I),

    whose stationary law is p^(1/tau) / Z as step_size -> 0 (tau = ``temperature``; tau = 1 targets p).
    At a finite step size it is biased: for a Gaussian target of variance v it settles at variance
    v / (1 - step_size / (4 v)) (tau = 1). ``score_fn(x)`` takes and returns (B, *D). With
    ``return_path``, a ``Trajectory`` whose times are k * step_size."""
    check_tensor("x", x)
    step_size, temperature = _positive("step_size", step_size), _positive("temperature", temperature)
    check_positive_int("n_steps", n_steps)
    ts = torch.arange(n_steps + 1, dtype=torch.float64) * step_size

    def f(x_, t):
        s = score_fn(x_)
        if not isinstance(s, torch.Tensor) or s.shape != x_.shape:
            got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise ValueError(f"score_fn must return the shape of x {tuple(x_.shape)}, got {got}")
        return 0.5 * s

    return euler_maruyama(f, lambda x_, t: math.sqrt(temperature), x, ts, generator=generator,
                          return_path=return_path, callback=callback)


def geometric_sigmas(sigma_max: float, sigma_min: float, n: int) -> torch.Tensor:
    """NCSN's noise ladder: n levels from sigma_max down to sigma_min with a constant ratio (float64, CPU)."""
    sigma_max, sigma_min = _positive("sigma_max", sigma_max), _positive("sigma_min", sigma_min)
    check_positive_int("n", n)
    if sigma_min >= sigma_max or n < 2:
        raise ValueError(f"need sigma_max > sigma_min and n >= 2, got {sigma_max}, {sigma_min}, {n}")
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64))


def annealed_langevin(score_fn, x: torch.Tensor, *, sigmas, n_steps_each: int, step_lr: float,
                      denoise: bool = False, generator: torch.Generator | None = None, callback=None,
                      return_path: bool = False):
    """Annealed Langevin dynamics (Song and Ermon 2019, Algorithm 1): for each noise level sigma_i of the
    decreasing ladder ``sigmas``, ``n_steps_each`` Langevin steps on the noised density p_sigma_i with
    step size alpha_i = step_lr * sigma_i^2 / sigma_L^2 (sigma_L the smallest), each level starting where
    the last ended. ``score_fn(x, sigma)`` gets sigma as a (B,) tensor in x's dtype.

    ``denoise``: finish with one Tweedie step x + sigma_L^2 score(x, sigma_L), the posterior mean of the
    clean data given the last noisy sample (it removes the sigma_L noise Langevin leaves). ``callback``
    gets ``dict(i, t, x, sigma, level)`` before every step; ``return_path`` gives all states (times: step
    counts)."""
    check_tensor("x", x)
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).flatten().cpu()
    if len(sigmas) < 1 or not torch.isfinite(sigmas).all() or (sigmas <= 0).any() or \
            (len(sigmas) > 1 and not (sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError("sigmas must be a non-empty, strictly decreasing sequence of positive noise levels")
    check_positive_int("n_steps_each", n_steps_each)
    step_lr = _positive("step_lr", step_lr)
    sigma_L = float(sigmas[-1])
    paths, done = [x] if return_path else None, 0
    for level, sigma in enumerate(sigmas.tolist()):
        sig = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)

        def cb(info, level=level, sigma=sigma, done=done):
            callback(dict(info, i=done + info["i"], sigma=sigma, level=level))

        out = langevin(lambda x_, sig=sig: score_fn(x_, sig), x, step_size=step_lr * (sigma / sigma_L) ** 2,
                       n_steps=n_steps_each, generator=generator, return_path=return_path,
                       callback=None if callback is None else cb)
        x = out.xs[-1] if return_path else out
        if return_path:
            paths.extend(out.xs[1:])
        done += n_steps_each
    if denoise:
        sig = torch.full((x.shape[0],), sigma_L, dtype=x.dtype, device=x.device)
        x = x + sigma_L ** 2 * score_fn(x, sig)  # Tweedie: E[x0 | x_sigma_L]
        if return_path:
            paths.append(x)
    if return_path:
        return Trajectory(torch.arange(len(paths), dtype=torch.float64), torch.stack(paths))
    return x
