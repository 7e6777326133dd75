"""Chapter 4, section 8: how RePaint's agreement with the original digit grows with its budget.

    python benchmarks/inpainting_budget.py        # about 25 minutes on 2 CPU cores

Inpaints the bottom halves of the 360 held-out digits with chapter 3's unconditional U-Net (ddpm_digits)
for several (steps, passes per step U, seed) and records the share that chapter 3's classifier assigns to the
original digit, with the network evaluations per image, in data/results/inpainting_budget.json, which
notebook 04 reads (the larger budgets do not fit its CPU time).
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from course_utils import REPO_ROOT  # noqa: E402
from course_utils.data import digits  # noqa: E402
from course_utils.inpainting import inpaint  # noqa: E402
from course_utils.pretrain import load_pretrained, make_schedule  # noqa: E402

BUDGETS = [(50, 1, 52), (25, 20, 52), (20, 50, 52), (40, 50, 52), (40, 50, 53), (100, 20, 52), (100, 50, 52),
           (100, 50, 53)]  # (steps, U, seed); evaluations = (steps - 1) U + 1


def main() -> int:
    unet, info = load_pretrained("ddpm_digits")
    schedule = make_schedule(info["config"])
    judge, _ = load_pretrained("digit_classifier")
    x_test, y_test = digits("test")
    top = torch.zeros(1, 1, 8, 8)
    top[..., :4, :] = 1
    rows = []
    for n_steps, U, seed in BUDGETS:
        t0 = time.time()
        with torch.no_grad():
            out = inpaint(schedule, unet, x_test, top, n_steps=n_steps, resample=U,
                          generator=torch.Generator().manual_seed(seed))
            agree = (judge(out.clamp(-1, 1)).argmax(1) == y_test).double().mean().item()
        assert torch.equal(out[..., :4, :], x_test[..., :4, :])
        rows.append(dict(steps=n_steps, U=U, seed=seed, evaluations=(n_steps - 1) * U + 1, agreement=agree,
                         seconds=time.time() - t0))
        print(rows[-1], flush=True)
    path = os.path.join(REPO_ROOT, "data", "results", "inpainting_budget.json")
    with open(path, "w") as fh:
        json.dump(dict(command="python benchmarks/inpainting_budget.py", n_images=len(y_test),
                       torch_version=str(torch.__version__), rows=rows), fh, indent=1)
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
