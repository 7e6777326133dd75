"""Quality against network evaluations for chapter 3's samplers on the shipped digits DDPM (run by hand).

    python benchmarks/digits_samplers.py                         # the full table (CPU: about 30 min)
    python benchmarks/digits_samplers.py --n 200 --seeds 1 --quick   # a smoke run
    python benchmarks/digits_samplers.py --out benchmarks/results/digits_samplers.json

For each sampler and budget of network evaluations (NFE) it draws ``--n`` digits per seed from the
shipped ``ddpm_digits`` checkpoint and judges them with the shipped digits classifier: Frechet distance
of its penultimate features to the 360 held-out digits, the largest deviation of the predicted-class
frequencies from 0.1, and the mean confidence. The floor is the same Frechet distance for ``--n``
random training digits. Results (means and spreads over seeds, the command, the device and the run
time) go to a JSON file that notebook 03 reads.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

from course_utils.data import digits
from course_utils.ddpm import (
    ddim_sample,
    ddpm_sample,
    dpm_solver_2m_sample,
    heun_sample,
    karras_timesteps,
    quadratic_timesteps,
    uniform_timesteps,
)
from course_utils.metrics import classifier_report, frechet_distance
from course_utils.pretrain import load_pretrained, make_schedule
from course_utils.samplers import CallCounter


def judge(images, classifier, held_out_feats):
    rep = classifier_report(images.clamp(-1, 1).float().cpu(), classifier)
    return dict(fd=frechet_distance(rep["features"], held_out_feats), confidence=rep["confidence"],
                max_freq_dev=(rep["freqs"] - 0.1).abs().max().item())


def runs(schedule, quick):
    """(name, NFE budget, sampler call) for every row of the table. Heun costs 2K - 1 evaluations for K
    indices, so it gets K = (budget + 1) // 2 (at most the budget)."""
    N = schedule.N
    grids = {"uniform": lambda n: uniform_timesteps(N, n), "quadratic": lambda n: quadratic_timesteps(N, n),
             "Karras": lambda n: karras_timesteps(schedule, n)}
    out = [("DDPM", 1000, lambda m, x, g: ddpm_sample(schedule, m, x, generator=g))]
    budgets = [5, 10, 20, 50] if quick else [5, 10, 20, 50, 100, 1000]
    for nfe in budgets:
        for grid in ("uniform", "quadratic"):
            out.append((f"DDIM eta=0, {grid}", nfe,
                        lambda m, x, g, n=nfe, grid=grid: ddim_sample(schedule, m, x, timesteps=grids[grid](n))))
        if nfe >= 20:
            out.append(("DDIM eta=1, uniform", nfe,
                        lambda m, x, g, n=nfe: ddim_sample(schedule, m, x, n_steps=n, eta=1.0, generator=g)))
        if nfe < 1000:
            for grid in ("quadratic", "Karras"):
                out.append((f"DPM-Solver++(2M), {grid}", nfe,
                            lambda m, x, g, n=nfe, grid=grid: dpm_solver_2m_sample(schedule, m, x,
                                                                                   timesteps=grids[grid](n))))
                out.append((f"Heun, {grid}", nfe,
                            lambda m, x, g, k=(nfe + 1) // 2, grid=grid: heun_sample(schedule, m, x,
                                                                                      timesteps=grids[grid](k))))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000,
                    help="generated digits per seed (default 1000; at most 1437, the training digits the floor draws)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="fewer budgets, no 100/1000-NFE deterministic rows")
    ap.add_argument("--out", default=None, help="write the results JSON here")
    args = ap.parse_args(argv)
    if not 2 <= args.n <= 1437:
        ap.error(f"--n must be in [2, 1437] (the floor draws that many training digits), got {args.n}")
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t_start = time.time()
    model, extra = load_pretrained("ddpm_digits")
    model = model.to(dev)
    schedule = make_schedule(extra["config"])
    classifier, _ = load_pretrained("digit_classifier")
    x_test, _ = digits("test")
    x_train, _ = digits("train")
    held_out = classifier_report(x_test, classifier)["features"]
    floors = []
    for seed in range(args.seeds):
        idx = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(100 + seed))[:args.n]
        floors.append(judge(x_train[idx], classifier, held_out))
    real = classifier_report(x_test, classifier)
    rows = []
    for name, nfe, sample in runs(schedule, args.quick):
        per_seed, evals, seconds = [], None, 0.0
        for seed in range(args.seeds):
            g = torch.Generator().manual_seed(seed)
            x_T = torch.randn(args.n, 1, 8, 8, generator=g).to(dev)
            counted = CallCounter(model)
            t0 = time.time()
            with torch.no_grad():
                xs = [sample(counted, x_T[i:i + args.batch], g) for i in range(0, args.n, args.batch)]
            seconds += time.time() - t0
            evals = counted.calls // len(xs)
            per_seed.append(judge(torch.cat(xs), classifier, held_out))
        row = dict(sampler=name, budget=nfe, nfe=evals, seconds_per_seed=seconds / args.seeds)
        for key in ("fd", "confidence", "max_freq_dev"):
            vals = torch.tensor([r[key] for r in per_seed], dtype=torch.float64)
            row[key], row[key + "_spread"] = vals.mean().item(), (vals.max() - vals.min()).item()
        rows.append(row)
        print(f"{name:22s} NFE {evals:5d}  FD {row['fd']:7.2f} (spread {row['fd_spread']:.2f})  "
              f"max|freq - 0.1| {row['max_freq_dev']:.3f}  confidence {row['confidence']:.3f}  "
              f"{row['seconds_per_seed']:.1f} s/seed", flush=True)
    floor_fd = torch.tensor([f["fd"] for f in floors], dtype=torch.float64)
    result = dict(
        command="python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
        device=(torch.cuda.get_device_name() if dev.type == "cuda"
                else f"CPU ({os.cpu_count()} cores, {platform.machine()})"),
        torch=str(torch.__version__), n=args.n, seeds=args.seeds, minutes=(time.time() - t_start) / 60,
        floor=dict(fd=floor_fd.mean().item(), fd_spread=(floor_fd.max() - floor_fd.min()).item(),
                   what=f"{args.n} random training digits vs the 360 held out"),
        real_confidence=real["confidence"], checkpoint_config=extra["config"], rows=rows)
    print(f"floor FD {result['floor']['fd']:.2f}; held-out confidence {real['confidence']:.3f}; "
          f"{result['minutes']:.1f} min on {result['device']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
