"""Chapter 5, section 7: three recipes for the latent U-Net, side by side.

    python benchmarks/latent_recipes.py          # on 2 idle CPU cores: about 40 minutes to train all three
                                                 # recipes, 4 to evaluate them

The latent model of notebook 05 went through three recipes; this script trains each (from LATENT_CONFIG's
seed, with one change each) into build/latent_recipes/ unless a checkpoint of exactly that configuration is
already there (--fresh retrains; each row of the results names the checkpoint it measured by path and SHA-1,
says whether this run trained it, and how long its training took, on whatever day that was), then measures
them the same way:

    * every attribute right (the shape judge) on 300 one-object test captions at w = 1.5, 2, 3 and 5, and on
      notebook 05's four caption sets of 100 at w = 3 (DDIM 20 steps, image noise seed 3);
    * floating-point operations per guided image (40 U-Net calls and one decoding) and the wall clock per
      image, each network called on the same guided batch of 200 inputs, interleaved with the pixel U-Net's
      calls, the fastest of 5 after one warm-up round;

with the pixel-space GLIDE U-Net (glide_shapes) measured alongside, and writes data/results/latent_recipes.json.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _results import identify, stored_or_trained, write_results  # noqa: E402

from course_utils import REPO_ROOT  # noqa: E402
from course_utils.metrics import flops_per_item, interleaved_best_seconds  # noqa: E402
from course_utils.pretrain import load_pretrained  # noqa: E402
from course_utils.pretrain_t2i import LATENT_CONFIG, glide_schedule, pretrain_latent_shapes  # noqa: E402
from course_utils.shapes import attribute_agreement, shape_scenes, tokenize  # noqa: E402
from course_utils.text import generate  # noqa: E402

BOTH_LEVELS = dict(LATENT_CONFIG["unet"], attn_levels=(0, 1))
LOW_LEVEL = dict(LATENT_CONFIG["unet"], attn_levels=(1,))
RECIPES = {
    "attention at 8x8 and 4x4, 3,000 steps": dict(LATENT_CONFIG, unet=BOTH_LEVELS, steps=3000),
    "attention at 8x8 and 4x4, 6,000 steps": dict(LATENT_CONFIG, unet=BOTH_LEVELS, steps=6000),
    "attention at 4x4 only, 6,000 steps": dict(LATENT_CONFIG, unet=LOW_LEVEL, steps=6000),
}
OUT = os.path.join(REPO_ROOT, "data", "results", "latent_recipes.json")
RUN_DIR = os.path.join(REPO_ROOT, "build", "latent_recipes")


def recipe_model(name: str, config: dict, fresh: bool):
    """The checkpoint of one recipe: loaded if one of exactly this configuration is stored, else trained."""
    path = os.path.join(RUN_DIR, name.replace(" ", "_").replace(",", "") + ".pt")
    return stored_or_trained("latent_shapes", path, config,
                             lambda p: pretrain_latent_shapes(p, progress=False, config=config), fresh)


def caption_sets() -> tuple[list, dict]:
    """The captions every model is measured on: 300 one-object test captions, and notebook 05's four sets of 100."""
    one_300 = shape_scenes(300, "test", seed=14, pair_fraction=0.0)[1]
    sets = {"one object": shape_scenes(100, "test", seed=14, pair_fraction=0.0)[1],
            "novel caption": shape_scenes(100, "novel", seed=14, pair_fraction=0.0)[1],
            "held-out pair": shape_scenes(100, "heldout", seed=14, pair_fraction=0.0)[1],
            "two objects": shape_scenes(100, "test", seed=14, pair_fraction=1.0)[1]}
    return one_300, sets


