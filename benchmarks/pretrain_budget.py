"""Chapter 5's pretraining time against what it buys: GLIDE's U-Net trained with half its computation.

    python benchmarks/pretrain_budget.py     # 2 CPU cores: 17-22 min to train each variant here, 10-15 to score

Chapter 5's eleven checkpoints took 8,820 s of training as recorded (``python -m course_utils.pretrain --list
--chapter 5``), most of it in four U-Nets of 2,500 to 6,000 steps (glide_shapes, glide_pooled, unclip_decoder,
latent_shapes). Halving their computation would save about 54 minutes. This script measures what halving costs on
the first of them, three ways: glide_shapes retrained from its seed with 1,500 steps instead of 3,000 (the warm-up
and the cosine decay over the 1,500); the same 1,500 steps at twice the learning rate (2e-3: do larger steps make
up for fewer?); and 3,000 steps of 64 scenes instead of 128 (into build/pretrain_budget/
unless a checkpoint of exactly that configuration is there; --fresh retrains), then each and the shipped
checkpoint scored as benchmarks/latent_recipes.py scores a model: every attribute right on 300 one-object test
captions at w = 1.5, 2, 3, 5 and on notebook 05's four caption sets of 100 at w = 3 (DDIM 20 steps, image noise
seed 3). Writes data/results/pretrain_budget.json.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _results import identify, stored_or_trained, write_results  # noqa: E402
from latent_recipes import attribute_scores, caption_sets  # noqa: E402

from course_utils import REPO_ROOT  # noqa: E402
from course_utils.pretrain import checkpoint_path, load_pretrained, recorded_times  # noqa: E402
from course_utils.pretrain_t2i import GLIDE_CONFIG, glide_schedule, pretrain_glide_shapes  # noqa: E402
from course_utils.text import generate  # noqa: E402

# Each variant: its row's name, its file in RUN_DIR, and what it changes in GLIDE_CONFIG.
VARIANTS = {"glide_shapes, 1,500 steps": ("glide_shapes_1500.pt", dict(steps=1500)),
            "glide_shapes, batch 64": ("glide_shapes_batch64.pt", dict(batch=64)),
            "glide_shapes, 1,500 steps at twice the learning rate": ("glide_shapes_1500_lr2e-3.pt",
                                                                    dict(steps=1500, lr=2e-3))}
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
    args = parser.parse_args(argv)
    judge, _ = load_pretrained("shape_judge")
    shipped, shipped_extra = load_pretrained("glide_shapes")
    shipped_extra = dict(shipped_extra, trained_this_run=False, checkpoint=identify(checkpoint_path("glide_shapes")))
    models = {f"glide_shapes, {GLIDE_CONFIG['steps']:,} steps (shipped)": (shipped, shipped_extra)}
    for name, (file, changes) in VARIANTS.items():
        models[name] = variant_glide(file, changes, args.fresh)
    one_300, sets = caption_sets()
    rows = {}
    for name, (model, extra) in models.items():
        sched = glide_schedule(extra["config"])

        def draw(caps, w, model=model, sched=sched):
            return generate(model, sched, caps, w=w, n_steps=20, seed=3)

        rows[name] = {"steps": extra["config"]["steps"], "batch": extra["config"]["batch"], "lr": extra["config"]["lr"],
                      "train_seconds": round(extra["seconds"], 1), "trained_this_run": extra["trained_this_run"],
                      "checkpoint": extra["checkpoint"],
                      **attribute_scores(judge, draw, one_300, sets)}
        print(name, rows[name], flush=True)
    recorded = {r["name"]: round(r["seconds"], 1) for r in recorded_times(5)}
    return write_results(OUT, "python benchmarks/pretrain_budget.py", rows=rows,
                         chapter5_recorded_seconds=recorded, chapter5_total_seconds=round(sum(recorded.values()), 1))


if __name__ == "__main__":
    main()
