"""What every exercise checker shares: the decorator that prints one line and never raises.

Each ``check_*`` function takes the learner's function, runs it on inputs with known answers, prints
one line (a tick, what is wrong, or "not attempted yet") and returns True or False. It never raises,
so a notebook with unfinished exercises still runs top to bottom.
"""
from __future__ import annotations

import functools

import torch

__all__ = ["_Wrong", "_checker", "_close"]


class _Wrong(Exception):
    pass


def _checker(fn):
    @functools.wraps(fn)
    def wrapper(answer):
        name = getattr(answer, "__name__", "your function")
        try:
            msg = fn(answer)
        except NotImplementedError:
            print(f"… {name}: not attempted yet (it raises NotImplementedError).")
            return False
        except _Wrong as e:
            print(f"✗ {name}: {e}")
            return False
        except Exception as e:  # the learner's code failed: say how, don't stop the notebook
            print(f"✗ {name} raised {type(e).__name__}: {e}")
            return False
        print(f"✓ {name}: {msg}")
        return True
    return wrapper


def _close(got, want, what, atol=1e-6, rtol=1e-5):
    got = torch.as_tensor(got, dtype=torch.float64)
    want = torch.as_tensor(want, dtype=torch.float64)
    if got.shape != want.shape:
        raise _Wrong(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
    if not torch.allclose(got, want, atol=atol, rtol=rtol):
        err = (got - want).abs().max().item()
        raise _Wrong(f"{what}: off by up to {err:.3g} (expected e.g. {want.flatten()[:3].tolist()}, "
                     f"got {got.flatten()[:3].tolist()})")
