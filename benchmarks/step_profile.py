"""Where the time of one of chapter 5's training steps goes, on this machine's CPU (run by hand):

    python benchmarks/step_profile.py [--steps 15] [--out benchmarks/results/step_profile_cpu.txt]

For GLIDE's text-conditional U-Net (``GLIDE_CONFIG``, the recipe of ``glide_shapes``, ``glide_pooled`` and,
fine-tuned, ``unclip_decoder``: 60% of chapter 5's recorded pretraining time), it counts the floating-point
operations of one training step at the recipe's batch (``torch.utils.flop_counter``: convolutions, matrix
products and attention, forward and backward; attention is counted through PyTorch's reference "math"
implementation, since the counter has no rule for the fused CPU kernel the training uses). Then it takes
turns, ``--steps`` times after three warm-ups, between four timed things, so that all meet the same load: the
step; the step with the network and images in channels-last memory format (a common CPU speed-up for
convolutions); the step with the network compiled by ``torch.compile`` (default mode, which fuses the
element-wise work around the convolutions); and three 1024 x 1024 x 1024 float32 matrix products, the
reference for what this CPU does at best on the same threads. Last it lists the operations that take the
most time (``torch.profiler``, three steps).
The question it answers: could the same training run much faster here, or does the arithmetic itself
set the time? The step does not use the pretraining's random stream, so it changes no checkpoint.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


MATMUL_N, MATMUL_REPEATS = 1024, 3
MATRICES = torch.randn(2, MATMUL_N, MATMUL_N)


def matmuls():
    for _ in range(MATMUL_REPEATS):
        MATRICES[0] @ MATRICES[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "step_profile_cpu.txt"))
    args = ap.parse_args()
    if args.steps < 1:
        ap.error(f"--steps must be at least 1, got {args.steps}")
    sys.path.insert(0, ROOT)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from course_utils.losses import eps_loss
    from course_utils.pretrain_t2i import GLIDE_CONFIG, glide_schedule, make_glide
    from course_utils.shapes import shape_scenes
    from course_utils.text import tokenize

    torch.manual_seed(0)
    config = GLIDE_CONFIG
    x, captions, _ = shape_scenes(2000, "train")
    ids, _ = tokenize(captions)
    schedule = glide_schedule(config)

    def make_step(channels_last: bool = False, compiled: bool = False):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model, images = make_glide(config).to(memory_format=fmt), x.contiguous(memory_format=fmt)
        forward = torch.compile(model) if compiled else model
        opt = torch.optim.Adam(model.parameters(), lr=config["lr"])

        def step():
            idx = torch.randint(0, len(images), (config["batch"],))
            loss = eps_loss(lambda z, t: forward(z, t, ids[idx]), images[idx], schedule).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model, step

    def interleaved_times(steps) -> list[list[float]]:
        """Each function's times, taking turns call by call, so that all meet the same load."""
        for _ in range(3):
            for step in steps:
                step()
        times = [[] for _ in steps]
        for _ in range(args.steps):
            for step, out in zip(steps, times):
                t0 = time.perf_counter()
                step()
                out.append(time.perf_counter() - t0)
        return times

    model, step = make_step()
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        step()
    flops = counter.get_total_flops()
    compiled_step = make_step(compiled=True)[1]
    t0 = time.perf_counter()
    compiled_step()
    compile_seconds = time.perf_counter() - t0
    times, cl_times, co_times, mm_times = interleaved_times([step, make_step(channels_last=True)[1], compiled_step,
                                                             matmuls])
    seconds, cl_seconds, co_seconds = (statistics.median(t) for t in (times, cl_times, co_times))
    peak = 2 * MATMUL_N ** 3 * MATMUL_REPEATS / statistics.median(mm_times) / 1e9
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    lines = [
        f"command: python benchmarks/step_profile.py --steps {args.steps}",
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"GLIDE_CONFIG: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, batch {config['batch']}, "
        f"{config['steps']} steps",
        f"arithmetic per training step: {flops / 1e9:.1f} GFLOP",
        f"step time: median {seconds:.3f} s of {args.steps} (min {min(times):.3f}, max {max(times):.3f}) -> "
        f"{flops / seconds / 1e9:.1f} GFLOP/s",
        f"the same step in channels-last format, taking turns with it: median {cl_seconds:.3f} s "
        f"({seconds / cl_seconds:.2f} times as fast)",
        f"the same step compiled by torch.compile, taking turns with it: median {co_seconds:.3f} s "
        f"({seconds / co_seconds:.2f} times as fast; the first compiled step took {compile_seconds:.0f} s)",
        f"float32 {MATMUL_N}^3 matrix products on the same threads, taking turns with them: {peak:.1f} GFLOP/s",
        f"the step runs at {flops / seconds / 1e9 / peak:.0%} of the matrix products' rate; "
        f"{config['steps']} steps at this rate take {config['steps'] * seconds / 60:.1f} min",
        "",
        "operations by time, three steps (torch.profiler):",
        prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=50),
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
