"""DDPM and DDIM: the discrete-time samplers of chapter 3, for a noise predictor eps_hat(x_t, t).

Every function takes a ``schedules.DiscreteSchedule`` (betas, alpha_bar[i] = prod_{s<=i} (1 - beta[s]),
0-based, i = 0..N-1) and a model ``eps_model(x, t)`` that gets *continuous* time t = (i + 1) / N as a
(B,) floating tensor (``DiscreteSchedule.time(i)``: the course's one index-to-time conversion). The
papers' symbols: the DDPM paper writes alpha_t for our 1 - beta_t; the DDIM paper writes alpha_t for
our alpha_bar[t].

* ``posterior``: q(x_{i-1} | x_i, x0), the Gaussian that DDPM's reverse step imitates (Eq. 3.4).
* ``ddpm_sample``: ancestral sampling, N network evaluations (Ho et al. 2020, Algorithm 2).
* ``ddim_sample``: DDIM's update on any strictly decreasing list of indices, ``eta`` from 0
  (deterministic) to 1 (DDPM's posterior variance) (Song, Meng and Ermon 2021).
* ``ddim_invert``: the deterministic DDIM map run backwards, data -> x_T.
* ``heun_sample``: Heun's second-order method on the same probability-flow ODE that DDIM (eta = 0)
  integrates with Euler's method (Karras et al. 2022, Algorithm 1).
* ``dpm_solver_2m_sample``: a *multistep* second-order method on the same ODE, one network evaluation
  per step (DPM-Solver++(2M), Lu et al. 2022): second order at DDIM's cost.
* ``uniform_timesteps``, ``quadratic_timesteps``, ``karras_timesteps``: index grids for the few-step samplers.
* ``nll_bound``: the variational bound on -log p(x0) in nats (Ho et al. 2020, Eq. 5), estimated with
  stratified noise levels (latent diffusion's cross-entropy term, chapter 5).

DDIM as Euler's method: with sigma = sqrt((1 - alpha_bar) / alpha_bar) and x~ = x / sqrt(alpha_bar), the
probability-flow ODE reads dx~/dsigma = eps_hat(x, t), and DDIM's eta = 0 step is exactly one Euler
step of it, x~_s = x~_i + (sigma_s - sigma_i) eps_hat. ``heun_sample`` adds the trapezoidal correction.
"""
from __future__ import annotations

import math

import torch

from ._checks import check_generator, check_positive_int, check_tensor
from .schedules import DiscreteSchedule
from .sde import Trajectory
from .tensors import randn, time_dtype

__all__ = ["posterior", "ddpm_sample", "ddim_sample", "ddim_invert", "heun_sample", "dpm_solver_2m_sample",
           "uniform_timesteps", "quadratic_timesteps", "karras_timesteps", "edm_sigmas", "nll_bound"]


def _check_schedule(schedule) -> DiscreteSchedule:
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError("schedule must be a course_utils.schedules.DiscreteSchedule (e.g. "
                        f"DiscreteSchedule(linear_betas(1000))), got {type(schedule).__name__}")
    return schedule


def _check_x(name, x):
    check_tensor(name, x)
    if x.ndim < 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor of shape (B, *D), got {x.dtype} {tuple(x.shape)}")
    return x


def _ab(schedule: DiscreteSchedule, i: int) -> float:
    """alpha_bar at 0-based index i as a Python float; index -1 is clean data (alpha_bar = 1)."""
    return 1.0 if i < 0 else float(schedule.alpha_bars[i])


def _eps(eps_model, schedule, x, i):
    """eps_hat(x, t_i) with t_i = (i + 1) / N as a (B,) float tensor, its shape checked."""
    t = schedule.time(torch.full((x.shape[0],), i, dtype=torch.long, device=x.device), dtype=time_dtype(x))
    out = eps_model(x, t)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"eps_model must return a tensor of x's shape {tuple(x.shape)}, got {got}")
    return out, t


