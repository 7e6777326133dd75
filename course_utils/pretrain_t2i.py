"""Chapter 5's shipped checkpoints (registered in ``course_utils.pretrain``; run as
``python -m course_utils.pretrain NAME``):

    shape_judge      the attribute classifier that judges generated scenes (about 2 min on 2 cores)
    clip_shapes      CLIP: image and text encoders trained contrastively (about 4 min)
    glide_shapes     GLIDE's text-conditional U-Net: its own text transformer, cross-attention, 15% empty captions
    glide_pooled     the same with the caption reduced to one pooled vector (the binding ablation)
    noisy_clip       CLIP whose image encoder reads noisy images x_t (for GLIDE's CLIP guidance)

All train on scenes of ``shapes.shape_scenes(n_train, "train")`` (no held-out colour-shape pair).
"""
from __future__ import annotations

import torch

from . import CHECKPOINT_DIR
from .losses import eps_loss
from .schedules import DiscreteSchedule, cosine_betas
from .shapes import ShapeJudge, judge_loss, judge_targets, pair_captions, shape_scenes, single_captions, tokenize
from .text import CLIP, TextConditionalUNet, clip_loss, same_caption
from .train import EMA, save_checkpoint, start_config, train, warmup_cosine

__all__ = ["JUDGE_CONFIG", "CLIP_CONFIG", "GLIDE_CONFIG", "GLIDE_POOLED_CONFIG", "make_judge", "make_clip",
           "make_glide", "glide_schedule", "judge_accuracy", "retrieval_accuracy", "pretrain_shape_judge",
           "pretrain_clip_shapes", "pretrain_glide_shapes", "pretrain_glide_pooled", "BUILDERS", "NOISY_CLIP_CONFIG",
           "pretrain_noisy_clip"]

JUDGE_CONFIG = dict(width=32, steps=3000, batch=128, lr=2e-3, n_train=20_000, n_heldout=5_000, seed=0)
CLIP_CONFIG = dict(embed_dim=64, text_dim=64, text_layers=2, width=32, steps=3000, batch=256, lr=1e-3,
                   n_train=30_000, seed=0)
# GLIDE's CLIP guidance needs a CLIP that reads noisy images: the image encoder also takes t
NOISY_CLIP_CONFIG = dict(CLIP_CONFIG, time_conditional=True, schedule=dict(kind="cosine", N=1000))
GLIDE_CONFIG = dict(unet=dict(in_ch=3, ch=32, ch_mult=(1, 2, 2), n_res=1, attn_levels=(1, 2), heads=4, dropout=0.1,
                              groups=8, image_size=16),
                    text=dict(dim=64, layers=2), pooled_only=False, schedule=dict(kind="cosine", N=1000),
                    p_uncond=0.15, steps=3000, batch=128, lr=1e-3, warmup=200, ema=0.999, grad_clip=1.0,
                    n_train=30_000, seed=0)
GLIDE_POOLED_CONFIG = dict(GLIDE_CONFIG, pooled_only=True)


def _path(name, path):
    import os
    return path or os.path.join(CHECKPOINT_DIR, f"{name}.pt")


def _save(name: str, path, model, config: dict, out: dict, tail: int = 100, **measured) -> dict:
    """Save ``model`` with its config, loss history, time and measurements; return the summary main() prints."""
    path = _path(name, path)
    save_checkpoint(path, model, step=config["steps"], config=config, losses=out["losses"][::10],
                    seconds=out["seconds"], torch_version=str(torch.__version__), **measured)
    losses = out["losses"][-tail:]
    return {"path": path, "seconds": out["seconds"], "final_loss": sum(losses) / max(len(losses), 1),
            **({"held_out_accuracy": next(iter(measured.values()))} if measured else {})}


# ------------------------------------------------------------------------------ the judge
def make_judge(config: dict) -> ShapeJudge:
    return ShapeJudge(config["width"])


