"""DALL-E 2 (unCLIP, Ramesh et al. 2022) at toy scale (notebook 05, section 5): a decoder that turns a
CLIP image embedding (and, optionally, the caption) back into an image, and a diffusion prior that
turns a caption into a CLIP image embedding.

    caption C --(frozen CLIP text encoder)--> g(C), tokens --(prior)--> z_img --(decoder, C)--> image X

* ``UnCLIPDecoder``: GLIDE's text-conditional U-Net (``text.TextConditionalUNet``) with the image
  embedding z (a unit vector of CLIP's space) projected to ``n_tokens`` extra context tokens that every
  attention block attends to; since the U-Net also adds the mean context token to its time embedding,
  z reaches both of GLIDE's routes, as in the paper. In training z is set to zero 10% of the time and
  the caption to the empty caption 50% of the time, so one network is p(x | z, C), p(x | z), p(x | C)
  and, with both dropped, p(x) for classifier-free guidance. Its ``cond`` is one float tensor per image
  (``decoder_cond``): the caption's token ids, then z.
* ``DiffusionPrior``: a transformer that denoises a scaled embedding sqrt(E) z_t (per-component spread
  about 1, the scale a diffusion model expects) given the caption's CLIP tokens, g(C) and t, and
  predicts the clean embedding directly (the paper's choice: x0-prediction with a mean squared error).
  ``sample_prior`` draws z ~ p(z_img | C) by DDIM and returns unit vectors.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .nets import TimeEmbedding
from .shapes import tokenize
from .tensors import per_item_noise
from .text import TextConditionalUNet

__all__ = ["UnCLIPDecoder", "decoder_cond", "DiffusionPrior", "prior_inputs", "sample_prior", "slerp"]


def decoder_cond(captions, z: torch.Tensor | None, embed_dim: int = 64) -> torch.Tensor:
    """The decoder's conditioning rows (B, L + embed_dim): the token ids of ``captions`` (a list; "" is the
    empty caption) as floats, then the image embedding z (B, embed_dim); ``z=None`` means zero (no
    embedding, the decoder's h(0, C))."""
    if isinstance(captions, str):
        raise ValueError("captions must be a list of captions (one per image); wrap a single caption in [...]")
    ids, _ = tokenize(list(captions))
    if z is None:
        z = torch.zeros(len(ids), embed_dim)
    if z.ndim != 2 or z.shape != (len(ids), embed_dim):
        raise ValueError(f"z must be (B, embed_dim) = ({len(ids)}, {embed_dim}) image embeddings, got {tuple(z.shape)}")
    return torch.cat([ids.to(z), z], 1)


class UnCLIPDecoder(nn.Module):
    """unCLIP's decoder: ``forward(x, t, cond)`` with ``cond`` from ``decoder_cond`` (None: empty caption and
    zero embedding). ``null_cond(cond)`` is that unconditional input, shaped like ``cond``, so
    ``guidance.classifier_free_guidance`` guides with both dropped, as the paper's decoder does. Built from
    the same ``unet`` and ``text`` dicts as GLIDE's model, whose weights it can start from (``glide``)."""

    def __init__(self, unet: dict, text: dict | None = None, embed_dim: int = 64, n_tokens: int = 4):
        super().__init__()
        self.glide = TextConditionalUNet(unet, text)
        self.embed_dim, self.n_tokens = embed_dim, n_tokens
        self.clip_tokens = nn.Linear(embed_dim, n_tokens * self.glide.text.dim)
        nn.init.zeros_(self.clip_tokens.weight)        # starts close to the GLIDE model it is initialised from
        nn.init.zeros_(self.clip_tokens.bias)

    def split(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cond (B, L + E) -> (token ids (B, L) int64, z (B, E))."""
        if cond.ndim != 2 or cond.shape[1] <= self.embed_dim or not cond.is_floating_point():
            raise ValueError(f"cond must be float rows (B, L + {self.embed_dim}) from decoder_cond, got "
                             f"{cond.dtype} {tuple(cond.shape)}")
        return cond[:, :-self.embed_dim].round().long(), cond[:, -self.embed_dim:]

    def null_cond(self, cond: torch.Tensor) -> torch.Tensor:
        ids, z = self.split(cond)
        return torch.cat([self.glide.null_cond(ids).to(cond), torch.zeros_like(z)], 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is None:
            cond = decoder_cond([""] * x.shape[0], None, self.embed_dim).to(x.device)
        ids, z = self.split(cond.to(x.device))
        if ids.shape[0] != x.shape[0]:
            raise ValueError(f"cond must have one row per image ({x.shape[0]}), got {ids.shape[0]}")
        mask = ids != 0
        tokens, _ = self.glide.text(ids, mask)
        extra = self.clip_tokens(z.to(tokens.dtype)).view(len(z), self.n_tokens, -1)       # (B, n_tokens, D)
        context = torch.cat([tokens, extra], 1)
        context_mask = torch.cat([mask, torch.ones(len(z), self.n_tokens, dtype=torch.bool, device=x.device)], 1)
        return self.glide.unet(x, t, context=context, context_mask=context_mask)


class DiffusionPrior(nn.Module):
    """p(z_img | C) as a denoiser of embeddings: ``forward(z_t, t, tokens, mask, text_emb)`` -> z0_hat.
    z_t (B, E) is the noised, scaled image embedding; tokens (B, L, text_dim) and mask (B, L) the frozen
    CLIP text encoder's token features of the caption; text_emb (B, E) its embedding g(C). A transformer
    reads the sequence [caption tokens, g(C), time, z_t, query] (each kind of input with its own learned
    type vector) and the output at the query token is mapped to the prediction of the clean (scaled)
    embedding."""

    def __init__(self, embed_dim: int = 64, text_dim: int = 64, dim: int = 128, layers: int = 4, heads: int = 4):
        super().__init__()
        self.embed_dim = embed_dim
        self.tokens_in = nn.Linear(text_dim, dim)
        self.text_in = nn.Linear(embed_dim, dim)
        self.z_in = nn.Linear(embed_dim, dim)
        self.time = TimeEmbedding(dim)
        self.kind = nn.Parameter(torch.randn(5, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, 0.0, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, embed_dim))

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                text_emb: torch.Tensor) -> torch.Tensor:
        B = z_t.shape[0]
        if z_t.shape != (B, self.embed_dim) or text_emb.shape != (B, self.embed_dim) or tokens.shape[:2] != mask.shape:
            raise ValueError(f"z_t and text_emb must be (B, {self.embed_dim}) and tokens (B, L, D) with mask (B, L); "
                             f"got {tuple(z_t.shape)}, {tuple(text_emb.shape)}, {tuple(tokens.shape)}, "
                             f"{tuple(mask.shape)}")
        t = torch.as_tensor(t, device=z_t.device, dtype=z_t.dtype).expand(B)
        seq = torch.cat([self.tokens_in(tokens) + self.kind[0], (self.text_in(text_emb) + self.kind[1])[:, None],
                         (self.time(t) + self.kind[2])[:, None], (self.z_in(z_t) + self.kind[3])[:, None],
                         self.kind[4].expand(B, 1, -1)], 1)
        keep = torch.cat([mask.to(torch.bool), torch.ones(B, 4, dtype=torch.bool, device=z_t.device)], 1)
        h = self.layers(seq, src_key_padding_mask=~keep)
        return self.out(h[:, -1])


@torch.no_grad()
def prior_inputs(clip, captions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The prior's caption inputs from a frozen ``text.CLIP``: (tokens (B, L, D), mask (B, L), g(C) (B, E))."""
    tokens, pooled, mask = clip.text.encode(list(captions))
    return tokens, mask, nn.functional.normalize(clip.text_proj(pooled), dim=-1)


@torch.no_grad()
def sample_prior(prior: DiffusionPrior, clip, schedule, captions, *, n_steps: int = 50, seed: int = 0) -> torch.Tensor:
    """z ~ p(z_img | C) for each caption of ``captions`` (a list): DDIM with ``n_steps`` steps on the
    prior's x0-prediction (turned into the noise prediction eps = (z_t - alpha z0_hat) / sigma that the
    sampler expects), from noise that depends on ``seed`` and the caption's position only. Returns unit
    vectors (B, E)."""
    from .ddpm import ddim_sample
    tokens, mask, text_emb = prior_inputs(clip, captions)
    prior.eval()

    def eps(z, t):
        t = torch.as_tensor(t, dtype=z.dtype).expand(len(z))
        alpha, sigma = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
        return (z - alpha * prior(z, t, tokens, mask, text_emb)) / sigma

    noise = per_item_noise((prior.embed_dim,), seed, 0, len(tokens))
    z = ddim_sample(schedule, eps, noise, n_steps=n_steps)
    return nn.functional.normalize(z, dim=-1)


def slerp(a: torch.Tensor, b: torch.Tensor, theta: float) -> torch.Tensor:
    """Spherical interpolation between unit vectors a and b (B, E): theta = 0 gives a, 1 gives b; the
    path stays on the unit sphere, where CLIP's embeddings live."""
    a, b = nn.functional.normalize(a, dim=-1), nn.functional.normalize(b, dim=-1)
    omega = torch.acos((a * b).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    return (torch.sin((1 - theta) * omega) * a + torch.sin(theta * omega) * b) / torch.sin(omega)


def scaled(z: torch.Tensor) -> torch.Tensor:
    """Unit embeddings -> the prior's data scale sqrt(E) z (per-component spread about 1)."""
    return z * math.sqrt(z.shape[-1])
