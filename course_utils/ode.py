"""Neural ODEs and continuous normalizing flows (chapter 0): the mathematics. The networks (``TimeMLP``,
``CNF``) live in ``nets``.

* ``divergence_exact`` / ``divergence_hutchinson``: tr(df/dx) exactly (D backward passes) or by
  Hutchinson's estimator v^T (df/dx) v (one vector-Jacobian product), for f: (B, D) -> (B, D).
* ``CNFDynamics``: the augmented ODE of the instantaneous change of variables,
  d/dt [z, l] = [f(z, t), -tr(df/dz)]  (Chen et al. 2018, Thm. 1).
* ``ODEFunc``: torchdiffeq calls ``func(t, z)``; the course's networks are ``net(x, t)``. This adapts.
* ``saved_tensor_bytes``: how much memory a computation stores for back-propagation.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import check_generator, check_tensor
from .tensors import as_time, rademacher, randn

__all__ = ["ODE_RTOL", "ODE_ATOL", "jacobian_trace", "vjp_trace", "divergence_exact", "divergence_hutchinson",
           "sample_probe", "ODEFunc", "CNFDynamics", "standard_normal_log_prob", "saved_tensor_bytes"]

ODE_RTOL = 1e-5
ODE_ATOL = 1e-5
"""Default tolerances of the course's adaptive ODE solves (dopri5): tight enough that solver error is
well below the statistical errors the notebooks measure, loose enough for a CPU."""


def jacobian_trace(y: torch.Tensor, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """sum_i d y_i / d x_i for y = f(x) already computed from x (both (B, D)); returns (B,).

    One backward pass per dimension: exact, and affordable for the low dimensions of chapter 0.
    """
    div = torch.zeros(x.shape[0], dtype=y.dtype, device=y.device)
    for i in range(x.shape[1]):
        g = torch.autograd.grad(y[:, i].sum(), x, create_graph=create_graph, retain_graph=True)[0]
        div = div + g[:, i]
    return div


def vjp_trace(y: torch.Tensor, x: torch.Tensor, v: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """v^T (dy/dx) v for y = f(x) already computed from x, one probe per example (all (B, D)); returns
    (B,). One vector-Jacobian product: the core of Hutchinson's estimator, FFJORD and sliced score
    matching."""
    vjp = torch.autograd.grad((y * v).sum(), x, create_graph=create_graph, retain_graph=True)[0]  # v^T J
    return (vjp * v).sum(1)


def _prepare(f, x):
    check_tensor("x", x, ndim=2)
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    create_graph = torch.is_grad_enabled()
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    return x, create_graph


def _apply(f, x):
    y = f(x)
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        raise ValueError(f"f must map x of shape {tuple(x.shape)} to the same shape, "
                         f"got {tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
    return y


def divergence_exact(f, x: torch.Tensor) -> torch.Tensor:
    """Exact divergence tr(df/dx)(x) of a field f: (B, D) -> (B, D); returns (B,).

    Differentiable (w.r.t. x and f's parameters) when called with gradients enabled.
    """
    x, create_graph = _prepare(f, x)
    with torch.enable_grad():
        return jacobian_trace(_apply(f, x), x, create_graph=create_graph)


def divergence_hutchinson(f, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Hutchinson's estimate v^T (df/dx) v of the divergence, one probe v per example; returns (B,).

    Unbiased when E[v v^T] = I (Gaussian or Rademacher v): E[v^T A v] = tr(A E[v v^T]) = tr(A).
    Costs one vector-Jacobian product whatever D is.
    """
    x, create_graph = _prepare(f, x)
    check_tensor("v", v)
    if v.shape != x.shape:
        raise ValueError(f"v must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")
    with torch.enable_grad():
        return vjp_trace(_apply(f, x), x, v, create_graph=create_graph)


def sample_probe(shape, kind: str = "rademacher", *, like: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, dtype=None, device=None) -> torch.Tensor:
    """Probe vectors with E[v v^T] = I: ``"gaussian"`` (N(0, I)) or ``"rademacher"`` (+-1), on
    ``like``'s device and dtype (or the given ones)."""
    check_generator("generator", generator)
    if kind == "gaussian":
        return randn(shape, like=like, generator=generator, dtype=dtype, device=device)
    if kind == "rademacher":
        return rademacher(shape, like=like, generator=generator, dtype=dtype, device=device)
    raise ValueError(f"kind must be 'gaussian' or 'rademacher', got {kind!r}")


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension; (B, D) -> (B,)."""
    return -0.5 * (z ** 2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


class ODEFunc(nn.Module):
    """A course network ``net(x, t)`` (t of shape (B,)) as the ``func(t, z)`` that torchdiffeq calls.
    A module, so ``odeint_adjoint`` finds the network's parameters."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, t, z):
        return self.net(z, as_time(t, z))


class CNFDynamics(nn.Module):
    """Augmented dynamics of a CNF: d/dt [z, l] = [f(z, t), -tr(df/dz)], for a velocity network
    ``velocity(z, t)``.

    ``divergence`` is ``"exact"`` or ``"hutchinson"``; for Hutchinson, one probe per example is drawn
    by ``resample_probe`` before each solve and held fixed during it (as FFJORD does), so the solver
    sees a smooth ODE. ``nfe`` counts function evaluations.
    """

    def __init__(self, velocity: nn.Module, divergence: str = "exact", probe: str = "rademacher"):
        super().__init__()
        if divergence not in ("exact", "hutchinson"):
            raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")
        if probe not in ("gaussian", "rademacher"):
            raise ValueError(f"probe must be 'gaussian' or 'rademacher', got {probe!r}")
        self.velocity, self.divergence, self.probe = velocity, divergence, probe
        self.v = None
        self.nfe = 0

    def resample_probe(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        self.v = sample_probe(z.shape, self.probe, like=z, generator=generator)

    def forward(self, t, state):
        z = state[0]
        self.nfe += 1
        keep_graph = torch.is_grad_enabled()  # False while solving under no_grad (evaluation)
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            dz = self.velocity(z, as_time(t, z))
            if self.divergence == "exact":
                div = jacobian_trace(dz, z, create_graph=keep_graph)
            else:
                if self.v is None or self.v.shape != z.shape:
                    raise RuntimeError("call resample_probe(z) before solving with divergence='hutchinson'")
                div = vjp_trace(dz, z, self.v, create_graph=keep_graph)
        if not keep_graph:
            dz, div = dz.detach(), div.detach()
        return dz, -div


def saved_tensor_bytes(closure) -> int:
    """Bytes of distinct tensor storage that autograd saves for the backward pass while ``closure()``
    runs: the memory that back-propagation must hold on to. Storage shared by several saves
    (a weight used at every step) counts once."""
    seen = {}

    def pack(t):
        if t.device.type != "meta":
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        closure()
    return sum(seen.values())


SOLVE_METHODS = ("backprop", "adjoint")


def peak_memory_of_solves(method: str, steps, *, batch: int = 512, hidden: int = 64, seed: int = 0) -> list[float]:
    """Peak resident memory (MiB above the process's level after a warm-up) of one forward and
    backward pass through an RK4 solve of a ``TimeMLP(2, hidden, 2)`` velocity field on ``batch``
    points, for each number of steps in ``steps``, by back-propagation through the solver
    (``method="backprop"``) or the adjoint method (``"adjoint"``).

    Measured by the operating system, in a fresh Python process per call: the high-water mark of
    its resident set (VmHWM on Linux, ``ru_maxrss`` on macOS, the peak working set on Windows),
    which counts everything a solve holds (autograd's saved tensors, the adjoint's working memory,
    the allocator's slack), not only what autograd reports.
    The high-water mark never falls, so the step counts run in increasing order and each reading is
    the peak of that run and all smaller ones; for a method whose memory grows with the steps that
    is the run's own peak. Takes a few seconds (a fresh process imports torch)."""
    import json
    import subprocess
    import sys

    if method not in SOLVE_METHODS:
        raise ValueError(f"method must be one of {SOLVE_METHODS}, got {method!r}")
    steps = [int(n) for n in steps]
    if not steps or min(steps) < 1:
        raise ValueError(f"steps must be a non-empty list of positive step counts, got {steps}")
    if steps != sorted(steps):
        raise ValueError(f"steps must be increasing (the high-water mark never falls), got {steps}")
    cmd = [sys.executable, "-m", "course_utils._peak_memory", method, str(batch), str(hidden), str(seed),
           *map(str, steps)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the memory-measuring process failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
