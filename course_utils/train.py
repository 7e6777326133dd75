"""One training loop for the whole course, with EMA, gradient clipping and checkpoints.

Checkpoints are written atomically (a temporary file, then ``os.replace``) so an interrupted save
never leaves a half-written file, and loaded with ``torch.load(..., weights_only=True)`` so a
checkpoint can hold tensors and plain Python data but never run code.
"""
from __future__ import annotations

import copy
import math
import os
import tempfile
import time

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["EMA", "ema_decay", "start_config", "warmup_cosine", "save_checkpoint", "load_checkpoint", "train"]


class EMA:
    """Exponential moving average of a model's parameters: theta_ema <- d theta_ema + (1 - d) theta."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        """One step of the average; ``decay`` overrides ``self.decay`` for this step (a warm-up schedule)."""
        decay = self.decay if decay is None else decay
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        if len(ema_params) != len(params):
            raise ValueError("model must have the parameters of the model the EMA was made from")
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)  # one fused kernel per device, not one per tensor
        for be, b in zip(self.model.buffers(), model.buffers()):
            be.copy_(b)

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, sd):
        self.model.load_state_dict(sd)


def ema_decay(decay: float, step: int) -> float:
    """An EMA's decay at update ``step`` (0, 1, ...): min(decay, (1 + step) / (10 + step)). With a fixed
    decay of 0.999 the average of a short run would still be mostly the random initial weights (0.999^1000
    = 0.37 of them after 1,000 steps); the warm-up lets it follow the model early (0.1 at the first update,
    an averaging window of about step / 10 updates) and reaches ``decay`` after about 10 / (1 - decay) steps."""
    return min(decay, (1 + step) / (10 + step))


def start_config(default: dict, iters: int | None) -> dict:
    """A copy of a default training configuration with ``steps`` overridden by ``iters``, and the global seed
    set from its ``seed`` (how every ``course_utils.pretrain`` entry starts)."""
    from . import seed_everything
    config = dict(default)
    if iters is not None:
        config["steps"] = iters
    seed_everything(config["seed"])
    return config


def warmup_cosine(optimizer, steps: int, warmup: int):
    """A learning-rate schedule: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(k, steps) / steps)))


def save_checkpoint(path: str, model: nn.Module, optimizer=None, ema: EMA | None = None,
                    step: int = 0, **extra) -> None:
    """Save model (and optionally optimizer, EMA, step and plain-data extras) atomically to ``path``."""
    state = {"model": model.state_dict(), "step": int(step), "extra": extra,
             "rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # a GPU run resumes with the same CUDA draws
        state["cuda_rng"] = list(torch.cuda.get_rng_state_all())
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if ema is not None:
        state["ema"] = ema.state_dict()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
        try:  # refuse to write what load_checkpoint could not read back safely
            torch.load(tmp, weights_only=True)
        except Exception as e:
            raise TypeError("extra: checkpoint contents must be tensors and plain Python data "
                            f"(numbers, strings, lists, dicts) to load with weights_only=True: {e}") from e
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path: str, model: nn.Module | None = None, optimizer=None, ema: EMA | None = None,
                    map_location="cpu") -> dict:
    """Load a checkpoint written by ``save_checkpoint`` (safely: ``weights_only=True``).

    Restores the given model / optimizer / EMA in place and returns the whole state dict
    (``step``, ``extra``, ...). Raises FileNotFoundError for a missing file and ValueError for a
    file that is not a readable course checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: no checkpoint file at {path!r} "
                                "(regenerate shipped ones with `python -m course_utils.pretrain NAME`)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, corrupt, or not made with torch.save
        raise ValueError(f"path: {path!r} is not a readable checkpoint (corrupt or truncated?): {e}") from e
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"path: {path!r} is not a course checkpoint (expected a dict with a 'model' entry)")
    if model is not None:
        model.load_state_dict(state["model"])
    if optimizer is not None:
        if "optimizer" not in state:
            raise ValueError(f"path: {path!r} holds no optimizer state to resume from")
        optimizer.load_state_dict(state["optimizer"])
    if ema is not None:
        if "ema" not in state:
            raise ValueError(f"path: {path!r} holds no EMA weights")
        ema.load_state_dict(state["ema"])
    return state


def train(model: nn.Module, loss_fn, optimizer, n_steps: int, *, ema: EMA | None = None,
          grad_clip: float | None = None, scheduler=None, ckpt_path: str | None = None,
          ckpt_every: int | None = None, resume: bool = False, progress: bool = True,
          desc: str = "training", ema_warmup: bool = False) -> dict:
    """Minimise ``loss_fn(step)`` (a scalar tensor; it draws its own batch) for ``n_steps`` steps.
    ``ema_warmup``: the EMA's decay follows ``ema_decay`` (chapter 5's models; the earlier checkpoints
    were made without it).

    With ``ckpt_path``: saves every ``ckpt_every`` steps and at the end; with ``resume=True`` and an
    existing checkpoint, restores model, optimizer, EMA, scheduler, the global torch RNG (and CUDA's,
    where a GPU is present) and the loss
    history and continues from the saved step, so an interrupted run ends where an uninterrupted one
    would have. Returns ``{"losses": [...], "seconds": float, "step": int}``.
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if (ckpt_every is not None or resume) and ckpt_path is None:
        raise ValueError("ckpt_path is required with ckpt_every or resume")
    start, losses, seconds = 0, [], 0.0
    if resume and os.path.isfile(ckpt_path):
        state = load_checkpoint(ckpt_path, model, optimizer, ema)
        start, losses = state["step"], list(state["extra"].get("losses", []))
        seconds = state["extra"].get("seconds", 0.0)
        if scheduler is not None and "scheduler" in state["extra"]:
            scheduler.load_state_dict(state["extra"]["scheduler"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"][:torch.cuda.device_count()])

    def save(step):
        extra = {"losses": losses, "seconds": seconds + time.time() - t0}
        if scheduler is not None:
            extra["scheduler"] = scheduler.state_dict()
        save_checkpoint(ckpt_path, model, optimizer, ema, step, **extra)

    model.train()
    t0 = time.time()
    bar = tqdm(range(start, n_steps), desc=desc, disable=not progress, initial=start, total=n_steps)
    for step in bar:
        loss = loss_fn(step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model, decay=ema_decay(ema.decay, step) if ema_warmup else None)
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if ckpt_every and (step + 1) % ckpt_every == 0 and step + 1 < n_steps:
            save(step + 1)
    if ckpt_path is not None:
        save(n_steps)
    return {"losses": losses, "seconds": seconds + time.time() - t0, "step": n_steps}
