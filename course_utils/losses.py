"""Score-matching losses (chapters 2-3). Each returns one value per example, shape (B,).

* ``explicit_sm_loss``: the Fisher divergence itself, 1/2 |s - grad log p|^2, when the true score is known
  (explicit score matching: a reference, since real data has no known score).
* ``implicit_sm_loss``: Hyvarinen's objective tr(grad s) + 1/2 |s|^2 (implicit score matching: the same
  minimiser without the true score), exact Jacobian trace (low D).
* ``ssm_loss``: sliced score matching, v^T (grad s) v + 1/2 (v^T s)^2 (or + 1/2 |s|^2, "variance reduced").
* ``dsm_loss``: denoising score matching over a forward process, lambda(t) |s(x_t, t) + eps / sigma(t)|^2.
* ``eps_loss``: the same objective written for a noise predictor, |eps_hat(x_t, t) - eps|^2.

``dsm_loss`` and ``eps_loss`` take any ``schedules.ForwardProcess``: a continuous ``SDE`` (chapter 2)
or DDPM's ``DiscreteSchedule`` (chapter 3); the process draws the training times, and the model
always receives continuous t. A score model for static data is a callable ``s(x)``; a
time-conditional one is ``s(x, t)`` with t (B,).
"""
from __future__ import annotations

import torch

from ._checks import check_generator, check_positive_int, check_tensor
from .ode import jacobian_trace, sample_probe, vjp_trace
from .schedules import ForwardProcess, check_t_min
from .tensors import append_dims, randn

__all__ = ["explicit_sm_loss", "implicit_sm_loss", "ssm_loss", "dsm_loss", "eps_loss"]


def _output(name, out, x):
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name} must return the shape of the data {tuple(x.shape)}, got {got}")
    return out


def explicit_sm_loss(score_fn, x: torch.Tensor, true_score_fn) -> torch.Tensor:
    """Explicit score matching: the Fisher divergence's integrand 1/2 |s(x) - grad log p(x)|^2, which needs
    the true score ``true_score_fn`` (known here only for the course's exact mixtures). x (B, D) -> (B,)."""
    check_tensor("x", x, ndim=2)
    s = _output("score_fn", score_fn(x), x)
    return 0.5 * ((s - _output("true_score_fn", true_score_fn(x), x)) ** 2).sum(1)


def implicit_sm_loss(score_fn, x: torch.Tensor) -> torch.Tensor:
    """Implicit score matching (Hyvarinen 2005): J(s) = E[tr(grad_x s(x)) + 1/2 |s(x)|^2], equal to the
    Fisher divergence 1/2 E|s - grad log p|^2 up to a constant (integration by parts), without the
    true score. x (B, D) -> (B,)."""
    check_tensor("x", x, ndim=2)
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        s = _output("score_fn", score_fn(x), x)
        trace = jacobian_trace(s, x, create_graph=True)  # D backward passes: fine for low D
    return trace + 0.5 * (s ** 2).sum(1)


def ssm_loss(score_fn, x: torch.Tensor, n_projections: int = 1, kind: str = "gaussian",
             variance_reduced: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sliced score matching (Song et al. 2019): E_v[v^T (grad s) v + 1/2 (v^T s)^2], averaged over
    ``n_projections`` random directions per example (Gaussian or Rademacher). With
    ``variance_reduced``, 1/2 (v^T s)^2 is replaced by its expectation 1/2 |s|^2. x (B, D) -> (B,)."""
    check_tensor("x", x, ndim=2)
    check_positive_int("n_projections", n_projections)
    check_generator("generator", generator)
    x = x.detach().requires_grad_(True)
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    with torch.enable_grad():
        s = _output("score_fn", score_fn(x), x)
        for _ in range(n_projections):
            v = sample_probe(x.shape, kind, like=x, generator=generator)
            second = 0.5 * (s ** 2).sum(1) if variance_reduced else 0.5 * ((v * s).sum(1)) ** 2
            total = total + vjp_trace(s, x, v, create_graph=True) + second  # v^T (grad s) v + ...
    return total / n_projections


def _noised(x0, process, t, eps, t_min, generator):
    check_tensor("x0", x0)
    check_generator("generator", generator)
    if not isinstance(process, ForwardProcess):
        raise TypeError(f"process must be a schedules.ForwardProcess (an SDE or a DiscreteSchedule), "
                        f"got {type(process).__name__}")
    t_min = check_t_min(process.t_min if t_min is None else t_min, process.T)
    B = x0.shape[0]
    if t is None:
        t = process.sample_times(B, like=x0, t_min=t_min, generator=generator)
    else:
        t = process.check_time(t, x0)  # a scalar is repeated; anything else must have shape (B,)
        if (t <= t_min).any():
            raise ValueError(f"t must lie in (t_min, T] = ({t_min}, {process.T}], got values in "
                             f"[{t.min().item():.4g}, {t.max().item():.4g}]")
    eps = randn(x0.shape, like=x0, generator=generator) if eps is None else eps
    xt = process.perturb(x0, t, eps)  # x_t = alpha(t) x0 + sigma(t) eps, Eq. (1.4)
    return t, eps, xt


def dsm_loss(score_fn, x0: torch.Tensor, process: ForwardProcess, weighting="sigma2",
             t_min: float | None = None, t=None, eps=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoising score matching over a forward process (Vincent 2011; Song et al. 2021):

        lambda(t) |s(x_t, t) - grad log p(x_t | x0)|^2,  grad log p(x_t | x0) = -eps / sigma(t),

    with t drawn by ``process.sample_times`` in (t_min, T] (default t_min: the process's) and
    x_t = alpha x0 + sigma eps. ``weighting`` is ``"sigma2"`` (lambda = sigma^2, which makes every t
    contribute on the same scale), ``"none"`` (lambda = 1), or a callable lambda(t) >= 0. Returns
    (B,), summed over data dimensions.
    """
    t, eps, xt = _noised(x0, process, t, eps, t_min, generator)
    sigma_t = process.sigma(t)
    if weighting == "sigma2":
        lam = sigma_t ** 2
    elif weighting == "none":
        lam = torch.ones_like(t)
    elif callable(weighting):
        lam = torch.as_tensor(weighting(t), dtype=t.dtype, device=t.device)
    else:
        raise ValueError(f"weighting must be 'sigma2', 'none' or a callable, got {weighting!r}")
    if lam.shape != t.shape or not torch.isfinite(lam).all() or (lam < 0).any():
        raise ValueError("weighting(t) must return finite, non-negative weights of shape (B,)")
    s = _output("score_fn", score_fn(xt, t), x0)
    err = (s + eps / append_dims(sigma_t.to(x0.dtype), x0.ndim)).flatten(1)
    return lam.to(x0.dtype) * (err ** 2).sum(1)


def eps_loss(eps_fn, x0: torch.Tensor, process: ForwardProcess, t_min: float | None = None, t=None, eps=None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise prediction (Ho et al. 2020): |eps_hat(x_t, t) - eps|^2, (B,). With s = -eps_hat / sigma this
    is exactly ``dsm_loss`` with the weighting lambda = sigma^2. With a ``DiscreteSchedule`` it is
    DDPM's L_simple: t = k / N with k uniform in 1..N."""
    t, eps, xt = _noised(x0, process, t, eps, t_min, generator)
    return ((_output("eps_fn", eps_fn(xt, t), x0) - eps).flatten(1) ** 2).sum(1)
