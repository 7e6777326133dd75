"""The autoencoder of latent diffusion (Rombach et al. 2022) at toy scale (notebook 05, section 7).

A variational autoencoder with a Gaussian encoder q(z | x) = N(mean(x), diag(exp(logvar(x)))) onto a
latent image z (B, latent_ch, H/2, W/2) and a Gaussian decoder p(x | z) = N(decode(z), sigma_x^2 I). Its
negative evidence lower bound splits into three terms (``bound_terms``):

    -log p(x) <= E_q[-log p(x | z)]  -  H[q(z | x)]  +  E_q[-log p(z)]
                 reconstruction       encoder entropy   cross-entropy with the prior p(z)

With p(z) = N(0, I) the last two are KL(q || p), the usual VAE; latent diffusion instead leaves the KL
weight small (a "KL-regularised" autoencoder, here ``kl_weight`` = 1e-3) and learns p(z) afterwards with
a diffusion model, whose denoising loss bounds the cross-entropy term (``ddpm.nll_bound``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["KLAutoencoder", "vae_loss", "bound_terms"]


def _block(i: int, o: int, groups: int = 8) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(groups, o), nn.SiLU(),
                         nn.Conv2d(o, o, 3, padding=1), nn.GroupNorm(groups, o), nn.SiLU())


class KLAutoencoder(nn.Module):
    """x (B, in_ch, H, W) in [-1, 1] -> z (B, latent_ch, H/2, W/2) -> x_hat. ``encode`` returns (mean,
    logvar); ``decode`` the reconstruction; ``forward(x, generator=None)`` draws z = mean + std * noise and
    returns (x_hat, mean, logvar). ``sigma_x`` is the decoder's fixed noise level (in the [-1, 1] units of
    the pixels), part of the likelihood the bound is computed with."""

    def __init__(self, in_ch: int = 3, latent_ch: int = 4, width: int = 64, sigma_x: float = 0.05):
        super().__init__()
        if not sigma_x > 0:
            raise ValueError(f"sigma_x must be > 0, got {sigma_x!r}")
        self.in_ch, self.latent_ch, self.sigma_x = in_ch, latent_ch, float(sigma_x)
        self.encoder = nn.Sequential(nn.Conv2d(in_ch, width, 3, padding=1), _block(width, width),
                                     nn.Conv2d(width, width, 3, stride=2, padding=1), _block(width, width),
                                     nn.Conv2d(width, 2 * latent_ch, 1))
        self.decoder = nn.Sequential(nn.Conv2d(latent_ch, width, 3, padding=1), _block(width, width),
                                     nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, padding=1),
                                     _block(width, width), nn.Conv2d(width, in_ch, 3, padding=1))
        # 1 / (spread of the training latents), set after training (``set_latent_scale``): the diffusion model
        # works on u = latent_scale * z, whose per-component spread is 1 (Stable Diffusion's 0.18215)
        self.register_buffer("latent_scale", torch.ones(()))

    @torch.no_grad()
    def set_latent_scale(self, x: torch.Tensor) -> float:
        """Set ``latent_scale`` to 1 / std of the encoder's means on images x; returns it."""
        std = torch.cat([self.encode(x[i:i + 2000])[0] for i in range(0, len(x), 2000)]).std()
        self.latent_scale.fill_(1.0 / float(std))
        return float(self.latent_scale)

    @torch.no_grad()
    def to_latent(self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False):
        """Images -> the diffusion model's latents u = latent_scale * z (z: the mean, or a draw of q)."""
        mean, logvar = self.encode(x)
        if sample:
            mean = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean * self.latent_scale

    @torch.no_grad()
    def from_latent(self, u: torch.Tensor) -> torch.Tensor:
        """The diffusion model's latents -> images, clipped to [-1, 1]."""
        return self.decode(u / self.latent_scale).clamp(-1, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_ch or x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"x must be (B, {self.in_ch}, H, W) images with even H and W, got {tuple(x.shape)}")
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-20.0, 5.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or z.shape[1] != self.latent_ch:
            raise ValueError(f"z must be (B, {self.latent_ch}, h, w) latents, got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        mean, logvar = self.encode(x)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return self.decode(mean + (0.5 * logvar).exp() * noise), mean, logvar


def _per_image(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).sum(1)


def bound_terms(ae: KLAutoencoder, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
    """The three terms of the bound, in nats per image (B,), with one draw z ~ q(z | x):
    "reconstruction" -log N(x; decode(z), sigma_x^2 I); "entropy" H[q(z | x)] (exact: a Gaussian's,
    sum of (log(2 pi e) + logvar) / 2); "cross_entropy" E_q[-log N(z; 0, I)] (exact: sum of (log(2 pi) +
    mean^2 + var) / 2). Also "kl" = cross_entropy - entropy, "latent" (the draw z), "x_hat" (its decoding),
    "mean" and "logvar"."""
    mean, logvar = ae.encode(x)
    z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    x_hat = ae.decode(z)
    D = x[0].numel()
    rec = _per_image((x - x_hat) ** 2) / (2 * ae.sigma_x ** 2) + D / 2 * math.log(2 * math.pi * ae.sigma_x ** 2)
    entropy = _per_image(0.5 * (math.log(2 * math.pi * math.e) + logvar))
    cross = _per_image(0.5 * (math.log(2 * math.pi) + mean ** 2 + logvar.exp()))
    return dict(reconstruction=rec, entropy=entropy, cross_entropy=cross, kl=cross - entropy, x_hat=x_hat,
                mean=mean, logvar=logvar, latent=z)


def vae_loss(ae: KLAutoencoder, x: torch.Tensor, kl_weight: float = 1e-3) -> torch.Tensor:
    """The training loss per image, averaged: reconstruction + kl_weight * KL(q(z | x) || N(0, I)); with
    kl_weight = 1 it is the negative ELBO of ``bound_terms``."""
    terms = bound_terms(ae, x)
    return (terms["reconstruction"] + kl_weight * terms["kl"]).mean()
