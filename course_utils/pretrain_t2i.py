"""Chapter 5's shipped checkpoints (registered in ``course_utils.pretrain``; run as
``python -m course_utils.pretrain NAME``):

    shape_judge      the attribute classifier that judges generated scenes (about 2 min on 2 cores)
    clip_shapes      CLIP: image and text encoders trained contrastively (about 4 min)
    glide_shapes     GLIDE's text-conditional U-Net: its own text transformer, cross-attention, 15% empty captions
    glide_pooled     the same with the caption reduced to one pooled vector (the binding ablation)
    noisy_clip       CLIP whose image encoder reads noisy images x_t (for GLIDE's CLIP guidance)
    unclip_decoder   DALL-E 2's decoder: GLIDE's U-Net fine-tuned to read a CLIP image embedding as well
    unclip_prior     DALL-E 2's diffusion prior p(z_img | C) over clip_shapes' image embeddings
    shape_autoencoder  latent diffusion's KL-regularised autoencoder, 16x16x3 scenes <-> 8x8x4 latents
    latent_shapes    the latent text-to-image U-Net: frozen CLIP text encoder, cross-attention (a mini Stable Diffusion)
    imagen_base      Imagen's cascade, base stage: 8x8 scenes, frozen CLIP text encoder
    imagen_sr        ... and its 8x8 -> 16x16 super-resolution stage with noise-conditioning augmentation

All train on scenes of ``shapes.shape_scenes(n_train, "train")`` (no held-out colour-shape pair).
"""
from __future__ import annotations

import os

import torch

from . import CHECKPOINT_DIR
from .autoencoder import KLAutoencoder, vae_loss
from .losses import eps_loss
from .schedules import DiscreteSchedule, cosine_betas, linear_betas
from .shapes import (
    ShapeJudge,
    attribute_agreement,
    judge_loss,
    judge_targets,
    pair_captions,
    partial_caption,
    shape_scenes,
    single_captions,
    tokenize,
)
from .text import CLIP, TextConditionalUNet, clip_loss, same_caption
from .train import EMA, save_checkpoint, start_config, train, warmup_cosine
from .unclip import DiffusionPrior, UnCLIPDecoder, prior_inputs, scaled

__all__ = ["JUDGE_CONFIG", "CLIP_CONFIG", "GLIDE_CONFIG", "GLIDE_POOLED_CONFIG", "make_judge", "make_clip",
           "make_glide", "glide_schedule", "judge_accuracy", "retrieval_accuracy", "pretrain_shape_judge",
           "pretrain_clip_shapes", "train_clip", "pretrain_glide_shapes", "pretrain_glide_pooled", "BUILDERS",
           "NOISY_CLIP_CONFIG", "pretrain_noisy_clip", "UNCLIP_DECODER_CONFIG", "UNCLIP_PRIOR_CONFIG",
           "make_unclip_decoder", "train_unclip_decoder", "train_unclip_prior", "make_unclip_prior",
           "pretrain_unclip_decoder", "pretrain_unclip_prior", "frozen", "AUTOENCODER_CONFIG", "LATENT_CONFIG",
           "make_autoencoder", "pretrain_shape_autoencoder", "pretrain_latent_shapes", "IMAGEN_BASE_CONFIG",
           "IMAGEN_SR_CONFIG", "pretrain_imagen_base", "pretrain_imagen_sr"]

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
# DALL-E 2's decoder starts from the GLIDE checkpoint (the paper's decoder is a modified GLIDE) and reads
# clip_shapes' image embedding as four extra context tokens; embedding dropped 10%, caption 50% of the time
UNCLIP_DECODER_CONFIG = dict(GLIDE_CONFIG, init="glide_shapes", clip="clip_shapes", n_tokens=4, p_drop_embedding=0.1,
                             p_drop_caption=0.5, steps=2500, lr=1e-3, warmup=100)
