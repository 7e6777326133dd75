"""Regenerate the course's shipped checkpoints, deterministically from a seed.

    python -m course_utils.pretrain cnf_gmm            # chapter 0's CNF, exact trace (about 4 min on 2 CPU cores)
    python -m course_utils.pretrain cnf_gmm_hutchinson # the same trained with FFJORD's Rademacher probes
    python -m course_utils.pretrain cnf_gmm --out /tmp/x.pt --iters 50
    python -m course_utils.pretrain digit_classifier   # chapter 3's judge of digit samples (under a minute)
    python -m course_utils.pretrain ddpm_digits        # chapter 3's DDPM U-Net on 8x8 digits (about 25 min)

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
from .data import digits, example_mixture
from .losses import eps_loss
from .nets import CNF, DigitClassifier, TimeMLP, UNet
from .schedules import DiscreteSchedule, cosine_betas, linear_betas
from .train import EMA, load_checkpoint, save_checkpoint, train

__all__ = ["CNF_GMM_CONFIG", "CNF_GMM_HUTCHINSON_CONFIG", "make_cnf", "pretrain_cnf_gmm", "pretrain_cnf_gmm_hutchinson",
           "DIGIT_CLASSIFIER_CONFIG", "make_digit_classifier", "pretrain_digit_classifier",
           "DDPM_DIGITS_CONFIG", "make_unet", "make_schedule", "pretrain_ddpm_digits",
           "load_pretrained", "check_trained_schedule", "checkpoint_path"]

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


def _start(default: dict, iters: int | None) -> dict:
    """A copy of a default configuration with ``steps`` overridden by ``iters``, and the global seed set."""
    config = dict(default)
    if iters is not None:
        config["steps"] = iters
    seed_everything(config["seed"])
    return config


def pretrain_digit_classifier(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """Train the digits classifier on the training split (random 1-pixel shifts, Adam, cosine decay)
    and record its held-out accuracy."""
    config = _start(DIGIT_CLASSIFIER_CONFIG, iters)
    x_train, y_train = digits("train")
    model = make_digit_classifier(config)
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config["steps"])

    def loss_fn(step):
        idx = torch.randint(0, len(x_train), (config["batch"],))
        logits = model(_random_shift(x_train[idx], config["shift"]))
        return torch.nn.functional.cross_entropy(logits, y_train[idx])

    out = train(model, loss_fn, opt, config["steps"], scheduler=sched, progress=progress, desc="digit classifier")
    model.eval()
    x_test, y_test = digits("test")
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).double().mean().item()
    path = path or checkpoint_path("digit_classifier")
    save_checkpoint(path, model, step=config["steps"], config=config, losses=out["losses"][::10],
                    seconds=out["seconds"], held_out_accuracy=accuracy, torch_version=str(torch.__version__))
    return {"path": path, "seconds": out["seconds"], "final_loss": out["losses"][-1], "held_out_accuracy": accuracy}


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
    config = _start(DDPM_DIGITS_CONFIG, iters)
    x_train, _ = digits("train")
    schedule = make_schedule(config)
    model = make_unet(config)
    ema = EMA(model, decay=config["ema"])
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    warmup, steps = config["warmup"], config["steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(k, steps) / steps)))

    def loss_fn(step):
        x0 = x_train[torch.randint(0, len(x_train), (config["batch"],))]
        return eps_loss(model, x0, schedule).mean()  # L_simple: t = k / N, k uniform in 1..N

    out = train(model, loss_fn, opt, steps, ema=ema, grad_clip=config["grad_clip"], scheduler=sched,
                progress=progress, desc="DDPM on digits")
    path = path or checkpoint_path("ddpm_digits")
    save_checkpoint(path, ema.model, step=steps, config=config, losses=out["losses"][::10],
                    seconds=out["seconds"], torch_version=str(torch.__version__))
    return {"path": path, "seconds": out["seconds"], "final_loss": sum(out["losses"][-200:]) / 200}


_BUILDERS = {"cnf_gmm": (make_cnf, pretrain_cnf_gmm), "cnf_gmm_hutchinson": (make_cnf, pretrain_cnf_gmm_hutchinson),
             "digit_classifier": (make_digit_classifier, pretrain_digit_classifier),
             "ddpm_digits": (make_unet, pretrain_ddpm_digits)}


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
    parser.add_argument("name", choices=sorted(_BUILDERS))
    parser.add_argument("--out", default=None, help="where to write (default: data/checkpoints/NAME.pt)")
    parser.add_argument("--iters", type=int, default=None, help="override the number of iterations")
    args = parser.parse_args(argv)
    result = _BUILDERS[args.name][1](args.out, args.iters)
    print(f"wrote {result['path']} in {result['seconds']:.0f} s (final loss {result['final_loss']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
