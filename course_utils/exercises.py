"""Checkers for the notebooks' exercises.

Each ``check_*`` function takes the learner's function, runs it on inputs with known answers, prints
one line (a tick, what is wrong, or "not attempted yet") and returns True or False. It never raises,
so a notebook with unfinished exercises still runs top to bottom.
"""
from __future__ import annotations

import functools
import math

import torch

from .ode import divergence_exact

__all__ = ["check_euler_solve", "check_tanh_divergence", "check_affine_flow_log_prob",
           "check_hutchinson_trace", "check_adjoint_state",
           "check_wiener_paths", "check_ou_marginal", "check_vp_reverse_drift", "check_stationary_log_density",
           "check_fisher_divergence_1d", "check_ssm_one_projection", "check_tweedie_denoise"]


class _Wrong(Exception):
    pass


def _checker(fn):
    @functools.wraps(fn)
    def wrapper(answer):
        name = getattr(answer, "__name__", "your function")
        try:
            msg = fn(answer)
        except NotImplementedError:
            print(f"… {name}: not attempted yet (it raises NotImplementedError).")
            return False
        except _Wrong as e:
            print(f"✗ {name}: {e}")
            return False
        except Exception as e:  # the learner's code failed: say how, don't stop the notebook
            print(f"✗ {name} raised {type(e).__name__}: {e}")
            return False
        print(f"✓ {name}: {msg}")
        return True
    return wrapper


def _close(got, want, what, atol=1e-6, rtol=1e-5):
    got = torch.as_tensor(got, dtype=torch.float64)
    want = torch.as_tensor(want, dtype=torch.float64)
    if got.shape != want.shape:
        raise _Wrong(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
    if not torch.allclose(got, want, atol=atol, rtol=rtol):
        err = (got - want).abs().max().item()
        raise _Wrong(f"{what}: off by up to {err:.3g} (expected e.g. {want.flatten()[:3].tolist()}, "
                     f"got {got.flatten()[:3].tolist()})")


# ---------------------------------------------------------------- chapter 0
@_checker
def check_euler_solve(euler_solve):
    """Exercise 0.1: ``euler_solve(f, z0, t0, t1, n_steps)`` with f(t, z), returning z(t1)."""
    A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)
    f = lambda t, z: z @ A.T  # noqa: E731
    z0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    _close(euler_solve(f, z0, 0.0, 0.5, 1), z0 + 0.5 * f(0.0, z0), "one step of size h = 0.5")
    exact = z0 @ torch.linalg.matrix_exp(A.T)
    e1 = (euler_solve(f, z0, 0.0, 1.0, 400) - exact).abs().max().item()
    e2 = (euler_solve(f, z0, 0.0, 1.0, 800) - exact).abs().max().item()
    if not 1.8 < e1 / e2 < 2.2:
        raise _Wrong(f"halving h should halve the error of Euler's method, but it divided it by {e1 / e2:.2f}")
    return f"one step is exact, and the error halves with h (ratio {e1 / e2:.2f}): first order."


@_checker
def check_tanh_divergence(tanh_divergence):
    """Exercise 0.2: ``tanh_divergence(W, b, x)``: div of f(x) = tanh(W x + b), x (B, D) -> (B,)."""
    g = torch.Generator().manual_seed(3)
    for D in (2, 5):
        W = torch.randn(D, D, generator=g, dtype=torch.float64)
        b = torch.randn(D, generator=g, dtype=torch.float64)
        x = torch.randn(7, D, generator=g, dtype=torch.float64)
        want = divergence_exact(lambda y, W=W, b=b: torch.tanh(y @ W.T + b), x)
        _close(tanh_divergence(W, b, x), want, f"divergence in D = {D}")
    return "matches the autograd trace of the Jacobian in 2 and 5 dimensions."


