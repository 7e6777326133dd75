"""Tensor helpers used by every module: broadcasting time coefficients, coercing times, and random
draws that follow the data's device and dtype.

Random draws. A ``torch.Generator`` lives on one device; a CPU generator cannot draw a CUDA tensor.
Every random number that ``course_utils`` combines with a caller's tensor (noise, training times,
probes) is drawn by ``randn`` / ``rand`` / ``randint`` / ``rademacher`` below: the numbers come from
the generator's device (so a seeded CPU generator gives the same numbers whatever device the data is
on) and are then moved to the device of ``like`` (the tensor the noise will be combined with).
Without a generator they are drawn on that device directly. (Data generators such as
``data.toy_2d`` and the exercise checkers make their own CPU tensors.)
"""
from __future__ import annotations

import torch

from ._checks import check_generator

__all__ = ["append_dims", "time_dtype", "as_time", "randn", "rand", "randint", "rademacher", "per_item_noise"]


def append_dims(c: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dimensions to ``c`` until it has ``ndim`` dimensions.

    A per-example coefficient of shape (B,) becomes (B, 1) for 2-D points and (B, 1, 1, 1) for
    images, so one line of code broadcasts over both.
    """
    extra = ndim - c.ndim
    if extra < 0:
        raise ValueError(f"append_dims: c has {c.ndim} dims, more than the target ndim={ndim}")
    return c[(...,) + (None,) * extra]


def time_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype times are kept in next to data x: x's floating dtype, but never below float32 (in
    half or bfloat16 precision neighbouring DDPM times would coincide)."""
    return torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else torch.float32


def as_time(t, x: torch.Tensor, name: str = "t", allow_int: bool = True) -> torch.Tensor:
    """Continuous time as a finite (B,) floating tensor on x's device (dtype ``time_dtype(x)``),
    matching x's batch (B, *D).

    A Python number or a 0-d tensor is repeated over the batch. Integer tensors are refused (and
    Python ints too with ``allow_int=False``, as networks do): the course's networks and processes
    take continuous time t in [0, T]; a DDPM step index becomes a time in
    ``schedules.DiscreteSchedule.time``.
    """
    hint = "convert a DDPM step index with schedules.DiscreteSchedule.time(index)"
    if isinstance(t, torch.Tensor):
        if not t.is_floating_point():
            raise TypeError(f"{name} must be continuous time (a floating-point tensor), got dtype {t.dtype}; {hint}")
        t = t.to(device=x.device, dtype=time_dtype(x))
    elif isinstance(t, float) or (isinstance(t, int) and not isinstance(t, bool) and allow_int):
        t = torch.tensor(float(t), dtype=time_dtype(x), device=x.device)
    elif isinstance(t, int) and not isinstance(t, bool):
        raise TypeError(f"{name} must be continuous time (a float), got the int {t}; {hint}")
    else:
        raise TypeError(f"{name} must be a float or a floating-point tensor, got {type(t).__name__}")
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"{name} must be a scalar or have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {t.tolist() if t.numel() <= 8 else 'non-finite values'}")
    return t


def _draw(make, like: torch.Tensor | None, generator, dtype, device):
    check_generator("generator", generator)
    if like is not None:
        dtype = like.dtype if dtype is None else dtype
        device = like.device if device is None else device
    dtype = torch.get_default_dtype() if dtype is None else dtype
    device = torch.device("cpu") if device is None else torch.device(device)
    if generator is None:
        return make(None, dtype, device)
    # draw where the generator lives (a CPU generator cannot fill a CUDA tensor), then move
    return make(generator, dtype, generator.device).to(device)


def randn(shape, *, like: torch.Tensor | None = None, generator: torch.Generator | None = None,
          dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Standard normal noise of ``shape`` on ``like``'s device and dtype (or the given ones; CPU and
    the default dtype when neither is given)."""
    return _draw(lambda g, dt, dev: torch.randn(shape, generator=g, dtype=dt, device=dev),
                 like, generator, dtype, device)


def rand(shape, *, like: torch.Tensor | None = None, generator: torch.Generator | None = None,
         dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Uniform numbers in [0, 1) of ``shape``, placed like ``randn``."""
    return _draw(lambda g, dt, dev: torch.rand(shape, generator=g, dtype=dt, device=dev),
                 like, generator, dtype, device)


def randint(low: int, high: int, shape, *, like: torch.Tensor | None = None,
            generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Integers uniform in {low, ..., high - 1} (int64) on ``like``'s device (or ``device``)."""
    return _draw(lambda g, dt, dev: torch.randint(low, high, shape, generator=g, device=dev),
                 like, generator, torch.int64, device)


def rademacher(shape, *, like: torch.Tensor | None = None, generator: torch.Generator | None = None,
               dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Independent signs +-1 with equal probability, placed like ``randn``."""
    return _draw(lambda g, dt, dev: torch.randint(0, 2, shape, generator=g, device=dev).to(dt) * 2 - 1,
                 like, generator, dtype, device)


def per_item_noise(shape, seed: int, lo: int, hi: int) -> torch.Tensor:
    """Standard normal noise (hi - lo, *shape) on the CPU whose row j (for item j of lo..hi-1) depends only on
    ``seed`` and j: a batch of samples is then the same whatever the batch size it is drawn in."""
    return torch.stack([torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed * 1_000_003 + j))
                        for j in range(lo, hi)])
