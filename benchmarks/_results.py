"""What the chapter-5 benchmarks write into data/results/: the checkpoint a run measured, named by path and
SHA-1 (so a stored row names the very file it measured), and the run's command, date, torch and machine."""
import hashlib
import json
import os
import platform
import time

import torch

from course_utils import REPO_ROOT


def identify(path: str) -> dict:
    """A checkpoint's path (relative to the repository) and its SHA-1."""
    with open(path, "rb") as f:
        return {"path": os.path.relpath(path, REPO_ROOT), "sha1": hashlib.sha1(f.read()).hexdigest()}


def write_results(out: str, command: str, **fields) -> dict:
    """Write {command, date, torch, machine, **fields} to ``out`` as JSON and return it."""
    result = {"command": command, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
              "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads", **fields}
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"written to {out}")
    return result
