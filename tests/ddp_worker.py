"""Run by test_scale.py under `torchrun --standalone --nproc_per_node 2 tests/ddp_worker.py ROOT OUT` (gloo).

1. Each process computes the gradient of L_simple on its share of global batch 3 through
   DistributedDataParallel; rank 0 saves the averaged gradients to OUT/grads.pt.
2. Both processes train for two steps through course_utils.scale.train into OUT/run, then resume to three.
"""
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny_cifar import register_md5, tiny_overrides  # noqa: E402

from course_utils import scale  # noqa: E402
from course_utils.data import cifar10  # noqa: E402
from course_utils.nets import UNet  # noqa: E402

root, out = sys.argv[1], sys.argv[2]
register_md5(root)
rank, _, world, _ = scale.world_info()
dist.init_process_group("gloo")
config = scale.make_config("small", **tiny_overrides())
images, _ = cifar10("train", root)
torch.manual_seed(config["seed"])
model = DistributedDataParallel(UNet(**config["unet"]))
batches = scale.ShardedBatches(len(images), config["batch"], config["seed"], rank, world)
scale.shard_loss(model, scale._schedule(config), images, batches, step=3).backward()
if rank == 0:
    torch.save({n: p.grad for n, p in model.module.named_parameters()}, os.path.join(out, "grads.pt"))
scale.train(config, os.path.join(out, "run"), steps=2, data_root=root, progress=False)
scale.train(config, os.path.join(out, "run"), steps=3, data_root=root, progress=False)  # resumed under DDP
dist.destroy_process_group()
