"""Data for the course: named 2-D point clouds, Gaussian mixtures with exact densities and scores, and
handwritten digits (chapter 3 on).

``GaussianMixture`` is the course's "known answer": its density, its score and the exact law of
its noised version ``alpha * X + sigma * eps`` are all closed forms, so every sampler in chapters
0-2 can be checked against the truth (chapter 0, section "FFJORD on a known density").
"""
from __future__ import annotations

import math
import os
import urllib.error

import torch

from ._checks import check_generator, check_positive_int, check_tensor
from .tensors import randn

__all__ = ["toy_2d", "TOY_2D_NAMES", "GaussianMixture", "example_mixture", "digits", "DIGITS_HELD_OUT_PER_CLASS",
           "hue_colours", "tint", "tinted_digits",
           "cifar10", "DATA_CACHE"]

DATA_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "cache")
"""Where downloads go (git-ignored): ``data/cache/`` in the repository."""


def _randn(n, d, generator, dtype=torch.float32):
    return torch.randn(n, d, generator=generator, dtype=dtype)


def _rand(n, generator):
    return torch.rand(n, generator=generator)


def _moons(n, g):
    n1 = n // 2
    t = math.pi * _rand(n, g)
    upper = torch.stack([torch.cos(t[:n1]), torch.sin(t[:n1])], 1)
    lower = torch.stack([1 - torch.cos(t[n1:]), 0.5 - torch.sin(t[n1:])], 1)
    x = torch.cat([upper, lower]) + 0.05 * _randn(n, 2, g)
    return (x - torch.tensor([0.5, 0.25])) * 2.0


def _eight_gaussians(n, g):
    k = torch.randint(0, 8, (n,), generator=g)
    ang = k.float() * (2 * math.pi / 8)
    centers = 2.0 * torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    return centers + 0.15 * _randn(n, 2, g)


def _checkerboard(n, g):
    # a 4x4 board on [-2, 2]^2: x2 lands in a unit square of the colour that matches x1's column
    x1 = 4 * _rand(n, g) - 2
    x2 = _rand(n, g) - 2 * torch.randint(0, 2, (n,), generator=g).float() + torch.floor(x1) % 2
    return torch.stack([x1, x2], 1)


def _swiss_roll(n, g):
    t = 1.5 * math.pi * (1 + 2 * _rand(n, g))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 5.0
    return x + 0.1 * _randn(n, 2, g)


def _circles(n, g):
    n1 = n // 2
    t = 2 * math.pi * _rand(n, g)
    r = torch.cat([torch.full((n1,), 2.0), torch.full((n - n1,), 1.0)])
    return torch.stack([r * torch.cos(t), r * torch.sin(t)], 1) + 0.08 * _randn(n, 2, g)


def _two_spirals(n, g):
    n1 = n // 2
    t = torch.sqrt(_rand(n, g)) * 3 * math.pi
    sign = torch.cat([torch.ones(n1), -torch.ones(n - n1)])[:, None]
    x = sign * torch.stack([-t * torch.cos(t), t * torch.sin(t)], 1) / 3.0
    return x + 0.1 * _randn(n, 2, g)


_TOY = {"moons": _moons, "8gaussians": _eight_gaussians, "checkerboard": _checkerboard,
        "swissroll": _swiss_roll, "circles": _circles, "2spirals": _two_spirals}
TOY_2D_NAMES = tuple(sorted(_TOY))


