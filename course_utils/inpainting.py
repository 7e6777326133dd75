"""Conditioning an *unconditional* noise predictor on known pixels (chapter 4): inpainting by replacement
and by RePaint's resampling (Lugmayr et al. 2022), and colorization as inpainting in an orthogonal
basis of the colour channels in which the grey channel is the known one.

``inpaint`` runs DDIM's update (Eq. 3.8; eta = 1 on all N indices is DDPM's Algorithm 2) and after every
step replaces the known part by a fresh draw from the forward process at the new noise level,
sqrt(alpha_bar_s) y + sqrt(1 - alpha_bar_s) eps: the known part then has exactly the marginals it would
have under the model, and the network fills in the rest around it. Replacement alone harmonises poorly
(the unknown part only ever sees the known part through one step at a time); ``resample = U`` goes
back up one step (x_i ~ q(x_i | x_s), fresh noise) and repeats it U times, letting both parts agree;
``jump = j`` goes back up j steps at a time (RePaint's jump length), which gives the noisier levels, where the
digit's identity is decided, a chance to change their mind.

``inpaint_smc`` is a particle filter instead (SMCDiff, Trippe et al. 2023): the known part follows one
trajectory of the forward process, K particles propose the unknown part by the model's reverse step, and each
is weighted by the model's reverse density of the known part's next value, then resampled. As K grows it
becomes exact for a model whose chain is the exact reverse of the forward process (SMCDiff's assumption), which
no amount of RePaint's resampling promises.
"""
from __future__ import annotations

import math

import torch

from ._checks import check_generator, check_positive_int
from .ddpm import _ab, _check_schedule, _check_timesteps, _check_x, _eps
from .schedules import DiscreteSchedule
from .tensors import rand, randn

__all__ = ["inpaint", "inpaint_smc", "grey_basis", "repaint_moves"]


def grey_basis(channels: int = 3, dtype=torch.float64) -> torch.Tensor:
    """An orthogonal (C, C) matrix whose first row is (1, ..., 1) / sqrt(C): coordinate 0 of ``basis @ rgb``
    is the grey level (times sqrt(C)) and the others are colour differences orthogonal to it
    (Gram-Schmidt on the identity). Orthogonal, so N(0, I) noise stays N(0, I) in the new coordinates."""
    check_positive_int("channels", channels)
    m = torch.eye(channels, dtype=torch.float64)
    m[0] = 1.0
    q, _ = torch.linalg.qr(m.T)  # columns: an orthonormal basis starting with (1, ..., 1) / sqrt(C)
    q = q * torch.sign(q[0, 0])
    return q.T.to(dtype)


def _to_basis(x, basis):
    return x if basis is None else torch.einsum("dc,bc...->bd...", basis.to(x), x)


def _from_basis(x, basis):
    return x if basis is None else torch.einsum("dc,bd...->bc...", basis.to(x), x)


def _check_mask(x_known, mask, basis):
    """``mask`` as a boolean tensor of x_known's shape (1 = known) and ``basis`` as a float64 orthogonal matrix."""
    mask = torch.as_tensor(mask, device=x_known.device)
    try:
        keep = torch.broadcast_to(mask, x_known.shape)
    except RuntimeError as err:
        raise ValueError(f"mask must broadcast to x_known's shape {tuple(x_known.shape)}, got {tuple(mask.shape)}") \
            from err
    if keep.dtype != torch.bool:
        if not ((keep == 0) | (keep == 1)).all():
            raise ValueError("mask must hold only 0 and 1 (1 = known)")
        keep = keep.bool()
    if basis is not None:
        basis = torch.as_tensor(basis, dtype=torch.float64)
        C = x_known.shape[1]
        if basis.shape != (C, C) or not torch.allclose(basis @ basis.T, torch.eye(C, dtype=torch.float64), atol=1e-6):
            raise ValueError(f"basis must be an orthogonal ({C}, {C}) matrix (basis @ basis.T = I)")
    return keep, basis


def repaint_moves(n_steps: int, resample: int = 1, jump: int = 1) -> list[tuple[int, int]]:
    """RePaint's walk over grid positions 0 (the noisiest index) .. n_steps (the clean image), as (from, to)
    moves: ``to = from + 1`` is a denoising step (one network evaluation), ``to = from - jump`` goes back up
    through the forward process. The turning points are counted from the clean end, as in Lugmayr et al.'s
    schedule: arriving at position n_steps - 1 - k * jump (k = 0, 1, ...; at least ``jump``, so the walk stays
    on the grid), it goes back up ``jump`` positions and down again, ``resample - 1`` times. Every step is then
    taken ``resample`` times, except the noisiest few before the first turning point and the last step, to the
    clean image, which are taken once; ``jump = 1`` resamples each step on its own (the paper's j = 1, r = U)."""
    check_positive_int("n_steps", n_steps)
    check_positive_int("resample", resample)
    check_positive_int("jump", jump)
    left = {p: resample - 1 for p in range(n_steps - 1, jump - 1, -jump)}
    moves, p = [], 0
    while p < n_steps:
        moves.append((p, p + 1))
        p += 1
        if left.get(p, 0) > 0:
            left[p] -= 1
            moves.append((p, p - jump))
            p -= jump
    return moves


