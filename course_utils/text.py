"""Text and image encoders for chapter 5: a small transformer over caption tokens, a CNN over images,
CLIP (Radford et al. 2021) made of the two, and its contrastive loss (notebook 05, section 2).

CLIP maps an image X to f(X) and a caption C to g(C), both unit vectors in one space, and trains them so
that in a batch of B pairs each image picks out its own caption and each caption its own image:

    logits[i, j] = exp(s) f(X_i) . g(C_j)          (s = log of 1/tau, learned)
    loss = (CE(logits, rows) + CE(logits^T, columns)) / 2

so that log p(C | X) = exp(s) f(X) . g(C) + const over a set of candidate captions. Several scenes of a
batch can share one caption (the dataset has 272 captions): ``clip_loss(..., same=...)`` then spreads
the target of a row over all its matching columns instead of calling them negatives.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .nets import TimeEmbedding
from .shapes import MAX_TOKENS, VOCAB, tokenize
from .tensors import per_item_noise

__all__ = ["TextEncoder", "ImageEncoder", "CLIP", "clip_loss", "same_caption", "TextConditionalUNet", "generate"]


class TextEncoder(nn.Module):
    """A pre-norm transformer encoder over caption tokens: ids (B, L) and mask (B, L) -> token features
    (B, L, dim) and a pooled vector (B, dim), the feature at the "<end>" token (the last real one), which
    has attended to the whole caption (CLIP and GLIDE pool the same way)."""

    def __init__(self, dim: int = 64, layers: int = 2, heads: int = 4, vocab_size: int = len(VOCAB),
                 max_len: int = MAX_TOKENS, dropout: float = 0.0):
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if ids.ndim != 2 or ids.shape != mask.shape or ids.shape[1] > self.max_len:
            raise ValueError(f"ids and mask must both be (B, L) with L <= {self.max_len}, got "
                             f"{tuple(ids.shape)} and {tuple(mask.shape)}")
        h = self.token(ids) + self.position[: ids.shape[1]]
        h = self.norm(self.layers(h, src_key_padding_mask=~mask))                 # (B, L, dim)
        last = mask.long().sum(1) - 1                                             # the "<end>" token
        return h, h[torch.arange(len(h)), last]

    def encode(self, captions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Captions (str or list) -> (tokens (B, L, dim), pooled (B, dim), mask (B, L)) on this module's device."""
        ids, mask = tokenize(captions)
        dev = self.position.device
        tokens, pooled = self(ids.to(dev), mask.to(dev))
        return tokens, pooled, mask.to(dev)


