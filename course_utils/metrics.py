"""Two-sample distances between point clouds, and the noise floor they must be compared with.

A two-sample distance between two finite samples is never zero, even when both come from the same
distribution: it has a *noise floor*. A single value between samples of a few thousand points also
varies by a factor of 2-4 from draw to draw, so compare averages over several independent draws
(``distance_ratio``) or statistics with known standard errors (``mode_weights``, mean log-density).

For images (chapter 3 on): ``frechet_distance`` between two sets of feature vectors (the Frechet
distance of Gaussians fitted to them; FID when the features are Inception's, here the course's digits
classifier's), and ``classifier_report`` (predicted-class frequencies and mean confidence).
"""
from __future__ import annotations

import math
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ._checks import check_generator, check_positive_int, check_tensor
from .tensors import randn

__all__ = ["energy_distance", "sliced_wasserstein", "noise_floor", "distance_ratio", "mode_weights",
           "sample_quality", "gaussian_frechet", "frechet_distance", "classifier_report", "flops_per_item",
           "interleaved_best_seconds", "paired_difference", "mean_se"]


def _pair(x, y):
    check_tensor("x", x, ndim=2)
    check_tensor("y", y, ndim=2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    return x.double(), y.double()


def _mean_dist(a, b, chunk=2048):
    total = 0.0
    for i in range(0, a.shape[0], chunk):
        total += torch.cdist(a[i:i + chunk], b).sum().item()
    return total / (a.shape[0] * b.shape[0])


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| between samples x (n, D) and y (m, D).

    The plain (V-statistic) estimate: non-negative, zero only when the samples coincide, and with a
    positive noise floor of order 1/n for two samples of the same law (Szekely & Rizzo 2013).
    """
    x, y = _pair(x, y)
    return 2 * _mean_dist(x, y) - _mean_dist(x, x) - _mean_dist(y, y)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 256,
                       generator: torch.Generator | None = None) -> float:
    """Sliced 2-Wasserstein distance: the root mean squared W2 of random 1-D projections.

    x and y must have the same number of points (each 1-D W2 is then a sort and a difference).
    """
    x, y = _pair(x, y)
    check_positive_int("n_projections", n_projections)
    check_generator("generator", generator)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of points, got {x.shape[0]} and {y.shape[0]}")
    dirs = randn((x.shape[1], n_projections), like=x, generator=generator)  # float64, on x's device
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ dirs, dim=0)
    py, _ = torch.sort(y @ dirs, dim=0)
    return math.sqrt(((px - py) ** 2).mean().item())


def noise_floor(sample_fn, n: int, distance=energy_distance, repeats: int = 10,
                generator: torch.Generator | None = None):
    """Mean and standard deviation of ``distance(a, b)`` for pairs of independent true samples.

    ``sample_fn(n, generator)`` draws n true points. This is the best a perfect model can score with
    samples of size n: judge a model by its distance *relative* to this floor.
    """
    check_positive_int("n", n)
    check_positive_int("repeats", repeats)
    vals = torch.tensor([distance(sample_fn(n, generator), sample_fn(n, generator))
                         for _ in range(repeats)], dtype=torch.float64)
    return float(vals.mean()), float(vals.std()) if repeats > 1 else 0.0


def distance_ratio(samples: list, sample_fn, distance=energy_distance,
                   generator: torch.Generator | None = None):
    """Average distance of several independent model samples to fresh true samples, divided by the
    noise floor averaged over as many true-vs-true pairs. Returns (ratio, model_mean, floor_mean).

    A perfect model scores about 1; a single pair varies by 2-4x, so pass >= 10 samples.
    """
    if not samples:
        raise ValueError("samples must be a non-empty list of (n, D) tensors")
    model = [distance(s, sample_fn(s.shape[0], generator)) for s in samples]
    floor = [distance(sample_fn(s.shape[0], generator), sample_fn(s.shape[0], generator)) for s in samples]
    m, f = sum(model) / len(model), sum(floor) / len(floor)
    return m / f, m, f


def mode_weights(x: torch.Tensor, mixture) -> torch.Tensor:
    """Fraction of the points of x assigned (by largest posterior p(k|x)) to each component; (K,).

    Its standard error is about sqrt(w (1 - w) / n), so a model's mode weights can be judged exactly.
    """
    k = mixture.responsibilities(x).argmax(1)
    return torch.bincount(k, minlength=mixture.n_components).double() / x.shape[0]


def sample_quality(x: torch.Tensor, mixture, reference_logp: float, chunk: int = 500,
                   generator: torch.Generator | None = None):
    """The course's three measures of samples x (n, D) from a model of a ``GaussianMixture``:

    * the energy distance to fresh data over its noise floor, averaged over draws of ``chunk`` points
      (``distance_ratio``; a perfect sampler scores about 1);
    * the largest error of the mode weights (standard error <= sqrt(0.25 / n));
    * the samples' mean log-density under the mixture minus ``reference_logp``, the mean log-density of
      true samples (this catches a covariance inflation the distance misses).

    Returns (ratio, max_weight_error, delta_logp).
    """
    check_tensor("x", x, ndim=2, last_dim=mixture.dim)
    if x.shape[0] < 2 * chunk:
        raise ValueError(f"x must hold at least 2 * chunk = {2 * chunk} points, got {x.shape[0]}")
    ratio = distance_ratio(list(x.split(chunk)), mixture.sample, generator=generator)[0]
    dw = (mode_weights(x, mixture) - mixture.weights.double()).abs().max().item()
    return ratio, dw, mixture.log_prob(x).mean().item() - reference_logp


def gaussian_frechet(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """The Frechet (2-Wasserstein squared) distance between N(mu1, cov1) and N(mu2, cov2):
    |mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1^(1/2) cov2 cov1^(1/2))^(1/2)), in float64 through symmetric
    eigendecompositions (no complex matrix square roots)."""
    mu1, mu2, cov1, cov2 = (torch.as_tensor(a, dtype=torch.float64) for a in (mu1, mu2, cov1, cov2))
    d = mu1.shape[-1]
    if mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(f"need means (d,) and covariances (d, d) of one d, got {tuple(mu1.shape)}, "
                         f"{tuple(cov1.shape)}, "
                         f"{tuple(mu2.shape)}, {tuple(cov2.shape)}")
    w, q = torch.linalg.eigh((cov1 + cov1.T) / 2)
    root1 = (q * w.clamp(min=0).sqrt()) @ q.T                      # cov1^(1/2)
    inner = root1 @ cov2 @ root1
    cross = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()  # tr (cov1^1/2 cov2 cov1^1/2)^1/2
    return ((mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * cross).item()


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted (mean, covariance) to two sets of feature vectors
    (n, d). It shrinks as n grows (the covariance estimates' noise inflates it), so compare models only
    at equal n, against the floor of two real sets of that n."""
    for name, f in (("feats_a", feats_a), ("feats_b", feats_b)):
        check_tensor(name, f, ndim=2)
        if f.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 rows to estimate a covariance, got {f.shape[0]}")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f"feature dimensions differ: {feats_a.shape[1]} and {feats_b.shape[1]}")
    a, b = feats_a.double(), feats_b.double()
    return gaussian_frechet(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))


