"""Chapter 5, section 4: where dynamic thresholding loses attribute accuracy on the course's scenes.

    python benchmarks/thresholding.py        # about 10 minutes on 2 CPU cores

Notebook 05 finds that Imagen's dynamic thresholding (per image, s = max(1, the p-quantile of |x0_hat|);
clip to [-s, s], divide by s) saturates less than static clipping but draws fewer scenes with every
attribute right. This script measures two things the notebook cannot afford in its time budget:

    * the percentile p: 0.98, 0.99, 0.995 (Imagen's), 0.998 and 1 (s = the largest |value|), against static
      clipping, at w = 3, 10 and 30;
    * which steps the cost comes from: dynamic thresholding while t > 0.5 and static clipping after, and the
      reverse; and at every step the median over images of the p-quantile of |x0_hat| (s before its floor at
      1: how far each step's predicted image overshoots, and how much dynamic thresholding divides it by).

Same model (glide_shapes), judge (shape_judge), image noise (seed 4) and DDIM with 20 steps as notebook 05's
cell 28, on 300 one-object test captions (seed 14; a sample independent of the notebook's 100, since
shape_scenes draws the number of objects of all n scenes first). Each row holds the fraction of
the 300 images with every attribute right and its difference from static clipping's at the same w, with the
standard error of that paired difference (same captions, same noise). Writes data/results/thresholding.json,
which the notebook cites.
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _results import identify, write_results  # noqa: E402

from course_utils import REPO_ROOT  # noqa: E402
from course_utils.ddpm import ddim_sample  # noqa: E402
from course_utils.guidance import classifier_free_guidance, thresholded  # noqa: E402
from course_utils.metrics import paired_difference  # noqa: E402
from course_utils.pretrain import checkpoint_path, load_pretrained  # noqa: E402
from course_utils.pretrain_t2i import glide_schedule  # noqa: E402
from course_utils.shapes import attribute_agreement, shape_scenes, tokenize  # noqa: E402
from course_utils.tensors import per_item_noise  # noqa: E402

OUT = os.path.join(REPO_ROOT, "data", "results", "thresholding.json")
N_CAPTIONS = 300
# name -> (the method at time t, the percentile)
RULES = {"static": (lambda t: "static", 0.995)}
RULES.update({f"dynamic p={p:g}": (lambda t: "dynamic", p) for p in (0.98, 0.99, 0.995, 0.998, 1.0)})
RULES["dynamic while t > 0.5, then static"] = (lambda t: "dynamic" if t > 0.5 else "static", 0.995)
RULES["static while t > 0.5, then dynamic"] = (lambda t: "static" if t > 0.5 else "dynamic", 0.995)


def saturation(x: torch.Tensor) -> float:
    """The fraction of values within 0.02 of +-1 (notebook 05's measure)."""
    return (x.abs() >= 0.98).double().mean().item()


def sample(model, schedule, ids, w: float, rule, percentile: float, noise: torch.Tensor):
    """DDIM with guidance, x0_hat thresholded at every step by the method rule(t) picks; also returns
    [(t, median over images of the percentile-quantile of |x0_hat| before thresholding)] per step (s is the
    larger of it and 1)."""
    steps = []

    def observe(t, x0):
        steps.append((round(float(t[0]), 3),
                      round(torch.quantile(x0.abs().flatten(1), percentile, dim=1).median().item(), 2)))
    eps = thresholded(classifier_free_guidance(model, ids, w), schedule, rule, percentile, observe=observe)
    with torch.no_grad():
        x = ddim_sample(schedule, eps, noise, n_steps=20).clamp(-1, 1)
    return x, steps


def main() -> dict:
    judge, _ = load_pretrained("shape_judge")
    glide, extra = load_pretrained("glide_shapes")
    schedule = glide_schedule(extra["config"])
    caps = shape_scenes(N_CAPTIONS, "test", seed=14, pair_fraction=0.0)[1]
    ids = tokenize(caps)[0]
    noise = per_item_noise((3, 16, 16), 4, 0, len(caps))
    data_x = shape_scenes(1000, "test", seed=15, pair_fraction=0.0)[0]      # one-object scenes, as generated
    rows = []
    for w in (3.0, 10.0, 30.0):
        for name, (rule, p) in RULES.items():
            t0 = time.time()
            x, steps = sample(glide, schedule, ids, w, rule, p, noise)
            agree = attribute_agreement(judge, x, caps)
            right = agree["all"].double()
            if name == "static":
                static_right = right
            minus, minus_se = paired_difference(right, static_right)
            row = {"w": w, "method": name, "saturation": round(saturation(x), 4),
                   "all_right": round(right.mean().item(), 3),
                   "minus_static": round(minus, 3),
                   "minus_static_se": round(minus_se, 3),
                   "per_attribute": {k: round(v.double().mean().item(), 3) for k, v in agree.items() if k != "all"},
                   "median_quantile_per_step": steps}
            rows.append(row)
            print(f"w = {w:4g}  {name:36s} saturation {row['saturation']:.3f}  all right {row['all_right']:.3f}"
                  f" ({row['minus_static']:+.3f} +- {row['minus_static_se']:.3f} against static)"
                  f"  ({time.time() - t0:.0f} s)", flush=True)
    return write_results(OUT, "python benchmarks/thresholding.py", checkpoint=identify(checkpoint_path("glide_shapes")),
                         data_saturation=round(saturation(data_x), 4), n_captions=len(caps), rows=rows)


if __name__ == "__main__":
    main()