def attribute_scores(judge, draw, one_300, sets) -> dict:
    """Every attribute right (the judge) for ``draw(captions, w)``'s images: the 300 one-object captions at
    w = 1.5, 2, 3, 5 and each set of 100 at w = 3."""
    def right(images, caps) -> float:
        return round(attribute_agreement(judge, images, caps)["all"].double().mean().item(), 4)

    return {"one_object_300": {str(w): right(draw(one_300, w), one_300) for w in (1.5, 2.0, 3.0, 5.0)},
            "sets_100_w3": {key: right(draw(caps, 3.0), caps) for key, caps in sets.items()}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fresh", action="store_true", help="retrain every recipe")
    args = parser.parse_args(argv)
    judge, _ = load_pretrained("shape_judge")
    glide, glide_extra = load_pretrained("glide_shapes")
    glide_sched = glide_schedule(glide_extra["config"])
    ae, _ = load_pretrained("shape_autoencoder")
    models = {name: recipe_model(name, config, args.fresh) for name, config in RECIPES.items()}

    one_300, sets = caption_sets()

    def sampler(model, extra):
        if model is glide:
            return lambda caps, w: generate(glide, glide_sched, caps, w=w, n_steps=20, seed=3)
        sched = glide_schedule(extra["config"])
        return lambda caps, w: ae.from_latent(generate(model, sched, caps, w=w, n_steps=20, seed=3,
                                                       shape=(4, 8, 8), threshold=None, clamp=False))

    # the timing inputs: 100 captions and the empty one, as in notebook 05
    time_ids = tokenize(sets["one object"])[0]
    time_ids = torch.cat([glide.null_cond(time_ids), time_ids])
    g = torch.Generator().manual_seed(0)
    x_pix, x_lat = torch.randn(200, 3, 16, 16, generator=g), torch.randn(200, 4, 8, 8, generator=g)
    t_half = torch.full((200,), 0.5)
    calls = {"pixel": lambda: glide(x_pix, t_half, time_ids), "decode": lambda: ae.decode(x_lat[:100])}
    for name, (model, _) in models.items():
        calls[name] = (lambda m: (lambda: m(x_lat, t_half, time_ids)))(model)
    with torch.no_grad():
        best = interleaved_best_seconds(calls)
    decode_flops = flops_per_item(ae.decode, torch.zeros(2, 4, 8, 8))
    two_ids = time_ids[100:102]
    glide_checkpoint = identify(os.path.join(REPO_ROOT, "data", "checkpoints", "glide_shapes.pt"))

    rows = {}
    glide_extra = dict(glide_extra, checkpoint=glide_checkpoint)
    for name, (model, extra) in [("pixel U-Net (glide_shapes)", (glide, glide_extra))] + list(models.items()):
        t0 = time.time()
        draw = sampler(model, extra)
        pixel = model is glide
        per_call = best["pixel" if pixel else name]
        net_flops = flops_per_item(model, torch.zeros(2, *((3, 16, 16) if pixel else (4, 8, 8))),
                                   torch.full((2,), 0.5), two_ids)
        rows[name] = {
            "config": {"unet": extra["config"]["unet"], "steps": extra["config"]["steps"]},
            "parameters": sum(p.numel() for p in (model.unet if hasattr(model, "unet") else model).parameters()),
            "train_seconds": round(extra["seconds"], 1),
            "trained_this_run": extra.get("trained_this_run", False),
            "checkpoint": extra["checkpoint"],
            **attribute_scores(judge, draw, one_300, sets),
            "gflop_per_image": round((40 * net_flops + (0 if pixel else decode_flops)) / 1e9, 3),
            "ms_per_image": round((20 * per_call + (0 if pixel else best["decode"])) / 100 * 1e3, 2),
        }
        print(name, rows[name], f"({time.time() - t0:.0f} s)", flush=True)
    pixel_row = rows["pixel U-Net (glide_shapes)"]
    for name in models:
        row = rows[name]
        row["times_fewer_flop_than_pixel"] = round(pixel_row["gflop_per_image"] / row["gflop_per_image"], 2)
        row["times_faster_than_pixel"] = round(pixel_row["ms_per_image"] / row["ms_per_image"], 2)
    return write_results(OUT, "python benchmarks/latent_recipes.py", rows=rows)


if __name__ == "__main__":
    main()
