"""Exercise checkers for chapter 4: Langevin dynamics, NCSN and guidance."""
from __future__ import annotations

import math

import torch

from ._common import _checker, _close, _Wrong

__all__ = ["check_langevin_step", "check_class_posterior_grad", "check_ncsn_loss", "check_grey_basis",
           "check_systematic_resample"]


@_checker
def check_langevin_step(langevin_step):
    """Exercise 4.1: ``langevin_step(x, score, h, tau, z)`` -> one step of the unadjusted Langevin algorithm
    (4.2) with the noise ``z`` given; then the step run many times must settle at (4.3)'s variance."""
    x = torch.tensor([[0.5, -1.0], [2.0, 0.3]], dtype=torch.float64)
    z = torch.tensor([[0.1, -0.7], [1.2, 0.4]], dtype=torch.float64)
    score = lambda y: -(y - 1.0) / 2.0  # noqa: E731  (N(1, 2))
    for h, tau in ((0.1, 1.0), (0.5, 2.0)):
        want = x + 0.5 * h * score(x) + math.sqrt(tau * h) * z
        _close(langevin_step(x, score, h, tau, z), want, f"one step with h = {h}, tau = {tau}", atol=1e-12)
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(50_000, 1, dtype=torch.float64)
    for _ in range(200):
        y = langevin_step(y, lambda u: -u, 1.0, 1.0, torch.randn(y.shape, generator=g, dtype=torch.float64))
    want_var = 1.0 / (1 - 1.0 / 4)
    if abs(y.var().item() - want_var) > 0.05:
        raise _Wrong(f"200 steps with h = 1 on N(0, 1) give variance {y.var().item():.3f}, (4.3) says {want_var:.3f}")
    return f"one ULA step; at h = 1 on N(0, 1) it settles at variance {y.var().item():.3f} (4.3: 4/3), not 1."


@_checker
def check_class_posterior_grad(class_posterior_grad):
    """Exercise 4.2: ``class_posterior_grad(mixture, x, y)`` -> grad_x log p(y | x) for a GaussianMixture whose
    components are the classes, at points x (B, D) with labels y (B,)."""
    from ..data import GaussianMixture, example_mixture
    g = torch.Generator().manual_seed(1)
    for mix in (example_mixture(torch.float64),
                GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=torch.float64),
                                torch.stack([torch.eye(2, dtype=torch.float64),
                                             0.3 * torch.eye(2, dtype=torch.float64)]),
                                torch.tensor([0.7, 0.3], dtype=torch.float64))):
        x = torch.randn(16, 2, generator=g, dtype=torch.float64) * 2
        y = torch.randint(0, mix.n_components, (16,), generator=g)
        xr = x.clone().requires_grad_(True)
        logp = torch.log_softmax(mix.component_log_probs(xr), dim=1)[torch.arange(16), y].sum()
        want, = torch.autograd.grad(logp, xr)
        _close(class_posterior_grad(mix, x, y), want, "grad log p(y | x)", atol=1e-8, rtol=1e-6)
    return "grad log p(y | x) = grad log p(x | y) - grad log p(x): a component's score minus the mixture's."


@_checker
def check_ncsn_loss(ncsn_loss):
    """Exercise 4.3: ``ncsn_loss(score_fn, x0, sigmas, eps)`` -> the mean over the batch of (4.5)'s term
    sigma^2 |score_fn(x0 + sigma eps, sigma) + eps / sigma|^2 (sum over coordinates), one sigma per row."""
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(8, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(8, 3, generator=g, dtype=torch.float64)
    sigmas = torch.tensor([5.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05, 0.01], dtype=torch.float64)
    for name, fn in (("the exact score of N(0, (1 + sigma^2) I)", lambda x, s: -x / (1 + s[:, None] ** 2)),
                     ("a constant score", lambda x, s: torch.ones_like(x))):
        xs = x0 + sigmas[:, None] * eps
        want = (sigmas ** 2 * (fn(xs, sigmas) + eps / sigmas[:, None]).pow(2).sum(1)).mean()
        _close(ncsn_loss(fn, x0, sigmas, eps), want, f"the loss for {name}", atol=1e-10, rtol=1e-8)
    return "the sigma^2 weight makes every level's term of order one: it is an eps regression in disguise."


@_checker
def check_grey_basis(grey_basis):
    """Exercise 4.4: ``grey_basis()`` -> an orthogonal (3, 3) matrix whose first row is (1, 1, 1) / sqrt(3)."""
    m = torch.as_tensor(grey_basis(), dtype=torch.float64)
    if m.shape != (3, 3):
        raise _Wrong(f"expected a (3, 3) matrix, got shape {tuple(m.shape)}")
    _close(m[0], torch.full((3,), 1 / math.sqrt(3), dtype=torch.float64), "the first row (the grey direction)",
           atol=1e-8)
    _close(m @ m.T, torch.eye(3, dtype=torch.float64), "basis @ basis.T", atol=1e-8)
    return "orthogonal: N(0, I) noise is N(0, I) in the new coordinates too, so the model's noise is unchanged."


@_checker
def check_systematic_resample(systematic_resample):
    """Exercise 4.5: ``systematic_resample(w, u)`` -> the K indices chosen by the evenly spaced points
    (u + k) / K, k = 0, ..., K - 1, on the cumulative sum of the normalised weights ``w`` (K,): for each point,
    the first index whose cumulative weight reaches it."""
    g = torch.Generator().manual_seed(3)
    cases = [(torch.tensor([0.0, 0.5, 0.0, 0.5], dtype=torch.float64), 0.3)]
    for K in (4, 7, 40):
        w = torch.rand(K, generator=g, dtype=torch.float64) ** 3
        cases += [(w / w.sum(), u) for u in (0.013, 0.5, 0.987)]
    for w, u in cases:
        K, cum = len(w), torch.cumsum(w, 0).tolist()
        want = []
        for k in range(K):  # walk along the cumulative sum: the slow, obvious way
            point, j = (u + k) / K, 0
            while j < K - 1 and cum[j] < point:
                j += 1
            want.append(j)
        got = torch.as_tensor(systematic_resample(w, u))
        if got.shape != (K,) or got.dtype not in (torch.int64, torch.int32):
            raise _Wrong(f"expected {K} integer indices, got shape {tuple(got.shape)} and dtype {got.dtype}")
        if got.tolist() != want:
            raise _Wrong(f"weights {[round(v, 3) for v in w.tolist()[:6]]}{'...' if K > 6 else ''}, u = {u}: "
                         f"expected indices {want[:10]}, got {got.tolist()[:10]}")
    return ("every particle is copied K w rounded down or up: one uniform number, far less noise than K independent "
            "draws (section 8's filter resamples this way).")
