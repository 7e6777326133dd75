"""Chapter 5's pretraining time against what it buys: GLIDE's U-Net trained for half its steps.

    python benchmarks/pretrain_budget.py     # 2 CPU cores: 10-20 minutes to train (by load), 4 to evaluate

Chapter 5's eleven checkpoints took 8,820 s of training as recorded (``python -m course_utils.pretrain --list
--chapter 5``), most of it in four U-Nets of 2,500 to 6,000 steps (glide_shapes, glide_pooled, unclip_decoder,
latent_shapes). Halving their steps would save about 54 minutes. This script measures what halving costs on the
first of them: glide_shapes retrained from its seed with 1,500 steps instead of 3,000 (the warm-up and the
cosine decay over the 1,500; into build/pretrain_budget/ unless a checkpoint of exactly that configuration is
there; --fresh retrains), then both it and the shipped checkpoint scored as benchmarks/latent_recipes.py scores
a model: every attribute right on 300 one-object test captions at w = 1.5, 2, 3, 5 and on notebook 05's four
caption sets of 100 at w = 3 (DDIM 20 steps, image noise seed 3). Writes data/results/pretrain_budget.json.
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

HALF = 1500
OUT = os.path.join(REPO_ROOT, "data", "results", "pretrain_budget.json")
RUN_DIR = os.path.join(REPO_ROOT, "build", "pretrain_budget")


def half_budget_glide(fresh: bool):
    """glide_shapes with HALF steps: loaded if build/pretrain_budget/ holds exactly that configuration, else trained."""
    return stored_or_trained("glide_shapes", os.path.join(RUN_DIR, f"glide_shapes_{HALF}.pt"),
                             dict(GLIDE_CONFIG, steps=HALF), lambda p: pretrain_glide_shapes(p, HALF, progress=False),
                             fresh)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fresh", action="store_true", help="retrain the half-budget model")
    args = parser.parse_args(argv)
    judge, _ = load_pretrained("shape_judge")
    shipped, shipped_extra = load_pretrained("glide_shapes")
    shipped_extra = dict(shipped_extra, trained_this_run=False, checkpoint=identify(checkpoint_path("glide_shapes")))
    half, half_extra = half_budget_glide(args.fresh)
    one_300, sets = caption_sets()
    rows = {}
    for name, (model, extra) in {f"glide_shapes, {GLIDE_CONFIG['steps']:,} steps (shipped)": (shipped, shipped_extra),
                                 f"glide_shapes, {HALF:,} steps": (half, half_extra)}.items():
        sched = glide_schedule(extra["config"])

        def draw(caps, w, model=model, sched=sched):
            return generate(model, sched, caps, w=w, n_steps=20, seed=3)

        rows[name] = {"steps": extra["config"]["steps"], "train_seconds": round(extra["seconds"], 1),
                      "trained_this_run": extra["trained_this_run"], "checkpoint": extra["checkpoint"],
                      **attribute_scores(judge, draw, one_300, sets)}
        print(name, rows[name], flush=True)
    recorded = {r["name"]: round(r["seconds"], 1) for r in recorded_times(5)}
    return write_results(OUT, "python benchmarks/pretrain_budget.py", rows=rows,
                         chapter5_recorded_seconds=recorded, chapter5_total_seconds=round(sum(recorded.values()), 1))


if __name__ == "__main__":
    main()
