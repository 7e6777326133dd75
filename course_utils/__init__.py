"""course_utils: the small library behind the diffusion-models course notebooks.

Each chapter notebook (``notebooks/0N_*.ipynb``) imports what it needs from here; everything in
this package is tested against exact answers in ``tests/``.

Notation (one table for the whole course, code and Markdown alike)
-----------------------------------------------------------------
=================  ==============================================================================
name               meaning
=================  ==============================================================================
``x0, xt, x_T``    clean data, noisy data at time t, terminal noise
``eps``            only the Gaussian noise epsilon ~ N(0, I) (a small time cutoff is ``t_min``)
``t``              continuous time in [0, T], a float tensor, for every process and network;
                   DDPM/DDIM's 0-based step index ``i`` becomes t = (i + 1) / N in one place,
                   ``schedules.DiscreteSchedule.time(i)``
``alpha, sigma``   signal and noise scales of a forward process, x_t = alpha(t) x0 + sigma(t) eps
``beta``           DDPM's beta_t; ``alpha_bar`` = prod_s (1 - beta_s)
``f, g``           drift and diffusion of an SDE (for an ODE, ``f`` is the velocity field)
``eta, w, tau``    DDIM's eta, guidance weight, temperature
``z``              the state of a neural ODE / continuous normalizing flow (chapter 0)
=================  ==============================================================================

Modules: ``tensors`` (``append_dims``, time coercion, random draws that follow the data's device),
``data`` (toy 2-D sets, exact Gaussian mixtures), ``ode`` (divergences, CNF dynamics, the torchdiffeq
adapter), ``schedules`` (the ``ForwardProcess`` interface, DDPM's beta schedules and
``DiscreteSchedule``), ``sde`` (forward SDEs, Euler-Maruyama, the reverse drift), ``samplers``
(reverse-SDE and probability-flow samplers, interpolation), ``fokker_planck`` (a 1-D PDE solver),
``nets`` (time embedding, ``TimeMLP``, ``ScoreMLP``, ``CNF``), ``losses`` (explicit, sliced and
denoising score matching, noise prediction), ``metrics`` (two-sample distances and their noise
floor), ``plotting``, ``train`` (training loop, EMA, checkpoints), ``exercises`` (checkers for the
notebooks' exercises, one module per chapter), ``pretrain`` (regenerates the shipped checkpoints).
Later chapters add ``ddpm`` (DDPM and DDIM samplers, DDIM inversion, the variational bound), ``guidance``,
``inpainting``, ``scale`` (CIFAR-10 on GPUs), and for chapter 5 ``shapes`` (the captioned scenes and
their judge), ``text`` (tokenizer, text encoder, CLIP, the text-conditional U-Net), ``unclip`` (DALL-E 2's
decoder and prior), ``autoencoder`` (latent diffusion's autoencoder and its bound) and ``pretrain_t2i``.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from .tensors import append_dims

__all__ = ["seed_everything", "get_device", "append_dims", "REPO_ROOT", "CHECKPOINT_DIR"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKPOINT_DIR = os.path.join(REPO_ROOT, "data", "checkpoints")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's global generators; return a fresh seeded torch.Generator.

    Use the returned generator for anything that should not depend on how much global randomness
    earlier cells consumed.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def get_device() -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
