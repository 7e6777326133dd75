"""A finite-volume solver for the 1-D Fokker-Planck equation (chapter 1, section 3).

For dX = f(X, t) dt + g(t) dW the density of X_t obeys

    d p / d t = - d/dx [ f p ] + 1/2 g(t)^2 d^2 p / dx^2                                  (Eq. 1.3)

We write it in conservation form, dp/dt = -dJ/dx with the probability flux J = f p - 1/2 g^2 dp/dx,
on cells of a uniform grid with no flux through the two ends (so total probability is conserved
exactly), and integrate the resulting system of ODEs in time with scipy's stiff solver (BDF), as
the diffusion term makes it stiff.
"""
from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp
from scipy.sparse import diags

__all__ = ["fokker_planck_1d"]


def fokker_planck_1d(f, g, p0, x, ts, rtol: float = 1e-7, atol: float = 1e-10) -> np.ndarray:
    """Densities p(x, t) for every t in ``ts`` (increasing, starting at the time of ``p0``).

    Args:
        f: drift, ``f(x, t)`` on a NumPy array of positions (vectorised).
        g: diffusion, ``g(t)`` a non-negative float.
        p0: initial density on the grid ``x`` (an array of the same length).
        x: uniform, increasing grid of cell centres wide enough that p stays ~0 at both ends.
        ts: increasing times; ``ts[0]`` is the time of ``p0``.
    Returns an array of shape (len(ts), len(x)).
    """
    x = np.asarray(x, dtype=np.float64)
    p0 = np.asarray(p0, dtype=np.float64)
    ts = np.asarray(ts, dtype=np.float64)
    if x.ndim != 1 or len(x) < 3:
        raise ValueError(f"x must be a 1-D grid of at least 3 points, got shape {x.shape}")
    dx = np.diff(x)
    if not (dx > 0).all() or not np.allclose(dx, dx[0], rtol=1e-6):
        raise ValueError("x must be uniform and increasing")
    if p0.shape != x.shape:
        raise ValueError(f"p0 must have the shape of x {x.shape}, got {p0.shape}")
    if not np.isfinite(p0).all() or (p0 < 0).any():
        raise ValueError("p0 must be finite and non-negative")
    if ts.ndim != 1 or len(ts) < 1 or (np.diff(ts) <= 0).any():
        raise ValueError("ts must be a 1-D increasing array of times")
    h = dx[0]
    x_face = 0.5 * (x[1:] + x[:-1])  # interior cell faces

    def rhs(t, p):
        gt = float(g(t))
        if not np.isfinite(gt) or gt < 0:
            raise ValueError(f"g(t) must be finite and non-negative, got {gt} at t = {t}")
        p_face = 0.5 * (p[1:] + p[:-1])
        flux = f(x_face, t) * p_face - 0.5 * gt ** 2 * (p[1:] - p[:-1]) / h  # J at interior faces
        J = np.concatenate([[0.0], flux, [0.0]])  # no flux through the ends
        return -(J[1:] - J[:-1]) / h

    sparsity = diags([1.0, 1.0, 1.0], [-1, 0, 1], shape=(len(x), len(x)))
    sol = solve_ivp(rhs, (ts[0], ts[-1]), p0, method="BDF", t_eval=ts, rtol=rtol, atol=atol,
                    jac_sparsity=sparsity)
    if not sol.success:
        raise RuntimeError(f"the Fokker-Planck integration failed: {sol.message}")
    return sol.y.T
