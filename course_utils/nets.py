"""Networks. Every network is ``forward(x, t, cond=None)`` with x of shape (B, *D) and t of shape (B,).

* ``TimeEmbedding``: sinusoidal features of t (as a transformer's positional encoding), then an MLP.
* ``ScoreMLP``: a small MLP on [x, embedding(t)] for 2-D data (chapter 2), fast on a CPU.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import check_tensor

__all__ = ["sinusoidal_features", "TimeEmbedding", "ScoreMLP"]


def sinusoidal_features(t: torch.Tensor, dim: int, max_period: float = 10_000.0, scale: float = 1000.0):
    """[cos(w_k s), sin(w_k s)] with s = scale * t and w_k = max_period^(-k / (dim/2)); (B,) -> (B, dim).

    ``scale`` maps continuous t in [0, 1] onto the range of integer steps these features were
    designed for (0..1000), so nearby times get distinguishable features.
    """
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = scale * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class TimeEmbedding(nn.Module):
    """t (B,) -> (B, dim): sinusoidal features followed by a two-layer MLP."""

    def __init__(self, dim: int = 64, scale: float = 1000.0):
        super().__init__()
        self.dim, self.scale = dim, scale
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_features(t, self.dim, scale=self.scale))


class ScoreMLP(nn.Module):
    """An MLP s(x, t) on [x, TimeEmbedding(t)] for low-dimensional data; output has x's shape.

    ``n_layers`` hidden layers of width ``hidden`` with SiLU. With ``n_classes``, ``cond`` (B,) integer
    labels are embedded and added to the time embedding (used from chapter 4 on).
    """

    def __init__(self, dim: int = 2, hidden: int = 128, n_layers: int = 3, embed_dim: int = 64,
                 n_classes: int | None = None, time_scale: float = 1000.0):
        super().__init__()
        self.dim = dim
        self.time_embed = TimeEmbedding(embed_dim, scale=time_scale)
        self.class_embed = nn.Embedding(n_classes, embed_dim) if n_classes else None
        layers, width = [], dim + embed_dim
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor("x", x, ndim=2, last_dim=self.dim)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
        emb = self.time_embed(t)
        if cond is not None:
            if self.class_embed is None:
                raise ValueError("cond was given, but this ScoreMLP was built without n_classes")
            emb = emb + self.class_embed(cond)
        return self.net(torch.cat([x, emb.to(x.dtype)], dim=1))
