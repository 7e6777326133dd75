"""Training speed of ``course_utils.scale`` and its resume, on the current device (run by hand).

    python benchmarks/scale_speed.py [--config small] [--steps 400] [--out benchmarks/results/scale_speed.txt]

Needs no download: trains on 50,000 random uint8 images (the speed of a step does not depend on what
the pixels show). Three runs of ``--steps`` steps each in a temporary folder: A straight through, B the
same again, C stopped at half and resumed. Prints images/s (bf16 on CUDA) and the largest parameter
difference A-B (the floor set by non-deterministic GPU kernels; exactly 0 on a CPU) and A-C (resume).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from course_utils import scale


def max_diff(a, b):
    sa, sb = (torch.load(p, map_location="cpu", weights_only=True)["model"] for p in (a, b))
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="small", choices=sorted(scale.CONFIGS))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--tiny", action="store_true", help="a 2-level 8-channel UNet at batch 8 (a CPU smoke test)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if dev == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    over = dict(log_every=50, sample_every=10 ** 9, ckpt_every=10 ** 9)
    if args.tiny:
        over.update(unet=dict(ch=8, ch_mult=[1, 2], n_res=1, groups=4, heads=2), batch=8, log_every=5)
    images = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    lines = [f"device: {name}; torch {torch.__version__}; config {args.config}{' (tiny)' if args.tiny else ''}",
             f"command: python benchmarks/scale_speed.py --config {args.config} --steps {args.steps}"
             f"{' --tiny' if args.tiny else ''}"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for run, stops in (("A", [args.steps]), ("B", [args.steps]), ("C", [args.steps // 2, args.steps])):
            for steps in stops:
                t0 = time.time()
                r = scale.train(args.config, os.path.join(tmp, run), steps=steps, images=images, progress=False, **over)
                runs.setdefault(run, []).append((r, time.time() - t0))
        r, wall = runs["A"][0]
        bf16 = dev == "cuda" and scale.CONFIGS[args.config]["bf16"]
        lines.append(f"run A: {r['step']} steps in {wall:.1f} s wall ({r['images_per_s']:.0f} images/s in the loop, "
                     f"{'bf16' if bf16 else 'fp32'}; loss {r['loss']:.1f})")
        ab = max_diff(r["checkpoint"], runs["B"][0][0]["checkpoint"])
        lines.append(f"max |A - B| over parameters (two identical runs): {ab:.3g}")
        lines.append(f"max |A - C| over parameters (C stopped at {args.steps // 2} and resumed): "
                     f"{max_diff(r['checkpoint'], runs['C'][-1][0]['checkpoint']):.3g}")
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