@_checker
def check_affine_flow_log_prob(affine_flow_log_prob):
    """Exercise 0.3: ``affine_flow_log_prob(x, A, b)``: log-density of x = A z + b, z ~ N(0, I)."""
    g = torch.Generator().manual_seed(4)
    A = torch.randn(3, 3, generator=g, dtype=torch.float64) + 2 * torch.eye(3, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    want = torch.distributions.MultivariateNormal(b, A @ A.T).log_prob(x)
    _close(affine_flow_log_prob(x, A, b), want, "log p(x)")
    return "equals the log-density of N(b, A A^T), as the change of variables says it must."


@_checker
def check_hutchinson_trace(hutchinson_trace):
    """Exercise 0.4: ``hutchinson_trace(matvec, D, n_probes, generator)``: Hutchinson's estimate of
    tr(A) from matrix-vector products only, averaging n_probes Rademacher probes."""
    g = torch.Generator().manual_seed(5)
    A = torch.randn(6, 6, generator=g, dtype=torch.float64)
    S = (A + A.T) / 2
    var1 = 2 * ((S ** 2).sum() - (S.diagonal() ** 2).sum()).item()  # Eq. (0.7), Rademacher
    calls = []

    def matvec(v):
        calls.append(v.shape)
        return A @ v

    gen = torch.Generator().manual_seed(0)
    one = torch.tensor([float(hutchinson_trace(matvec, 6, 1, gen)) for _ in range(4000)], dtype=torch.float64)
    if not calls:
        raise _Wrong("matvec was never called: the estimate must come from products A v")
    se = (var1 / len(one)) ** 0.5
    if abs(one.mean().item() - A.trace().item()) > 4 * se:
        raise _Wrong(f"with 1 probe the mean of 4000 estimates is {one.mean():.3f}, but tr(A) = "
                     f"{A.trace():.3f} (standard error {se:.3f}): the estimator is biased")
    if not 0.85 < one.var().item() / var1 < 1.15:
        raise _Wrong(f"variance with 1 probe is {one.var():.3f}; Rademacher probes should give {var1:.3f}")
    many = torch.tensor([float(hutchinson_trace(matvec, 6, 100, gen)) for _ in range(400)], dtype=torch.float64)
    ratio = one.var().item() / many.var().item()
    if not 60 < ratio < 160:
        raise _Wrong(f"averaging 100 probes should divide the variance by 100, but it divided it by {ratio:.0f}")
    a = hutchinson_trace(matvec, 6, 10, torch.Generator().manual_seed(1))
    b = hutchinson_trace(matvec, 6, 10, torch.Generator().manual_seed(1))
    if float(a) != float(b):
        raise _Wrong("the same generator seed gave different estimates: draw the probes from `generator`")
    return (f"unbiased, variance {one.var():.2f} = Eq. (0.7) with one probe, "
            f"and {ratio:.0f}x smaller with 100 probes.")


@_checker
def check_adjoint_state(adjoint_state):
    """Exercise 0.5: ``adjoint_state(theta, z0, T, t)``: a(t) = dL/dz(t) for dz/dt = theta z,
    L = z(T)^2 / 2."""
    for theta, z0, T in [(0.3, 1.5, 1.0), (-0.7, -2.0, 2.0)]:
        for t in [0.0, 0.5 * T, T]:
            # dL/dz(t) by autograd through the exact flow z(T) = z(t) e^{theta (T - t)}
            zt = torch.tensor(z0 * math.exp(theta * t), dtype=torch.float64, requires_grad=True)
            L = 0.5 * (zt * math.exp(theta * (T - t))) ** 2
            want = torch.autograd.grad(L, zt)[0]
            _close(adjoint_state(theta, z0, T, t), want, f"a(t) at theta={theta}, z0={z0}, T={T}, t={t}")
    return "matches dL/dz(t) at the start, middle and end of the interval."


# ---------------------------------------------------------------- chapter 1
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
    from .sde import OUSDE
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


# ---------------------------------------------------------------- chapter 2
@_checker
def check_fisher_divergence_1d(fisher_divergence_1d):
    """Exercise 2.1: ``fisher_divergence_1d(m1, v1, m2, v2)`` = 1/2 E_p[(s_q - s_p)^2] for
    p = N(m1, v1), q = N(m2, v2) (v: variances)."""
    g = torch.Generator().manual_seed(2)
    for m1, v1, m2, v2 in [(0.0, 1.0, 0.0, 1.0), (0.5, 2.0, -1.0, 0.5), (1.0, 0.3, 1.0, 0.9)]:
        x = m1 + math.sqrt(v1) * torch.randn(400_000, generator=g, dtype=torch.float64)
        mc = 0.5 * (((x - m1) / v1 - (x - m2) / v2) ** 2)
        got = float(fisher_divergence_1d(m1, v1, m2, v2))
        se = mc.std().item() / math.sqrt(len(x))
        if abs(got - mc.mean().item()) > 5 * se + 1e-9:
            raise _Wrong(f"for p = N({m1}, {v1}), q = N({m2}, {v2}) you give {got:.4f}, but a Monte Carlo "
                         f"estimate is {mc.mean():.4f} +- {se:.4f}")
    return "matches Monte Carlo estimates, and is 0 for identical Gaussians."


@_checker
def check_ssm_one_projection(ssm_one_projection):
    """Exercise 2.2: ``ssm_one_projection(score_fn, x, v)`` = v^T (grad s) v + 1/2 (v^T s)^2 per example."""
    from .losses import ssm_loss
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    want = ssm_loss(net, x, kind="gaussian", generator=g)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)  # the same probe
    got = ssm_one_projection(net, x, v)
    _close(torch.as_tensor(got).detach(), want.detach(), "per-example sliced score-matching loss")
    return "matches course_utils.losses.ssm_loss with the same projection."


@_checker
def check_tweedie_denoise(tweedie_denoise):
    """Exercise 2.3: ``tweedie_denoise(xt, score, alpha, sigma)`` = E[x0 | xt] = (xt + sigma^2 score) / alpha."""
    mu = torch.tensor([0.5, -1.0], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    for alpha, sigma in [(0.9, 0.3), (0.5, 0.8)]:
        cov_t = alpha ** 2 * cov + sigma ** 2 * torch.eye(2, dtype=torch.float64)
        xt = alpha * mu + torch.randn(6, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov_t).T
        score = -(xt - alpha * mu) @ torch.linalg.inv(cov_t)
        # Gaussian conditioning: E[x0 | xt] = mu + alpha Sigma (alpha^2 Sigma + sigma^2 I)^{-1} (xt - alpha mu)
        want = mu + (xt - alpha * mu) @ torch.linalg.inv(cov_t) @ (alpha * cov)
        _close(tweedie_denoise(xt, score, alpha, sigma), want, f"E[x0 | xt] at alpha={alpha}, sigma={sigma}")
    return "equals the Gaussian posterior mean: the score is a denoiser."
