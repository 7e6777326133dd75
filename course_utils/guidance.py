"""Guidance: wrappers that turn a model into a conditional one (chapter 4). Each takes callables and
returns a callable with the model's own signature, so every sampler works with it unchanged.

Bayes' rule for the noised densities, grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x), gives
both kinds (Eq. 4.6 of notebook 04):

* ``guided_score`` / ``classifier_guidance``: add w times the gradient of a (time-dependent) classifier's
  log p(y | x_t, t) to an unconditional score, or equivalently subtract w sigma(t) times it from a noise
  prediction (Dhariwal and Nichol 2021). w = 1 is the conditional score; w > 1 sharpens p(y | x)^w.
* ``classifier_free_guidance``: one network trained with and without the label (Ho and Salimans 2022):
  eps_w = (1 - w) eps(x, t, no label) + w eps(x, t, y). w = 1 is the conditional model; w > 1 extrapolates
  away from the unconditional one, which by Bayes' rule is guidance by the implicit classifier
  p(y | x) proportional to p(x | y) / p(x).
* ``thresholded``: Imagen's static clipping or dynamic thresholding of the predicted clean image
  x0_hat inside every step (chapter 5), as a noise predictor whose x0_hat is the thresholded one.
"""
from __future__ import annotations

import math

import torch

from ._checks import check_tensor
from .schedules import ForwardProcess, _coef

__all__ = ["classifier_log_prob_grad", "guided_score", "classifier_guidance", "classifier_free_guidance",
           "threshold_x0", "thresholded"]


def _check_w(w):
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise ValueError(f"w must be a finite number, got {w!r}")
    return float(w)


def _labels(y, x):
    y = torch.as_tensor(y, device=x.device)
    if y.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    if y.ndim == 0:
        y = y.expand(x.shape[0])
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must be a label or have shape (B,) = ({x.shape[0]},), got {tuple(y.shape)}")
    return y.long()


def classifier_log_prob_grad(log_prob_fn, x: torch.Tensor, t: torch.Tensor, y) -> torch.Tensor:
    """grad_x log p(y | x, t) for each example, (B, *D). ``log_prob_fn(x, t)`` returns (B, K) logits or
    log-probabilities (log_softmax is applied, which changes neither)."""
    check_tensor("x", x)
    y = _labels(y, x)
    with torch.enable_grad():
        x_ = x.detach().requires_grad_(True)
        logits = log_prob_fn(x_, t)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"log_prob_fn must return (B, K) logits, got {getattr(logits, 'shape', type(logits))}")
        if int(y.max()) >= logits.shape[1] or int(y.min()) < 0:
            raise ValueError(f"y must lie in [0, {logits.shape[1] - 1}] for this classifier's "
                             f"{logits.shape[1]} classes")
        chosen = torch.log_softmax(logits.float(), dim=1).gather(1, y[:, None]).sum()
        return torch.autograd.grad(chosen, x_)[0].to(x.dtype)


def guided_score(score_fn, log_prob_fn, y, w: float):
    """score_w(x, t) = score(x, t) + w grad_x log p(y | x, t) (Eq. 4.6 of notebook 04, weighted)."""
    w = _check_w(w)

    def score(x, t):
        return score_fn(x, t) + w * classifier_log_prob_grad(log_prob_fn, x, t, y)
    return score


def classifier_guidance(eps_fn, log_prob_fn, y, w: float, process: ForwardProcess):
    """The same guidance for a noise predictor: since score = -eps / sigma(t),
    eps_w(x, t) = eps(x, t) - w sigma(t) grad_x log p(y | x, t) (Dhariwal and Nichol 2021, Algorithm 2)."""
    w = _check_w(w)
    if not isinstance(process, ForwardProcess):
        raise TypeError(f"process must be a schedules.ForwardProcess, got {type(process).__name__}")

    def eps(x, t):
        tt = process.check_time(t, x)
        return eps_fn(x, t) - w * _coef(process.sigma(tt), x) * classifier_log_prob_grad(log_prob_fn, x, t, y)
    return eps


