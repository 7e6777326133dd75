"""CIFAR-10 at scale: the chapter-3 ``UNet``, ``eps_loss`` and samplers on one GPU or several.

    python -m course_utils.scale download                                   # CIFAR-10 into data/cache/ (once)
    python -m course_utils.scale train --config small --minutes 10 --out runs/small
    torchrun --nproc_per_node 8 -m course_utils.scale train --config ddpm --out runs/ddpm
    python -m course_utils.scale sample runs/ddpm/checkpoint.pt --n 50000 --steps 100 --out runs/ddpm/samples.npz
    python -m course_utils.scale fid runs/ddpm/samples.npz                  # against CIFAR-10's training set

Training follows the DDPM paper and its released code (Ho et al. 2020): L_simple (the squared error of
the noise, averaged over pixels) on the linear schedule with N = 1000, Adam at 2e-4 after a linear
warm-up, gradient norms clipped at 1, an EMA of the weights for sampling, random horizontal flips.
On CUDA the network runs under bf16 autocast (where the GPU supports bf16 natively); the loss is float32.
Re-running the same ``train`` command continues from ``OUT/checkpoint.pt`` where it stopped: every
random draw of step k (the batch, t, eps, the flips, dropout) is a function of (seed, k, rank), so on a
CPU a resumed run is the uninterrupted run, bit for bit (on a GPU, up to its non-deterministic kernels).

Several processes (``torchrun``) split every global batch between them: ``ShardedBatches`` gives every
process the same global batch of ``batch`` images, t, eps and flips, and each takes its 1/world share,
so DistributedDataParallel's average of their gradients is the gradient one process would compute on
the whole batch (dropout's masks are drawn per process, so with dropout > 0 runs on different numbers
of GPUs agree in distribution, not draw for draw); rank 0 alone logs, draws sample grids and saves.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pickle
import sys
import time
import urllib.error

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .data import DATA_CACHE, cifar10
from .ddpm import ddim_sample, ddpm_sample, dpm_solver_2m_sample, heun_sample
from .guidance import classifier_free_guidance
from .losses import eps_loss
from .nets import UNet
from .schedules import DiscreteSchedule, linear_betas
from .tensors import per_item_noise
from .train import EMA, ema_decay, load_checkpoint, save_checkpoint

__all__ = ["CONFIGS", "make_config", "ShardedBatches", "world_info", "check_world", "shard_loss", "train",
           "load", "sample", "ema_decay", "SAMPLERS", "to_uint8", "save_images", "read_images", "fid",
           "InceptionWeightsUnavailable"]

_SCHEDULE = dict(kind="linear", N=1000, beta_start=1e-4, beta_end=0.02)
CONFIGS = {
    # minutes on one GPU: 6.9M parameters, attention at 16x16
    "small": dict(unet=dict(in_ch=3, ch=64, ch_mult=(1, 2, 2), n_res=2, attn_levels=(1,), heads=4, dropout=0.1,
                            groups=32, image_size=32),
                  schedule=_SCHEDULE, batch=128, lr=2e-4, warmup=1000, ema=0.999, grad_clip=1.0, flip=True,
                  steps=100_000, bf16=True, seed=0, sample_every=2000, sample_n=64, sample_steps=50, ckpt_every=2000,
                  log_every=100, p_uncond=0.1),
    # the DDPM paper's CIFAR-10 network (35.7M there; 38.1M here, the time embedding giving a scale and a shift)
    "ddpm": dict(unet=dict(in_ch=3, ch=128, ch_mult=(1, 2, 2, 2), n_res=2, attn_levels=(1,), heads=1, dropout=0.1,
                           groups=32, image_size=32),
                 schedule=_SCHEDULE, batch=128, lr=2e-4, warmup=5000, ema=0.9999, grad_clip=1.0, flip=True,
                 steps=800_000, bf16=True, seed=0, sample_every=10_000, sample_n=64, sample_steps=50, ckpt_every=5000,
                 log_every=100, p_uncond=0.1),
}
# p_uncond: how often a class-conditional run (UNet n_classes, --classes) trains without its label (ignored otherwise)
# settings that may change when a run is continued
_RUN_LENGTH = ("steps", "sample_every", "sample_n", "sample_steps", "ckpt_every", "log_every")
CHECKPOINT = "checkpoint.pt"


def make_config(name: str = "small", **overrides) -> dict:
    """A copy of ``CONFIGS[name]`` with ``overrides`` (``unet=dict(...)`` replaces entries of the UNet's)."""
    if name not in CONFIGS:
        raise ValueError(f"config must be one of {sorted(CONFIGS)}, got {name!r}")
    config = json.loads(json.dumps(CONFIGS[name]))  # a deep copy in plain data (tuples become lists)
    for key, value in overrides.items():
        if key not in config:
            raise ValueError(f"{key!r} is not a setting of the {name!r} config; settings: {sorted(config)}")
        config[key] = dict(config[key], **value) if key == "unet" else value
    config["name"] = name
    for key in ("batch", "steps", "warmup", "sample_every", "sample_n", "sample_steps", "ckpt_every", "log_every"):
        if isinstance(config[key], bool) or not isinstance(config[key], int) or config[key] < 1:
            raise ValueError(f"{key} must be a positive int, got {config[key]!r}")
    return config


def _schedule(config) -> DiscreteSchedule:
    sc = config["schedule"]
    return DiscreteSchedule(linear_betas(sc["N"], sc["beta_start"], sc["beta_end"]))


# ------------------------------------------------------------------------------ processes and batches
def world_info() -> tuple[int, int, int, int]:
    """(rank, local_rank, world_size, local_world_size) as torchrun sets them; (0, 0, 1, 1) without it."""
    env = lambda k, d: int(os.environ.get(k, d))  # noqa: E731
    world = env("WORLD_SIZE", 1)
    return env("RANK", 0), env("LOCAL_RANK", 0), world, env("LOCAL_WORLD_SIZE", world)


def check_world(batch: int, world: int, local_world: int, device_type: str, n_devices: int) -> int:
    """The per-process batch ``batch / world``, or a ValueError for a batch the processes cannot share
    evenly or more processes on this machine than GPUs."""
    if device_type == "cuda" and local_world > n_devices:
        raise ValueError(f"nproc_per_node: {local_world} processes were started on this machine but it has "
                         f"{n_devices} CUDA device(s); start at most one process per GPU")
    if batch % world:
        raise ValueError(f"batch: the global batch {batch} must be divisible by the number of processes "
                         f"{world} (each takes batch / world images per step)")
    return batch // world


class ShardedBatches:
    """A distributed sampler by global batches: epoch e is a permutation of the n images drawn from
    (seed, e); global batch k of the epoch is its k-th slice of ``batch`` indices (the last partial slice
    is dropped) and process ``rank`` takes the rank-th of ``world`` equal, contiguous shares. The global
    batches, in order, do not depend on the number of processes, so ``shard_loss`` can draw t, eps and
    the flips for the global batch and slice them the same way (torch's DistributedSampler gives the same
    sets of images, dealt round-robin, but leaves every other draw to each process)."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1):
        if batch > n:
            raise ValueError(f"batch: {batch} is more than the {n} training images")
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self.local = check_world(batch, world, world, "cpu", 0)
        self.per_epoch = n // batch
        self._epoch, self._perm = None, None

    def indices(self, step: int) -> torch.Tensor:
        """This process's (batch / world,) image indices at global step ``step``."""
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        start = k * self.batch + self.rank * self.local
        return self._perm[start:start + self.local]


def _step_seed(seed: int, step: int, rank: int = 0) -> int:
    return ((seed * 1_000_003 + step) * 1024 + rank) % (2 ** 62)


def shard_loss(model, schedule: DiscreteSchedule, images: torch.Tensor, batches: ShardedBatches, step: int,
               flip: bool = True, autocast: bool = False, labels: torch.Tensor | None = None,
               p_uncond: float = 0.0) -> torch.Tensor:
    """L_simple on this process's share of global batch ``step``: ``eps_loss`` (chapter 3's Eq. 3.12, a
    sum over pixels) divided by the number of pixels, as DDPM's code averages, so that clipping the
    gradient norm at 1 only acts on unusually large steps. A scalar; 1 for a network that predicts 0.

    ``images`` uint8 (N, 3, H, W) on the training device, or floating (N, C, H, W) data used as it is
    (latents: latent diffusion, chapter 5). t, eps and the flips are drawn for the whole
    global batch from a generator seeded by (seed, step) and sliced like the images, so the shares of all
    processes together are exactly the one-process batch.

    ``labels`` (N,) int64: the class of each image is given to the model (``model(x, t, y)``), replaced by
    the "no label" index ``model.null_label`` with probability ``p_uncond`` (classifier-free guidance's
    training, chapter 4); those draws too are made for the whole global batch."""
    dev = images.device
    idx = batches.indices(step).to(dev)
    g = torch.Generator(dev).manual_seed(_step_seed(batches.seed, step))
    B, lo, hi = batches.batch, batches.rank * batches.local, (batches.rank + 1) * batches.local
    k = torch.randint(1, schedule.N + 1, (B,), device=dev, generator=g)[lo:hi]  # L_simple: k uniform in 1..N
    eps = torch.randn((B, *images.shape[1:]), device=dev, generator=g)[lo:hi]
    flips = (torch.rand(B, device=dev, generator=g) < 0.5)[lo:hi]
    # uint8 images -> [-1, 1]; floating data (an autoencoder's latents, chapter 5) is used as it is
    x0 = images[idx].float() / 127.5 - 1 if images.dtype == torch.uint8 else images[idx].float()
    if flip:
        x0 = torch.where(flips[:, None, None, None], x0.flip(-1), x0)

    y = None
    if labels is not None:
        drop = (torch.rand(B, device=dev, generator=g) < p_uncond)[lo:hi]
        null = (model.module if hasattr(model, "module") else model).null_label
        y = torch.where(drop, torch.full_like(labels[idx], null), labels[idx])

    def eps_fn(x, t):  # bf16 inside the network; the loss in float32
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            return (model(x, t) if y is None else model(x, t, y)).float()

    return eps_loss(eps_fn, x0, schedule, t=schedule.time(k - 1), eps=eps).mean() / x0[0].numel()


# ------------------------------------------------------------------------------ training
def _native_bf16() -> bool:
    """Whether this GPU computes in bf16 natively (Ampere and later); older ones only emulate it, slowly."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch: no emulation argument
        return torch.cuda.is_bf16_supported()


def _same_run(saved: dict, config: dict, path: str) -> None:
    diff = sorted(k for k in set(saved) | set(config) if k not in _RUN_LENGTH and saved.get(k) != config.get(k))
    if diff:
        detail = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, asked {config.get(k)!r}" for k in diff)
        raise ValueError(f"out: {path!r} holds a run of another configuration ({detail}); "
                         "choose another --out, or continue it with the same settings")


def _log(out, record):
    with open(os.path.join(out, "log.jsonl"), "a") as fh:
        fh.write(json.dumps(record) + "\n")


def train(config: str | dict = "small", out: str = "runs/cifar", *, steps: int | None = None,
          minutes: float | None = None, images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
          data_root: str | None = None, download: bool = False, resume: bool = True, device: str | None = None,
          progress: bool = True, decode=None, **overrides) -> dict:
    """Train the chapter-3 UNet on CIFAR-10 (or on ``images``, uint8 (N, 3, H, W)) as ``config`` says.

    ``config``: a name in ``CONFIGS`` (``overrides`` change its settings) or a dict from ``make_config``.
    Stops after ``steps`` in all (default: the config's) or after ``minutes`` of this call, whichever
    comes first, and writes ``out/checkpoint.pt`` (model, EMA, optimizer, step, config), ``out/log.jsonl``
    and ``out/samples/step_*.png`` (a grid of EMA samples, by default 64 by DDIM-50, from fixed noise).
    An existing checkpoint in ``out`` is continued exactly (``resume=False``: refused instead).
    Under torchrun, every process runs this. A config whose UNet has ``n_classes`` (``--classes``) trains
    class-conditionally for classifier-free guidance: the labels (CIFAR-10's, or ``labels`` with
    ``images``) are dropped with probability ``p_uncond``; its sample grids are conditional (class j % 10).
    Latent diffusion (chapter 5): ``images`` may be floating latents (N, C, h, w) from a frozen autoencoder
    (set ``unet=dict(in_ch=C, image_size=h)`` and ``flip=False``); ``decode`` maps sampled latents to images
    in [-1, 1] for the sample grids (without it a run on latents draws none).
    Returns ``{"step", "seconds", "images_per_s", "loss", "checkpoint"}`` (on every rank).
    """
    config = make_config(config, **overrides) if isinstance(config, str) else dict(config)
    if steps is not None:
        config["steps"] = steps
    if isinstance(config["steps"], bool) or not isinstance(config["steps"], int) or config["steps"] < 1:
        raise ValueError(f"steps must be a positive int, got {config['steps']!r}")
    if not (isinstance(config["lr"], (int, float)) and math.isfinite(config["lr"]) and config["lr"] > 0):
        raise ValueError(f"lr must be a positive number, got {config['lr']!r}")
    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes!r}")
    rank, local_rank, world, local_world = world_info()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", local_rank)
    n_dev = torch.cuda.device_count() if dev.type == "cuda" else 0
    check_world(config["batch"], world, local_world, dev.type, n_dev)
    distributed, own_group = world > 1, False
    if distributed:
        import torch.distributed as dist
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
            own_group = True
    main = rank == 0
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest convolutions once
    autocast = bool(config["bf16"]) and dev.type == "cuda" and _native_bf16()

    if images is None:
        if download and main:
            cifar10("train", data_root, download=True)
        if distributed:
            dist.barrier()
        images, cifar_labels = cifar10("train", data_root)
        labels = cifar_labels if labels is None else labels
    conditional = bool(config["unet"].get("n_classes"))
    if conditional and (labels is None or labels.shape != (len(images),)):
        raise ValueError(f"labels: a class-conditional config needs one label per image ({len(images)}), got "
                         f"{None if labels is None else tuple(labels.shape)}")
    images = images.to(dev)
    labels = labels.to(dev).long() if conditional else None
    schedule = _schedule(config)
    torch.manual_seed(config["seed"])  # the same initial weights on every process
    model = UNet(**config["unet"]).to(dev)
    ema = EMA(model, decay=config["ema"])
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"], fused=dev.type == "cuda")
    path, start, seconds = os.path.join(out, CHECKPOINT), 0, 0.0
    if not resume and os.path.isfile(path):
        raise FileExistsError(f"out: {out!r} already holds a run ({CHECKPOINT}); continue it (resume=True, the "
                              "default), or choose another folder")
    if os.path.isfile(path):
        state = load_checkpoint(path, map_location=dev)
        _same_run(state["extra"].get("config", {}), config, path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        start, seconds = state["step"], state["extra"].get("seconds", 0.0)
    if main:
        os.makedirs(os.path.join(out, "samples"), exist_ok=True)
        with open(os.path.join(out, "config.json"), "w") as fh:
            json.dump(dict(config, world_size=world, device=str(dev)), fh, indent=1)
    net = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    batches = ShardedBatches(len(images), config["batch"], config["seed"], rank, world)
    fixed_noise = torch.randn((config["sample_n"], *images.shape[1:]),
                              generator=torch.Generator().manual_seed(config["seed"]))

    def save(step):
        if main:
            save_checkpoint(path, model, opt, ema, step, config=config, seconds=seconds + time.time() - t0,
                            world_size=world, torch_version=str(torch.__version__))
        if distributed:
            dist.barrier()

    def grid(step):
        if main and (images.dtype == torch.uint8 or decode is not None):
            x = sample(ema.model, schedule, fixed_noise.shape[0], sampler="ddim", steps=config["sample_steps"],
                       x_T=fixed_noise, device=dev, bf16=autocast, progress=False, w=1.0, decode=decode)
            save_images(x, os.path.join(out, "samples", f"step_{step:07d}.png"))

    t0 = t_log = time.time()
    step, window, stop, last = start, [], False, torch.tensor(float("nan"))
    bar = tqdm(total=config["steps"], initial=start, desc=f"CIFAR-10 {config['name']}", disable=not (progress and main))
    model.train()
    while step < config["steps"] and not stop:
        for group in opt.param_groups:  # linear warm-up, then constant (DDPM)
            group["lr"] = config["lr"] * min(1.0, (step + 1) / config["warmup"])
        torch.manual_seed(_step_seed(config["seed"], step, rank))  # dropout's draws, a function of the step
        loss = shard_loss(net, schedule, images, batches, step, config["flip"], autocast, labels,
                          config.get("p_uncond", 0.0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
        opt.step()
        ema.update(model, decay=ema_decay(config["ema"], step))
        step += 1
        last = loss.detach()
        window.append(last)
        bar.update(1)
        if step % config["log_every"] == 0 or step == config["steps"]:
            mean = torch.stack(window).mean()
            if distributed:  # every process logs at the same steps: average over all of them
                dist.all_reduce(mean)
                mean = mean / world
            mean = mean.item()
            if not math.isfinite(mean):
                raise FloatingPointError(f"the loss became {mean} before step {step}")
            rate = len(window) * config["batch"] / (time.time() - t_log)
            if main:
                bar.set_postfix(loss=f"{mean:.4f}", img_s=f"{rate:.0f}")
                _log(out, dict(step=step, loss=mean, lr=opt.param_groups[0]["lr"], images_per_s=rate,
                               seconds=seconds + time.time() - t0))
            window, t_log = [], time.time()
        if step % config["sample_every"] == 0:
            grid(step)
        if step % config["ckpt_every"] == 0 and step < config["steps"]:
            save(step)
        if minutes is not None and step % 10 == 0:
            flag = torch.tensor([time.time() - t0 > 60 * minutes], dtype=torch.int32, device=dev)
            if distributed:
                dist.broadcast(flag, 0)  # rank 0's clock decides for all
            stop = bool(flag.item())
    bar.close()
    elapsed = time.time() - t0
    if step % config["ckpt_every"] or step == config["steps"] or stop:
        save(step)
    if step % config["sample_every"] and step > start:
        grid(step)
    if own_group:
        dist.destroy_process_group()
    return dict(step=step, seconds=seconds + elapsed, checkpoint=path, loss=last.item(),
                images_per_s=(step - start) * config["batch"] / max(elapsed, 1e-9))


# ------------------------------------------------------------------------------ sampling
def load(path: str, ema: bool = True, device: str | None = None):
    """The UNet of a ``train`` checkpoint (its EMA weights unless ``ema=False``), its schedule and extras."""
    state = load_checkpoint(path, map_location="cpu")
    config = state["extra"].get("config")
    if not isinstance(config, dict) or "unet" not in config or "schedule" not in config:
        raise ValueError(f"path: {path!r} is not a checkpoint written by course_utils.scale.train")
    model = UNet(**config["unet"])
    try:
        model.load_state_dict(state["ema" if ema and "ema" in state else "model"])
    except RuntimeError as err:
        raise ValueError(f"path: {path!r} does not match the configuration it records: {str(err)[:300]}") from err
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model.to(dev).eval(), _schedule(config), dict(state["extra"], step=state["step"])


SAMPLERS = {  # name -> (function, whether it takes a number of steps)
    "ddpm": (ddpm_sample, False), "ddim": (ddim_sample, True), "heun": (heun_sample, True),
    "dpm2m": (dpm_solver_2m_sample, True)}


@torch.no_grad()
def sample(model, schedule: DiscreteSchedule, n: int, *, sampler: str = "ddim", steps: int = 100, batch: int = 500,
           seed: int = 0, x_T: torch.Tensor | None = None, device=None, bf16: bool | None = None,
           progress: bool = True, w: float = 1.0, label: int | None = None, decode=None) -> torch.Tensor:
    """``n`` images from ``model`` with a course sampler ("ddpm": all N steps; "ddim", "heun", "dpm2m":
    ``steps`` steps), ``batch`` at a time on ``device``, as uint8 (n, C, H, W) in 0..255. The noise of
    image j depends only on ``seed`` and j (or is ``x_T``), not on ``batch``, so DDIM (eta = 0), Heun and
    DPM-Solver++(2M) give the same images for any ``batch``; DDPM's fresh noise at every step comes from one
    generator seeded by ``seed`` that runs on across batches, so its images depend on ``batch`` too.

    A class-conditional model (``n_classes``) samples class ``label`` (default: image j gets class
    j % n_classes) with classifier-free guidance of weight ``w`` (0: unconditional, 1: the conditional
    model, > 1: guided); ``w`` and ``label`` are refused for an unconditional model unless left at their
    defaults. ``decode``: a map from the model's samples to images in [-1, 1] (an autoencoder's decoder, for a
    model trained on latents), applied to each batch before the conversion to uint8."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    for name, v in (("n", n), ("steps", steps), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    autocast = (dev.type == "cuda") if bf16 is None else (bool(bf16) and dev.type == "cuda")
    model = model.to(dev).eval()
    C, size = model.in_ch, model.image_size or 32
    n_classes = getattr(model, "n_classes", None)
    if not n_classes and (w != 1.0 or label is not None):
        raise ValueError("w and label need a class-conditional model (trained with --classes); this one has none")
    if n_classes and label is not None and not (isinstance(label, int) and 0 <= label < n_classes):
        raise ValueError(f"label must be an int in [0, {n_classes}), got {label!r}")
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
        raise ValueError(f"w must be a finite number >= 0, got {w!r}")

    def make_eps(lo, hi):
        net = model
        if n_classes:
            y = torch.arange(lo, hi, device=dev) % n_classes if label is None else \
                torch.full((hi - lo,), label, device=dev)
            net = classifier_free_guidance(model, y, float(w))

        def eps_model(x, t):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                return net(x, t).float()
        return eps_model

    fn, takes_steps = SAMPLERS[sampler]
    kw = dict(n_steps=steps) if takes_steps else {}
    out = None
    g = torch.Generator(dev).manual_seed(seed)  # the stochastic samplers' draws, one stream for all batches
    for lo in tqdm(range(0, n, batch), desc=f"sampling ({sampler})", disable=not progress):
        hi = min(n, lo + batch)
        if x_T is None:
            noise = per_item_noise((C, size, size), seed, lo, hi)
        else:
            noise = x_T[lo:hi]
        if sampler in ("ddpm", "ddim"):
            kw["generator"] = g
        x = fn(schedule, make_eps(lo, hi), noise.to(dev), **kw)
        if decode is not None:
            with torch.no_grad():
                x = decode(x)
        if out is None:
            out = torch.empty((n, *x.shape[1:]), dtype=torch.uint8)
        out[lo:hi] = to_uint8(x).cpu()
    return out


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] to 0..255 (values outside are clipped): -1 -> 0, 0 -> 128, 1 -> 255."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def save_images(images: torch.Tensor, out: str) -> str:
    """uint8 (n, C, H, W) images to ``out``: ``*.npz`` (key "images", (n, H, W, C), the layout FID tools
    read), ``*.png`` (one grid), or otherwise a folder of numbered PNGs."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError("images must be a uint8 tensor (n, C, H, W)")
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    from torchvision.utils import make_grid, save_image
    if out.endswith(".npz"):
        np.savez_compressed(out, images=images.permute(0, 2, 3, 1).numpy())
    elif out.endswith(".png"):
        save_image(make_grid(images.float() / 255, nrow=int(math.ceil(math.sqrt(len(images)))), padding=1), out)
    else:
        os.makedirs(out, exist_ok=True)
        for j, img in enumerate(images):
            save_image(img.float() / 255, os.path.join(out, f"{j:06d}.png"))
    return out


def read_images(path: str) -> torch.Tensor:
    """Images written by ``save_images`` (an ``.npz`` or a folder of PNGs) as uint8 (n, C, H, W)."""
    if path.endswith(".npz") and os.path.isfile(path):
        with np.load(path) as f:
            if "images" not in f:
                raise ValueError(f"path: {path!r} has no 'images' array (keys: {list(f.keys())})")
            arr = f["images"]
        if arr.dtype != np.uint8 or arr.ndim != 4:
            raise ValueError(f"path: {path!r} must hold uint8 images (n, H, W, C), got {arr.dtype} {arr.shape}")
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    if os.path.isdir(path):
        from PIL import Image
        files = sorted(f for f in os.listdir(path) if f.endswith(".png"))
        if not files:
            raise ValueError(f"path: no .png files in the folder {path!r}")
        arr = np.stack([np.asarray(Image.open(os.path.join(path, f)).convert("RGB")) for f in files])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    raise FileNotFoundError(f"path: {path!r} is neither an .npz file nor a folder of PNGs")


# ------------------------------------------------------------------------------ FID
class InceptionWeightsUnavailable(RuntimeError):
    """The Inception network's weights could not be downloaded (no network)."""


