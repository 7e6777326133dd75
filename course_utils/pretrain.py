"""Regenerate the course's shipped checkpoints, deterministically from a seed.

    python -m course_utils.pretrain cnf_gmm            # chapter 0's CNF, exact trace (about 4 min on 2 CPU cores)
    python -m course_utils.pretrain cnf_gmm_hutchinson # the same trained with FFJORD's Rademacher probes
    python -m course_utils.pretrain cnf_gmm --out /tmp/x.pt --iters 50
    python -m course_utils.pretrain digit_classifier   # chapter 3's judge of digit samples (under a minute)
    python -m course_utils.pretrain ddpm_digits        # chapter 3's DDPM U-Net on 8x8 digits (about 25 min)
    python -m course_utils.pretrain cfg_digits         # chapter 4's class-conditional U-Net (labels dropped 20%)
    python -m course_utils.pretrain noisy_digit_classifier  # chapter 4's p(y | x_t, t) for classifier guidance
    python -m course_utils.pretrain top_half_classifier  # chapter 4's p(y | top half), inpainting's reference
    python -m course_utils.pretrain ncsn_digits        # chapter 4's NCSN (ten noise levels, DSM)
    python -m course_utils.pretrain tinted_digits      # chapter 4's colour DDPM for colorization
    python -m course_utils.pretrain lowres_digits      # chapter 4's cascade: 4x4 base model
    python -m course_utils.pretrain sr_digits          # ... 4x4 -> 8x8 super-resolution, clean inputs
    python -m course_utils.pretrain sr_aug_digits      # ... the same with noise-conditioning augmentation
    python -m course_utils.pretrain shape_judge        # chapter 5 (course_utils.pretrain_t2i): the attribute judge,
    python -m course_utils.pretrain clip_shapes        # ... CLIP,
    python -m course_utils.pretrain glide_shapes       # ... GLIDE's text-conditional U-Net (cross-attention),
    python -m course_utils.pretrain glide_pooled       # ... and its one-pooled-vector ablation,
    python -m course_utils.pretrain noisy_clip         # ... the noise-aware CLIP of CLIP guidance,
    python -m course_utils.pretrain unclip_decoder     # ... DALL-E 2's decoder (fine-tuned from glide_shapes),
    python -m course_utils.pretrain unclip_prior       # ... and its diffusion prior,
    python -m course_utils.pretrain imagen_base        # ... Imagen's cascade: the 8x8 base model,
    python -m course_utils.pretrain imagen_sr          # ... and its 8x8 -> 16x16 super-resolution stage,
    python -m course_utils.pretrain shape_autoencoder  # ... latent diffusion's autoencoder,
    python -m course_utils.pretrain latent_shapes      # ... and its latent text-conditional U-Net
    python -m course_utils.pretrain --chapter 5        # all of one chapter's, overwriting data/checkpoints/,
                                                       # each after those it reads (--from NAME to resume)
    python -m course_utils.pretrain --list             # each checkpoint's recorded steps and seconds, per chapter

Each entry records its configuration, the number of iterations and the training time in the
checkpoint's ``extra`` so the notebook that loads it can rebuild the model and report them.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import torch

from . import CHECKPOINT_DIR, seed_everything
from .data import digits, example_mixture, tint
from .losses import eps_loss
from .nets import CNF, DigitClassifier, NoiseConditionalScore, TimeClassifier, TimeMLP, UNet
from .pretrain_t2i import BUILDERS as _T2I_BUILDERS
from .schedules import DiscreteSchedule, cosine_betas, linear_betas
from .train import EMA, load_checkpoint, save_checkpoint, start_config, train, warmup_cosine

__all__ = ["CNF_GMM_CONFIG", "CNF_GMM_HUTCHINSON_CONFIG", "make_cnf", "pretrain_cnf_gmm", "pretrain_cnf_gmm_hutchinson",
           "DIGIT_CLASSIFIER_CONFIG", "make_digit_classifier", "pretrain_digit_classifier",
           "TOP_HALF_CLASSIFIER_CONFIG", "top_half", "pretrain_top_half_classifier",
           "DDPM_DIGITS_CONFIG", "make_unet", "make_schedule", "pretrain_ddpm_digits",
           "load_pretrained", "check_trained_schedule", "checkpoint_path", "CFG_DIGITS_CONFIG", "pretrain_cfg_digits",
           "NOISY_CLASSIFIER_CONFIG", "make_time_classifier", "noisy_accuracy", "pretrain_noisy_digit_classifier",
           "NCSN_DIGITS_CONFIG", "make_ncsn", "ncsn_sigmas", "pretrain_ncsn_digits", "TINTED_DIGITS_CONFIG",
           "pretrain_tinted_digits", "LOWRES_DIGITS_CONFIG", "SR_DIGITS_CONFIG", "SR_AUG_DIGITS_CONFIG", "downsample",
           "upsample", "pretrain_lowres_digits", "pretrain_sr_digits", "pretrain_sr_aug_digits", "CHAPTERS",
           "recorded_times"]

# Chapter 0: a CNF (FFJORD with the exact trace: D = 2) on the course's 2-D Gaussian mixture.
CNF_GMM_CONFIG = dict(hidden=64, n_layers=3, T=1.0, rtol=1e-4, atol=1e-4, iters=1500, batch=512,
                      lr=3e-3, seed=0, divergence="exact")
# The same model trained as FFJORD trains it: Hutchinson's estimator with one Rademacher probe per example.
CNF_GMM_HUTCHINSON_CONFIG = dict(CNF_GMM_CONFIG, divergence="hutchinson")


def checkpoint_path(name: str) -> str:
    return os.path.join(CHECKPOINT_DIR, f"{name}.pt")


def make_cnf(config: dict) -> CNF:
    """The chapter-0 CNF with a TimeMLP velocity field, as described by ``config``."""
    return CNF(TimeMLP(2, config["hidden"], config["n_layers"]), T=config["T"],
               divergence=config.get("divergence", "exact"), rtol=config["rtol"], atol=config["atol"])


def pretrain_cnf_gmm(path: str | None = None, iters: int | None = None, progress: bool = True,
                     config: dict | None = None, name: str = "cnf_gmm") -> dict:
    """Train the chapter-0 CNF by maximum likelihood (Adam, cosine learning rate) and save it."""
    config = dict(CNF_GMM_CONFIG if config is None else config)
    if iters is not None:
        config["iters"] = iters
    seed_everything(config["seed"])
    target = example_mixture()
    cnf = make_cnf(config)
    opt = torch.optim.Adam(cnf.parameters(), lr=config["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config["iters"])

    def nll(step):  # draws from the global generator, so a resumed run continues identically
        return -cnf.log_prob(target.sample(config["batch"])).mean()

    out = train(cnf, nll, opt, config["iters"], scheduler=sched, progress=progress,
                desc=f"CNF ({config['divergence']} trace)")
    path = path or checkpoint_path(name)
    # store the model only (small): the optimizer is not needed to use it
    save_checkpoint(path, cnf, step=config["iters"], config=config, losses=out["losses"],
                    seconds=out["seconds"], torch_version=str(torch.__version__))
    return {"path": path, "seconds": out["seconds"], "final_loss": out["losses"][-1]}


def pretrain_cnf_gmm_hutchinson(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """The chapter-0 CNF trained with Hutchinson's estimator (FFJORD's way) and saved."""
    return pretrain_cnf_gmm(path, iters, progress, config=CNF_GMM_HUTCHINSON_CONFIG, name="cnf_gmm_hutchinson")


# Chapter 3: the judge of generated digits (its features also give the Frechet distance).
DIGIT_CLASSIFIER_CONFIG = dict(width=32, feature_dim=128, dropout=0.2, steps=3000, batch=128, lr=2e-3,
                               shift=1, seed=0)


def make_digit_classifier(config: dict) -> DigitClassifier:
    return DigitClassifier(config["width"], config["feature_dim"], config["dropout"])


def _random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Each image moved by up to ``max_shift`` pixels in each direction (zero-padded with -1, the
    background): the classifier must not depend on exact placement, which generated digits vary."""
    if max_shift == 0:
        return x
    B, _, H, W = x.shape
    padded = torch.nn.functional.pad(x, [max_shift] * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, B))
    rows = (dy[:, None] + torch.arange(H)[None])[:, :, None].expand(B, H, W)
    cols = (dx[:, None] + torch.arange(W)[None])[:, None, :].expand(B, H, W)
    return padded[torch.arange(B)[:, None, None], 0, rows, cols][:, None]


