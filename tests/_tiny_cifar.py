"""A tiny CIFAR-10 in the real on-disk format torchvision reads (cifar-10-batches-py/: five training
batches, a test batch and batches.meta, each a pickled dict with a (n, 3072) uint8 "data" array in
channel planes and a "labels" list), with the MD5 sums torchvision checks registered for it."""
from __future__ import annotations

import hashlib
import json
import os
import pickle

import numpy as np

PER_BATCH = 8  # images per file: 40 training and 8 test images
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_tiny_cifar(root: str, seed: int = 0) -> dict:
    """Write the files; return {"train": (x, y), "test": (x, y)} as written (x uint8 (n, 32, 32, 3))."""
    rng = np.random.default_rng(seed)
    draw = {split: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n))
            for split, n in (("train", 5 * PER_BATCH), ("test", PER_BATCH))}
    write_cifar_format(root, draw["train"], draw["test"])
    return draw


def write_cifar_format(root: str, train, test) -> None:
    """Write ``train`` and ``test`` = (x uint8 (n, 32, 32, 3), labels (n,)) as torchvision's CIFAR-10 files
    (the training set split into five batches) and their MD5 sums (``root/md5.json``, for register_md5)."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    md5 = {}
    parts = [(f"data_batch_{i + 1}", xs, ys) for i, (xs, ys) in
             enumerate(zip(np.array_split(train[0], 5), np.array_split(np.asarray(train[1]), 5)))]
    for name, hwc, labels in parts + [("test_batch", test[0], np.asarray(test[1]))]:
        entry = {"batch_label": name, "labels": [int(v) for v in labels],
                 "filenames": [f"{name}_{j}.png" for j in range(len(hwc))],
                 "data": hwc.transpose(0, 3, 1, 2).reshape(len(hwc), 3072)}  # rows: R plane, G plane, B plane
        md5[name] = _dump(os.path.join(folder, name), entry)
    md5["batches.meta"] = _dump(os.path.join(folder, "batches.meta"),
                                {"label_names": NAMES, "num_cases_per_batch": len(parts[0][1]), "num_vis": 3072})
    with open(os.path.join(root, "md5.json"), "w") as fh:
        json.dump(md5, fh)


def _dump(path, obj) -> str:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)
    with open(path, "rb") as fh:
        return hashlib.md5(fh.read()).hexdigest()


def register_md5(root: str, setattr_=setattr) -> None:
    """Make torchvision's CIFAR10 check the tiny files' MD5 sums (``setattr_``: monkeypatch.setattr in tests)."""
    from torchvision.datasets import CIFAR10
    with open(os.path.join(root, "md5.json")) as fh:
        md5 = json.load(fh)
    setattr_(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    setattr_(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    setattr_(CIFAR10, "meta", dict(CIFAR10.meta, md5=md5["batches.meta"]))


def tiny_overrides(**more) -> dict:
    """Settings that make course_utils.scale's "small" config train in milliseconds per step on a CPU."""
    return dict(dict(unet=dict(ch=8, ch_mult=[1, 2], n_res=1, heads=2, groups=4, dropout=0.0),
                     schedule=dict(kind="linear", N=50, beta_start=1e-3, beta_end=0.2),
                     batch=8, warmup=2, ema=0.9, log_every=1, sample_every=1000, sample_n=4, sample_steps=2,
                     ckpt_every=1000), **more)
