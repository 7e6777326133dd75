"""Chapter 4, section 8: how RePaint's and a particle filter's agreement with the original digit grow with budget.

    python benchmarks/inpainting_budget.py          # computes the rows not yet stored (all: about an hour on 2 cores)
    python benchmarks/inpainting_budget.py --redo   # recomputes every row

Inpaints the bottom halves of the 360 held-out digits with chapter 3's unconditional U-Net (ddpm_digits)
for several (steps, passes per step U, jump length j, seed) by RePaint, and (steps, particles K, seed) by
sequential Monte Carlo (``inpaint_smc``), and records the share that chapter 3's classifier assigns to the
original digit, with the network evaluations per image, in
data/results/inpainting_budget.json, which notebook 04 reads (the larger budgets do not fit its CPU time).
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from course_utils import REPO_ROOT  # noqa: E402
from course_utils.data import digits  # noqa: E402
from course_utils.inpainting import inpaint, inpaint_smc, repaint_moves  # noqa: E402
from course_utils.pretrain import load_pretrained, make_schedule  # noqa: E402

# (steps, U, jump, seed); the last three go back up j steps at a time, as RePaint's paper does, against the
# same 100 steps and U one step at a time (the row before them)
BUDGETS = [(50, 1, 1, 52), (25, 20, 1, 52), (20, 50, 1, 52), (40, 50, 1, 52), (40, 50, 1, 53), (100, 20, 1, 52),
           (100, 50, 1, 52), (100, 50, 1, 53), (100, 10, 1, 52), (50, 10, 5, 52), (100, 10, 5, 52), (100, 10, 10, 52)]
# (steps, particles K, seed, ESS threshold) for the particle filter: K x steps evaluations per image; a threshold
# of 1 resamples at nearly every step instead of only when the effective sample size falls below K / 2
SMC = [(50, 10, 52, 0.5), (50, 20, 52, 0.5), (25, 40, 52, 0.5), (50, 40, 52, 0.5), (50, 40, 53, 0.5),
       (100, 20, 52, 0.5), (50, 10, 52, 1.0), (50, 10, 53, 0.5), (50, 10, 53, 1.0), (50, 10, 54, 0.5),
       (50, 10, 54, 1.0)]
PATH = os.path.join(REPO_ROOT, "data", "results", "inpainting_budget.json")


def evaluations(n_steps: int, U: int, jump: int) -> int:
    return sum(1 for a, b in repaint_moves(n_steps, U, jump) if b > a)


def _key(r):
    if r.get("sampler", "repaint") == "smc":
        return "smc", r["steps"], r["particles"], r["seed"], r.get("ess_threshold", 0.5)
    return "repaint", r["steps"], r["U"], r.get("jump", 1), r["seed"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redo", action="store_true", help="recompute the rows already stored")
    args = parser.parse_args(argv)
    stored = {}
    if os.path.exists(PATH) and not args.redo:
        stored = {_key(r): r for r in json.load(open(PATH))["rows"]}
    unet, info = load_pretrained("ddpm_digits")
    schedule = make_schedule(info["config"])
    judge, _ = load_pretrained("digit_classifier")
    x_test, y_test = digits("test")
    top = torch.zeros(1, 1, 8, 8)
    top[..., :4, :] = 1
    runs = [dict(sampler="repaint", steps=n, U=U, jump=j, seed=seed) for n, U, j, seed in BUDGETS] + \
        [dict(sampler="smc", steps=n, particles=K, seed=seed, ess_threshold=e) for n, K, seed, e in SMC]
    rows = []
    for run in runs:
        if _key(run) in stored:
            rows.append(dict(stored[_key(run)], **run))
            continue
        t0 = time.time()
        gen = torch.Generator().manual_seed(run["seed"])
        with torch.no_grad():
            if run["sampler"] == "smc":
                out = inpaint_smc(schedule, unet, x_test, top, n_steps=run["steps"], particles=run["particles"],
                                  ess_threshold=run["ess_threshold"], generator=gen)
                n_eval = run["steps"] * run["particles"]
            else:
                out = inpaint(schedule, unet, x_test, top, n_steps=run["steps"], resample=run["U"], jump=run["jump"],
                              generator=gen)
                n_eval = evaluations(run["steps"], run["U"], run["jump"])
            agree = (judge(out.clamp(-1, 1)).argmax(1) == y_test).double().mean().item()
        assert torch.equal(out[..., :4, :], x_test[..., :4, :])
        rows.append(dict(run, evaluations=n_eval, agreement=agree, seconds=time.time() - t0,
                         torch_version=str(torch.__version__)))
        print(rows[-1], flush=True)
    with open(PATH, "w") as fh:
        json.dump(dict(command="python benchmarks/inpainting_budget.py", n_images=len(y_test), rows=rows), fh, indent=1)
    print("wrote", PATH)
    return 0


if __name__ == "__main__":
    sys.exit(main())
