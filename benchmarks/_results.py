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


def provenance(command: str) -> dict:
    """{command, date, torch, machine} of the run now going on."""
    return {"command": command, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"}


def write_results(out: str, command: str, **fields) -> dict:
    """Write {command, date, torch, machine, **fields} to ``out`` as JSON and return it."""
    result = {**provenance(command), **fields}
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"written to {out}")
    return result


def stored_or_trained(name: str, path: str, config: dict, train, fresh: bool = False):
    """A benchmark's own variant of the shipped checkpoint ``name``: loaded from ``path`` if that file holds
    exactly ``config`` (and not ``fresh``), else trained first by ``train(path)``. Returns (model, extra) with
    ``extra["trained_this_run"]`` and ``extra["checkpoint"]`` (path and SHA-1) added."""
    from course_utils.pretrain import load_pretrained

    def same(a, b) -> bool:
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)   # tuples stored as lists

    if os.path.isfile(path) and not fresh:
        model, extra = load_pretrained(name, path)
        if same(extra["config"], config):
            return model, dict(extra, trained_this_run=False, checkpoint=identify(path))
        print(f"{path} holds another configuration: retraining")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    train(path)
    model, extra = load_pretrained(name, path)
    if not same(extra["config"], config):
        raise RuntimeError(f"train wrote a checkpoint of another configuration to {path}")
    return model, dict(extra, trained_this_run=True, checkpoint=identify(path))