def _check_timesteps(schedule, timesteps, n_steps, name="timesteps"):
    if (timesteps is None) == (n_steps is None):
        raise ValueError(f"give exactly one of {name} (a strictly decreasing list of indices) or n_steps")
    if timesteps is None:
        return uniform_timesteps(schedule.N, n_steps)
    steps = [int(i) for i in (timesteps.tolist() if isinstance(timesteps, torch.Tensor) else timesteps)]
    if not steps:
        raise ValueError(f"{name} must not be empty")
    if any(b >= a for a, b in zip(steps[:-1], steps[1:])):
        raise ValueError(f"{name} must be strictly decreasing, got {steps[:8]}{'...' if len(steps) > 8 else ''}")
    if steps[0] > schedule.N - 1 or steps[-1] < 0:
        raise ValueError(f"{name} must lie in [0, N - 1] = [0, {schedule.N - 1}], got {steps[0]} .. {steps[-1]}")
    return steps


def _strictly_decreasing(indices) -> list[int]:
    """The indices with repeats dropped (rounding can map neighbouring grid points to one index)."""
    out = []
    for i in indices:
        if not out or i < out[-1]:
            out.append(int(i))
    return out


def _power_timesteps(N: int, n_steps: int, power: float) -> list[int]:
    check_positive_int("N", N)
    check_positive_int("n_steps", n_steps)
    if n_steps > N:
        raise ValueError(f"n_steps must be at most N = {N}, got {n_steps}")
    if n_steps == 1:
        return [N - 1]
    return _strictly_decreasing(round((N - 1) * (1 - k / (n_steps - 1)) ** power) for k in range(n_steps))


def uniform_timesteps(N: int, n_steps: int) -> list[int]:
    """n_steps indices from N - 1 down to 0, evenly spaced (rounded): the first step starts from pure
    noise (alpha_bar[N - 1] ~ 0) and the last lands on index 0, after which samplers step to the data."""
    return _power_timesteps(N, n_steps, 1.0)


def quadratic_timesteps(N: int, n_steps: int) -> list[int]:
    """Indices i_k = round((N - 1) (1 - k / (n_steps - 1))^2), k = 0..n_steps-1, repeats dropped: the DDIM
    paper's "quadratic" spacing, dense at low noise. With the linear schedule it is close to even in
    log-SNR where the image takes shape, which multistep solvers need (their extrapolation assumes
    neighbouring steps of similar size)."""
    return _power_timesteps(N, n_steps, 2.0)


def edm_sigmas(schedule: DiscreteSchedule) -> torch.Tensor:
    """sigma[i] = sqrt((1 - alpha_bar[i]) / alpha_bar[i]), the noise-to-signal ratio that Karras et al.
    use as the ODE's time variable (float64, (N,))."""
    ab = _check_schedule(schedule).alpha_bars
    return torch.sqrt((1 - ab) / ab)


def karras_timesteps(schedule: DiscreteSchedule, n_steps: int, rho: float = 7.0) -> list[int]:
    """n_steps indices whose sigmas follow Karras et al.'s spacing, (sigma_max^(1/rho) + k/(n-1) (sigma_min^(1/rho)
    - sigma_max^(1/rho)))^rho: dense at low noise, where the ODE curves most. Each sigma is rounded to
    the nearest index of the schedule (the network knows only those), duplicates dropped."""
    check_positive_int("n_steps", n_steps)
    sig = edm_sigmas(schedule)
    if n_steps == 1:
        return [schedule.N - 1]
    k = torch.arange(n_steps, dtype=torch.float64) / (n_steps - 1)
    hi, lo = sig[-1] ** (1 / rho), sig[0] ** (1 / rho)
    target = (hi + k * (lo - hi)) ** rho
    idx = torch.searchsorted(sig, target).clamp(max=schedule.N - 1)  # sig is increasing in i
    below = (idx - 1).clamp(min=0)
    nearest = torch.where((target - sig[below]).abs() < (sig[idx] - target).abs(), below, idx)
    return _strictly_decreasing(nearest.tolist())


