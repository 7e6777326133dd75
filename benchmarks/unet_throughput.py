"""Training and sampling throughput of the course's UNet on the current device (run by hand).

    python benchmarks/unet_throughput.py            # CPU here, or CUDA where present
    python benchmarks/unet_throughput.py --quick    # fewer repetitions

Prints one table: for the chapter-3 digits U-Net (0.74M parameters, 8x8) and a DDPM-paper-sized
CIFAR-10 U-Net (38M parameters, 32x32; CUDA only), training steps per second (Adam, L_simple,
float32 and, on CUDA, bf16 autocast) and sampling images per second per network evaluation.
"""
from __future__ import annotations

import argparse
import time

import torch

from course_utils.losses import eps_loss
from course_utils.nets import UNet
from course_utils.pretrain import DDPM_DIGITS_CONFIG, make_unet
from course_utils.scale import CONFIGS
from course_utils.schedules import DiscreteSchedule, linear_betas

CIFAR_DDPM = CONFIGS["ddpm"]["unet"]  # the DDPM paper's CIFAR-10 network (course_utils.scale)


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def bench(net, shape, batch, dev, steps, bf16):
    sched = DiscreteSchedule(linear_betas(1000))
    net = net.to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x0 = torch.randn(batch, *shape, device=dev)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)

    def step():
        with ctx:
            loss = eps_loss(net, x0, sched).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    train_sps = steps / (time.perf_counter() - t0)
    net.eval()
    xs = torch.randn(batch, *shape, device=dev)
    t = torch.full((batch,), 0.5, device=dev)
    with torch.no_grad(), ctx:
        for _ in range(3):
            net(xs, t)
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            net(xs, t)
        _sync(dev)
    img_per_s = steps * batch / (time.perf_counter() - t0)
    net.train()
    return train_sps, img_per_s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}")
    rows = []
    torch.manual_seed(0)
    digits_net = make_unet(DDPM_DIGITS_CONFIG)
    configs = [("digits 8x8", digits_net, (1, 8, 8), 128)]
    if dev.type == "cuda":
        configs += [("digits 8x8", digits_net, (1, 8, 8), 2048),
                    ("CIFAR DDPM 32x32", UNet(**CIFAR_DDPM), (3, 32, 32), 128)]
    for label, net, shape, batch in configs:
        n_params = sum(p.numel() for p in net.parameters()) / 1e6
        for bf16 in ([False, True] if dev.type == "cuda" else [False]):
            steps = 5 if args.quick else (20 if dev.type == "cuda" else 10)
            sps, ips = bench(net, shape, batch, dev, steps, bf16)
            rows.append((label, f"{n_params:.2f}M", batch, "bf16" if bf16 else "fp32", sps, sps * batch, ips))
    print(f"{'model':18s} {'params':>7s} {'batch':>6s} {'dtype':>5s} {'train steps/s':>14s} {'train img/s':>12s} "
          f"{'eval img/s (1 NFE)':>19s}")
    for r in rows:
        print(f"{r[0]:18s} {r[1]:>7s} {r[2]:6d} {r[3]:>5s} {r[4]:14.2f} {r[5]:12.0f} {r[6]:19.0f}")


if __name__ == "__main__":
    main()