@torch.no_grad()
def classifier_report(images: torch.Tensor, classifier, batch: int = 1000) -> dict:
    """What a classifier makes of a set of images: ``features`` (for ``frechet_distance``),
    ``freqs`` (fraction predicted as each class), ``confidence`` (mean max-probability) and
    ``labels`` (the predicted classes)."""
    check_tensor("images", images, ndim=4)
    feats, probs = [], []
    for i in range(0, len(images), batch):
        f = classifier.features(images[i:i + batch])
        feats.append(f)
        probs.append(classifier.head(f).softmax(1))
    feats, probs = torch.cat(feats), torch.cat(probs)
    labels = probs.argmax(1)
    return dict(features=feats, labels=labels, confidence=probs.max(1).values.mean().item(),
                freqs=torch.bincount(labels, minlength=probs.shape[1]).double() / len(labels))


def flops_per_item(fn, *inputs) -> float:
    """Floating-point operations of one forward call ``fn(*inputs)``, per item of the batch (the first
    dimension of the first input), counted by ``torch.utils.flop_counter`` (matrix products, convolutions and
    attention; a multiply-add counts 2; element-wise operations such as normalisation and activations are
    not counted, so this is a lower bound that the heavy layers dominate)."""
    if not callable(fn):
        raise TypeError(f"fn must be callable (a network or function), got {type(fn).__name__}")
    if not inputs or not isinstance(inputs[0], torch.Tensor) or inputs[0].ndim == 0 or len(inputs[0]) == 0:
        raise ValueError("the first input must be a tensor with a batch dimension of at least one item")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(*inputs)
    return counter.get_total_flops() / len(inputs[0])