def _pretrain_classifier(default: dict, name: str, path, iters, progress, inputs, cosine: bool) -> dict:
    """Train chapter 3's classifier on ``inputs(digits, config)`` of the training split (Adam, with cosine decay
    when ``cosine``), record its held-out accuracy on ``inputs(test digits)`` and save it as ``name``."""
    config = start_config(default, iters)
    x_train, y_train = digits("train")
    model = make_digit_classifier(config)
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config["steps"]) if cosine else None

    def loss_fn(step):
        idx = torch.randint(0, len(x_train), (config["batch"],))
        return torch.nn.functional.cross_entropy(model(inputs(x_train[idx], config, True)), y_train[idx])

    out = train(model, loss_fn, opt, config["steps"], scheduler=sched, progress=progress,
                desc=name.replace("_", " "))
    model.eval()
    x_test, y_test = digits("test")
    with torch.no_grad():
        accuracy = (model(inputs(x_test, config, False)).argmax(1) == y_test).double().mean().item()
    path = path or checkpoint_path(name)
    save_checkpoint(path, model, step=config["steps"], config=config, losses=out["losses"][::10],
                    seconds=out["seconds"], held_out_accuracy=accuracy, torch_version=str(torch.__version__))
    return {"path": path, "seconds": out["seconds"], "final_loss": out["losses"][-1], "held_out_accuracy": accuracy}