def posterior(schedule: DiscreteSchedule, x0: torch.Tensor, xt: torch.Tensor, i: int):
    """q(x_{i-1} | x_i, x0) = N(mean, var I), 0-based i in [1, N - 1] (Eq. 3.4):
    mean = sqrt(alpha_bar[i-1]) beta[i] / (1 - alpha_bar[i]) x0
           + sqrt(1 - beta[i]) (1 - alpha_bar[i-1]) / (1 - alpha_bar[i]) x_i,
    var = beta~[i] = (1 - alpha_bar[i-1]) / (1 - alpha_bar[i]) beta[i]. Returns (mean, var as a float)."""
    _check_schedule(schedule)
    if not 1 <= int(i) <= schedule.N - 1:
        raise ValueError(f"i must be an index in [1, N - 1] = [1, {schedule.N - 1}], got {i}")
    ab, ab_prev, beta = _ab(schedule, i), _ab(schedule, i - 1), float(schedule.betas[i])
    mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * xt
    return mean, (1 - ab_prev) / (1 - ab) * beta


class _Recorder:
    """Collects (t, x) after each step when ``return_path`` is set; ``result(x)`` is what a sampler returns."""

    def __init__(self, t0: float, x: torch.Tensor, return_path: bool):
        self.on, self.ts, self.xs = return_path, [t0], [x]

    def add(self, t: float, x: torch.Tensor) -> None:
        self.ts.append(t)
        if self.on:
            self.xs.append(x)

    def result(self, x: torch.Tensor):
        return Trajectory(torch.tensor(self.ts, dtype=torch.float64), torch.stack(self.xs)) if self.on else x


@torch.no_grad()
def ddpm_sample(schedule: DiscreteSchedule, eps_model, x_T: torch.Tensor, *, variance: str = "posterior",
                generator: torch.Generator | None = None, callback=None, return_path: bool = False):
    """Ancestral sampling (Ho et al. 2020, Algorithm 2): for i = N-1, ..., 0,
    x_{i-1} = (x_i - beta[i] / sqrt(1 - alpha_bar[i]) eps_hat(x_i, t_i)) / sqrt(1 - beta[i]) + sqrt(var[i]) z,
    no noise at the last step. ``variance``: "posterior" (beta~[i], the true posterior's, the default)
    or "beta" (beta[i], the prior's); both are the paper's choices. N network evaluations.

    ``callback(dict(i, t, x, x0_hat))`` at every step with the state the network saw; with
    ``return_path`` a ``Trajectory`` of all N + 1 states (times (i + 1) / N, then 0)."""
    _check_schedule(schedule)
    _check_x("x_T", x_T)
    check_generator("generator", generator)
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance must be 'posterior' or 'beta', got {variance!r}")
    x, rec = x_T, _Recorder(1.0, x_T, return_path)
    for i in range(schedule.N - 1, -1, -1):
        eps, t = _eps(eps_model, schedule, x, i)
        ab, beta = _ab(schedule, i), float(schedule.betas[i])
        if callback is not None:
            x0_hat = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
            callback(dict(i=schedule.N - 1 - i, t=float(t[0]), x=x, x0_hat=x0_hat))
        mean = (x - beta / math.sqrt(1 - ab) * eps) / math.sqrt(1 - beta)  # the posterior mean at x0_hat (Eq. 3.5)
        if i > 0:
            var = beta if variance == "beta" else (1 - _ab(schedule, i - 1)) / (1 - ab) * beta
            x = mean + math.sqrt(var) * randn(x.shape, like=x, generator=generator)
        else:
            x = mean
        rec.add(i / schedule.N, x)
    return rec.result(x)