# latent diffusion: an autoencoder 16x16x3 -> 8x8x4, then a text-conditional U-Net on its latents whose text
# encoder is clip_shapes' own, frozen (Stable Diffusion's choice; Imagen's lesson), with DDPM's linear schedule.
# Two choices are measured in benchmarks/latent_recipes.py (data/results/latent_recipes.json): 6,000 steps, not
# 3,000 (every attribute of one-object captions right in 0.97 of images at w = 3 against 0.88; the steps are
# cheap, a quarter of the positions of GLIDE's), and attention (with the caption's tokens) at 4x4 only, not also
# at 8x8: as accurate (0.98) and 3.8 times faster per image than the pixel U-Net, against 2.8 times in the same run
AUTOENCODER_CONFIG = dict(latent_ch=4, width=32, sigma_x=0.02, kl_weight=1e-3, steps=4000, batch=128, lr=1e-3,
                          n_train=30_000, seed=0)
LATENT_CONFIG = dict(GLIDE_CONFIG, unet=dict(in_ch=4, ch=32, ch_mult=(1, 2), n_res=1, attn_levels=(1,), heads=4,
                                             dropout=0.1, groups=8, image_size=8),
                     ae="shape_autoencoder", clip="clip_shapes", schedule=dict(kind="linear", N=1000), steps=6000)
# Imagen: a cascade of a base model at 8x8 and a super-resolution model 8x8 -> 16x16, both reading the
# caption through clip_shapes' text encoder, frozen
IMAGEN_BASE_CONFIG = dict(GLIDE_CONFIG, unet=dict(in_ch=3, ch=32, ch_mult=(1, 2), n_res=1, attn_levels=(0, 1), heads=4,
                                                  dropout=0.1, groups=8, image_size=8), clip="clip_shapes", steps=1500)
IMAGEN_SR_CONFIG = dict(GLIDE_CONFIG, unet=dict(in_ch=3, ch=24, ch_mult=(1, 2), n_res=1, attn_levels=(1,), heads=4,
                                                dropout=0.1, groups=8, image_size=16, cond_ch=3),
                        clip="clip_shapes", aug_max=0.5, steps=1500)
UNCLIP_PRIOR_CONFIG = dict(clip="clip_shapes", dim=128, layers=4, heads=4, schedule=dict(kind="cosine", N=1000),
                           steps=3000, batch=256, lr=5e-4, warmup=200, ema=0.999, n_train=30_000, seed=0)


def _path(name, path):
    return path or os.path.join(CHECKPOINT_DIR, f"{name}.pt")


def _save(name: str, path, model, config: dict, out: dict, tail: int = 100, **measured) -> dict:
    """Save ``model`` with its config, loss history, time and measurements; return the summary main() prints."""
    path = _path(name, path)
    save_checkpoint(path, model, step=config["steps"], config=config, losses=out["losses"][::10],
                    seconds=out["seconds"], torch_version=str(torch.__version__), **measured)
    losses = out["losses"][-tail:]
    return {"path": path, "seconds": out["seconds"], "final_loss": sum(losses) / max(len(losses), 1),
            **({"held_out_accuracy": next(iter(measured.values()))} if measured else {})}


def _caption_forms(captions, partial: float):
    """The captions a training run draws from: ``(forms, index)`` with ``forms`` a sorted list of distinct
    captions and ``index`` (N, 4) the positions in it of each scene's caption in full, without its position,
    without its size, and without either (``shapes.partial_caption``; the same four for two-object captions).
    With ``partial`` = 0 only the full captions are listed."""
    distinct = sorted(set(captions))
    if not partial:
        where = {c: k for k, c in enumerate(distinct)}
        return distinct, torch.tensor([[where[c]] * 4 for c in captions])
    keep = ((True, True), (True, False), (False, True), (False, False))
    short = {c: [partial_caption(c, size=a, position=b) for a, b in keep] for c in distinct}
    forms = sorted({f for fs in short.values() for f in fs})
    where = {c: k for k, c in enumerate(forms)}
    return forms, torch.tensor([[where[f] for f in short[c]] for c in captions])