def pretrain_digit_classifier(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """Train the digits classifier on the training split (random 1-pixel shifts, Adam, cosine decay)
    and record its held-out accuracy."""
    return _pretrain_classifier(DIGIT_CLASSIFIER_CONFIG, "digit_classifier", path, iters, progress, cosine=True,
                                inputs=lambda x, c, training: _random_shift(x, c["shift"]) if training else x)


# Chapter 4, section 8: p(y | the top half of the digit), the inpainting samplers' posterior reference. Chapter 3's
# architecture on digits whose bottom rows are set to the background, as the notebook first trained it in place.
TOP_HALF_CLASSIFIER_CONFIG = dict(width=32, feature_dim=128, dropout=0.2, steps=1500, batch=128, lr=2e-3,
                                  known_rows=4, seed=50)


def top_half(x: torch.Tensor, known_rows: int = 4) -> torch.Tensor:
    """The digits with every row below the first ``known_rows`` set to the background value -1."""
    out = x.clone()
    out[..., known_rows:, :] = -1.0
    return out


def pretrain_top_half_classifier(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """Train chapter 3's classifier on the top halves of the training digits (Adam, constant step) and record its
    held-out accuracy on top halves."""
    return _pretrain_classifier(TOP_HALF_CLASSIFIER_CONFIG, "top_half_classifier", path, iters, progress,
                                cosine=False, inputs=lambda x, c, training: top_half(x, c["known_rows"]))


# Chapter 3: DDPM on 8x8 digits. A 0.74M-parameter U-Net (two resolutions, 8x8 and 4x4, attention at
# 4x4), DDPM's linear schedule with N = 1000, L_simple, Adam with warm-up and cosine decay, EMA.
DDPM_DIGITS_CONFIG = dict(unet=dict(in_ch=1, ch=32, ch_mult=(1, 2), n_res=1, heads=4, dropout=0.1, groups=8,
                                    image_size=8),
                          schedule=dict(kind="linear", N=1000, beta_start=1e-4, beta_end=0.02),
                          steps=12000, batch=128, lr=1e-3, warmup=200, ema=0.999, grad_clip=1.0, seed=0)


def make_unet(config: dict) -> UNet:
    """The chapter-3 UNet described by ``config["unet"]`` (a checkpoint's config works: lists are accepted)."""
    return UNet(**config["unet"])


def make_schedule(config: dict) -> DiscreteSchedule:
    """The DiscreteSchedule a checkpoint was trained with, from its config's ``schedule`` entry."""
    sc = config["schedule"]
    if sc["kind"] == "linear":
        return DiscreteSchedule(linear_betas(sc["N"], sc["beta_start"], sc["beta_end"]))
    if sc["kind"] == "cosine":
        return DiscreteSchedule(cosine_betas(sc["N"]))
    raise ValueError(f"schedule kind must be 'linear' or 'cosine', got {sc['kind']!r}")


def pretrain_ddpm_digits(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """Train the chapter-3 DDPM U-Net on the digits' training split with L_simple and save its EMA
    weights (the ones used for sampling) with the configuration and the training time."""
    return _pretrain_digits_unet(DDPM_DIGITS_CONFIG, "ddpm_digits", path, iters, progress)


def _pretrain_digits_unet(default: dict, name: str, path, iters, progress, batch_loss=None, wrap=None) -> dict:
    """L_simple on the digits' training split for the U-Net of ``default``; with ``n_classes`` in its UNet
    config, the label is given and replaced by the "no label" index with probability ``p_uncond``
    (classifier-free guidance's training). ``batch_loss(module, x0, y, config, schedule)``: another
    objective on a batch; ``wrap(unet, config)``: a module around the U-Net that is trained and whose EMA
    weights are saved (default: the U-Net itself)."""
    config = start_config(default, iters)
    x_train, y_train = digits("train")
    schedule = make_schedule(config) if "schedule" in config else None
    model = make_unet(config)
    saved = model if wrap is None else wrap(model, config)
    ema = EMA(saved, decay=config["ema"])
    opt = torch.optim.Adam(saved.parameters(), lr=config["lr"])
    steps = config["steps"]
    sched = warmup_cosine(opt, steps, config["warmup"])

    def loss_fn(step):
        idx = torch.randint(0, len(x_train), (config["batch"],))
        x0, y = x_train[idx], y_train[idx]
        if batch_loss is not None:
            return batch_loss(saved, x0, y, config, schedule)
        if not model.n_classes:
            return eps_loss(model, x0, schedule).mean()  # L_simple: t = k / N, k uniform in 1..N
        y = y.clone()
        y[torch.rand(len(y)) < config["p_uncond"]] = model.null_label  # the label dropped: p(x) learned too
        return eps_loss(lambda x, t: model(x, t, y), x0, schedule).mean()

    out = train(saved, loss_fn, opt, steps, ema=ema, grad_clip=config["grad_clip"], scheduler=sched,
                progress=progress, desc=f"{name} on digits")
    path = path or checkpoint_path(name)
    save_checkpoint(path, ema.model, step=steps, config=config, losses=out["losses"][::10],
                    seconds=out["seconds"], torch_version=str(torch.__version__))
    return {"path": path, "seconds": out["seconds"], "final_loss": sum(out["losses"][-200:]) / 200}


# Chapter 4: the class-conditional U-Net of classifier-free guidance (the chapter-3 recipe, labels dropped 20%
# of the time) and the noise-aware classifier of classifier guidance.
CFG_DIGITS_CONFIG = dict(DDPM_DIGITS_CONFIG, unet=dict(DDPM_DIGITS_CONFIG["unet"], n_classes=10), p_uncond=0.2)


def pretrain_cfg_digits(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """The chapter-4 class-conditional U-Net for classifier-free guidance (EMA weights saved)."""
    return _pretrain_digits_unet(CFG_DIGITS_CONFIG, "cfg_digits", path, iters, progress)


NOISY_CLASSIFIER_CONFIG = dict(net=dict(in_ch=1, ch=32, ch_mult=(1, 2), n_res=2, n_classes=10, dropout=0.1,
                                        groups=8),
                               schedule=DDPM_DIGITS_CONFIG["schedule"], steps=10000, batch=256, lr=2e-3,
                               weight_decay=0.01, shift=1, seed=0, eval_indices=(0, 99, 299, 499, 699, 999))


def make_time_classifier(config: dict) -> TimeClassifier:
    return TimeClassifier(**config["net"])


def noisy_accuracy(model, schedule: DiscreteSchedule, x: torch.Tensor, y: torch.Tensor, index: int,
                   draws: int = 4, seed: int = 0) -> float:
    """The accuracy of a noise-aware classifier on x noised to code index ``index`` (``draws`` noises each)."""
    g = torch.Generator().manual_seed(seed)
    t = schedule.time(torch.full((len(x),), index), dtype=x.dtype)
    hits = 0
    with torch.no_grad():
        for _ in range(draws):
            xt = schedule.perturb(x, t, torch.randn(x.shape, generator=g))
            hits += (model(xt, t).argmax(1) == y).sum().item()
    return hits / (draws * len(x))


def pretrain_noisy_digit_classifier(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """Train p(y | x_t, t) on digits noised by DDPM's forward process at t uniform over the N steps
    (random 1-pixel shifts, AdamW, cosine decay); record held-out accuracy at several noise levels."""
    config = start_config(NOISY_CLASSIFIER_CONFIG, iters)
    x_train, y_train = digits("train")
    schedule, model = make_schedule(config), make_time_classifier(config)
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config["steps"])

    def loss_fn(step):
        idx = torch.randint(0, len(x_train), (config["batch"],))
        x0 = _random_shift(x_train[idx], config["shift"])
        t = schedule.sample_times(len(x0), like=x0)
        xt = schedule.perturb(x0, t, torch.randn_like(x0))
        return torch.nn.functional.cross_entropy(model(xt, t), y_train[idx])

    out = train(model, loss_fn, opt, config["steps"], scheduler=sched, progress=progress,
                desc="noise-aware digit classifier")
    model.eval()
    x_test, y_test = digits("test")
    accuracy = {i: noisy_accuracy(model, schedule, x_test, y_test, i) for i in config["eval_indices"]}
    path = path or checkpoint_path("noisy_digit_classifier")
    save_checkpoint(path, model, step=config["steps"], config=config, losses=out["losses"][::10],
                    seconds=out["seconds"], held_out_accuracy={str(k): v for k, v in accuracy.items()},
                    torch_version=str(torch.__version__))
    return {"path": path, "seconds": out["seconds"], "final_loss": sum(out["losses"][-100:]) / 100,
            "held_out_accuracy": accuracy}


# Chapter 4, NCSN: one noise-conditional network trained by sigma^2-weighted DSM on a geometric ladder of
# ten noise levels from 10 (above the largest distance between two training digits, 9.6) to 0.01.
NCSN_DIGITS_CONFIG = dict(unet=DDPM_DIGITS_CONFIG["unet"], sigma_max=10.0, sigma_min=0.01, n_sigmas=10,
                          steps=6000, batch=128, lr=1e-3, warmup=200, ema=0.999, grad_clip=1.0, seed=0)


def make_ncsn(config: dict, unet: UNet | None = None) -> NoiseConditionalScore:
    """The chapter-4 NCSN: the chapter-3 UNet (``unet``, or a new one) as the eps-predictor inside a
    NoiseConditionalScore."""
    return NoiseConditionalScore(make_unet(config) if unet is None else unet, config["sigma_max"], config["sigma_min"])


def ncsn_sigmas(config: dict) -> torch.Tensor:
    """The geometric ladder (float64, largest first) a NCSN checkpoint was trained on."""
    return torch.exp(torch.linspace(math.log(config["sigma_max"]), math.log(config["sigma_min"]),
                                    config["n_sigmas"], dtype=torch.float64))


def _ncsn_loss(ncsn, x0, y, config, schedule):
    sigmas = ncsn_sigmas(config).to(x0.dtype)
    sigma = sigmas[torch.randint(0, len(sigmas), (len(x0),))]  # a level of the ladder per example
    eps = torch.randn_like(x0)
    return (ncsn.eps(x0 + sigma.view(-1, 1, 1, 1) * eps, sigma) - eps).pow(2).sum((1, 2, 3)).mean()


def pretrain_ncsn_digits(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """Train the chapter-4 NCSN on the digits (EMA weights of the whole NoiseConditionalScore saved)."""
    return _pretrain_digits_unet(NCSN_DIGITS_CONFIG, "ncsn_digits", path, iters, progress,
                                 batch_loss=_ncsn_loss, wrap=lambda unet, config: make_ncsn(config, unet))


# Chapter 4, colorization: an unconditional DDPM on digits whose ink has a random hue (RGB, 8x8). Each step
# draws fresh hues, so every colour of the wheel is seen.
TINTED_DIGITS_CONFIG = dict(DDPM_DIGITS_CONFIG, unet=dict(DDPM_DIGITS_CONFIG["unet"], in_ch=3), steps=4000)


def _tinted_loss(model, x0, y, config, schedule):
    x0 = tint(x0, torch.rand(len(x0), dtype=torch.float64))
    return eps_loss(model, x0, schedule).mean()


def pretrain_tinted_digits(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """The chapter-4 colour DDPM (random ink hue) used for colorization by inpainting in a grey basis."""
    return _pretrain_digits_unet(TINTED_DIGITS_CONFIG, "tinted_digits", path, iters, progress,
                                 batch_loss=_tinted_loss)


# Chapter 4, a cascade: a 4x4 base model (the digits average-pooled) and an 8x8 super-resolution model
# given the 4x4 image upsampled (nearest) as extra input channels. With augmentation the low-resolution
# input is noised by the same forward process at a grid time s uniform in [0, aug_max] and s is given to the
# network (UNet cond_level); without it, s = 0 always.
LOWRES_DIGITS_CONFIG = dict(DDPM_DIGITS_CONFIG, unet=dict(DDPM_DIGITS_CONFIG["unet"], image_size=4), steps=2500)
SR_DIGITS_CONFIG = dict(DDPM_DIGITS_CONFIG, unet=dict(DDPM_DIGITS_CONFIG["unet"], cond_ch=1), steps=3000,
                        aug_max=0.0)
SR_AUG_DIGITS_CONFIG = dict(SR_DIGITS_CONFIG, aug_max=0.5)


def downsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """The cascade's low-resolution view: average pooling by ``factor``."""
    return torch.nn.functional.avg_pool2d(x, factor)


def upsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """The low-resolution image on the high-resolution grid (nearest neighbour), the SR model's input."""
    return torch.nn.functional.interpolate(x, scale_factor=factor, mode="nearest")


def _lowres_loss(model, x0, y, config, schedule):
    return eps_loss(model, downsample(x0), schedule).mean()


def _sr_loss(model, x0, y, config, schedule):
    low = upsample(downsample(x0))
    k = torch.randint(-1, int(config["aug_max"] * schedule.N), (len(x0),))  # index -1 is s = 0 (clean)
    s = schedule.time(k, dtype=x0.dtype)
    if config["aug_max"] > 0:  # noise-conditioning augmentation: z_s = sqrt(ab(s)) low + sqrt(1 - ab(s)) eps
        low = schedule.perturb(low, s, torch.randn_like(low))
    return eps_loss(lambda x, t: model(x, t, x_cond=low, cond_level=s), x0, schedule).mean()


def pretrain_lowres_digits(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """The cascade's 4x4 base DDPM (digits average-pooled by 2)."""
    return _pretrain_digits_unet(LOWRES_DIGITS_CONFIG, "lowres_digits", path, iters, progress,
                                 batch_loss=_lowres_loss)


def pretrain_sr_digits(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """The cascade's 4x4 -> 8x8 super-resolution DDPM trained on clean low-resolution inputs."""
    return _pretrain_digits_unet(SR_DIGITS_CONFIG, "sr_digits", path, iters, progress, batch_loss=_sr_loss)


def pretrain_sr_aug_digits(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """The same super-resolution model trained with noise-conditioning augmentation (s uniform in [0, 0.5])."""
    return _pretrain_digits_unet(SR_AUG_DIGITS_CONFIG, "sr_aug_digits", path, iters, progress, batch_loss=_sr_loss)


_BUILDERS = {"cnf_gmm": (make_cnf, pretrain_cnf_gmm), "cnf_gmm_hutchinson": (make_cnf, pretrain_cnf_gmm_hutchinson),
             "digit_classifier": (make_digit_classifier, pretrain_digit_classifier),
             "ddpm_digits": (make_unet, pretrain_ddpm_digits), "cfg_digits": (make_unet, pretrain_cfg_digits),
             "noisy_digit_classifier": (make_time_classifier, pretrain_noisy_digit_classifier),
             "top_half_classifier": (make_digit_classifier, pretrain_top_half_classifier),
             "ncsn_digits": (make_ncsn, pretrain_ncsn_digits), "tinted_digits": (make_unet, pretrain_tinted_digits),
             "lowres_digits": (make_unet, pretrain_lowres_digits), "sr_digits": (make_unet, pretrain_sr_digits),
             "sr_aug_digits": (make_unet, pretrain_sr_aug_digits), **_T2I_BUILDERS}


# Which chapter's notebook first loads each checkpoint, in an order that regenerates every checkpoint after the
# ones its training reads (chapter 5's: the judge before the autoencoder, which it scores; CLIP before the models on
# its text encoder; glide_shapes before the unCLIP decoder fine-tuned from it; the autoencoder before the latent
# U-Net). Chapters 0, 3 and 4 train on data alone (notebook 04 also loads chapter 3's two).
CHAPTERS = {0: ["cnf_gmm", "cnf_gmm_hutchinson"], 3: ["digit_classifier", "ddpm_digits"],
            4: ["cfg_digits", "noisy_digit_classifier", "top_half_classifier", "ncsn_digits", "tinted_digits",
                "lowres_digits", "sr_digits", "sr_aug_digits"],
            5: ["shape_judge", "clip_shapes", "noisy_clip", "glide_shapes", "glide_pooled", "unclip_decoder",
                "unclip_prior", "shape_autoencoder", "latent_shapes", "imagen_base", "imagen_sr"]}


def recorded_times(chapter: int | None = None) -> list[dict]:
    """Each shipped checkpoint (of ``chapter``, or all) with the training steps and seconds recorded in it
    when it was made: ``[{"chapter", "name", "steps", "seconds", "torch"}, ...]``."""
    if chapter is not None and chapter not in CHAPTERS:
        raise ValueError(f"chapter must be one of {sorted(CHAPTERS)} (the chapters with checkpoints), got {chapter!r}")
    rows = []
    for ch, names in CHAPTERS.items():
        for name in names if chapter in (None, ch) else []:
            state = load_checkpoint(checkpoint_path(name))
            rows.append({"chapter": ch, "name": name, "steps": state["step"], "seconds": state["extra"]["seconds"],
                         "torch": state["extra"].get("torch_version", "?")})
    return rows


def _print_times(rows: list[dict]) -> None:
    print(f"{'chapter':>7}  {'checkpoint':<24}{'steps':>7}{'seconds':>9}  torch")
    for r in rows:
        print(f"{r['chapter']:>7}  {r['name']:<24}{r['steps']:>7}{r['seconds']:>9.0f}  {r['torch']}")
    for ch in sorted({r["chapter"] for r in rows}):
        total = sum(r["seconds"] for r in rows if r["chapter"] == ch)
        print(f"chapter {ch}: {total:.0f} s ({total / 60:.0f} min) of training, as recorded")
    print("(seconds as measured when each was made, on a 2-core CPU, some on busy days; "
          "loading data and saving are not counted)")


def load_pretrained(name: str, path: str | None = None):
    """Rebuild a shipped model and load its weights. Returns (model, extra) with ``extra`` holding
    the configuration, loss history and training seconds recorded by this module."""
    if name not in _BUILDERS:
        raise ValueError(f"name must be one of {sorted(_BUILDERS)}, got {name!r}")
    path = path or checkpoint_path(name)
    state = load_checkpoint(path)
    try:
        model = _BUILDERS[name][0](state["extra"]["config"])
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"path: {path!r} does not hold a {name!r} checkpoint of the configuration it records "
                         f"({state['extra'].get('config')}): {str(err)[:300]}") from err
    return model.eval(), state["extra"]


def check_trained_schedule(schedule: DiscreteSchedule, extra: dict) -> None:
    """Raise a ValueError unless ``schedule`` is the one the checkpoint (its ``extra``) was trained with: a
    noise predictor trained on one schedule predicts the wrong noise level on another."""
    trained = make_schedule(extra["config"])
    if schedule.N != trained.N or not torch.allclose(schedule.betas, trained.betas, rtol=1e-6, atol=1e-12):
        raise ValueError(f"this checkpoint was trained with {trained!r} ({extra['config']['schedule']}), "
                         f"not with the schedule given, {schedule!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("name", nargs="?", metavar="NAME", choices=sorted(_BUILDERS),
                      help="the checkpoint to regenerate, one of: " + ", ".join(sorted(_BUILDERS)))
    what.add_argument("--chapter", type=int, choices=sorted(CHAPTERS), default=None,
                      help="regenerate every checkpoint of this chapter, overwriting data/checkpoints/*.pt (git "
                           "checkout data/checkpoints restores the shipped ones), one after another, each after the "
                           "checkpoints its training reads; notebook 04 also needs chapter 3's")
    parser.add_argument("--from", dest="start", metavar="NAME", default=None,
                        help="with --chapter: start at this checkpoint (to finish an interrupted run)")
    parser.add_argument("--list", action="store_true",
                        help="print each shipped checkpoint's recorded steps and training seconds (of --chapter, "
                             "or all) and each chapter's total; trains nothing")
    parser.add_argument("--out", default=None, help="with NAME: where to write (default: data/checkpoints/NAME.pt)")
    parser.add_argument("--iters", type=int, default=None, help="with NAME: override the number of iterations")
    args = parser.parse_args(argv)
    if args.list:
        for option, given in (("NAME", args.name), ("--out", args.out), ("--iters", args.iters),
                              ("--from", args.start)):
            if given is not None:
                parser.error(f"--list trains nothing and takes no {option}")
        try:
            _print_times(recorded_times(args.chapter))
        except FileNotFoundError as err:
            parser.exit(1, f"{err}\n")
        return 0
    if args.name is None and args.chapter is None:
        parser.error("give one checkpoint NAME or --chapter N (or --list)")
    if args.iters is not None and args.iters < 1:
        parser.error(f"--iters must be at least 1, got {args.iters}")
    if args.chapter is not None:
        for option, given in (("--out", args.out), ("--iters", args.iters)):
            if given is not None:
                parser.error(f"{option} is for one NAME: --chapter writes each checkpoint where the later ones "
                             "read it, so it takes neither --out nor --iters")
        names = CHAPTERS[args.chapter]
        if args.start is not None:
            if args.start not in names:
                parser.error(f"--from must name a checkpoint of chapter {args.chapter} ({', '.join(names)}), "
                             f"got {args.start!r}")
            names = names[names.index(args.start):]
    elif args.start is not None:
        parser.error("--from goes with --chapter")
    else:
        names = [args.name]
    for k, name in enumerate(names, 1):
        if len(names) > 1:
            print(f"[{k}/{len(names)}] {name}", flush=True)
        result = _BUILDERS[name][1](args.out, args.iters)
        print(f"wrote {result['path']} in {result['seconds']:.0f} s (final loss {result['final_loss']:.4f})")
        if "held_out_accuracy" in result:
            print("held-out accuracy:", result["held_out_accuracy"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