@torch.no_grad()
def ddim_sample(schedule: DiscreteSchedule, eps_model, x_T: torch.Tensor, *, timesteps=None,
                n_steps: int | None = None, eta: float = 0.0, generator: torch.Generator | None = None,
                callback=None, return_path: bool = False):
    """DDIM (Song, Meng and Ermon 2021, Eq. 12; Eq. 3.8 here) on a strictly decreasing list of 0-based indices
    (``timesteps``, or ``n_steps`` evenly spaced by ``uniform_timesteps``). From index i to the next
    index s (after the last, to clean data: alpha_bar = 1):

        x0_hat = (x_i - sqrt(1 - alpha_bar[i]) eps_hat) / sqrt(alpha_bar[i])
        sigma_i = eta sqrt((1 - alpha_bar[s]) / (1 - alpha_bar[i])) sqrt(1 - alpha_bar[i] / alpha_bar[s])
        x_s = sqrt(alpha_bar[s]) x0_hat + sqrt(1 - alpha_bar[s] - sigma_i^2) eps_hat + sigma_i z

    eta = 0 is deterministic (an Euler step of the probability-flow ODE); eta = 1 on all N indices is
    DDPM with the posterior variance, draw for draw. One network evaluation per index."""
    _check_schedule(schedule)
    _check_x("x_T", x_T)
    check_generator("generator", generator)
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    steps = _check_timesteps(schedule, timesteps, n_steps)
    x, rec = x_T, _Recorder(float(schedule.time(steps[0], torch.float64)), x_T, return_path)
    for k, i in enumerate(steps):
        s = steps[k + 1] if k + 1 < len(steps) else -1
        eps, t = _eps(eps_model, schedule, x, i)
        ab, ab_s = _ab(schedule, i), _ab(schedule, s)
        x0_hat = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        if callback is not None:
            callback(dict(i=k, t=float(t[0]), x=x, x0_hat=x0_hat))
        sigma = eta * math.sqrt((1 - ab_s) / (1 - ab)) * math.sqrt(1 - ab / ab_s)
        if sigma ** 2 > 1 - ab_s:
            raise ValueError(f"eta = {eta} asks for more noise than x_s holds at index {s}; use eta <= 1")
        x = math.sqrt(ab_s) * x0_hat + math.sqrt(1 - ab_s - sigma ** 2) * eps
        if sigma > 0:
            x = x + sigma * randn(x.shape, like=x, generator=generator)
        rec.add((s + 1) / schedule.N, x)
    return rec.result(x)


@torch.no_grad()
def ddim_invert(schedule: DiscreteSchedule, eps_model, x0: torch.Tensor, *, timesteps=None,
                n_steps: int | None = None, callback=None, return_path: bool = False):
    """Run the deterministic DDIM map backwards: data x0 -> x at index ``timesteps[0]`` (the noise that
    ``ddim_sample`` with eta = 0 on the same ``timesteps`` maps back to x0). The indices are walked
    in increasing order; the step from level s up to level i is DDIM's step with the roles swapped,

        x0_hat = (x_s - sqrt(1 - alpha_bar[s]) eps_hat) / sqrt(alpha_bar[s]),
        x_i = sqrt(alpha_bar[i]) x0_hat + sqrt(1 - alpha_bar[i]) eps_hat,

    with eps_hat = eps_hat(x_s, t_i): the exact inverse would need eps_hat at the unknown x_i, so the
    current point stands in for it (an error that vanishes as the steps shrink)."""
    _check_schedule(schedule)
    _check_x("x0", x0)
    steps = _check_timesteps(schedule, timesteps, n_steps)[::-1]  # increasing
    x, rec = x0, _Recorder(0.0, x0, return_path)
    for k, i in enumerate(steps):
        s = steps[k - 1] if k > 0 else -1
        eps, t = _eps(eps_model, schedule, x, i)
        ab, ab_s = _ab(schedule, i), _ab(schedule, s)
        x0_hat = (x - math.sqrt(1 - ab_s) * eps) / math.sqrt(ab_s)
        if callback is not None:
            callback(dict(i=k, t=float(t[0]), x=x, x0_hat=x0_hat))
        x = math.sqrt(ab) * x0_hat + math.sqrt(1 - ab) * eps
        rec.add((i + 1) / schedule.N, x)
    return rec.result(x)


