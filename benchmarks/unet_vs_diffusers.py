"""The course's UNet against diffusers' UNet2DModel of the same shape (run by hand, not in CI).

    pip install -r benchmarks/requirements.txt          # diffusers, for this benchmark only
    python benchmarks/unet_vs_diffusers.py [--quick] [--out FILE]

For both CIFAR-10 configurations of ``course_utils.scale`` ("small" and the DDPM paper's "ddpm"),
builds diffusers' UNet2DModel with the same channels per level, ResBlocks per level, attention at
16x16, GroupNorm groups, dropout and scale-and-shift time conditioning, checks that the parameter
counts agree within 10%, and times both on the same inputs (the same seed, so the same x0, t and eps)
with the same training step (L_simple through ``losses.eps_loss``, Adam) and the same forward pass
for sampling. Prints one table with the device: training steps/s and sampled images/s per network
evaluation, and the course/diffusers ratios.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from unet_throughput import bench

from course_utils.nets import UNet
from course_utils.scale import CONFIGS


class DiffusersEps(torch.nn.Module):
    """diffusers' UNet2DModel as a course eps-model: net(x, t) with continuous t in (0, 1]."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t):
        return self.unet(x, t * 1000).sample  # diffusers embeds timesteps on DDPM's 0..1000 scale


def matched_diffusers(unet_config: dict):
    """UNet2DModel with the shape of the course UNet built from ``unet_config``."""
    from diffusers import UNet2DModel
    c = unet_config
    levels = len(c["ch_mult"])
    down = ["AttnDownBlock2D" if i in c["attn_levels"] else "DownBlock2D" for i in range(levels)]
    up = ["AttnUpBlock2D" if i in c["attn_levels"] else "UpBlock2D" for i in reversed(range(levels))]
    return DiffusersEps(UNet2DModel(
        sample_size=c["image_size"], in_channels=c["in_ch"], out_channels=c["in_ch"], layers_per_block=c["n_res"],
        block_out_channels=tuple(c["ch"] * m for m in c["ch_mult"]), down_block_types=tuple(down),
        up_block_types=tuple(up), dropout=c["dropout"], norm_num_groups=c["groups"],
        attention_head_dim=c["ch"] * c["ch_mult"][max(c["attn_levels"])] // c["heads"],
        resnet_time_scale_shift="scale_shift"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="also write the table to this file")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    import diffusers
    name = torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    lines = [f"device: {name}; torch {torch.__version__}; diffusers {diffusers.__version__}",
             f"command: python benchmarks/unet_vs_diffusers.py{' --quick' if args.quick else ''}",
             f"{'config':7s} {'model':10s} {'params':>7s} {'batch':>5s} {'dtype':>5s} {'train steps/s':>13s} "
             f"{'eval img/s':>10s} {'train ratio':>11s} {'eval ratio':>10s}"]
    print("\n".join(lines))
    for cname in ("small", "ddpm"):
        cfg = dict(CONFIGS[cname]["unet"])
        batch = 128 if dev.type == "cuda" else (32 if cname == "small" else 8)
        steps = (5 if args.quick else 20) if dev.type == "cuda" else (2 if args.quick else 5)
        torch.manual_seed(0)
        nets = {"course": UNet(**cfg), "diffusers": matched_diffusers(cfg)}
        counts = {k: sum(p.numel() for p in n.parameters()) for k, n in nets.items()}
        assert abs(counts["course"] / counts["diffusers"] - 1) < 0.10, counts  # matched within 10%
        for bf16 in ([False, True] if dev.type == "cuda" else [False]):
            res = {}
            for k, net in nets.items():
                torch.manual_seed(1)  # the same x0, t and eps for both
                res[k] = bench(net, (3, 32, 32), batch, dev, steps, bf16)
            for k in nets:
                (ts, es), (td, ed) = res["course"], res["diffusers"]
                ratio = f"{ts / td:11.2f} {es / ed:10.2f}" if k == "course" else ""
                line = (f"{cname:7s} {k:10s} {counts[k] / 1e6:6.2f}M {batch:5d} {'bf16' if bf16 else 'fp32':>5s} "
                        f"{res[k][0]:13.2f} {res[k][1]:10.0f} {ratio}")
                lines.append(line.rstrip())
                print(lines[-1], flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
