"""Chapter 4, section 8: how RePaint's agreement with the original digit grows with its budget.

    python benchmarks/inpainting_budget.py          # computes the rows not yet stored (all: about 35 minutes)
    python benchmarks/inpainting_budget.py --redo   # recomputes every row

Inpaints the bottom halves of the 360 held-out digits with chapter 3's unconditional U-Net (ddpm_digits)
for several (steps, passes per step U, jump length j, seed) and records the share that chapter 3's
classifier assigns to the original digit, with the network evaluations per image, in
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
from course_utils.inpainting import inpaint, repaint_moves  # noqa: E402
from course_utils.pretrain import load_pretrained, make_schedule  # noqa: E402

# (steps, U, jump, seed); the last three go back up j steps at a time, as RePaint's paper does, against the
# same 100 steps and U one step at a time (the row before them)
BUDGETS = [(50, 1, 1, 52), (25, 20, 1, 52), (20, 50, 1, 52), (40, 50, 1, 52), (40, 50, 1, 53), (100, 20, 1, 52),
           (100, 50, 1, 52), (100, 50, 1, 53), (100, 10, 1, 52), (50, 10, 5, 52), (100, 10, 5, 52), (100, 10, 10, 52)]
PATH = os.path.join(REPO_ROOT, "data", "results", "inpainting_budget.json")


def evaluations(n_steps: int, U: int, jump: int) -> int:
    return sum(1 for a, b in repaint_moves(n_steps, U, jump) if b > a)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redo", action="store_true", help="recompute the rows already stored")
    args = parser.parse_args(argv)
    stored = {}
    if os.path.exists(PATH) and not args.redo:
        stored = {(r["steps"], r["U"], r.get("jump", 1), r["seed"]): r for r in json.load(open(PATH))["rows"]}
    unet, info = load_pretrained("ddpm_digits")
    schedule = make_schedule(info["config"])
    judge, _ = load_pretrained("digit_classifier")
    x_test, y_test = digits("test")
    top = torch.zeros(1, 1, 8, 8)
    top[..., :4, :] = 1
    rows = []
    for n_steps, U, jump, seed in BUDGETS:
        if (n_steps, U, jump, seed) in stored:
            rows.append(dict(stored[n_steps, U, jump, seed], jump=jump))
            continue
        t0 = time.time()
        with torch.no_grad():
            out = inpaint(schedule, unet, x_test, top, n_steps=n_steps, resample=U, jump=jump,
                          generator=torch.Generator().manual_seed(seed))
            agree = (judge(out.clamp(-1, 1)).argmax(1) == y_test).double().mean().item()
        assert torch.equal(out[..., :4, :], x_test[..., :4, :])
        rows.append(dict(steps=n_steps, U=U, jump=jump, seed=seed, evaluations=evaluations(n_steps, U, jump),
                         agreement=agree, seconds=time.time() - t0, torch_version=str(torch.__version__)))
        print(rows[-1], flush=True)
    with open(PATH, "w") as fh:
        json.dump(dict(command="python benchmarks/inpainting_budget.py", n_images=len(y_test), rows=rows), fh, indent=1)
    print("wrote", PATH)
    return 0


if __name__ == "__main__":
    sys.exit(main())