def toy_2d(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample ``n`` points of the named 2-D data set; returns a float32 tensor of shape (n, 2).

    Names: see ``TOY_2D_NAMES``. All sets are roughly centred and scaled to fit in [-4, 4]^2.
    """
    if name not in _TOY:
        raise ValueError(f"name must be one of {TOY_2D_NAMES}, got {name!r}")
    check_positive_int("n", n)
    check_generator("generator", generator)
    return _TOY[name](n, generator)


class GaussianMixture:
    """p(x) = sum_k w_k N(x; mu_k, Sigma_k), with exact ``log_prob``, ``score`` and ``noised``.

    Args:
        means: (K, D) component means.
        covs: (K, D, D) symmetric positive-definite covariances.
        weights: (K,) positive weights; they are normalised to sum to one.
    All tensors are kept in the dtype of ``means`` (float32 unless given float64).
    """

    def __init__(self, means, covs, weights):
        means = torch.as_tensor(means)
        if not means.is_floating_point():
            means = means.float()
        dtype = means.dtype
        covs = torch.as_tensor(covs, dtype=dtype)
        weights = torch.as_tensor(weights, dtype=dtype)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        K, D = means.shape
        if covs.shape != (K, D, D):
            raise ValueError(f"covs must have shape (K, D, D) = ({K}, {D}, {D}), got {tuple(covs.shape)}")
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape (K,) = ({K},), got {tuple(weights.shape)}")
        if not torch.isfinite(means).all() or not torch.isfinite(covs).all():
            raise ValueError("means and covs must be finite")
        if not (torch.isfinite(weights).all() and (weights > 0).all()):
            raise ValueError(f"weights must be finite and positive, got {weights.tolist()}")
        if not torch.allclose(covs, covs.transpose(-1, -2), atol=1e-6, rtol=1e-5):
            raise ValueError("covs must be symmetric (Sigma_k == Sigma_k^T)")
        chol, info = torch.linalg.cholesky_ex(covs)
        if (info != 0).any():
            bad = torch.nonzero(info).flatten().tolist()
            raise ValueError(f"covs must be positive definite; component(s) {bad} are not")
        self.means, self.covs, self.weights = means, covs, weights / weights.sum()
        self._chol = chol  # (K, D, D), Sigma_k = L_k L_k^T
        self._half_logdet = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def _check_x(self, x):
        check_tensor("x", x, ndim=2, last_dim=self.dim)
        return x.to(self.means.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact samples, shape (n, D)."""
        check_positive_int("n", n)
        check_generator("generator", generator)
        where = generator.device if generator is not None else self.weights.device
        k = torch.multinomial(self.weights.to(where), n, replacement=True, generator=generator)  # (n,)
        eps = randn((n, self.dim), like=self.means, generator=generator)
        k = k.to(self.means.device)
        return self.means[k] + (self._chol[k] @ eps[:, :, None]).squeeze(-1)

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; mu_k, Sigma_k), shape (B, K)."""
        x = self._check_x(x)
        diff = x[:, None, :] - self.means[None]  # (B, K, D)
        L = self._chol.expand(x.shape[0], -1, -1, -1)
        y = torch.linalg.solve_triangular(L, diff[..., None], upper=False).squeeze(-1)  # L^-1 (x - mu)
        maha = (y ** 2).sum(-1)  # (B, K)
        return (torch.log(self.weights) - self._half_logdet
                - 0.5 * self.dim * math.log(2 * math.pi) - 0.5 * maha)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), shape (B,)."""
        return torch.logsumexp(self.component_log_probs(x), dim=1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities p(k | x), shape (B, K)."""
        return torch.softmax(self.component_log_probs(x), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log p(x) = sum_k p(k|x) Sigma_k^{-1} (mu_k - x), shape (B, D)."""
        x = self._check_x(x)
        r = self.responsibilities(x)  # (B, K)
        diff = (self.means[None] - x[:, None, :])[..., None]  # (B, K, D, 1)
        prec_diff = torch.cholesky_solve(diff, self._chol.expand(x.shape[0], -1, -1, -1)).squeeze(-1)
        return (r[..., None] * prec_diff).sum(1)

    def noised(self, alpha: float, sigma: float) -> "GaussianMixture":
        """The exact law of alpha * X + sigma * eps, X ~ self, eps ~ N(0, I): again a mixture,
        with means alpha mu_k and covariances alpha^2 Sigma_k + sigma^2 I."""
        alpha, sigma = float(alpha), float(sigma)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
        if alpha == 0 and sigma == 0:
            raise ValueError("alpha and sigma cannot both be 0 (the result would be a point mass)")
        eye = torch.eye(self.dim, dtype=self.means.dtype, device=self.means.device)
        return GaussianMixture(alpha * self.means, alpha ** 2 * self.covs + sigma ** 2 * eye, self.weights)

    def entropy_estimate(self, n: int = 200_000, generator: torch.Generator | None = None):
        """Monte Carlo entropy H = -E[log p(X)] in nats, returned as (estimate, standard error).

        A mixture's entropy has no closed form; with n = 200k samples the standard error is ~0.002.
        """
        x = self.sample(n, generator)
        lp = self.log_prob(x).double()
        return float(-lp.mean()), float(lp.std() / math.sqrt(n))

    def __repr__(self):
        weights = [round(w, 4) for w in self.weights.tolist()]
        return f"GaussianMixture(K={self.n_components}, D={self.dim}, weights={weights})"


def example_mixture(dtype: torch.dtype = torch.float32) -> GaussianMixture:
    """The course's standard 2-D target (chapters 0-2): three unequal, anisotropic components."""
    means = [[-1.2, -0.6], [1.2, -0.6], [0.0, 1.2]]
    covs = [[[0.30, 0.12], [0.12, 0.20]],
            [[0.25, -0.10], [-0.10, 0.25]],
            [[0.40, 0.00], [0.00, 0.12]]]
    weights = [0.5, 0.3, 0.2]
    return GaussianMixture(torch.tensor(means, dtype=dtype), torch.tensor(covs, dtype=dtype),
                           torch.tensor(weights, dtype=dtype))


DIGITS_HELD_OUT_PER_CLASS = 36
"""Held-out digits per class: 360 of scikit-learn's 1797 (20%), the same ones on every machine."""


def digits(split: str = "train", size: int = 8, dtype: torch.dtype = torch.float32):
    """scikit-learn's 8x8 handwritten digits (1797 images of 0-9, shipped inside that package: no
    download), scaled from their 17 grey levels 0..16 to [-1, 1]. Returns ``(images, labels)``:
    images (N, 1, size, size) and int64 labels (N,).

    ``split``: "train" (1437 images), "test" (the 360 held out, 36 per class, chosen once by a fixed
    seed and stratified by class, the same on every machine) or "all". ``size`` 8 is the data as
    drawn; 16 upsamples bilinearly (the images look smoother; the content is the same).
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if size not in (8, 16):
        raise ValueError(f"size must be 8 (the data as drawn) or 16 (upsampled), got {size!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("digits() needs scikit-learn (pip install scikit-learn), which ships the images") from err
    raw = load_digits()
    images = torch.tensor(raw.images, dtype=torch.float64)[:, None] / 8.0 - 1.0  # 0..16 -> [-1, 1]
    labels = torch.tensor(raw.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(1797)
    held_out = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(10):
        members = torch.nonzero(labels == c).flatten()
        held_out[members[torch.randperm(len(members), generator=g)[:DIGITS_HELD_OUT_PER_CLASS]]] = True
    keep = {"train": ~held_out, "test": held_out, "all": torch.ones_like(held_out)}[split]
    images, labels = images[keep], labels[keep]
    if size == 16:
        images = torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
    return images.to(dtype), labels


def hue_colours(hues: torch.Tensor) -> torch.Tensor:
    """Fully saturated, full-value RGB colours in [0, 1] for hues (N,) in [0, 1) (the HSV colour wheel:
    0 red, 1/3 green, 2/3 blue). Returns (N, 3)."""
    h = torch.as_tensor(hues, dtype=torch.float64).remainder(1.0)[:, None] * 6.0
    return torch.stack([(h - 3).abs() - 1, 2 - (h - 2).abs(), 2 - (h - 4).abs()], dim=-1).squeeze(1).clamp(0, 1)


def tint(images: torch.Tensor, hues: torch.Tensor) -> torch.Tensor:
    """Colour grey digits (N, 1, H, W) in [-1, 1]: the ink takes the colour of ``hues`` (N,) on a black
    background, intensity kept (ink a in [0, 1] becomes a * colour). Returns (N, 3, H, W) in [-1, 1]."""
    check_tensor("images", images, ndim=4)
    if images.shape[1] != 1 or hues.shape != (images.shape[0],):
        raise ValueError(f"need images (N, 1, H, W) and hues (N,), got {tuple(images.shape)} and {tuple(hues.shape)}")
    colour = hue_colours(hues).to(images)[:, :, None, None]
    return (images + 1) * colour - 1


def tinted_digits(split: str = "train", seed: int = 0, dtype: torch.dtype = torch.float32):
    """The digits of ``split`` with each image's ink in one colour of random hue (uniform, from ``seed``):
    the colorization data of chapter 4. Returns ``(images (N, 3, 8, 8), labels, hues)``."""
    x, y = digits(split, dtype=dtype)
    hues = torch.rand(len(x), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return tint(x, hues), y, hues


def cifar10(split: str = "train", root: str | None = None, download: bool = False):
    """CIFAR-10 (Krizhevsky 2009) through torchvision: 50,000 training or 10,000 test images of 32x32
    RGB in 10 classes. Returns ``(images, labels)``: images uint8 (N, 3, 32, 32) in 0..255 (scale with
    ``x / 127.5 - 1`` for [-1, 1]) and int64 labels (N,).

    ``root`` (default ``data/cache/``) holds torchvision's ``cifar-10-batches-py/`` folder; with
    ``download=True`` a missing copy is fetched there (163 MB, once). A missing folder, a corrupt
    file (torchvision checks every file's MD5) or a failed download raise an error that says which
    and what to do, never a traceback from deep inside torchvision.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = DATA_CACHE if root is None else str(root)
    try:
        from torchvision.datasets import CIFAR10
    except ImportError as err:  # torchvision is in requirements.txt; an older install may lack it
        raise ImportError("cifar10() needs torchvision (pip install -r requirements.txt)") from err
    folder = os.path.join(root, CIFAR10.base_folder)
    if not download and not os.path.isdir(folder):
        raise FileNotFoundError(f"root: no CIFAR-10 at {folder!r}; download it once with "
                                "cifar10(download=True) or `python -m course_utils.scale download`")
    try:
        ds = CIFAR10(root, train=(split == "train"), download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted" (a file's MD5 check failed)
        raise ValueError(f"root: the CIFAR-10 files in {folder!r} (or the archive just downloaded into {root!r}) "
                         "are incomplete or corrupt: an MD5 check failed; delete them and download again") from err
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:  # no network
        raise ConnectionError(f"download: CIFAR-10 could not be downloaded to {root!r} ({err}); "
                              f"copy cifar-10-python.tar.gz there from a machine with a network, or "
                              "unpack it into cifar-10-batches-py/") from err
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    return images, torch.tensor(ds.targets, dtype=torch.int64)
