"""Chapter 5, section 5: unCLIP's prior when captions leave things unsaid.

    python benchmarks/unclip_partial_captions.py        # about 30 minutes on 2 CPU cores

The shipped CLIP (clip_shapes) sees captions that name every attribute but the background, so it maps all
scenes of one caption to nearly one point next to the caption's own embedding g(C), and the prior has
nothing to add (notebook 05, question 1). This script repeats the unCLIP experiment with one change: in
training, a one-object caption leaves its size and its position unsaid, each with probability 1/2
("a red circle", "a small red circle", "a red circle at the top left" or the full caption), as real captions
leave most of a picture unsaid. It trains, with the shipped recipes otherwise unchanged,

    a CLIP (CLIP_CONFIG + partial), an unCLIP decoder fine-tuned from glide_shapes on its image embeddings,
    and a diffusion prior over them,

into build/unclip_partial/ (not shipped: data/ has no room for them; rerunning reuses what is there, --fresh
retrains), then decodes the captions of 400 fresh one-object scenes of the test split, in full and cut to
"a COLOUR SHAPE", from no embedding h(0, C), the caption's text embedding h(g(C), C), a prior sample h(prior, C) and the
scene's own image embedding h(f(X), C), at w = 1 and 3, and writes the judge's verdicts and the geometry
of the embeddings to data/results/unclip_partial.json, which notebook 05 reads.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from course_utils import REPO_ROOT  # noqa: E402
from course_utils.pretrain import load_pretrained  # noqa: E402
from course_utils.pretrain_t2i import (  # noqa: E402
    CLIP_CONFIG,
    UNCLIP_DECODER_CONFIG,
    UNCLIP_PRIOR_CONFIG,
    glide_schedule,
    train_clip,
    train_unclip_decoder,
    train_unclip_prior,
)
from course_utils.shapes import POSITIONS, SIZES, attribute_agreement, partial_caption, shape_scenes  # noqa: E402
from course_utils.text import generate  # noqa: E402
from course_utils.train import start_config  # noqa: E402
from course_utils.unclip import decoder_cond, sample_prior  # noqa: E402

PARTIAL = 0.5
WORK = os.path.join(REPO_ROOT, "build", "unclip_partial")
RESULT = os.path.join(REPO_ROOT, "data", "results", "unclip_partial.json")
N, WEIGHTS = 400, (1.0, 3.0)
CONDITIONINGS = ("h(0, C)", "h(g(C), C)", "h(prior, C)", "h(f(X), C)")


def stage(name, fresh, make):
    path = os.path.join(WORK, f"{name}.pt")
    if fresh or not os.path.exists(path):
        t0 = time.time()
        make(path)
        print(f"{name}: trained in {(time.time() - t0) / 60:.1f} min", flush=True)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="retrain the three models even if they exist")
    args = parser.parse_args(argv)
    os.makedirs(WORK, exist_ok=True)
    clip_path = stage("clip", args.fresh, lambda p: train_clip(dict(CLIP_CONFIG, partial=PARTIAL), p))
    decoder_path = stage("decoder", args.fresh, lambda p: train_unclip_decoder(
        start_config(dict(UNCLIP_DECODER_CONFIG, clip_path=clip_path, partial=PARTIAL), None), p))
    prior_path = stage("prior", args.fresh, lambda p: train_unclip_prior(
        start_config(dict(UNCLIP_PRIOR_CONFIG, clip_path=clip_path, partial=PARTIAL), None), p))
    clip, clip_extra = load_pretrained("clip_shapes", clip_path)
    decoder, decoder_extra = load_pretrained("unclip_decoder", decoder_path)
    prior, prior_extra = load_pretrained("unclip_prior", prior_path)
    judge, _ = load_pretrained("shape_judge")
    schedule, prior_schedule = glide_schedule(decoder_extra["config"]), glide_schedule(prior_extra["config"])

    t0 = time.time()
    x, full, attrs = shape_scenes(N, "test", seed=14, pair_fraction=0.0)
    short = [partial_caption(c) for c in full]
    own_kind = attrs["size"] * len(POSITIONS) + attrs["position"]
    names = sorted(set(short))
    groups = [torch.tensor([i for i, c in enumerate(short) if c == u]) for u in names]
    with torch.no_grad():
        f = clip.encode_image(x)
        g = {"full": clip.encode_text(full), "short": clip.encode_text(short)}
    same = torch.tensor([[a == b for b in short] for a in short]) & ~torch.eye(N, dtype=torch.bool)
    same_full = torch.tensor([[a == b for b in full] for a in full]) & ~torch.eye(N, dtype=torch.bool)
    geometry = {"f(X).f(X'), same full caption": (f @ f.T)[same_full].mean().item(),
                "f(X).f(X'), same short caption": (f @ f.T)[same].mean().item(),
                "f(X).f(X'), same short caption, other size or position": (f @ f.T)[same & ~same_full].mean().item(),
                "f(X).g(C), full caption": (f * g["full"]).sum(1).mean().item(),
                "f(X).g(C), short caption": (f * g["short"]).sum(1).mean().item()}
    results = {}
    for form, caps in (("full", full), ("short", short)):
        z_prior = sample_prior(prior, clip, prior_schedule, caps, n_steps=50, seed=1)
        geometry[f"prior.f(X), {form} caption"] = (z_prior * f).sum(1).mean().item()
        for w in WEIGHTS:
            for label, z in zip(CONDITIONINGS, (None, g[form], z_prior, f)):
                images = generate(decoder, schedule, decoder_cond(caps, z), w=w, n_steps=20, seed=3)
                agree = attribute_agreement(judge, images, caps)
                judged = judge.predict(images)
                # what the short caption leaves free: how the judged (size, position) spread over the 8 kinds
                kind = judged["size"] * len(POSITIONS) + judged["position"]
                counts = [torch.bincount(kind[gi], minlength=len(SIZES) * len(POSITIONS)).double() for gi in groups]
                # within each short caption: the share of its images in its most common (size, position) kind,
                # and the entropy (bits) of the kinds drawn, averaged over the captions (weighted by their images)
                mode_share = sum(c.max() for c in counts).item() / N
                entropy = sum(-(c[c > 0] * (c[c > 0] / c.sum()).log2()).sum() for c in counts).item() / N
                results[f"{form} | w={w:g} | {label}"] = dict(
                    all_right=agree["all"].double().mean().item(),
                    **{k: v.double().mean().item() for k, v in agree.items() if k != "all"},
                    size_position_spread=(torch.bincount(kind, minlength=8).double() / N).tolist(),
                    mode_share_within_caption=mode_share, entropy_within_caption_bits=entropy,
                    own_kind=(kind == own_kind).double().mean().item(),
                    all_right_per_image=agree["all"].int().tolist())
                print(form, w, label, f"all attributes right {results[f'{form} | w={w:g} | {label}']['all_right']:.3f}",
                      flush=True)
    with open(RESULT, "w") as fh:
        json.dump(dict(command="python benchmarks/unclip_partial_captions.py", n_scenes=N, partial=PARTIAL,
                       short_captions={u: len(gi) for u, gi in zip(names, groups)},
                       torch_version=str(torch.__version__), evaluation_seconds=time.time() - t0,
                       training_minutes=dict(clip=clip_extra["seconds"] / 60, decoder=decoder_extra["seconds"] / 60,
                                             prior=prior_extra["seconds"] / 60),
                       clip_retrieval=clip_extra.get("retrieval"), geometry=geometry, results=results), fh, indent=1)
    print(json.dumps(geometry, indent=1))
    print("wrote", RESULT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