def classifier_free_guidance(model, y, w: float):
    """eps_w(x, t) = (1 - w) model(x, t, null) + w model(x, t, y) with one batched call of ``model(x, t,
    cond)`` on 2B inputs. At w = 1 that is the conditional model and at w = 0 the unconditional one, so there
    only that half is computed (B inputs: half the cost, the same numbers). ``model.null_label`` (the course's
    UNet has it) is the "no label" class; a model without it is called twice, with cond=None for the
    unconditional half. A model with a ``null_cond(cond)`` method (``text.TextConditionalUNet``: y holds token
    ids (B, L) or (1, L)) is given that as "no condition"."""
    w = _check_w(w)

    def eps(x, t):
        t = torch.as_tensor(t, device=x.device)
        t2 = t.expand(x.shape[0]) if t.ndim == 0 else t
        null_cond = getattr(model, "null_cond", None)
        if null_cond is not None:  # conditioning other than labels (token ids, chapter 5): the model knows "none"
            cond = torch.as_tensor(y, device=x.device)
            cond = cond.expand(x.shape[0], *cond.shape[1:]) if cond.shape[0] == 1 else cond
            if cond.shape[0] != x.shape[0]:
                raise ValueError(f"y must hold one condition or one per example ({x.shape[0]}), got "
                                 f"{tuple(cond.shape)}")
            null = null_cond(cond)
        else:
            cond = _labels(y, x)
            null = getattr(model, "null_label", None)
            null = None if null is None else torch.full_like(cond, null)  # None: the model's own "no label"
        if w in (0.0, 1.0):  # one half is the answer
            return model(x, t2, cond if w == 1.0 else null)
        if null is None:  # no "none" class: the unconditional half is a second call with cond=None
            return (1 - w) * model(x, t2, None) + w * model(x, t2, cond)
        uncond, c = model(torch.cat([x, x]), torch.cat([t2, t2]), torch.cat([null, cond])).chunk(2)
        return (1 - w) * uncond + w * c
    return eps


def threshold_x0(x0: torch.Tensor, method: str = "dynamic", percentile: float = 0.995) -> torch.Tensor:
    """Bring a predicted clean image back into [-1, 1] (Saharia et al. 2022, section 2.3). "static": clip
    every value to [-1, 1]. "dynamic": per image, s = max(1, the ``percentile`` quantile of |x0|); clip
    to [-s, s] and divide by s, so an image whose values overshoot is shrunk as a whole instead of being
    flattened at +-1 (where s = 1 the two are the same). (B, *D) -> (B, *D).

    ``percentile`` 0.995 is Imagen's, for 64x64 images: it lets the 62 largest of 12,288 values exceed s. On
    a small image it is a handful (4 of a 16x16x3 scene's 768), and those few values set the scale of the
    whole image; on such scenes notebook 05, section 4 finds no loss against static clipping at 0.98, and a
    loss of 12-19 points at 0.995 for w = 10-30."""
    check_tensor("x0", x0, ndim=None)
    if method == "static":
        return x0.clamp(-1.0, 1.0)
    if method != "dynamic":
        raise ValueError(f"method must be 'static' or 'dynamic', got {method!r}")
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must be in (0, 1], got {percentile!r}")
    s = torch.quantile(x0.detach().abs().flatten(1).float(), percentile, dim=1).clamp(min=1.0).to(x0.dtype)
    s = s.reshape(-1, *([1] * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def thresholded(eps_model, process: ForwardProcess, method="dynamic", percentile: float = 0.995, observe=None):
    """eps'(x, t) whose predicted clean image is ``threshold_x0`` of the model's: with x0_hat = (x - sigma
    eps) / alpha, eps' = (x - alpha threshold(x0_hat)) / sigma. Any sampler that forms x0_hat from eps
    (DDIM, DDPM) then steps from the thresholded image.

    ``method`` is "static" or "dynamic", or a function of the time t (a float) returning one of them, to
    threshold differently in different parts of sampling (notebook 05, section 4); it then needs one t for the
    whole batch, as DDIM and DDPM give. ``observe(t, x0_hat)``, if given, sees each call's t (B,) and a copy
    of x0_hat before thresholding (to record how far it overshoots)."""
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must be in (0, 1], got {percentile!r}")
    if not callable(method):
        threshold_x0(torch.zeros(1, 1), method, percentile)  # check the method now, not at the first step

    def eps(x, t):
        e = eps_model(x, t)
        tt = torch.as_tensor(t, device=x.device)
        tt = tt.expand(x.shape[0]) if tt.ndim == 0 else tt
        alpha, sigma = _coef(process.alpha(tt), x), _coef(process.sigma(tt), x)
        x0 = (x - sigma * e) / alpha
        if observe is not None:
            observe(tt, x0.clone())
        chosen = method
        if callable(method):
            if not bool((tt == tt[0]).all()):
                raise ValueError("method: a function of t needs one t for the whole batch, got several")
            chosen = method(float(tt[0]))
        return (x - alpha * threshold_x0(x0, chosen, percentile)) / sigma
    return eps