def _pick_forms(index: torch.Tensor, idx: torch.Tensor, partial: float) -> torch.Tensor:
    """The caption of each scene ``idx`` as a position in the forms list: in full, or with its size and its
    position each left unsaid with probability ``partial`` (independently; no random draw when it is 0)."""
    if not partial:
        return index[idx, 0]
    drop = (torch.rand(len(idx), 2) < partial).long()
    return index[idx, 2 * drop[:, 0] + drop[:, 1]]


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
    eps at t = k / N, k uniform in 1..N (GLIDE's noise-aware CLIP). With ``partial`` > 0 a one-object caption
    leaves its size and its position unsaid, each with that probability (``_pick_forms``), so the image
    embedding must keep what a caption may leave out. Returns (config, clip, out)."""
    config = start_config(default, iters)
    x, captions, _ = shape_scenes(config["n_train"], "train")
    forms, index = _caption_forms(captions, config.get("partial", 0))
    clip = make_clip(config)
    schedule = glide_schedule(config) if config.get("time_conditional") else None
    opt = torch.optim.Adam(clip.parameters(), lr=config["lr"])
    sched = warmup_cosine(opt, config["steps"], 100)

    def loss_fn(step):
        idx = torch.randint(0, len(x), (config["batch"],)).tolist()
        picked = _pick_forms(index, torch.tensor(idx), config.get("partial", 0)).tolist()
        caps, x0, t = [forms[k] for k in picked], x[idx], None
        if schedule is not None:
            t = schedule.time(torch.randint(0, schedule.N, (len(idx),)))
            x0 = schedule.perturb(x0, t, torch.randn_like(x0))
        return clip_loss(clip(x0, caps, t), same_caption(caps))

    out = train(clip, loss_fn, opt, config["steps"], scheduler=sched, progress=progress, desc=desc)
    return config, clip, out


def pretrain_clip_shapes(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """Train CLIP and record its retrieval accuracy (``clip_retrieval_table``)."""
    return train_clip(CLIP_CONFIG, path, progress, iters)


def train_clip(default: dict, path: str | None = None, progress: bool = True, iters: int | None = None) -> dict:
    """``pretrain_clip_shapes`` for any configuration of its kind (``partial``: see ``_train_clip``)."""
    config, clip, out = _train_clip(default, iters, progress, "CLIP")
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
    """The noise schedule a config names: {"kind": "cosine" or "linear", "N": steps}."""
    kind, N = config["schedule"].get("kind"), config["schedule"].get("N")
    if kind not in ("cosine", "linear") or set(config["schedule"]) != {"kind", "N"}:
        raise ValueError(f"unknown schedule {config['schedule']}")
    return DiscreteSchedule(cosine_betas(N) if kind == "cosine" else linear_betas(N))


def _train_text_unet(config: dict, name: str, path, progress, target=None, image_cond=None) -> dict:
    """The training loop of every caption-conditional U-Net here (GLIDE, the latent model, Imagen's two
    stages): eps-prediction on ``target(idx)`` (default: the training scenes themselves), 15% empty
    captions, Adam with warm-up and cosine decay, gradient clipping, EMA (saved). With ``config["clip"]`` the
    text encoder is that CLIP checkpoint's, frozen; ``image_cond(idx, x0)`` returns the extra inputs of a
    super-resolution U-Net (x_cond, cond_level)."""
    x, captions, _ = shape_scenes(config["n_train"], "train")
    ids, _ = tokenize(captions)
    model = make_glide(config)
    if config.get("clip"):
        model.text.load_state_dict(frozen(config["clip"]).text.state_dict())
        model.text.requires_grad_(False)
    schedule = glide_schedule(config)
    ema = EMA(model, decay=config["ema"])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config["lr"])
    sched = warmup_cosine(opt, config["steps"], config["warmup"])

    def loss_fn(step):
        idx = torch.randint(0, len(x), (config["batch"],))
        x0 = x[idx] if target is None else target(idx)
        extra = {} if image_cond is None else image_cond(idx, x0)
        cond = ids[idx].clone()
        drop = torch.rand(len(idx)) < config["p_uncond"]
        cond[drop] = model.null_cond(cond[drop])                       # the empty caption: p(x) learned too
        eps_fn = lambda z, t: model(z, t, cond, **extra)  # noqa: E731
        if config.get("min_snr") is None:
            return eps_loss(eps_fn, x0, schedule).mean()
        t = schedule.sample_times(len(idx), like=x0)
        return (eps_loss(eps_fn, x0, schedule, t=t) * min_snr_weight(schedule, t, config["min_snr"])).mean()

    out = train(model, loss_fn, opt, config["steps"], ema=ema, grad_clip=config["grad_clip"], scheduler=sched,
                progress=progress, desc=name, ema_warmup=True)
    return _save(name, path, ema.model, config, out, tail=200)


def check_min_snr(gamma) -> None:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
        raise ValueError(f"min_snr must be a positive number (gamma), got {gamma!r}")


def min_snr_weight(schedule: DiscreteSchedule, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights for noise prediction (Hang et al. 2023): min(SNR(t), gamma) / SNR(t) with
    SNR = alpha^2 / sigma^2. Noisy steps (SNR <= gamma) keep weight 1; nearly clean ones, whose noise is easy to
    read off and whose gradients pull against the noisy steps', are weighted down as gamma / SNR."""
    check_min_snr(gamma)
    snr = (schedule.alpha(t) / schedule.sigma(t)) ** 2
    return snr.clamp(max=gamma) / snr


def _pretrain_glide(default: dict, name: str, path, iters, progress) -> dict:
    return _train_text_unet(start_config(default, iters), name, path, progress)


# keys a benchmark's variant may add to a shipped recipe: "min_snr", Min-SNR-gamma loss weights (min_snr_weight)
OPTIONAL_KEYS = {"min_snr"}


def _variant(config: dict | None, default: dict, name: str) -> dict:
    """``config`` (a benchmark's variant of a shipped recipe), or ``default`` if None; it must have the same keys,
    plus optionally those of ``OPTIONAL_KEYS`` (checked here, before any training starts; None means off)."""
    if config is None:
        return default
    if set(config) - OPTIONAL_KEYS != set(default):
        raise ValueError(f"config must have the keys of {name} {sorted(default)} (and optionally "
                         f"{sorted(OPTIONAL_KEYS)}), got {sorted(config)}")
    if config.get("min_snr") is not None:
        check_min_snr(config["min_snr"])
    return config


def pretrain_glide_shapes(path: str | None = None, iters: int | None = None, progress: bool = True,
                          config: dict | None = None) -> dict:
    """GLIDE's text-conditional U-Net on the training scenes (EMA weights saved). ``config``: a variant of
    ``GLIDE_CONFIG`` (default: it), as ``benchmarks/pretrain_budget.py`` compares."""
    return _pretrain_glide(_variant(config, GLIDE_CONFIG, "GLIDE_CONFIG"), "glide_shapes", path, iters, progress)


def pretrain_glide_pooled(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """The same U-Net conditioned on one pooled caption vector (EMA weights saved)."""
    return _pretrain_glide(GLIDE_POOLED_CONFIG, "glide_pooled", path, iters, progress)


# ------------------------------------------------------------------------------ DALL-E 2 (unCLIP)
def frozen(name: str, path: str | None = None):
    """A shipped checkpoint (``name``, or one of its kind at ``path``) loaded for use inside another model, in
    eval mode, gradients off."""
    from .pretrain import load_pretrained
    model, _ = load_pretrained(name, path)
    return model.eval().requires_grad_(False)


def _image_embeddings(clip: CLIP, x: torch.Tensor, batch: int = 2000) -> torch.Tensor:
    """f(X) for many scenes, ``batch`` at a time (no gradients)."""
    with torch.no_grad():
        return torch.cat([clip.encode_image(x[i:i + batch]) for i in range(0, len(x), batch)])


def make_unclip_decoder(config: dict) -> UnCLIPDecoder:
    return UnCLIPDecoder(config["unet"], config["text"], n_tokens=config["n_tokens"])


def make_unclip_prior(config: dict) -> DiffusionPrior:
    return DiffusionPrior(dim=config["dim"], layers=config["layers"], heads=config["heads"])


def pretrain_unclip_decoder(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """Fine-tune the GLIDE checkpoint into unCLIP's decoder: each training scene's CLIP image embedding
    f(X) (frozen ``clip_shapes``) becomes extra context; the embedding is zeroed 10% and the caption
    emptied 50% of the time, independently (both at once: 5%, the unconditional model). EMA weights saved."""
    return train_unclip_decoder(start_config(UNCLIP_DECODER_CONFIG, iters), path, progress)


def train_unclip_decoder(config: dict, path: str | None = None, progress: bool = True) -> dict:
    """``pretrain_unclip_decoder`` for any configuration of its kind (``clip_path``: a CLIP checkpoint other
    than the shipped one; ``partial``: captions leave size and position unsaid, as in ``_train_clip``)."""
    x, captions, _ = shape_scenes(config["n_train"], "train")
    forms, index = _caption_forms(captions, config.get("partial", 0))
    ids, _ = tokenize(forms)
    clip = frozen(config["clip"], config.get("clip_path"))
    z = _image_embeddings(clip, x)
    model = make_unclip_decoder(config)
    if config["init"]:
        model.glide.load_state_dict(frozen(config["init"]).state_dict())
    schedule = glide_schedule(config)
    ema = EMA(model, decay=config["ema"])
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    sched = warmup_cosine(opt, config["steps"], config["warmup"])

    def loss_fn(step):
        idx = torch.randint(0, len(x), (config["batch"],))
        caps = ids[_pick_forms(index, idx, config.get("partial", 0))].clone()
        drop = torch.rand(len(idx)) < config["p_drop_caption"]
        caps[drop] = model.glide.null_cond(caps[drop])
        emb = z[idx] * (torch.rand(len(idx), 1) >= config["p_drop_embedding"])
        cond = torch.cat([caps.to(emb), emb], 1)
        return eps_loss(lambda v, t: model(v, t, cond), x[idx], schedule).mean()

    out = train(model, loss_fn, opt, config["steps"], ema=ema, grad_clip=config["grad_clip"], scheduler=sched,
                progress=progress, desc="unCLIP decoder", ema_warmup=True)
    return _save("unclip_decoder", path, ema.model, config, out, tail=200)


def pretrain_unclip_prior(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """Train the diffusion prior on (caption, f(X)) pairs of the training scenes, frozen ``clip_shapes`` on
    both sides: x0-prediction of the scaled embedding sqrt(E) f(X) with a mean squared error (EMA weights
    saved; ``tests/test_pretrain.py`` checks that its samples lie next to their captions' image embeddings)."""
    return train_unclip_prior(start_config(UNCLIP_PRIOR_CONFIG, iters), path, progress)


def train_unclip_prior(config: dict, path: str | None = None, progress: bool = True) -> dict:
    """``pretrain_unclip_prior`` for any configuration of its kind (``clip_path``, ``partial``: as for the
    decoder)."""
    x, captions, _ = shape_scenes(config["n_train"], "train")
    clip = frozen(config["clip"], config.get("clip_path"))
    forms, index = _caption_forms(captions, config.get("partial", 0))
    tokens, mask, text_emb = prior_inputs(clip, forms)
    z0 = scaled(_image_embeddings(clip, x))
    prior = make_unclip_prior(config)
    schedule = glide_schedule(config)
    ema = EMA(prior, decay=config["ema"])
    opt = torch.optim.AdamW(prior.parameters(), lr=config["lr"], weight_decay=0.01)
    sched = warmup_cosine(opt, config["steps"], config["warmup"])

    def loss_fn(step):
        idx = torch.randint(0, len(x), (config["batch"],))
        k = _pick_forms(index, idx, config.get("partial", 0))
        t = schedule.time(torch.randint(0, schedule.N, (len(idx),)))
        zt = schedule.perturb(z0[idx], t, torch.randn_like(z0[idx]))
        return (prior(zt, t, tokens[k], mask[k], text_emb[k]) - z0[idx]).pow(2).mean()

    out = train(prior, loss_fn, opt, config["steps"], ema=ema, scheduler=sched, progress=progress,
                desc="unCLIP prior", ema_warmup=True)
    return _save("unclip_prior", path, ema.model, config, out, tail=200)


# ------------------------------------------------------------------------------ latent diffusion
def make_autoencoder(config: dict) -> KLAutoencoder:
    return KLAutoencoder(3, config["latent_ch"], config["width"], config["sigma_x"])


def pretrain_shape_autoencoder(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """The KL-regularised autoencoder (``autoencoder.vae_loss``, Adam with cosine decay) on the training
    scenes; then ``latent_scale`` from their latents. Records the judge's all-attributes-right rate on
    reconstructions of test scenes (the ceiling of any latent model) and the bound's terms."""
    config = start_config(AUTOENCODER_CONFIG, iters)
    x, _, _ = shape_scenes(config["n_train"], "train")
    ae = make_autoencoder(config)
    opt = torch.optim.Adam(ae.parameters(), lr=config["lr"])
    sched = warmup_cosine(opt, config["steps"], 100)

    def loss_fn(step):
        return vae_loss(ae, x[torch.randint(0, len(x), (config["batch"],))], config["kl_weight"])

    out = train(ae, loss_fn, opt, config["steps"], scheduler=sched, progress=progress, desc="autoencoder")
    ae.eval()
    scale = ae.set_latent_scale(x)
    xt, ct, _ = shape_scenes(1000, "test", seed=1)
    with torch.no_grad():
        right = attribute_agreement(frozen("shape_judge"), ae.from_latent(ae.to_latent(xt)), ct)["all"]
    return _save("shape_autoencoder", path, ae, config, out, reconstruction_all_right=right.double().mean().item(),
                 latent_scale=scale)


def pretrain_latent_shapes(path: str | None = None, iters: int | None = None, progress: bool = True,
                           config: dict | None = None) -> dict:
    """The latent text-to-image U-Net: eps-prediction on u = latent_scale * z, z ~ q(z | x) of the frozen
    ``shape_autoencoder`` drawn afresh each step, captions through ``clip_shapes``' text encoder, frozen;
    15% empty captions; EMA weights saved. ``config``: a variant of ``LATENT_CONFIG`` (default: it), as
    ``benchmarks/latent_recipes.py`` compares."""
    config = start_config(_variant(config, LATENT_CONFIG, "LATENT_CONFIG"), iters)
    x, _, _ = shape_scenes(config["n_train"], "train")
    ae = frozen(config["ae"])
    with torch.no_grad():
        stats = [ae.encode(x[i:i + 2000]) for i in range(0, len(x), 2000)]
    mean, std = torch.cat([m for m, _ in stats]), torch.cat([(0.5 * v).exp() for _, v in stats])

    def target(idx):
        return (mean[idx] + std[idx] * torch.randn_like(mean[idx])) * ae.latent_scale

    return _train_text_unet(config, "latent_shapes", path, progress, target=target)


# ------------------------------------------------------------------------------ Imagen's cascade
def pretrain_imagen_base(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """Imagen's base stage: 8x8 scenes (average-pooled), captions through clip_shapes' frozen text encoder."""
    from .pretrain import downsample
    config = start_config(IMAGEN_BASE_CONFIG, iters)
    x, _, _ = shape_scenes(config["n_train"], "train")
    low = downsample(x)
    return _train_text_unet(config, "imagen_base", path, progress, target=lambda idx: low[idx])


def pretrain_imagen_sr(path: str | None = None, iters: int | None = None, progress: bool = True) -> dict:
    """Imagen's super-resolution stage 8x8 -> 16x16: the caption (frozen text encoder) and the 8x8 scene
    upsampled (nearest) as extra channels, noised to a level s uniform in [0, aug_max] (noise-conditioning
    augmentation, as in chapter 4's cascade; index -1 is s = 0, clean) with s given to the U-Net."""
    from .pretrain import downsample, upsample
    config = start_config(IMAGEN_SR_CONFIG, iters)
    schedule = glide_schedule(config)

    def image_cond(idx, x0):
        low = upsample(downsample(x0))
        k = torch.randint(-1, int(config["aug_max"] * schedule.N), (len(x0),))
        s = schedule.time(k, dtype=x0.dtype)
        return dict(x_cond=schedule.perturb(low, s, torch.randn_like(low)), cond_level=s)

    return _train_text_unet(config, "imagen_sr", path, progress, image_cond=image_cond)


BUILDERS = {"shape_judge": (make_judge, pretrain_shape_judge), "clip_shapes": (make_clip, pretrain_clip_shapes),
            "noisy_clip": (make_clip, pretrain_noisy_clip),
            "glide_shapes": (make_glide, pretrain_glide_shapes), "glide_pooled": (make_glide, pretrain_glide_pooled),
            "unclip_decoder": (make_unclip_decoder, pretrain_unclip_decoder),
            "unclip_prior": (make_unclip_prior, pretrain_unclip_prior),
            "shape_autoencoder": (make_autoencoder, pretrain_shape_autoencoder),
            "latent_shapes": (make_glide, pretrain_latent_shapes),
            "imagen_base": (make_glide, pretrain_imagen_base), "imagen_sr": (make_glide, pretrain_imagen_sr)}