@torch.no_grad()
def inpaint(schedule: DiscreteSchedule, eps_model, x_known: torch.Tensor, mask: torch.Tensor, *, timesteps=None,
            n_steps: int | None = None, eta: float = 1.0, resample: int = 1, jump: int = 1,
            basis: torch.Tensor | None = None, x_T: torch.Tensor | None = None,
            generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """Sample the unknown part of ``x_known`` (B, C, H, W) given the part where ``mask`` is 1 (a 0/1 tensor
    broadcastable to x_known: per pixel, or per channel of ``basis @ x``).

    ``timesteps`` / ``n_steps``: the index grid (as ``ddim_sample``); ``eta``: the DDIM noise (1: ancestral);
    ``resample``: RePaint's U (1 = plain replacement); ``jump``: how many grid steps each resampling goes back
    up (RePaint's jump length j; see ``repaint_moves``); ``basis``: an orthogonal (C, C) matrix in whose
    coordinates ``mask`` applies (``grey_basis()`` for colorization; None: the pixels themselves). The
    returned images carry the known part exactly (bit-identical pixels when ``basis`` is None).
    ``callback(dict(i, t, x, x0_hat, u))`` before every network evaluation (i: the grid position, u: how many
    times that step was taken before). About N_steps x U evaluations (``repaint_moves`` counts them)."""
    _check_schedule(schedule)
    _check_x("x_known", x_known)
    check_generator("generator", generator)
    check_positive_int("resample", resample)
    check_positive_int("jump", jump)
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (math.isfinite(eta) and 0 <= eta <= 1):
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    keep, basis = _check_mask(x_known, mask, basis)
    steps = _check_timesteps(schedule, timesteps, n_steps)
    y = _to_basis(x_known, basis)  # the known values, in the coordinates the mask speaks of

    def merge(x, ab):  # the known part drawn at noise level alpha_bar = ab, the rest from x
        known = math.sqrt(ab) * y + math.sqrt(1 - ab) * randn(y.shape, like=y, generator=generator) if ab < 1 else y
        return _from_basis(torch.where(keep, known, _to_basis(x, basis)), basis)

    x = randn(x_known.shape, like=x_known, generator=generator) if x_T is None else x_T
    if x.shape != x_known.shape:
        raise ValueError(f"x_T must have x_known's shape {tuple(x_known.shape)}, got {tuple(x.shape)}")
    levels = list(steps) + [-1]  # position p on the grid: index levels[p]; the last position is the clean image
    visits = [0] * len(steps)
    for p, q in repaint_moves(len(steps), resample, jump):
        i, s = levels[p], levels[q]
        ab, ab_s = _ab(schedule, i), _ab(schedule, s)
        if q < p:  # back up the grid through the forward process q(x_s | x_i), s noisier than i
            r = ab_s / ab
            x = math.sqrt(r) * x + math.sqrt(1 - r) * randn(x.shape, like=x, generator=generator)
            continue
        eps, t = _eps(eps_model, schedule, x, i)
        x0_hat = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        if callback is not None:
            callback(dict(i=p, t=float(t[0]), x=x, x0_hat=x0_hat, u=visits[p]))
        visits[p] += 1
        sigma = eta * math.sqrt((1 - ab_s) / (1 - ab)) * math.sqrt(1 - ab / ab_s)
        x_s = math.sqrt(ab_s) * x0_hat + math.sqrt(max(1 - ab_s - sigma ** 2, 0.0)) * eps
        if sigma > 0:
            x_s = x_s + sigma * randn(x.shape, like=x, generator=generator)
        x = merge(x_s, ab_s)
    if basis is None:
        x = torch.where(keep, x_known, x)  # exactly the given pixels
    return x


def _systematic(w: torch.Tensor, generator) -> torch.Tensor:
    """Systematic resampling: for weights w (B, K) summing to 1 per row, K indices per row whose counts are
    K w rounded up or down (one uniform number per row)."""
    B, K = w.shape
    u = (rand((B, 1), like=w, generator=generator) + torch.arange(K, dtype=w.dtype, device=w.device)) / K
    return torch.searchsorted(w.cumsum(1), u).clamp_(max=K - 1)


@torch.no_grad()
def inpaint_smc(schedule: DiscreteSchedule, eps_model, x_known: torch.Tensor, mask: torch.Tensor, *, particles: int,
                timesteps=None, n_steps: int | None = None, basis: torch.Tensor | None = None,
                ess_threshold: float = 0.5, generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """Inpainting by sequential Monte Carlo over DDPM's reverse chain (SMCDiff): ``particles`` = K per image.

    The known part y takes one path y_N, ..., y_1 of the forward process (drawn clean end first, each level
    from the one before). Each particle's unknown part is proposed by the model's ancestral step
    p(x_s | x_i) (eta = 1) and the particle is weighted by the same step's Gaussian density of the known part's
    next value, N(y_s; mu_known(x_i), sigma_i^2 I). Weights accumulate and the particles are resampled
    (systematic) whenever the effective sample size 1 / sum w^2 falls below ``ess_threshold`` x K (in (0, 1]; 1:
    nearly every step, which lets the particles' ancestry collapse by chance); one particle per image is
    drawn by its weight at the end. The last step, to the clean image, is deterministic and is not weighted.
    K = 1 is replacement along one forward trajectory; as K grows the output approaches a sample of
    p_model(unknown | the known part's path), which is p(unknown | known) when the model's chain is the exact
    reverse of the forward process. Arguments as ``inpaint``; about N_steps x K network evaluations per image, in
    batches of B x K. ``callback(dict(i, t, ess, resampled))`` after every weighted step (ess: (B,), before
    resampling)."""
    _check_schedule(schedule)
    _check_x("x_known", x_known)
    check_generator("generator", generator)
    check_positive_int("particles", particles)
    if isinstance(ess_threshold, bool) or not isinstance(ess_threshold, (int, float)) or not 0 < ess_threshold <= 1:
        raise ValueError(f"ess_threshold must be a number in (0, 1], got {ess_threshold!r}")
    keep, basis = _check_mask(x_known, mask, basis)
    steps = _check_timesteps(schedule, timesteps, n_steps)
    B, K = x_known.shape[0], particles
    y = _to_basis(x_known, basis)
    path, prev, ab_prev = {-1: y}, y, 1.0  # the known part's forward trajectory, clean end first
    for i in reversed(steps):
        r = _ab(schedule, i) / ab_prev
        prev = math.sqrt(r) * prev + math.sqrt(1 - r) * randn(y.shape, like=y, generator=generator)
        path[i], ab_prev = prev, _ab(schedule, i)

    def rep(t):  # (B, ...) -> (B K, ...), each image's K particles side by side
        return t.repeat_interleave(K, 0)

    kk = rep(keep)
    x = randn((B * K,) + tuple(x_known.shape[1:]), like=x_known, generator=generator)
    x = _from_basis(torch.where(kk, rep(path[steps[0]]), _to_basis(x, basis)), basis)
    logw = torch.zeros(B, K, dtype=torch.float64, device=x_known.device)
    levels = list(steps) + [-1]
    for i, s in zip(levels[:-1], levels[1:]):
        ab, ab_s = _ab(schedule, i), _ab(schedule, s)
        eps, t = _eps(eps_model, schedule, x, i)
        x0_hat = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        sigma = math.sqrt((1 - ab_s) / (1 - ab)) * math.sqrt(1 - ab / ab_s)
        mu = _to_basis(math.sqrt(ab_s) * x0_hat + math.sqrt(max(1 - ab_s - sigma ** 2, 0.0)) * eps, basis)
        y_s = rep(path[s])
        if sigma > 0:
            d = torch.where(kk, y_s - mu, torch.zeros_like(mu)).double()
            logw = logw - d.pow(2).flatten(1).sum(1).view(B, K) / (2 * sigma ** 2)
            w = torch.softmax(logw, 1)
            ess = 1 / w.pow(2).sum(1)
            low = ess < ess_threshold * K
            if callback is not None:
                callback(dict(i=i, t=float(t[0]), ess=ess, resampled=low))
            if low.any():
                idx = torch.where(low[:, None], _systematic(w, generator),
                                  torch.arange(K, device=w.device).expand(B, K))
                mu = mu[(idx + K * torch.arange(B, device=w.device)[:, None]).flatten()]
                logw = torch.where(low[:, None], torch.zeros_like(logw), logw)
            mu = mu + sigma * randn(mu.shape, like=mu, generator=generator)
        x = _from_basis(torch.where(kk, y_s, mu), basis)
    w = torch.softmax(logw, 1)
    pick = torch.searchsorted(w.cumsum(1), rand((B, 1), like=w, generator=generator))[:, 0].clamp_(max=K - 1)
    x = x[pick + K * torch.arange(B, device=x.device)]
    if basis is None:
        x = torch.where(keep, x_known, x)
    return x