def _batches(x, batch):
    for lo in range(0, len(x), batch):
        yield x[lo:lo + batch]


def fid(images: torch.Tensor, reference: torch.Tensor, *, device=None, batch: int = 500, feature=None,
        reference_cache: str | None = None, progress: bool = False) -> float:
    """The Frechet Inception distance (Heusel et al. 2017) between uint8 (n, 3, H, W) ``images`` and
    ``reference`` by torchmetrics' FrechetInceptionDistance, with torch-fidelity's port of the original
    TensorFlow Inception network (2048 pool features; images resized to 299 as the original does).
    ``feature``: another feature network (an nn.Module mapping uint8 images to (n, d)), for tests.
    ``reference_cache``: a file for the reference's feature statistics: read when it exists and was made
    from the same reference images and feature network, else computed and written (the CLI caches
    CIFAR-10's in data/cache/, which saves encoding 50,000 images on every call).

    The Inception weights (about 100 MB) are downloaded on first use into torch's hub cache; without a
    network this raises ``InceptionWeightsUnavailable`` with a one-line explanation."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as err:
        raise ImportError("fid needs torchmetrics and torch-fidelity: pip install -r requirements.txt") from err
    for name, x in (("images", images), ("reference", reference)):
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3 or len(x) < 2:
            raise ValueError(f"{name} must be at least 2 uint8 RGB images (n, 3, H, W), got "
                             f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
    hub = os.path.join(torch.hub.get_dir(), "checkpoints")
    try:
        metric = FrechetInceptionDistance(feature=2048 if feature is None else feature)
    except ModuleNotFoundError as err:
        raise ImportError(f"fid needs torch-fidelity for the Inception network ({err}): pip install -r "
                          "requirements.txt") from err
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
        raise InceptionWeightsUnavailable(
            f"FID needs the Inception weights (pt_inception-2015-12-05-6726825d.pth, from github.com), which could "
            f"not be downloaded ({getattr(err, 'reason', err)}): connect once, or copy the file into {hub}") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:  # a truncated or corrupt cached file
        raise InceptionWeightsUnavailable(f"the cached Inception weights in {hub} are unreadable ({str(err)[:120]}): "
                                          "delete pt_inception-2015-12-05-6726825d.pth there and run again") from None
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    metric = metric.to(dev)
    names = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")
    cached, key = None, None
    if reference_cache is not None:
        key = hashlib.sha1(reference.contiguous().numpy().tobytes()).hexdigest() + type(metric.inception).__name__
        if os.path.isfile(reference_cache):
            cached = torch.load(reference_cache, map_location=dev, weights_only=True)
            if cached.get("key") != key:
                cached = None  # statistics of other images or another network: recompute
    if cached is not None:
        for k in names:
            setattr(metric, k, cached[k].to(dev))
    for real, x in ((True, reference), (False, images)):
        if real and cached is not None:
            continue
        for chunk in tqdm(list(_batches(x, batch)), desc="FID " + ("reference" if real else "samples"),
                          disable=not progress):
            metric.update(chunk.to(dev), real=real)
    if reference_cache is not None and cached is None:
        os.makedirs(os.path.dirname(os.path.abspath(reference_cache)), exist_ok=True)
        torch.save(dict({k: getattr(metric, k).cpu() for k in names}, key=key), reference_cache)
    return float(metric.compute())


# ------------------------------------------------------------------------------ command line
def _parser():
    ap = argparse.ArgumentParser(prog="python -m course_utils.scale", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("download", help="fetch CIFAR-10 into data/cache/ (163 MB, once)")
    d.add_argument("--data", default=None, help="folder for CIFAR-10 (default: data/cache/)")
    t = sub.add_parser("train", help="train (or continue) a run; under torchrun on several GPUs")
    t.add_argument("--config", default="small", choices=sorted(CONFIGS))
    t.add_argument("--out", default=None, help="run folder (default: runs/cifar_CONFIG)")
    t.add_argument("--steps", type=int, default=None, help="total steps (default: the config's)")
    t.add_argument("--minutes", type=float, default=None, help="stop after this many minutes (a checkpoint is saved)")
    for name, typ in (("batch", int), ("lr", float), ("warmup", int), ("seed", int), ("sample_every", int),
                      ("ckpt_every", int), ("log_every", int)):
        t.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None)
    t.add_argument("--no-bf16", dest="bf16", action="store_false", default=None, help="float32 on CUDA too")
    t.add_argument("--classes", action="store_true",
                   help="class-conditional for classifier-free guidance (labels dropped 10%% of the time)")
    t.add_argument("--no-resume", dest="resume", action="store_false",
                   help="stop with an error if OUT already holds a run (by default it is continued)")
    t.add_argument("--data", default=None, help="folder holding CIFAR-10 (default: data/cache/)")
    t.add_argument("--download", action="store_true", help="download CIFAR-10 if it is missing")
    s = sub.add_parser("sample", help="draw images from a checkpoint to an .npz or a folder of PNGs")
    s.add_argument("checkpoint")
    s.add_argument("--n", type=int, default=50_000)
    s.add_argument("--sampler", default="ddim", choices=sorted(SAMPLERS))
    s.add_argument("--steps", type=int, default=100, help="network evaluations (not for ddpm, which takes N)")
    s.add_argument("--batch", type=int, default=500)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-ema", dest="ema", action="store_false", help="the raw weights instead of the EMA")
    s.add_argument("--w", type=float, default=1.0, help="guidance weight (class-conditional models; 0: unconditional)")
    s.add_argument("--label", type=int, default=None, help="one class for all images (default: image j gets j %% 10)")
    s.add_argument("--out", required=True, help="NAME.npz, NAME.png (a grid) or a folder")
    f = sub.add_parser("fid", help="FID of samples (.npz or PNG folder) against CIFAR-10's training set")
    f.add_argument("samples")
    f.add_argument("--data", default=None, help="folder holding CIFAR-10 (default: data/cache/)")
    f.add_argument("--batch", type=int, default=500)
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "download":
            x, _ = cifar10("train", args.data, download=True)
            cifar10("test", args.data)
            print(f"CIFAR-10 ready in {args.data or DATA_CACHE} ({len(x)} training images)")
        elif args.command == "train":
            overrides = {k: getattr(args, k) for k in ("batch", "lr", "warmup", "seed", "sample_every", "ckpt_every",
                                                       "log_every", "bf16") if getattr(args, k) is not None}
            if args.classes:
                overrides.update(p_uncond=0.1, unet=dict(n_classes=10))
            out = args.out or f"runs/cifar_{args.config}{'_classes' if args.classes else ''}"
            r = train(args.config, out, steps=args.steps, minutes=args.minutes, data_root=args.data,
                      download=args.download, resume=args.resume, **overrides)
            if world_info()[0] == 0:
                print(f"step {r['step']}: {r['images_per_s']:.0f} images/s, checkpoint {r['checkpoint']}")
        elif args.command == "sample":
            model, schedule, extra = load(args.checkpoint, ema=args.ema)
            t0 = time.time()
            x = sample(model, schedule, args.n, sampler=args.sampler, steps=args.steps, batch=args.batch,
                       seed=args.seed, w=args.w, label=args.label)
            rate = args.n / (time.time() - t0)
            print(f"{args.n} images ({args.sampler}) in {time.time() - t0:.0f} s, {rate:.1f} images/s -> "
                  f"{save_images(x, args.out)}")
        elif args.command == "fid":
            images = read_images(args.samples)
            reference, _ = cifar10("train", args.data)
            cache = os.path.join(args.data or DATA_CACHE, "fid_inception_cifar10_train.pt")
            print(f"FID {fid(images, reference, batch=args.batch, reference_cache=cache, progress=True):.2f} "
                  f"({len(images)} samples against {len(reference)} CIFAR-10 training images)")
    except (InceptionWeightsUnavailable, ImportError, FileNotFoundError, FileExistsError, ValueError,
            ConnectionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
