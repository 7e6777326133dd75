"""Regenerate the course's shipped checkpoints, deterministically from a seed.

    python -m course_utils.pretrain cnf_gmm            # chapter 0's CNF, exact trace (about 4 min on 2 CPU cores)
    python -m course_utils.pretrain cnf_gmm_hutchinson # the same trained with FFJORD's Rademacher probes
    python -m course_utils.pretrain cnf_gmm --out /tmp/x.pt --iters 50

Each entry records its configuration, the number of iterations and the training time in the
checkpoint's ``extra`` so the notebook that loads it can rebuild the model and report them.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from . import CHECKPOINT_DIR, seed_everything
from .data import example_mixture
from .nets import CNF, TimeMLP
from .train import load_checkpoint, save_checkpoint, train

__all__ = ["CNF_GMM_CONFIG", "CNF_GMM_HUTCHINSON_CONFIG", "make_cnf", "pretrain_cnf_gmm", "pretrain_cnf_gmm_hutchinson",
           "load_pretrained", "checkpoint_path"]

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


_BUILDERS = {"cnf_gmm": (make_cnf, pretrain_cnf_gmm), "cnf_gmm_hutchinson": (make_cnf, pretrain_cnf_gmm_hutchinson)}


def load_pretrained(name: str, path: str | None = None):
    """Rebuild a shipped model and load its weights. Returns (model, extra) with ``extra`` holding
    the configuration, loss history and training seconds recorded by this module."""
    if name not in _BUILDERS:
        raise ValueError(f"name must be one of {sorted(_BUILDERS)}, got {name!r}")
    path = path or checkpoint_path(name)
    state = load_checkpoint(path)
    model = _BUILDERS[name][0](state["extra"]["config"])
    model.load_state_dict(state["model"])
    return model.eval(), state["extra"]


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