def interleaved_best_seconds(calls: dict, rounds: int = 5, warmup: int = 1) -> dict:
    """Seconds of one call of each function in ``calls`` (name -> function of no arguments): ``warmup``
    rounds that are not counted, then ``rounds`` rounds, each calling every function once in turn; for each,
    the fastest of its ``rounds`` calls. Interleaving gives every function the same share of whatever else
    the machine is doing, and the fastest call is the one least disturbed by it, so ratios between the
    functions are fairer on a busy machine than separate timings, though they still move with its load
    (absolute times more so). Runs under whatever grad mode the caller set (wrap in ``torch.no_grad()`` to time
    inference)."""
    if not isinstance(calls, dict) or not calls or not all(callable(f) for f in calls.values()):
        raise ValueError("calls must be a non-empty dict of name -> function of no arguments")
    check_positive_int("rounds", rounds)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    best = {name: math.inf for name in calls}
    for rnd in range(warmup + rounds):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            if rnd >= warmup:
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def mean_se(a, groups=None) -> tuple[float, float]:
    """The mean of ``a`` and its standard error. Without ``groups`` the items count as independent:
    std(a) / sqrt(n). With ``groups`` (one label per item, such as its caption) the standard error is the
    cluster-robust one over the G labels (CR1, Liang and Zeger's with the factor G / (G - 1)): with A_g the
    sum of (a_i - mean a) over the items of label g, se = sqrt(G / (G - 1) * sum_g A_g^2) / n, which equals
    the plain one when every item has its own label. Clustering asks whether a result would hold for other
    labels too (items that share a label may succeed or fail together); it is the conservative figure. With
    few groups, read mean / se as a t statistic with G - 1 degrees of freedom."""
    a = torch.as_tensor(a, dtype=torch.float64)
    if a.ndim != 1 or len(a) < 2:
        raise ValueError(f"a must be 1-D with at least 2 items, got shape {tuple(a.shape)}")
    if groups is None:
        return a.mean().item(), a.std().item() / math.sqrt(len(a))
    groups = groups.tolist() if isinstance(groups, torch.Tensor) else list(groups)   # tensors hash by identity
    if len(groups) != len(a):
        raise ValueError(f"groups must have one label per item ({len(a)}), got {len(groups)}")
    labels = {g: k for k, g in enumerate(dict.fromkeys(groups))}
    if len(labels) < 2:
        raise ValueError("groups must hold at least 2 different labels")
    index = torch.tensor([labels[g] for g in groups], device=a.device)
    sums = torch.zeros(len(labels), dtype=torch.float64, device=a.device).index_add_(0, index, a - a.mean())
    G = len(labels)
    return a.mean().item(), math.sqrt(G / (G - 1) * sums.pow(2).sum().item()) / len(a)


def paired_difference(a, b, groups=None) -> tuple[float, float]:
    """The mean of a - b over paired items (say, whether each image was judged right under two settings with
    the same captions and noise) and its standard error, plain or clustered by ``groups``: ``mean_se(a - b,
    groups)``."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.ndim != 1 or a.shape != b.shape or len(a) < 2:
        raise ValueError(f"a and b must be 1-D with the same length of at least 2, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return mean_se(a - b, groups)
