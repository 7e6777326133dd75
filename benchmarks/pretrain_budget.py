"""Chapter 5's pretraining time against what it buys: GLIDE's U-Net trained with half its computation.

    python benchmarks/pretrain_budget.py     # 2 CPU cores: 17-28 min to train each variant here, 4-15 to score

Chapter 5's eleven checkpoints took 8,820 s of training as recorded (``python -m course_utils.pretrain --list
--chapter 5``), most of it in four U-Nets of 2,500 to 6,000 steps (glide_shapes, glide_pooled, unclip_decoder,
latent_shapes). Halving their computation would save about 54 minutes. This script measures what halving costs on
the first of them, five ways: glide_shapes retrained from its seed with 1,500 steps instead of 3,000 (the warm-up
and the cosine decay over the 1,500); the same 1,500 steps at twice the learning rate (2e-3: do larger steps make
up for fewer?); the same 1,500 steps with Min-SNR-5 loss weights (Hang et al. 2023: the nearly clean steps weighted
down, said to speed up convergence); 3,000 steps of 64 scenes instead of 128; and those 3,000 steps of 64 with
Min-SNR-5 weights (into build/pretrain_budget/ unless a checkpoint of exactly that configuration is there; --fresh
retrains), then each and the shipped checkpoint scored as benchmarks/latent_recipes.py scores a model: every
attribute right on 300 one-object test captions at w = 1.5, 2, 3, 5 and on notebook 05's four caption sets of 100
at w = 3 (DDIM 20 steps, image noise seed 3). Writes data/results/pretrain_budget.json; with --only ROW it trains
and scores that variant alone and keeps the file's other rows as stored (each row names its checkpoint by SHA-1;
each row added names the run that scored it: command, date, torch, machine).
"""
import argparse
import json
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _results import identify, provenance, stored_or_trained, write_results  # noqa: E402
from latent_recipes import attribute_scores, caption_sets  # noqa: E402

from course_utils import REPO_ROOT  # noqa: E402
from course_utils.pretrain import checkpoint_path, load_pretrained, recorded_times  # noqa: E402
from course_utils.pretrain_t2i import GLIDE_CONFIG, glide_schedule, pretrain_glide_shapes  # noqa: E402
from course_utils.text import generate  # noqa: E402

# Each variant: its row's name, its file in RUN_DIR, and what it changes in GLIDE_CONFIG.
VARIANTS = {"glide_shapes, 1,500 steps": ("glide_shapes_1500.pt", dict(steps=1500)),
            "glide_shapes, batch 64": ("glide_shapes_batch64.pt", dict(batch=64)),
            "glide_shapes, 1,500 steps at twice the learning rate": ("glide_shapes_1500_lr2e-3.pt",
                                                                    dict(steps=1500, lr=2e-3)),
            "glide_shapes, 1,500 steps with Min-SNR-5 loss weights": ("glide_shapes_1500_minsnr5.pt",
                                                                      dict(steps=1500, min_snr=5.0)),
            "glide_shapes, batch 64 with Min-SNR-5 loss weights": ("glide_shapes_batch64_minsnr5.pt",
                                                                   dict(batch=64, min_snr=5.0))}
OUT = os.path.join(REPO_ROOT, "data", "results", "pretrain_budget.json")
RUN_DIR = os.path.join(REPO_ROOT, "build", "pretrain_budget")


def variant_glide(file: str, changes: dict, fresh: bool):
    """glide_shapes with ``changes`` to its configuration: loaded if build/pretrain_budget/``file`` holds exactly
    that configuration, else trained."""
    config = dict(GLIDE_CONFIG, **changes)
    return stored_or_trained("glide_shapes", os.path.join(RUN_DIR, file), config,
                             lambda p: pretrain_glide_shapes(p, progress=False, config=config), fresh)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fresh", action="store_true", help="retrain the variants")
    parser.add_argument("--only", action="append", metavar="ROW", choices=sorted(VARIANTS),
                        help="train and score only this variant (repeatable); the other rows are kept as stored in "
                             "data/results/pretrain_budget.json, each naming the checkpoint it measured")
    args = parser.parse_args(argv)
    stored = None
    if args.only:                                 # read first: a missing file fails before any training
        with open(OUT) as f:
            stored = json.load(f)
    judge, _ = load_pretrained("shape_judge")
    models = {}
    if not args.only:
        shipped, shipped_extra = load_pretrained("glide_shapes")
        shipped_extra = dict(shipped_extra, trained_this_run=False,
                             checkpoint=identify(checkpoint_path("glide_shapes")))
        models[f"glide_shapes, {GLIDE_CONFIG['steps']:,} steps (shipped)"] = (shipped, shipped_extra)
    for name, (file, changes) in VARIANTS.items():
        if not args.only or name in args.only:
            models[name] = variant_glide(file, changes, args.fresh)
    one_300, sets = caption_sets()
    rows = {}
    for name, (model, extra) in models.items():
        sched = glide_schedule(extra["config"])

        def draw(caps, w, model=model, sched=sched):
            return generate(model, sched, caps, w=w, n_steps=20, seed=3)

        rows[name] = {"steps": extra["config"]["steps"], "batch": extra["config"]["batch"], "lr": extra["config"]["lr"],
                      "min_snr": extra["config"].get("min_snr"),
                      "train_seconds": round(extra["seconds"], 1), "trained_this_run": extra["trained_this_run"],
                      "checkpoint": extra["checkpoint"],
                      **attribute_scores(judge, draw, one_300, sets)}
        print(name, rows[name], flush=True)
    recorded = {r["name"]: round(r["seconds"], 1) for r in recorded_times(5)}
    fields = dict(chapter5_recorded_seconds=recorded, chapter5_total_seconds=round(sum(recorded.values()), 1))
    if not args.only:
        return write_results(OUT, "python benchmarks/pretrain_budget.py", rows=rows, **fields)
    # the stored rows and their run's fields kept; each row added names the run that measured it
    command = "python benchmarks/pretrain_budget.py " + " ".join(f"--only {shlex.quote(n)}" for n in args.only)
    for row in rows.values():
        row["run"] = provenance(command)
    result = dict(stored, rows={**stored["rows"], **rows}, **fields)
    with open(OUT, "w") as f:
        json.dump(result, f, indent=1)
    print(f"written to {OUT}")
    return result


if __name__ == "__main__":
    main()
