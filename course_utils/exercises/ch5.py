"""Exercise checkers for chapter 5: CLIP, cross-attention and Imagen's thresholding."""
from __future__ import annotations

import math

import torch

from ._common import _checker, _close, _Wrong

__all__ = ["check_clip_loss", "check_caption_log_probs", "check_cross_attention", "check_dynamic_threshold"]


@_checker
def check_clip_loss(clip_loss_mine):
    """Exercise 5.1: ``clip_loss_mine(logits)`` -> (5.2), the mean of the image-to-caption and the
    caption-to-image cross-entropies of a (B, B) logit matrix whose diagonal holds the matching pairs."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 6, generator=g, dtype=torch.float64) * 3
    target = torch.arange(6)
    want = (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)) / 2
    got = clip_loss_mine(logits)
    if abs(float(got) - float(torch.nn.functional.cross_entropy(logits, target))) < 1e-9 and \
            abs(float(got) - float(want)) > 1e-6:
        raise _Wrong("that is only the image-to-caption half; (5.2) averages it with the caption-to-image one")
    _close(got, want, "a random 6x6 case", atol=1e-10)
    logits = torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    rows = -math.log(math.e ** 2 / (math.e ** 2 + 1)) + math.log(2)
    cols = -math.log(math.e ** 2 / (math.e ** 2 + math.e)) - math.log(math.e / (1 + math.e))
    _close(clip_loss_mine(logits), torch.tensor((rows + cols) / 4, dtype=torch.float64), "the 2x2 case", atol=1e-10)
    return "CLIP's loss: each row picks its column and each column its row."


@_checker
def check_caption_log_probs(caption_log_probs):
    """Exercise 5.2: ``caption_log_probs(f, g, scale)`` -> (B, K) log p(C_k | X_b) by (5.3), for unit image
    vectors f (B, d), unit caption vectors g (K, d) and the inverse temperature ``scale``."""
    gen = torch.Generator().manual_seed(1)
    f = torch.nn.functional.normalize(torch.randn(4, 8, generator=gen, dtype=torch.float64), dim=1)
    g = torch.nn.functional.normalize(torch.randn(5, 8, generator=gen, dtype=torch.float64), dim=1)
    got = caption_log_probs(f, g, 20.0)
    if got.shape != (4, 5):
        raise _Wrong(f"expected shape (B, K) = (4, 5), got {tuple(got.shape)}")
    if torch.allclose(got.exp().sum(0), torch.ones(5, dtype=got.dtype), atol=1e-6):
        raise _Wrong("the columns sum to 1: normalise over captions (each row), not over images")
    _close(got, torch.log_softmax(20.0 * f @ g.T, dim=1), "log p(C | X)", atol=1e-10)
    return "log p(C | X) = scale f.g minus a log-sum-exp over the candidate captions, the same for every C."


@_checker
def check_cross_attention(cross_attention):
    """Exercise 5.3: ``cross_attention(q, k_pix, v_pix, k_txt, v_txt, txt_mask)`` -> (5.4) for one head:
    q, k_pix, v_pix (B, N, d) from the pixels, k_txt, v_txt (B, L, d) from the caption's tokens, txt_mask
    (B, L) True for real tokens; every pixel attends to all pixels and to the real tokens."""
    gen = torch.Generator().manual_seed(2)
    B, N, L, d = 2, 5, 4, 3
    q, kp, vp = (torch.randn(B, N, d, generator=gen, dtype=torch.float64) for _ in range(3))
    kt, vt = (torch.randn(B, L, d, generator=gen, dtype=torch.float64) for _ in range(2))
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    k, v = torch.cat([kp, kt], 1), torch.cat([vp, vt], 1)
    scores = q @ k.transpose(1, 2) / math.sqrt(d)
    keep = torch.cat([torch.ones(B, N, dtype=torch.bool), mask], 1)
    want = scores.masked_fill(~keep[:, None, :], float("-inf")).softmax(-1) @ v
    got = cross_attention(q, kp, vp, kt, vt, mask)
    no_mask = scores.softmax(-1) @ v
    if got.shape == want.shape and torch.allclose(got, no_mask, atol=1e-8):
        raise _Wrong("the padding tokens are attended to: mask them (their score -inf before the softmax)")
    _close(got, want, "pixels attending to pixels and words", atol=1e-10)
    return "each pixel's output mixes the values of all pixels and of the caption's real tokens."


@_checker
def check_dynamic_threshold(dynamic_threshold):
    """Exercise 5.4: ``dynamic_threshold(x0, p)`` -> Imagen's dynamic thresholding of (B, C, H, W) images:
    per image s = max(1, the p-quantile of |x0|), then clip to [-s, s] and divide by s."""
    from ..guidance import threshold_x0
    gen = torch.Generator().manual_seed(3)
    spread = torch.tensor([0.3, 2.0, 5.0], dtype=torch.float64)[:, None, None, None]  # one image mostly in range
    x0 = torch.randn(3, 3, 4, 4, generator=gen, dtype=torch.float64) * spread
    for p in (0.9, 0.995):
        got = dynamic_threshold(x0, p)
        if torch.allclose(got, x0.clamp(-1, 1), atol=1e-8):
            raise _Wrong("that is static clipping; divide by the per-image s = max(1, quantile of |x0|)")
        _close(got, threshold_x0(x0, "dynamic", p), f"dynamic thresholding at p = {p}", atol=1e-10)
    return "images that overshoot are shrunk as a whole; the image with |x0| <= 1 mostly is only clipped."
