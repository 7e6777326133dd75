"""Networks. Every network is ``forward(x, t, cond=None)`` with x of shape (B, *D) and t of shape (B,).

Time convention (the whole course): a network receives *continuous* time t in [0, T] as a
floating-point tensor, always. Chapter 2's SDEs pass t in (0, 1]; chapter 3's DDPM passes the time of
its step index, t = (i + 1) / N, made by ``schedules.DiscreteSchedule.time(i)`` (the one place an
index becomes a time). ``TimeEmbedding`` refuses integer tensors, so a step index can never reach a
network unconverted. The sinusoidal features multiply t by ``TIME_SCALE`` = 1000, which puts t in
(0, 1] on the scale of the DDPM paper's step numbers 1..1000.

* ``mlp``: the one MLP builder used by the networks below.
* ``TimeEmbedding``: sinusoidal features of t (as a transformer's positional encoding), then an MLP.
* ``TimeMLP``: a small velocity field f(x, t) on [x, t] for neural ODEs and CNFs (chapter 0).
* ``ScoreMLP``: a small MLP on [x, embedding(t)] for 2-D data (chapter 2), fast on a CPU.
* ``CNF``: a continuous normalizing flow (FFJORD) with ``log_prob`` and ``sample`` (chapter 0).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from ._checks import check_generator, check_positive_int, check_tensor
from .ode import ODE_ATOL, ODE_RTOL, CNFDynamics, standard_normal_log_prob
from .tensors import as_time, randn

__all__ = ["TIME_SCALE", "mlp", "sinusoidal_features", "TimeEmbedding", "TimeMLP", "ScoreMLP", "CNF"]

TIME_SCALE = 1000.0
"""Continuous t in [0, 1] is multiplied by this before the sinusoidal features, so that the
frequencies designed for integer steps 0..1000 separate nearby times."""


def mlp(in_dim: int, hidden: int, out_dim: int, n_layers: int, act: type = nn.SiLU) -> nn.Sequential:
    """``n_layers`` hidden layers of width ``hidden`` with activation ``act``, then a linear output:
    Linear(in, h), act, ..., Linear(h, out)."""
    for name, v in (("in_dim", in_dim), ("hidden", hidden), ("out_dim", out_dim), ("n_layers", n_layers)):
        check_positive_int(name, v)
    layers, width = [], in_dim
    for _ in range(n_layers):
        layers += [nn.Linear(width, hidden), act()]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def _check_continuous_time(t) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a tensor of continuous times, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"t must be continuous time in [0, T] (a floating-point tensor), got dtype {t.dtype}: "
                        "convert a DDPM step index with schedules.DiscreteSchedule.time(index)")
    return t


def sinusoidal_features(t: torch.Tensor, dim: int, max_period: float = 10_000.0, scale: float = TIME_SCALE):
    """[cos(w_k s), sin(w_k s)] with s = scale * t and w_k = max_period^(-k / (dim/2)); (B,) -> (B, dim).

    ``scale`` maps continuous t in [0, 1] onto the range of integer steps these features were
    designed for (0..1000), so nearby times get distinguishable features.
    """
    _check_continuous_time(t)
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    dtype = torch.promote_types(t.dtype, torch.float32)  # half precision would alias neighbouring steps
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = scale * t.to(dtype)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class TimeEmbedding(nn.Module):
    """Continuous t (B,) -> (B, dim): sinusoidal features followed by a two-layer MLP. Integer t is an
    error (see the module docstring)."""

    def __init__(self, dim: int = 64, scale: float = TIME_SCALE):
        super().__init__()
        self.dim, self.scale = dim, scale
        self.mlp = mlp(dim, dim, dim, 1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = sinusoidal_features(t, self.dim, scale=self.scale)
        return self.mlp(features.to(self.mlp[0].weight.dtype))  # the features in the network's own dtype


def _check_cond(cond, n_classes, B, device):
    if n_classes is None:
        raise ValueError("cond was given, but this network was built without n_classes")
    if not isinstance(cond, torch.Tensor) or cond.dtype != torch.long or cond.shape != (B,):
        got = f"{cond.dtype} {tuple(cond.shape)}" if isinstance(cond, torch.Tensor) else type(cond).__name__
        raise ValueError(f"cond must be an int64 tensor of class labels of shape (B,) = ({B},), got {got}")
    if (cond < 0).any() or (cond >= n_classes).any():
        raise ValueError(f"cond must hold class labels in [0, n_classes) = [0, {n_classes}), got values in "
                         f"[{cond.min().item()}, {cond.max().item()}]")
    return cond.to(device)


class TimeMLP(nn.Module):
    """Velocity field f(x, t; theta) of a neural ODE: an MLP on [x, t] with ``act`` (tanh: smooth, as
    adaptive solvers like). ``forward(x, t, cond=None)``; hand it to torchdiffeq as ``ode.ODEFunc(net)``."""

    def __init__(self, dim: int = 2, hidden: int = 64, n_layers: int = 3, act: type = nn.Tanh):
        super().__init__()
        self.net = mlp(dim + 1, hidden, dim, n_layers, act)
        self.dim = dim

    def forward(self, x: torch.Tensor, t, cond: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor("x", x, ndim=2, last_dim=self.dim)
        if cond is not None:
            raise ValueError("TimeMLP takes no cond")
        t = as_time(t, x, allow_int=False)
        return self.net(torch.cat([x, t[:, None].to(x.dtype)], dim=1))


class ScoreMLP(nn.Module):
    """An MLP s(x, t) on [x, TimeEmbedding(t)] for low-dimensional data; output has x's shape.

    ``n_layers`` hidden layers of width ``hidden`` with SiLU. With ``n_classes``, ``cond`` (B,) integer
    labels are embedded and added to the time embedding (used from chapter 4 on).
    """

    def __init__(self, dim: int = 2, hidden: int = 128, n_layers: int = 3, embed_dim: int = 64,
                 n_classes: int | None = None, time_scale: float = TIME_SCALE):
        super().__init__()
        self.dim, self.n_classes = dim, n_classes
        self.time_embed = TimeEmbedding(embed_dim, scale=time_scale)
        self.class_embed = nn.Embedding(n_classes, embed_dim) if n_classes else None
        self.net = mlp(dim + embed_dim, hidden, dim, n_layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor("x", x, ndim=2, last_dim=self.dim)
        emb = self.time_embed(as_time(t, x, allow_int=False))
        if cond is not None:
            emb = emb + self.class_embed(_check_cond(cond, self.n_classes, x.shape[0], x.device))
        return self.net(torch.cat([x, emb.to(x.dtype)], dim=1))


class CNF(nn.Module):
    """Continuous normalizing flow on R^D with a standard-normal base at t = 0 and data at t = T.

    log p(x) = log N(z(0); 0, I) - int_0^T tr(df/dz)(z(t)) dt, where z solves dz/dt = f(z, t) backwards
    from z(T) = x (chapter 0, "Continuous normalizing flows"). ``velocity(z, t)`` is a network with an
    attribute ``dim`` (``TimeMLP``).
    """

    def __init__(self, velocity: nn.Module, T: float = 1.0, divergence: str = "exact",
                 probe: str = "rademacher", method: str = "dopri5", rtol: float = ODE_RTOL,
                 atol: float = ODE_ATOL, adjoint: bool = False):
        super().__init__()
        if not T > 0:
            raise ValueError(f"T must be positive, got {T}")
        self.dynamics = CNFDynamics(velocity, divergence, probe)
        self.T, self.method, self.rtol, self.atol, self.adjoint = float(T), method, rtol, atol, adjoint

    @property
    def dim(self) -> int:
        return self.dynamics.velocity.dim

    def _solve(self, state, t0, t1, generator=None):
        if self.dynamics.divergence == "hutchinson":
            self.dynamics.resample_probe(state[0], generator)
        ts = torch.tensor([t0, t1], dtype=state[0].dtype, device=state[0].device)
        solve = odeint_adjoint if self.adjoint else odeint
        out = solve(self.dynamics, state, ts, method=self.method, rtol=self.rtol, atol=self.atol)
        return out[0][-1], out[1][-1]

    def log_prob(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """log p(x) for data x of shape (B, D); returns (B,). Integrates x backwards to the base."""
        check_tensor("x", x, ndim=2, last_dim=self.dim)
        check_generator("generator", generator)
        z0, delta = self._solve((x, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)),
                                self.T, 0.0, generator)
        # delta = int_T^0 -div dt = int_0^T div dt
        return standard_normal_log_prob(z0) - delta

    def sample(self, n: int, generator: torch.Generator | None = None, return_log_prob: bool = False,
               device=None):
        """n samples by pushing base noise forwards from t = 0 to T (optionally with their log p)."""
        check_positive_int("n", n)
        p = next(self.parameters(), None)
        z0 = randn((n, self.dim), generator=generator, dtype=p.dtype if p is not None else None,
                   device=device if device is not None else (p.device if p is not None else None))
        return self.push_forward(z0, return_log_prob, generator)

    def push_forward(self, z0: torch.Tensor, return_log_prob: bool = False, generator=None):
        """x = z(T) for given base points z0 (B, D); with ``return_log_prob``, also log p(x)."""
        check_tensor("z0", z0, ndim=2, last_dim=self.dim)
        x, logp = self._solve((z0, standard_normal_log_prob(z0)), 0.0, self.T, generator)
        return (x, logp) if return_log_prob else x
