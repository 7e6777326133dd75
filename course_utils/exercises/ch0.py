"""Exercise checkers for chapter 0: Neural ODEs and FFJORD."""
from __future__ import annotations

import math

import torch

from ..ode import divergence_exact
from ._common import _checker, _close, _Wrong

__all__ = [
    "check_euler_solve",
    "check_tanh_divergence",
    "check_affine_flow_log_prob",
    "check_hutchinson_trace",
    "check_adjoint_state",
]


@_checker
def check_euler_solve(euler_solve):
    """Exercise 0.1: ``euler_solve(f, z0, t0, t1, n_steps)`` with f(t, z), returning z(t1)."""
    A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)
    # a time-dependent field started at t0 != 0, so that the step times t0 + k h matter:
    # dz/dt = (1 + t) A z has z(t1) = exp(A (s(t1) - s(t0))) z(t0) with s(t) = t + t^2 / 2
    f = lambda t, z: (1.0 + t) * (z @ A.T)  # noqa: E731
    z0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    t0, t1 = 0.5, 1.5
    _close(euler_solve(f, z0, t0, t0 + 0.25, 1), z0 + 0.25 * f(t0, z0), "one step of size h = 0.25 from t0 = 0.5")
    _close(euler_solve(f, z0, t0, t0 + 0.5, 2), (z0 + 0.25 * f(t0, z0)) + 0.25 * f(t0 + 0.25, z0 + 0.25 * f(t0, z0)),
           "two steps from t0 = 0.5 (the second at t0 + h)")
    s = lambda t: t + t ** 2 / 2  # noqa: E731
    exact = z0 @ torch.linalg.matrix_exp(A.T * (s(t1) - s(t0)))
    e1 = (euler_solve(f, z0, t0, t1, 400) - exact).abs().max().item()
    e2 = (euler_solve(f, z0, t0, t1, 800) - exact).abs().max().item()
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
        # the gradient of (0.3): dL/dtheta = int_0^T a(t) df/dtheta dt with df/dtheta = z(t), by Simpson's rule
        ts = torch.linspace(0.0, T, 201, dtype=torch.float64)
        a = torch.tensor([float(adjoint_state(theta, z0, T, t)) for t in ts.tolist()], dtype=torch.float64)
        integrand = a * z0 * torch.exp(theta * ts)
        w = torch.ones(201, dtype=torch.float64)
        w[1:-1:2], w[2:-1:2] = 4.0, 2.0
        integral = (w * integrand).sum().item() * (T / 200) / 3
        z_T = z0 * math.exp(theta * T)
        _close(integral, T * z_T ** 2, f"int_0^T a(t) z(t) dt at theta={theta}, z0={z0}, T={T}", rtol=1e-6)
    return ("matches dL/dz(t) at the start, middle and end of the interval, and int_0^T a z dt = T z(T)^2 "
            "= dL/dtheta.")
