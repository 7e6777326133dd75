"""Run the notebooks' GPU sections (their code cells that test ``torch.cuda.is_available()``) as a script,
on a CUDA machine, saving each figure as a PNG (run by hand):

    python benchmarks/gpu_sections.py [--minutes 3] [--standin] [--only 05] [--out benchmarks/results/gpu_sections]

With real CIFAR-10 in data/cache/ (``python -m course_utils.scale download``) this is what a learner
sees when running those cells in JupyterLab. ``--standin`` is for a GPU machine without a network: it
writes a synthetic stand-in in CIFAR-10's file format into a temporary folder instead: the 8x8 digits
upsampled to 32x32, the ink tinted by class (ten hues), on backgrounds of random brightness, shifted
by up to 4 pixels; 50,000 training and 10,000 test images with the digits' labels. It exercises every
line of the sections on the GPU (bf16 training, resume, class-conditional guidance, sampling speed:
images/s do not depend on what the pixels show); its losses and pictures say nothing about CIFAR-10.
On the stand-in the class of an image is its ink's hue, so the class-conditional sections' last samples
(chapter 4's and chapter 5's, at w = 3, image j asked for class j % 10) are also scored by ``hue_classes``:
the share whose ink has the hue of the class asked for (10% by chance), and the share with no single hue
(speckle); the samples are saved beside the figures (uint8, ``torch.load``) so the score can be redone.
``--minutes`` replaces the cells' GPU_MINUTES; ``--only`` runs the notebooks whose names start with it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ["03_ddpm_ddim.ipynb", "04_langevin_ncsn_guidance.ipynb", "05_text_to_image.ipynb"]
CLASS_SAMPLES = {"04": "xs", "05": "xs_c"}  # each section's last samples: w = 3, image j of class j % 10


def standin_cifar(seed: int = 0, n: tuple[int, int] = (50_000, 10_000)):
    """(train, test): each (uint8 (n, 32, 32, 3), labels (n,)) as described in the module docstring."""
    from course_utils.data import digits, hue_colours
    rng = np.random.default_rng(seed)
    x8, y = digits("all")
    x32 = torch.nn.functional.interpolate(x8, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    ink = ((x32 + 1) / 2).clamp(0, 1).numpy()                               # (1797, 32, 32) in [0, 1]
    colours = hue_colours(torch.arange(10) / 10).numpy()                     # one hue per class
    out = []
    for count in n:
        pick = rng.integers(0, len(y), count)
        a = ink[pick][..., None]                                             # (n, 32, 32, 1)
        a = np.stack([np.roll(np.roll(im, dy, 0), dx, 1) for im, dy, dx in
                      zip(a, rng.integers(-4, 5, count), rng.integers(-4, 5, count))])
        back = rng.uniform(0.0, 0.6, (count, 1, 1, 1))
        img = (1 - a) * back + a * colours[y.numpy()[pick]][:, None, None, :]
        out.append(((img * 255).round().clip(0, 255).astype(np.uint8), y.numpy()[pick]))
    return out


def hue_classes(images: torch.Tensor, min_chroma: float = 0.1, min_share: float = 0.5) -> torch.Tensor:
    """The stand-in class of each image read from its ink: uint8 (N, 3, H, W) -> (N,) in 0..9, or -1 where
    there is no single hue. The backgrounds are grey and the ink one hue mixed with grey, which keeps the
    direction of its chroma (the colour minus its grey part). The tenth of pixels farthest from grey each vote
    for the class colour nearest in that direction (cosine), if their chroma is at least ``min_chroma`` (on a
    0..1 scale; a grey pixel does not vote); the image gets the winning class if it has at least ``min_share``
    of the votes of that tenth, else -1 (grey images, speckle of many colours)."""
    from course_utils.data import hue_colours
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: need uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    x = images.double().flatten(2) / 255                                     # (N, 3, HW)
    chroma = x - x.mean(1, keepdim=True)                                     # the part off the grey axis
    strength, top = chroma.norm(dim=1).topk(max(1, x.shape[2] // 10), dim=1)  # (N, k): the most colourful tenth
    ref = hue_colours(torch.arange(10) / 10).to(x)
    ref = torch.nn.functional.normalize(ref - ref.mean(1, keepdim=True), dim=1)  # (10, 3)
    ink = torch.gather(chroma, 2, top[:, None, :].expand(-1, 3, -1))          # (N, 3, k)
    vote = torch.einsum("cd,ndk->nkc", ref, ink).argmax(2)                   # (N, k): each pixel's nearest class
    vote = torch.where(strength >= min_chroma, vote, -1)
    counts = torch.stack([(vote == c).sum(1) for c in range(10)], dim=1)     # (N, 10)
    best, cls = counts.max(1)
    return torch.where(best >= min_share * top.shape[1], cls, -1)


def gpu_cells(path: str) -> list[str]:
    with open(path) as fh:
        nb = json.load(fh)
    return ["".join(c["source"]) for c in nb["cells"]
            if c["cell_type"] == "code" and "torch.cuda.is_available()" in "".join(c["source"])]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=None, help="training minutes per section (default: the cells')")
    ap.add_argument("--standin", action="store_true", help="synthetic stand-in data in CIFAR-10's format (no network)")
    ap.add_argument("--only", default="", help="run only the notebooks whose names start with this (e.g. 05)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "gpu_sections"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_sections: no CUDA device; these sections are skipped on a CPU by design")
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
    from course_utils import data, scale
    from course_utils.plotting import image_grid
    os.makedirs(args.out, exist_ok=True)
    runs = tempfile.mkdtemp(prefix="gpu_sections_")
    if args.standin:
        from _tiny_cifar import register_md5, write_cifar_format
        t0 = time.time()
        train, test = standin_cifar()
        write_cifar_format(runs, train, test)
        register_md5(runs)
        data.DATA_CACHE = runs  # cifar10()'s default root, read at call time
        print(f"stand-in data written in {time.time() - t0:.0f} s to {runs}")
    figures = [0]

    def show(*_, **__):  # plt.show() in the cells: save the figure instead
        figures[0] += 1
        plt.savefig(os.path.join(args.out, f"{section}_fig{figures[0]}.png"), dpi=80, bbox_inches="tight")
        plt.close("all")

    plt.show = show
    for name in [n for n in NOTEBOOKS if n.startswith(args.only)]:
        for k, source in enumerate(gpu_cells(os.path.join(ROOT, "notebooks", name))):
            section = f"{name.split('_')[0]}_{k}"
            if args.minutes is not None:
                source = re.sub(r"^GPU_MINUTES = .*$", f"GPU_MINUTES = {args.minutes:g}", source, flags=re.M)
            # runs/ of the notebooks -> a temporary folder, so that nothing is resumed from an earlier run
            source = source.replace('os.path.join(REPO_ROOT, "runs",', 'os.path.join(RUNS,')
            namespace = dict(os=os, json=json, time=time, torch=torch, np=np, plt=plt, scale=scale,
                             image_grid=image_grid, REPO_ROOT=ROOT, RUNS=runs)
            print(f"===== {name}, GPU cell {k}", flush=True)
            t0 = time.time()
            exec(compile(source, f"{name}[gpu {k}]", "exec"), namespace)
            print(f"----- {time.time() - t0:.0f} s", flush=True)
            samples = namespace.get(CLASS_SAMPLES.get(section.split("_")[0], ""))
            if args.standin and samples is not None:
                found = hue_classes(samples.cpu())
                right = (found == torch.arange(len(samples)) % 10).float().mean().item()
                print(f"stand-in check, {len(samples)} samples at w = 3, image j asked for class j % 10: the ink's hue "
                      f"is the class asked for in {right:.0%} (chance 10%), another class in "
                      f"{((found >= 0).float().mean().item() - right):.0%}, no single hue in "
                      f"{(found < 0).float().mean().item():.0%}", flush=True)
                torch.save(samples.cpu(), os.path.join(args.out, f"{section}_samples.pt"))


if __name__ == "__main__":
    main()