@torch.no_grad()
def heun_sample(schedule: DiscreteSchedule, eps_model, x_T: torch.Tensor, *, timesteps=None,
                n_steps: int | None = None, callback=None, return_path: bool = False):
    """Heun's method on the probability-flow ODE dx~/dsigma = eps_hat (x~ = x / sqrt(alpha_bar),
    sigma = ``edm_sigmas``), deterministic (Karras et al. 2022, Algorithm 1 without churn): on each
    interval from sigma_i to the next sigma_s,

        d = eps_hat(x_i, t_i)                          # Euler step (= DDIM, eta = 0)
        x~' = x~_i + (sigma_s - sigma_i) d
        d' = eps_hat(x', t_s)                          # 2nd-order correction
        x~_s = x~_i + (sigma_s - sigma_i) (d + d') / 2

    and a plain Euler step on the last interval, to sigma = 0 (where eps_hat is not defined). For K
    indices that is 2K - 1 network evaluations."""
    _check_schedule(schedule)
    _check_x("x_T", x_T)
    steps = _check_timesteps(schedule, timesteps, n_steps)
    sig = edm_sigmas(schedule)
    x = x_T
    x_tilde = x_T / math.sqrt(_ab(schedule, steps[0]))
    rec, evals = _Recorder(float(schedule.time(steps[0], torch.float64)), x_T, return_path), 0
    for k, i in enumerate(steps):
        s = steps[k + 1] if k + 1 < len(steps) else -1
        sig_i, sig_s = float(sig[i]), (float(sig[s]) if s >= 0 else 0.0)
        d, t = _eps(eps_model, schedule, x, i)
        if callback is not None:
            callback(dict(i=evals, t=float(t[0]), x=x, x0_hat=x_tilde - sig_i * d))
        evals += 1
        x_next = x_tilde + (sig_s - sig_i) * d  # Euler step
        if s >= 0:
            x_s = x_next * math.sqrt(_ab(schedule, s))
            d2, t2 = _eps(eps_model, schedule, x_s, s)
            if callback is not None:
                callback(dict(i=evals, t=float(t2[0]), x=x_s, x0_hat=x_next - sig_s * d2))
            evals += 1
            x_next = x_tilde + (sig_s - sig_i) * 0.5 * (d + d2)  # 2nd-order correction
        x_tilde = x_next
        x = x_tilde * math.sqrt(_ab(schedule, s))
        rec.add((s + 1) / schedule.N, x)
    return rec.result(x)