@torch.no_grad()
def judge_accuracy(judge: ShapeJudge, x: torch.Tensor, attributes: dict) -> dict:
    """Per-head accuracy on the scenes that have the attribute."""
    pred = judge.eval().predict(x)
    return {k: (pred[k][v >= 0] == v[v >= 0]).double().mean().item() for k, v in judge_targets(attributes).items()}


def pretrain_shape_judge(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """Train the attribute classifier (Adam, cosine decay) and record its accuracy per attribute on the test
    and held-out splits. The judge is the measuring instrument, not a model under test: it is trained on
    scenes of every colour-shape pair (``n_heldout`` of them holding a held-out pair, drawn with another seed
    than the evaluation scenes), because a judge that never saw a green circle calls it something else
    (trained on the training split alone, it named the held-out scenes' shape right 23% of the time)."""
    config = start_config(JUDGE_CONFIG, iters)
    parts = [shape_scenes(config["n_train"], "train"), shape_scenes(config["n_heldout"], "heldout", seed=2)]
    x = torch.cat([p[0] for p in parts])
    attrs = {k: torch.cat([p[2][k] for p in parts]) for k in parts[0][2]}
    judge = make_judge(config)
    opt = torch.optim.Adam(judge.parameters(), lr=config["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config["steps"])

    def loss_fn(step):
        idx = torch.randint(0, len(x), (config["batch"],))
        return judge_loss(judge, x[idx], {k: v[idx] for k, v in attrs.items()})

    out = train(judge, loss_fn, opt, config["steps"], scheduler=sched, progress=progress, desc="shape judge")
    accuracy = {split: judge_accuracy(judge, *shape_scenes(2000, split, seed=1)[::2]) for split in ("test", "heldout")}
    return _save("shape_judge", path, judge, config, out, accuracy=accuracy)


# ------------------------------------------------------------------------------ CLIP
def make_clip(config: dict) -> CLIP:
    return CLIP(config["embed_dim"], config["text_dim"], config["text_layers"], config["width"],
                config.get("time_conditional", False))


@torch.no_grad()
def retrieval_accuracy(clip: CLIP, x: torch.Tensor, captions, candidates, t: torch.Tensor | None = None) -> float:
    """Top-1 image-to-caption retrieval: the fraction of images whose best-scoring caption among
    ``candidates`` is their own (``t``: the noise times, for a noise-aware CLIP)."""
    clip.eval()
    scores = clip.encode_image(x, t) @ clip.encode_text(list(candidates)).T         # (N, K)
    best = [candidates[k] for k in scores.argmax(1).tolist()]
    return sum(b == c for b, c in zip(best, captions)) / len(captions)


def clip_retrieval_table(clip: CLIP, n: int = 1000, seed: int = 1) -> dict:
    """Retrieval accuracy on one- and two-object scenes of the test and held-out splits."""
    out = {}
    for split in ("test", "novel", "heldout"):
        for kind, frac, cands in (("single", 0.0, single_captions()), ("pair", 1.0, pair_captions())):
            x, c, _ = shape_scenes(n, split, seed=seed, pair_fraction=frac)
            out[f"{split}_{kind}"] = retrieval_accuracy(clip, x, c, cands)
    return out


def _train_clip(default: dict, iters, progress, desc: str):
    """CLIP on the training scenes with the contrastive loss (scenes sharing a caption count as matches),
    Adam with warm-up and cosine decay. A ``time_conditional`` config trains on x_t = alpha(t) x0 + sigma(t)
    eps at t = k / N, k uniform in 1..N (GLIDE's noise-aware CLIP). Returns (config, clip, out)."""
    config = start_config(default, iters)
    x, captions, _ = shape_scenes(config["n_train"], "train")
    clip = make_clip(config)
    schedule = glide_schedule(config) if config.get("time_conditional") else None
    opt = torch.optim.Adam(clip.parameters(), lr=config["lr"])
    sched = warmup_cosine(opt, config["steps"], 100)

    def loss_fn(step):
        idx = torch.randint(0, len(x), (config["batch"],)).tolist()
        caps, x0, t = [captions[i] for i in idx], x[idx], None
        if schedule is not None:
            t = schedule.time(torch.randint(0, schedule.N, (len(idx),)))
            x0 = schedule.perturb(x0, t, torch.randn_like(x0))
        return clip_loss(clip(x0, caps, t), same_caption(caps))

    out = train(clip, loss_fn, opt, config["steps"], scheduler=sched, progress=progress, desc=desc)
    return config, clip, out


def pretrain_clip_shapes(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """Train CLIP and record its retrieval accuracy (``clip_retrieval_table``)."""
    config, clip, out = _train_clip(CLIP_CONFIG, iters, progress, "CLIP")
    return _save("clip_shapes", path, clip, config, out, retrieval=clip_retrieval_table(clip))


def pretrain_noisy_clip(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """Train the noise-aware CLIP of GLIDE's CLIP guidance (text side from scratch with it) and record its
    retrieval of one-object captions from test scenes noised to code indices 0, 300, 600 and 900."""
    config, clip, out = _train_clip(NOISY_CLIP_CONFIG, iters, progress, "noisy CLIP")
    schedule = glide_schedule(config)
    accuracy = {}
    for k in (0, 300, 600, 900):
        xs, cs, _ = shape_scenes(500, "test", seed=1, pair_fraction=0.0)
        t = schedule.time(torch.full((len(xs),), k))
        xt = schedule.perturb(xs, t, torch.randn(xs.shape, generator=torch.Generator().manual_seed(k)))
        accuracy[k] = retrieval_accuracy(clip, xt, cs, single_captions(), t)
    return _save("noisy_clip", path, clip, config, out, retrieval_by_index=accuracy)


# ------------------------------------------------------------------------------ GLIDE
def make_glide(config: dict) -> TextConditionalUNet:
    return TextConditionalUNet(config["unet"], config["text"], config["pooled_only"])


def glide_schedule(config: dict) -> DiscreteSchedule:
    if config["schedule"] != dict(kind="cosine", N=config["schedule"]["N"]):
        raise ValueError(f"unknown schedule {config['schedule']}")
    return DiscreteSchedule(cosine_betas(config["schedule"]["N"]))


def _pretrain_glide(default: dict, name: str, path, iters, progress) -> dict:
    config = start_config(default, iters)
    x, captions, _ = shape_scenes(config["n_train"], "train")
    ids, _ = tokenize(captions)
    model = make_glide(config)
    schedule = glide_schedule(config)
    ema = EMA(model, decay=config["ema"])
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    sched = warmup_cosine(opt, config["steps"], config["warmup"])

    def loss_fn(step):
        idx = torch.randint(0, len(x), (config["batch"],))
        cond = ids[idx].clone()
        drop = torch.rand(len(idx)) < config["p_uncond"]
        cond[drop] = model.null_cond(cond[drop])                       # the empty caption: p(x) learned too
        return eps_loss(lambda z, t: model(z, t, cond), x[idx], schedule).mean()

    out = train(model, loss_fn, opt, config["steps"], ema=ema, grad_clip=config["grad_clip"], scheduler=sched,
                progress=progress, desc=name, ema_warmup=True)
    return _save(name, path, ema.model, config, out, tail=200)


def pretrain_glide_shapes(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """GLIDE's text-conditional U-Net on the training scenes (EMA weights saved)."""
    return _pretrain_glide(GLIDE_CONFIG, "glide_shapes", path, iters, progress)


def pretrain_glide_pooled(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """The same U-Net conditioned on one pooled caption vector (EMA weights saved)."""
    return _pretrain_glide(GLIDE_POOLED_CONFIG, "glide_pooled", path, iters, progress)


BUILDERS = {"shape_judge": (make_judge, pretrain_shape_judge), "clip_shapes": (make_clip, pretrain_clip_shapes),
            "noisy_clip": (make_clip, pretrain_noisy_clip),
            "glide_shapes": (make_glide, pretrain_glide_shapes), "glide_pooled": (make_glide, pretrain_glide_pooled)}