class ImageEncoder(nn.Module):
    """A CNN for 16x16 RGB images in [-1, 1]: three 3x3 convolution stages (16, 8, 4 pixels), then a linear
    map of the flattened 4x4 features to ``dim``. With ``time_conditional`` it also takes t (B,) in [0, 1]
    and adds a time embedding to every stage (a noise-aware encoder for CLIP guidance, section 3)."""

    def __init__(self, dim: int = 64, width: int = 32, time_conditional: bool = False, in_ch: int = 3):
        super().__init__()
        chans = [width, 2 * width, 4 * width]
        self.time = TimeEmbedding(width) if time_conditional else None
        self.stages = nn.ModuleList()
        self.time_proj = nn.ModuleList()
        prev = in_ch
        for k, c in enumerate(chans):
            self.stages.append(nn.Sequential(nn.Conv2d(prev, c, 3, padding=1, stride=1 if k == 0 else 2),
                                             nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1),
                                             nn.GroupNorm(8, c), nn.SiLU()))
            if time_conditional:
                self.time_proj.append(nn.Linear(width, c))
            prev = c
        self.head = nn.Linear(chans[-1] * 16, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[2:] != (16, 16):
            raise ValueError(f"x must be (B, C, 16, 16) images, got {tuple(x.shape)}")
        if (t is None) != (self.time is None):
            raise ValueError("t is required exactly when the encoder was built with time_conditional=True")
        emb = None if t is None else self.time(t)
        h = x
        for k, stage in enumerate(self.stages):
            h = stage(h)
            if emb is not None:
                h = h + self.time_proj[k](emb)[:, :, None, None]
        return self.head(h.flatten(1))


class CLIP(nn.Module):
    """Image and text encoders with linear projections into one ``embed_dim`` space and a learned
    logit scale exp(s) (s initialised to log(1 / 0.07), as in CLIP, and capped at log 100).
    ``encode_image(x, t=None)`` and ``encode_text(captions)`` return unit vectors (B, embed_dim);
    ``forward(x, captions)`` returns the (B, B) logits exp(s) f(X_i) . g(C_j)."""

    def __init__(self, embed_dim: int = 64, text_dim: int = 64, text_layers: int = 2, width: int = 32,
                 time_conditional: bool = False):
        super().__init__()
        self.image = ImageEncoder(embed_dim, width, time_conditional)
        self.text = TextEncoder(text_dim, text_layers)
        self.text_proj = nn.Linear(text_dim, embed_dim, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def encode_image(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return nn.functional.normalize(self.image(x, t), dim=-1)

    def encode_text(self, captions) -> torch.Tensor:
        _, pooled, _ = self.text.encode(captions)
        return nn.functional.normalize(self.text_proj(pooled), dim=-1)

    def forward(self, x: torch.Tensor, captions, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.scale * self.encode_image(x, t) @ self.encode_text(captions).T


def same_caption(captions) -> torch.Tensor:
    """(B, B) bool: True where captions i and j are the same string."""
    index = {c: k for k, c in enumerate(dict.fromkeys(captions))}
    ids = torch.tensor([index[c] for c in captions])
    return ids[:, None] == ids[None, :]


def clip_loss(logits: torch.Tensor, same: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric cross-entropy of (B, B) logits (rows: images, columns: captions). Without
    ``same`` the target of row i is column i; with ``same`` (B, B) bool (``same_caption``), it is spread
    uniformly over the columns whose caption equals caption i (and likewise for columns)."""
    B = logits.shape[0]
    if logits.ndim != 2 or logits.shape[1] != B:
        raise ValueError(f"logits must be square (B, B), got {tuple(logits.shape)}")
    match = torch.eye(B, dtype=logits.dtype, device=logits.device) if same is None else same.to(logits)
    if match.shape != (B, B) or not bool(match.diagonal().all()):
        raise ValueError(f"same must be (B, B) = ({B}, {B}) and True on its diagonal, got {tuple(match.shape)}")
    rows = -(match / match.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    cols = -(match.T / match.T.sum(1, keepdim=True) * logits.T.log_softmax(1)).sum(1).mean()
    return (rows + cols) / 2


class TextConditionalUNet(nn.Module):
    """GLIDE's text-conditional denoiser at toy scale: a ``TextEncoder`` trained with the ``UNet``, whose
    attention blocks attend to the caption's token features (cross-attention) and whose time embedding
    gets their mean (see ``UNet``'s ``context_dim``). ``forward(x, t, cond=None)`` with ``cond`` token ids
    (B, L) from ``tokenize`` (None: the empty caption, the "no caption" of classifier-free guidance).

    ``pooled_only=True`` is the ablation of section 3: the UNet sees one vector per caption (the encoder's
    pooled "<end>" feature as a single context token), like a model conditioned on one CLIP embedding."""

    def __init__(self, unet: dict, text: dict | None = None, pooled_only: bool = False):
        super().__init__()
        from .nets import UNet
        self.text = TextEncoder(**(text or {}))
        self.unet = UNet(**dict(unet, context_dim=self.text.dim))
        self.pooled_only = pooled_only
        self.register_buffer("empty", tokenize("")[0][0], persistent=False)        # (MAX_TOKENS,)

    def null_cond(self, cond: torch.Tensor) -> torch.Tensor:
        """The empty caption's ids, shaped like ``cond``: classifier-free guidance's unconditional input."""
        return self.empty[: cond.shape[1]].expand(cond.shape[0], -1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None, **image_cond) -> torch.Tensor:
        """``image_cond``: ``x_cond`` and ``cond_level`` for a U-Net built with ``cond_ch`` (a super-resolution
        stage, section 6), passed on to it."""
        ids = self.empty.expand(x.shape[0], -1) if cond is None else cond.to(x.device)
        if ids.dtype != torch.long or ids.ndim != 2 or ids.shape[0] != x.shape[0]:
            raise ValueError(f"cond must be token ids (B, L) = ({x.shape[0]}, L) from tokenize, got "
                             f"{ids.dtype} {tuple(ids.shape)}")
        mask = ids != 0
        tokens, pooled = self.text(ids, mask)
        if self.pooled_only:
            return self.unet(x, t, context=pooled[:, None], **image_cond)
        return self.unet(x, t, context=tokens, context_mask=mask, **image_cond)


@torch.no_grad()
def generate(model, schedule, captions, *, w: float = 3.0, n_steps: int = 25, seed: int = 0, batch: int = 250,
             threshold: str | None = "static", percentile: float = 0.995,
             x_T: torch.Tensor | None = None, shape=(3, 16, 16), clamp: bool = True,
             x_cond: torch.Tensor | None = None, cond_level: float = 0.0) -> torch.Tensor:
    """Images (B, 3, 16, 16) in [-1, 1] for ``captions`` (a list; one image each) from a text-conditional
    noise predictor (``TextConditionalUNet``) by DDIM with ``n_steps`` steps and classifier-free guidance
    of weight ``w`` (0: the empty caption, 1: the conditional model). ``threshold``: what happens to the
    predicted clean image x0_hat at every step: "static" (clipped to [-1, 1], the default, as in DDPM's and
    GLIDE's samplers), "dynamic" (Imagen's) or None (left as it is: with the cosine schedule, whose last
    alpha_bar is 2.4e-9, the first step divides the network's error by sqrt(alpha_bar) and the samples are
    noise; notebook 05, section 4). The noise of image j depends on ``seed`` and j only (or is ``x_T``).
    The result is clipped to [-1, 1] (``clamp=False``: left as it is).

    ``captions`` may also be a tensor of conditioning rows, one per image, that ``model`` takes as its
    ``cond`` (``unclip.decoder_cond``); ``shape`` is the shape of one sample (a latent's, for the latent
    diffusion model of section 7, with ``threshold=None, clamp=False``: latents have no range to clip to).
    ``x_cond`` (B, C, H, W) and ``cond_level``: the conditioning image of a super-resolution stage (section 6)
    and the noise level it was corrupted to, given to the U-Net with every caption (guided or not)."""
    from .ddpm import ddim_sample
    from .guidance import classifier_free_guidance, thresholded
    if isinstance(captions, str):
        raise ValueError("captions must be a list of captions (one image each); wrap a single caption in [...]")
    ids = captions if torch.is_tensor(captions) else tokenize(list(captions))[0]
    dev = next(model.parameters()).device
    model.eval()
    out = []
    for lo in range(0, len(ids), batch):
        hi = min(len(ids), lo + batch)
        noise = x_T[lo:hi] if x_T is not None else per_item_noise(shape, seed, lo, hi)
        net = model if x_cond is None else _WithImage(model, x_cond[lo:hi].to(dev), cond_level)
        eps = classifier_free_guidance(net, ids[lo:hi].to(dev), w)
        if threshold is not None:
            eps = thresholded(eps, schedule, threshold, percentile)
        x = ddim_sample(schedule, eps, noise.to(dev), n_steps=n_steps)
        out.append((x.clamp(-1, 1) if clamp else x).cpu())
    return torch.cat(out)


class _WithImage:
    """A super-resolution U-Net with its conditioning image bound, callable as model(x, t, cond) on the
    batches of classifier-free guidance (doubled where both halves are needed: the image repeated to match)."""

    def __init__(self, model, x_cond: torch.Tensor, level: float):
        self.model, self.x_cond = model, x_cond
        self.level = torch.full((len(x_cond),), float(level), device=x_cond.device)

    def null_cond(self, cond):
        return self.model.null_cond(cond)

    def __call__(self, x, t, cond=None):
        reps = x.shape[0] // self.x_cond.shape[0]
        return self.model(x, t, cond, x_cond=self.x_cond.repeat(reps, 1, 1, 1), cond_level=self.level.repeat(reps))
