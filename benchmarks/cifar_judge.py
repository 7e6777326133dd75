"""A CIFAR-10 classifier that judges class-conditional samples (run by hand, after
``gpu_sections.py --judge-samples N``; on a GPU it takes about a minute, on a 2-core CPU hours):

    python benchmarks/cifar_judge.py [--sheets DIR] [--epochs 12] SAMPLES.pt ... [--out FILE.json]

It trains a small residual network (ResNet-9-like: 64-128-256-512 channels, two residual blocks) on
CIFAR-10's 50,000 training images with random crops and flips, reports its accuracy on the 10,000 test
images, then scores each samples file (uint8 (N, 3, 32, 32), image j asked for class j % 10, as
``scale.sample`` draws them without ``label``): the share the classifier puts in the class asked for
(10% by chance; the classifier's own test accuracy bounds what a perfect generator would score), with its
standard error. The data come from data/cache/ (``course_utils.data.cifar10``) or, with ``--sheets``, from
image sheets read by ``gpu_sections.cifar_from_sheets``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))


class Residual(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(ch, ch), conv_bn(ch, ch))

    def forward(self, x):
        return x + self.body(x)


def classifier(width: int = 64) -> nn.Sequential:
    """(N, 3, 32, 32) in [-1, 1] -> (N, 10) logits."""
    w = width
    return nn.Sequential(conv_bn(3, w), conv_bn(w, 2 * w, pool=True), Residual(2 * w),
                         conv_bn(2 * w, 4 * w, pool=True), conv_bn(4 * w, 8 * w, pool=True), Residual(8 * w),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(8 * w, 10))


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 32x32 crops of the 4-pixel reflect-padded images, and horizontal flips (one draw per image)."""
    n = len(x)
    padded = nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    dy, dx = (torch.randint(0, 9, (n,), generator=generator) for _ in range(2))
    rows = (dy[:, None] + torch.arange(32))[:, None, :, None].to(x.device)          # (n, 1, 32, 1)
    cols = (dx[:, None] + torch.arange(32))[:, None, None, :].to(x.device)          # (n, 1, 1, 32)
    out = padded[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(3, device=x.device)[:, None, None],
                 rows, cols]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def to_input(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (3, 32, 32):
        raise ValueError(f"images: need uint8 (N, 3, 32, 32), got {images.dtype} {tuple(images.shape)}")
    return images.float() / 127.5 - 1


def train_classifier(x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int = 512, width: int = 64,
                     seed: int = 0, device: str = "cpu") -> nn.Module:
    """Train on uint8 images ``x`` (N, 3, 32, 32) and labels ``y``: SGD with Nesterov momentum, a one-cycle
    schedule (the learning rate up to 0.2 over the first fifth, then linearly to 0, the momentum down from 0.95
    to 0.85 and back), label smoothing 0.1, weight decay 5e-4."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = classifier(width).to(device).to(memory_format=torch.channels_last)
    steps = epochs * math.ceil(len(x) / batch)
    opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=steps, pct_start=0.2,
                                                anneal_strategy="linear")
    xs, ys = to_input(x).to(device), y.to(device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(xs), generator=gen).to(device)
        for i in range(0, len(xs), batch):
            idx = order[i:i + batch]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=(torch.device(device).type == "cuda")):
                loss = loss_fn(net(augment(xs[idx], gen).contiguous(memory_format=torch.channels_last)), ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


@torch.no_grad()
def predict(net: nn.Module, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Class of each uint8 image (N, 3, 32, 32): the argmax of the logits of the image and of its mirror image."""
    dev = next(net.parameters()).device
    out = []
    for i in range(0, len(images), batch):
        x = to_input(images[i:i + batch]).to(dev)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=(dev.type == "cuda")):
            logits = net(x).float() + net(x.flip(3)).float()
        out.append(logits.argmax(1).cpu())
    return torch.cat(out)


def score(predicted: torch.Tensor) -> dict:
    """The share of images j classified as class j % 10 (the class asked for), its standard error, and the
    share of each class among the predictions (1/10 each for a generator that draws every class as asked)."""
    n = len(predicted)
    right = (predicted == torch.arange(n) % 10).float().mean().item()
    return {"n": n, "right": round(right, 4), "se": round(math.sqrt(right * (1 - right) / n), 4),
            "predicted_shares": [round(v, 3) for v in (torch.bincount(predicted, minlength=10) / n).tolist()]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples", nargs="*", help="uint8 sample files (torch.load), image j asked for class j % 10")
    ap.add_argument("--sheets", default=None, help="read CIFAR-10 from image sheets in this folder")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    for name in ("epochs", "width"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be a positive int, got {getattr(args, name)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]
    t0 = time.time()
    if args.sheets:
        from gpu_sections import cifar_from_sheets
        (xtr, ytr), (xte, yte) = cifar_from_sheets(args.sheets)
        (xtr, ytr), (xte, yte) = ((torch.from_numpy(a).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(b))
                                  for a, b in ((xtr, ytr), (xte, yte)))
    else:
        from course_utils.data import cifar10
        (xtr, ytr), (xte, yte) = cifar10("train"), cifar10("test")
    print(f"data: {len(ytr)} training, {len(yte)} test images ({time.time() - t0:.0f} s)", flush=True)
    t0 = time.time()
    net = train_classifier(xtr, ytr, args.epochs, width=args.width, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.time() - t0
    test_acc = (predict(net, xte) == yte).float().mean().item()
    print(f"classifier: {sum(p.numel() for p in net.parameters()) / 1e6:.2f}M parameters, {args.epochs} epochs "
          f"in {seconds:.0f} s on {device}; test accuracy {test_acc:.4f}", flush=True)
    result = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
              "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
              "classifier": {"epochs": args.epochs, "width": args.width, "seconds": round(seconds, 1),
                             "test_accuracy": round(test_acc, 4)}, "samples": {}}
    for path in args.samples:
        s = score(predict(net, torch.load(path, weights_only=True)))
        result["samples"][os.path.basename(path)] = s
        print(f"{os.path.basename(path)}: {s['right']:.1%} +- {s['se']:.1%} classified as the class asked for "
              f"(n = {s['n']}; chance 10%); predicted shares {s['predicted_shares']}", flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
