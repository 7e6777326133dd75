"""Neural ODEs and continuous normalizing flows (chapter 0).

* ``divergence_exact`` / ``divergence_hutchinson``: tr(df/dx) exactly (D backward passes) or by
  Hutchinson's estimator v^T (df/dx) v (one vector-Jacobian product), for f: (B, D) -> (B, D).
* ``TimeMLP``: a small velocity field f(t, z; theta) for torchdiffeq.
* ``CNFDynamics``: the augmented ODE of the instantaneous change of variables,
  d/dt [z, l] = [f(t, z), -tr(df/dz)]  (Chen et al. 2018, Thm. 1).
* ``CNF``: a continuous normalizing flow (FFJORD) with ``log_prob`` (data -> base, backwards in time)
  and ``sample`` (base -> data, forwards in time), solved by torchdiffeq.
* ``saved_tensor_bytes``: how much memory a computation stores for back-propagation.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from ._checks import check_generator, check_tensor

__all__ = ["jacobian_trace", "divergence_exact", "divergence_hutchinson", "sample_probe",
           "TimeMLP", "CNFDynamics", "CNF", "standard_normal_log_prob", "saved_tensor_bytes"]


def jacobian_trace(y: torch.Tensor, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """sum_i d y_i / d x_i for y = f(x) already computed from x (both (B, D)); returns (B,).

    One backward pass per dimension: exact, and affordable for the low dimensions of chapter 0.
    """
    div = torch.zeros(x.shape[0], dtype=y.dtype, device=y.device)
    for i in range(x.shape[1]):
        g = torch.autograd.grad(y[:, i].sum(), x, create_graph=create_graph, retain_graph=True)[0]
        div = div + g[:, i]
    return div


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
        y = _apply(f, x)
        vjp = torch.autograd.grad((y * v).sum(), x, create_graph=create_graph)[0]  # v^T J, (B, D)
    return (vjp * v).sum(1)


def sample_probe(shape, kind: str = "rademacher", generator: torch.Generator | None = None,
                 dtype=torch.float32, device=None) -> torch.Tensor:
    """Probe vectors with E[v v^T] = I: ``"gaussian"`` (N(0, I)) or ``"rademacher"`` (+-1)."""
    check_generator("generator", generator)
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if kind == "rademacher":
        return torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1
    raise ValueError(f"kind must be 'gaussian' or 'rademacher', got {kind!r}")


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension; (B, D) -> (B,)."""
    return -0.5 * (z ** 2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


class TimeMLP(nn.Module):
    """Velocity field f(t, z; theta): an MLP on [z, t]. ``forward(t, z)`` as torchdiffeq expects."""

    def __init__(self, dim: int = 2, hidden: int = 64, n_layers: int = 3, act: type = nn.Tanh):
        super().__init__()
        layers, width = [], dim + 1
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), act()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)
        self.dim = dim

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        tt = torch.as_tensor(t, dtype=z.dtype, device=z.device).expand(z.shape[0], 1)
        return self.net(torch.cat([z, tt], dim=1))


class CNFDynamics(nn.Module):
    """Augmented dynamics of a CNF: d/dt [z, l] = [f(t, z), -tr(df/dz)].

    ``divergence`` is ``"exact"`` or ``"hutchinson"``; for Hutchinson, one probe per example is drawn
    by ``resample_probe`` before each solve and held fixed during it (as FFJORD does), so the solver
    sees a smooth ODE. ``nfe`` counts function evaluations.
    """

    def __init__(self, velocity: nn.Module, divergence: str = "exact", probe: str = "rademacher"):
        super().__init__()
        if divergence not in ("exact", "hutchinson"):
            raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")
        self.velocity, self.divergence, self.probe = velocity, divergence, probe
        self.v = None
        self.nfe = 0

    def resample_probe(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        self.v = sample_probe(z.shape, self.probe, generator, z.dtype, z.device)

    def forward(self, t, state):
        z = state[0]
        self.nfe += 1
        keep_graph = torch.is_grad_enabled()  # False while solving under no_grad (evaluation)
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            dz = self.velocity(t, z)
            if self.divergence == "exact":
                div = jacobian_trace(dz, z, create_graph=keep_graph)
            else:
                if self.v is None or self.v.shape != z.shape:
                    raise RuntimeError("call resample_probe(z) before solving with divergence='hutchinson'")
                vjp = torch.autograd.grad((dz * self.v).sum(), z, create_graph=keep_graph)[0]
                div = (vjp * self.v).sum(1)
        if not keep_graph:
            dz, div = dz.detach(), div.detach()
        return dz, -div


class CNF(nn.Module):
    """Continuous normalizing flow on R^D with a standard-normal base at t = 0 and data at t = T.

    log p(x) = log N(z(0); 0, I) - int_0^T tr(df/dz)(z(t)) dt, where z solves dz/dt = f backwards from
    z(T) = x (chapter 0, "Continuous normalizing flows").
    """

    def __init__(self, velocity: nn.Module, T: float = 1.0, divergence: str = "exact",
                 probe: str = "rademacher", method: str = "dopri5", rtol: float = 1e-5,
                 atol: float = 1e-5, adjoint: bool = False):
        super().__init__()
        if not T > 0:
            raise ValueError(f"T must be positive, got {T}")
        self.dynamics = CNFDynamics(velocity, divergence, probe)
        self.T, self.method, self.rtol, self.atol, self.adjoint = float(T), method, rtol, atol, adjoint

    def _solve(self, state, t0, t1, generator=None):
        if self.dynamics.divergence == "hutchinson":
            self.dynamics.resample_probe(state[0], generator)
        ts = torch.tensor([t0, t1], dtype=state[0].dtype, device=state[0].device)
        solve = odeint_adjoint if self.adjoint else odeint
        out = solve(self.dynamics, state, ts, method=self.method, rtol=self.rtol, atol=self.atol)
        return out[0][-1], out[1][-1]

    def log_prob(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """log p(x) for data x of shape (B, D); returns (B,). Integrates x backwards to the base."""
        check_tensor("x", x, ndim=2, last_dim=self.dynamics.velocity.dim)
        z0, delta = self._solve((x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)),
                                self.T, 0.0, generator)
        # delta = int_T^0 -div dt = int_0^T div dt
        return standard_normal_log_prob(z0) - delta

    def sample(self, n: int, generator: torch.Generator | None = None, return_log_prob: bool = False):
        """n samples by pushing base noise forwards from t = 0 to T (optionally with their log p)."""
        z0 = torch.randn(n, self.dynamics.velocity.dim, generator=generator)
        return self.push_forward(z0, return_log_prob, generator)

    def push_forward(self, z0: torch.Tensor, return_log_prob: bool = False, generator=None):
        """x = z(T) for given base points z0 (B, D); with ``return_log_prob``, also log p(x)."""
        check_tensor("z0", z0, ndim=2, last_dim=self.dynamics.velocity.dim)
        x, logp = self._solve((z0, standard_normal_log_prob(z0)), 0.0, self.T, generator)
        return (x, logp) if return_log_prob else x


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