@torch.no_grad()
def dpm_solver_2m_sample(schedule: DiscreteSchedule, eps_model, x_T: torch.Tensor, *, timesteps=None,
                         n_steps: int | None = None, callback=None, return_path: bool = False):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): the probability-flow ODE solved exactly in its
    linear part, with the data prediction x0_hat extrapolated linearly in lambda = log(alpha / sigma)
    from the current and the previous step. From index i to the next index s, with h = lambda_s - lambda_i,

        D = x0_hat_i                                         (first step: DDIM's update exactly)
        D = (1 + 1/(2r)) x0_hat_i - 1/(2r) x0_hat_prev,  r = h_prev / h   (later steps)
        x_s = (sigma_s / sigma_i) x_i - alpha_s (exp(-h) - 1) D

    and x0_hat of the last index as the final sample (a first-order last step, as DDIM's). One network
    evaluation per index, like DDIM, but second order: the previous evaluation is reused."""
    _check_schedule(schedule)
    _check_x("x_T", x_T)
    steps = _check_timesteps(schedule, timesteps, n_steps)
    x, rec = x_T, _Recorder(float(schedule.time(steps[0], torch.float64)), x_T, return_path)
    prev_x0, prev_h = None, None
    for k, i in enumerate(steps):
        s = steps[k + 1] if k + 1 < len(steps) else -1
        eps, t = _eps(eps_model, schedule, x, i)
        ab = _ab(schedule, i)
        x0_hat = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        if callback is not None:
            callback(dict(i=k, t=float(t[0]), x=x, x0_hat=x0_hat))
        if s < 0:
            x = x0_hat  # the last step, to clean data (first order)
        else:
            ab_s = _ab(schedule, s)
            lam_i, lam_s = 0.5 * math.log(ab / (1 - ab)), 0.5 * math.log(ab_s / (1 - ab_s))
            h = lam_s - lam_i
            if prev_x0 is None:
                d = x0_hat
            else:
                r = prev_h / h
                d = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * prev_x0  # linear extrapolation in lambda
            x = math.sqrt((1 - ab_s) / (1 - ab)) * x - math.sqrt(ab_s) * math.expm1(-h) * d
            prev_x0, prev_h = x0_hat, h
        rec.add((s + 1) / schedule.N, x)
    return rec.result(x)


@torch.no_grad()
def nll_bound(schedule: DiscreteSchedule, eps_model, x0: torch.Tensor, *, n_levels: int = 100,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The DDPM variational bound on -log p(x0) in nats per example (B,), for continuous x0 and the reverse
    variances sigma_1^2 = beta_1 (the last step, a Gaussian likelihood of x0) and sigma_t^2 = beta~_t
    (t >= 2, 1-based as in the paper):

        L = KL(q(x_N | x0) || N(0, I))                                       the prior term
          + sum_{t=1}^{N} beta_t / (2 (1 - beta_t) (1 - alpha_bar_{t-1})) E||eps - eps_hat(x_t, t)||^2
          + D/2 log(2 pi beta_1)                                             (the t = 1 term's normaliser)

    with alpha_bar_0 := 1 - beta_1 in the t = 1 weight (it is 1/(2 (1 - beta_1))). The weights fall like
    1/t, so the sum over the N levels is estimated on about ``n_levels`` strata of geometrically growing
    width (single indices near t = 1), with one random index per stratum and example, weighted by the
    stratum's width: unbiased, with one network call per stratum."""
    _check_schedule(schedule)
    _check_x("x0", x0)
    check_positive_int("n_levels", n_levels)
    N, B, D = schedule.N, x0.shape[0], x0[0].numel()
    betas = schedule.betas.double()
    ab = schedule.alpha_bars.double()
    ab_prev = torch.cat([1 - betas[:1], ab[:-1]])                # alpha_bar_{t-1}; for t = 1: 1 - beta_1
    weight = betas / (2 * (1 - betas) * (1 - ab_prev))
    flat = x0.flatten(1).double()
    total = 0.5 * (ab[-1] * flat.pow(2) + (1 - ab[-1]) - 1 - torch.log(1 - ab[-1])).sum(1)   # KL to N(0, I)
    total = total + D / 2 * math.log(2 * math.pi * float(betas[0]))
    edges = sorted(set(torch.logspace(0, math.log10(N), min(n_levels, N)).round().long().tolist()) | {0, N})
    for lo, hi in zip(edges[:-1], edges[1:]):
        idx = torch.randint(lo, hi, (B,), generator=generator)
        a = ab[idx].to(x0).reshape(B, *([1] * (x0.ndim - 1)))
        eps = randn(x0.shape, like=x0, generator=generator)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        eps_hat = eps_model(xt, schedule.time(idx.to(x0.device), dtype=time_dtype(x0)))
        if not isinstance(eps_hat, torch.Tensor) or eps_hat.shape != x0.shape:
            raise ValueError(f"eps_model must return a tensor of x0's shape {tuple(x0.shape)}")
        total = total + (hi - lo) * weight[idx].to(total) * (eps - eps_hat).flatten(1).double().pow(2).sum(1)
    return total
