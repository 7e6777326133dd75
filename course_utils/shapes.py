"""Chapter 5's captioned dataset: coloured shapes on grey backgrounds, 16x16 RGB, drawn by the course.

Two kinds of scene (notebook 05, section 1):

* one object: "a small red circle at the top left" (shape x colour x size x position: 4 x 4 x 2 x 4);
* two objects side by side: "a red circle left of a blue square" (the two differ in shape *and* colour,
  so swapping either attribute between them gives a different, wrong caption: the binding test).

Backgrounds are grey of random brightness in [0, 0.6] (on a 0..1 scale), so that a sampler which pushes
pixels to the extremes is visible. Two colour-shape pairs (``HELD_OUT_PAIRS``) never appear in the
training split: the "heldout" split has one in every scene, to test composition; 27 captions
(``novel_captions``) are kept out too although their colour-shape pairs are seen (the "novel" split).

Captions become token ids with ``tokenize`` (a fixed word-level vocabulary, an end token appended).
Attributes are returned as integer tensors; ``caption_attributes`` parses a caption back into them,
which is how generated images are judged against the caption they were asked for.
"""
from __future__ import annotations

import re

import torch

__all__ = ["SHAPES", "COLOURS", "SIZES", "POSITIONS", "HELD_OUT_PAIRS", "VOCAB", "MAX_TOKENS", "IMAGE_SIZE",
           "shape_scenes", "tokenize", "caption_attributes", "single_captions", "pair_captions", "COLOUR_RGB",
           "novel_captions", "partial_caption", "SPLITS",
           "ShapeJudge", "judge_targets", "judge_loss", "attribute_agreement"]

IMAGE_SIZE = 16
SPLITS = ("train", "test", "novel", "heldout")
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow")
COLOUR_RGB = torch.tensor([[0.95, 0.1, 0.1], [0.1, 0.85, 0.1], [0.15, 0.3, 1.0], [0.95, 0.9, 0.1]])
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
HELD_OUT_PAIRS = (("green", "circle"), ("blue", "triangle"))  # (colour, shape) never seen in training
_HALF = {"small": 2.6, "large": 3.9, "pair": 3.0}  # half-sizes in pixels
_CENTRES = {"top left": (4.5, 4.5), "top right": (4.5, 11.5), "bottom left": (11.5, 4.5), "bottom right": (11.5, 11.5)}

VOCAB = ("<pad>", "<end>", "a", "at", "the", "of", "left", "right", "top", "bottom") + SIZES + COLOURS + SHAPES
MAX_TOKENS = 10  # words plus the end token; the captions have 8 words
_INDEX = {w: i for i, w in enumerate(VOCAB)}
_SINGLE = re.compile(r"^a (?:(small|large) )?(\w+) (\w+)(?: at the (top|bottom) (left|right))?$")
_PAIR = re.compile(r"^a (\w+) (\w+) left of a (\w+) (\w+)$")


def tokenize(captions) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, MAX_TOKENS) int64 and a mask (B, MAX_TOKENS), True for real tokens, of a caption or a
    list of captions: lower-cased words of ``VOCAB`` followed by "<end>", padded with "<pad>" (id 0).
    The empty caption "" is "<end>" alone (what classifier-free guidance conditions on for "no caption").
    Unknown words and captions of more than MAX_TOKENS - 1 words raise a ValueError that names them."""
    if isinstance(captions, str):
        captions = [captions]
    if not isinstance(captions, (list, tuple)) or not captions or not all(isinstance(c, str) for c in captions):
        raise ValueError(f"captions must be a string or a non-empty list of strings, got {type(captions).__name__}")
    ids = torch.zeros(len(captions), MAX_TOKENS, dtype=torch.long)
    for row, caption in enumerate(captions):
        words = caption.lower().split()
        unknown = [w for w in words if w not in _INDEX or w.startswith("<")]
        if unknown:
            raise ValueError(f"captions: unknown word(s) {unknown} in {caption!r}; the vocabulary is "
                             f"{sorted(w for w in VOCAB if not w.startswith('<'))}")
        if len(words) > MAX_TOKENS - 1:
            raise ValueError(f"captions: {caption!r} has {len(words)} words; at most {MAX_TOKENS - 1} are allowed")
        ids[row, :len(words) + 1] = torch.tensor([_INDEX[w] for w in words] + [_INDEX["<end>"]])
    return ids, ids != 0


def caption_attributes(caption: str) -> dict:
    """The attributes a caption asks for: {"n_objects": 1, "shape": (s,), "colour": (c,), "size": z,
    "position": p} or {"n_objects": 2, "shape": (s_left, s_right), "colour": (c_left, c_right)} as indices
    into SHAPES, COLOURS, SIZES, POSITIONS. A one-object caption may leave its size or its position unsaid
    ("a red circle at the top left", "a small red circle", "a red circle": see ``partial_caption``); that
    attribute is then None. A caption outside the two templates raises a ValueError."""
    tokenize(caption)  # unknown words and length: the same errors as everywhere
    words = " ".join(caption.lower().split())
    if m := _SINGLE.match(words):
        size, colour, shape, row, col = m.groups()
        if colour in COLOURS and shape in SHAPES:
            return dict(n_objects=1, shape=(SHAPES.index(shape),), colour=(COLOURS.index(colour),),
                        size=None if size is None else SIZES.index(size),
                        position=None if row is None else POSITIONS.index(f"{row} {col}"))
    if m := _PAIR.match(words):
        c1, s1, c2, s2 = m.groups()
        if {c1, c2} <= set(COLOURS) and {s1, s2} <= set(SHAPES):
            return dict(n_objects=2, shape=(SHAPES.index(s1), SHAPES.index(s2)),
                        colour=(COLOURS.index(c1), COLOURS.index(c2)))
    raise ValueError(f"caption: {caption!r} is not 'a [SIZE] COLOUR SHAPE [at the top|bottom left|right]' nor "
                     "'a COLOUR SHAPE left of a COLOUR SHAPE'")


def partial_caption(caption: str, size: bool = False, position: bool = False) -> str:
    """A one-object caption with its size and/or its position left unsaid (``size`` / ``position``: keep
    them): partial_caption("a small red circle at the top left") is "a red circle". Such a caption fits
    scenes that differ in what it leaves out, which is what unCLIP's prior is for (notebook 05, section 5).
    Two-object captions, which name neither, come back unchanged."""
    a = caption_attributes(caption)
    if a["n_objects"] == 2:
        return " ".join(caption.lower().split())
    words = ["a"] + ([SIZES[a["size"]]] if size and a["size"] is not None else [])
    words += [COLOURS[a["colour"][0]], SHAPES[a["shape"][0]]]
    if position and a["position"] is not None:
        words += ["at", "the", POSITIONS[a["position"]]]
    return " ".join(words)


def novel_captions() -> list[str]:
    """Captions kept out of the training split although their colour-shape pairs are in it: for each of the
    14 seen pairs one (size, position) of its 8, and every ninth two-object caption without a held-out pair
    (27 captions in all)."""
    held = {f"{c} {s}" for c, s in HELD_OUT_PAIRS}
    out = []
    for k, (c, s) in enumerate((c, s) for c in COLOURS for s in SHAPES if f"{c} {s}" not in held):
        z, p = divmod((5 * k) % 8, 4)
        out.append(f"a {SIZES[z]} {c} {s} at the {POSITIONS[p]}")
    pairs = [cap for cap in pair_captions() if not any(h in cap for h in held)]
    return out + pairs[::9]


def single_captions() -> list[str]:
    """All 128 one-object captions, in a fixed order."""
    return [f"a {z} {c} {s} at the {p}" for z in SIZES for c in COLOURS for s in SHAPES for p in POSITIONS]


def pair_captions() -> list[str]:
    """All 144 two-object captions (the objects differ in colour and in shape), in a fixed order."""
    return [f"a {c1} {s1} left of a {c2} {s2}" for c1 in COLOURS for s1 in SHAPES for c2 in COLOURS
            for s2 in SHAPES if c1 != c2 and s1 != s2]


def _mask(kind: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, half: torch.Tensor, sub: int = 4) -> torch.Tensor:
    """Anti-aliased coverage (N, 16, 16) in [0, 1] of one shape per scene (``sub`` x ``sub`` samples per pixel)."""
    n = IMAGE_SIZE * sub
    grid = (torch.arange(n, dtype=torch.float32) + 0.5) / sub                       # pixel coordinates
    dy = grid[None, :, None] - cy[:, None, None]                                     # (N, n, 1)
    dx = grid[None, None, :] - cx[:, None, None]                                     # (N, 1, n)
    h = half[:, None, None]
    circle = dy ** 2 + dx ** 2 <= h ** 2
    square = torch.maximum(dy.abs(), dx.abs()) <= 0.85 * h
    triangle = (dy <= 0.8 * h) & (dy >= -h) & (dx.abs() <= (dy + h) * 0.6)          # apex up
    arm = 0.38 * h
    cross = ((dy.abs() <= arm) & (dx.abs() <= h)) | ((dx.abs() <= arm) & (dy.abs() <= h))
    inside = torch.stack([circle.expand(-1, n, n), square, triangle.expand(-1, n, n), cross])  # (4, N, n, n)
    chosen = inside[kind, torch.arange(len(kind))]                                   # (N, n, n)
    return chosen.float().unflatten(1, (IMAGE_SIZE, sub)).unflatten(3, (IMAGE_SIZE, sub)).mean((2, 4))


def shape_scenes(n: int, split: str = "train", seed: int = 0, pair_fraction: float = 0.5):
    """``n`` scenes of ``split``, a fraction ``pair_fraction`` of them with two objects; deterministic in
    (n, split, seed, pair_fraction). "train": neither a held-out colour-shape pair nor a novel caption;
    "test": the same distribution, other draws; "novel": captions of ``novel_captions()`` (each word and
    each colour-shape pair seen in training, the caption never); "heldout": every scene holds a pair of
    HELD_OUT_PAIRS (never seen in training in any caption).

    Returns ``(images, captions, attributes)``: images (n, 3, 16, 16) in [-1, 1]; a list of n captions;
    a dict of int64 tensors: n_objects (n,), shape (n, 2) and colour (n, 2) (the object, or the left and
    the right one; -1 where absent), size (n,) and position (n,) (-1 for two-object scenes), and
    background (n,) float, the grey level in [0, 1]."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not 0.0 <= pair_fraction <= 1.0:
        raise ValueError(f"pair_fraction must be in [0, 1], got {pair_fraction!r}")
    g = torch.Generator().manual_seed(seed * 4 + SPLITS.index(split) + 10_007)
    held = torch.zeros(len(COLOURS), len(SHAPES), dtype=torch.bool)
    for c, s in HELD_OUT_PAIRS:
        held[COLOURS.index(c), SHAPES.index(s)] = True
    n_objects = 1 + (torch.rand(n, generator=g) < pair_fraction).long()
    shape = torch.full((n, 2), -1, dtype=torch.long)
    colour = torch.full((n, 2), -1, dtype=torch.long)
    size = torch.full((n,), -1, dtype=torch.long)
    position = torch.full((n,), -1, dtype=torch.long)
    novel = set(novel_captions())
    for i in range(n):  # rejection sampling of the attributes: cheap (a few draws per scene; ~16 for "novel")
        while True:
            k = int(n_objects[i])
            s = torch.randperm(len(SHAPES), generator=g)[:k]
            c = torch.randperm(len(COLOURS), generator=g)[:k]
            z = int(torch.randint(len(SIZES), (1,), generator=g))
            p = int(torch.randint(len(POSITIONS), (1,), generator=g))
            if bool(held[c, s].any()) != (split == "heldout"):
                continue
            obj = [f"{COLOURS[c[j]]} {SHAPES[s[j]]}" for j in range(k)]
            caption = f"a {SIZES[z]} {obj[0]} at the {POSITIONS[p]}" if k == 1 else f"a {obj[0]} left of a {obj[1]}"
            if (caption in novel) == (split == "novel"):
                break
        shape[i, :k], colour[i, :k] = s, c
        if k == 1:
            size[i], position[i] = z, p
    background = torch.rand(n, generator=g) * 0.6
    image = background[:, None, None, None].expand(n, 3, IMAGE_SIZE, IMAGE_SIZE).clone()
    jitter = torch.rand(n, 2, 2, generator=g) * 2 - 1                            # +-1 pixel per object
    one = n_objects == 1
    centres = torch.tensor([_CENTRES[p] for p in POSITIONS])
    for slot in range(2):
        present = shape[:, slot] >= 0
        if not present.any():
            continue
        cy = torch.where(one, centres[position.clamp(min=0), 0] + jitter[:, slot, 0], 8.0 + 2.5 * jitter[:, slot, 0])
        cx = torch.where(one, centres[position.clamp(min=0), 1], 4.5 + 7.0 * slot) + jitter[:, slot, 1]
        half = torch.where(one, torch.tensor([_HALF[z] for z in SIZES])[size.clamp(min=0)], torch.tensor(_HALF["pair"]))
        cover = _mask(shape[:, slot].clamp(min=0), cy, cx, half) * present[:, None, None]
        rgb = COLOUR_RGB[colour[:, slot].clamp(min=0)][:, :, None, None]           # (n, 3, 1, 1)
        image = image * (1 - cover[:, None]) + rgb * cover[:, None]
    obj = [[f"{COLOURS[colour[i, j]]} {SHAPES[shape[i, j]]}" for j in range(int(n_objects[i]))] for i in range(n)]
    captions = [f"a {SIZES[size[i]]} {obj[i][0]} at the {POSITIONS[position[i]]}" if n_objects[i] == 1 else
                f"a {obj[i][0]} left of a {obj[i][1]}" for i in range(n)]
    attributes = dict(n_objects=n_objects, shape=shape, colour=colour, size=size, position=position,
                      background=background)
    return image * 2 - 1, captions, attributes


# ------------------------------------------------------------------------------ the judge
class ShapeJudge(torch.nn.Module):
    """The attribute classifier that judges generated scenes: a CNN with one head per attribute: the
    number of objects (2), the shape and colour of the first (or left) and of the right object (4 each),
    size (2) and position (4). ``forward`` returns a dict of logits; ``predict`` a dict of indices."""

    HEADS = dict(n_objects=2, shape0=len(SHAPES), colour0=len(COLOURS), shape1=len(SHAPES),
                 colour1=len(COLOURS), size=len(SIZES), position=len(POSITIONS))

    def __init__(self, width: int = 32):
        super().__init__()
        nn = torch.nn
        w = width
        self.body = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.SiLU(), nn.Conv2d(w, w, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(w, 2 * w, 3, padding=1, stride=2), nn.SiLU(),
                                  nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.SiLU(), nn.Flatten(),
                                  nn.Linear(2 * w * 64, 128), nn.SiLU())
        self.heads = nn.ModuleDict({k: nn.Linear(128, v) for k, v in self.HEADS.items()})

    def forward(self, x: torch.Tensor) -> dict:
        if x.ndim != 4 or x.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"x must be (B, 3, 16, 16) scenes in [-1, 1], got {tuple(x.shape)}")
        h = self.body(x)
        return {k: head(h) for k, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict:
        return {k: v.argmax(1) for k, v in self(x).items()}


def judge_targets(attributes: dict) -> dict:
    """The judge's targets (-1: no such attribute in that scene) from ``shape_scenes``' attributes."""
    return dict(n_objects=attributes["n_objects"] - 1, shape0=attributes["shape"][:, 0],
                colour0=attributes["colour"][:, 0], shape1=attributes["shape"][:, 1],
                colour1=attributes["colour"][:, 1], size=attributes["size"], position=attributes["position"])


def judge_loss(judge: ShapeJudge, x: torch.Tensor, attributes: dict) -> torch.Tensor:
    """The sum over heads of the cross-entropy on the attributes a scene has."""
    logits = judge(x)
    return sum(torch.nn.functional.cross_entropy(logits[k], v, ignore_index=-1)
               for k, v in judge_targets(attributes).items())


def attribute_agreement(judge: ShapeJudge, images: torch.Tensor, captions) -> dict:
    """How well images match the captions they were made from, by ``judge``: a dict of (B,) bool tensors,
    one per attribute the captions ask for ("n_objects", "shape", "colour", and for one-object captions
    "size" and "position"; for two-object captions shape and colour must be right for both objects),
    and "all", every asked-for attribute right. Attributes a caption does not have (or leaves unsaid) count as
    right."""
    if isinstance(captions, str) or len(captions) != len(images):
        raise ValueError(f"captions must be a list of {len(images)} captions, one per image")
    asked = [caption_attributes(c) for c in captions]
    p = judge.eval().predict(images)
    out = {k: torch.ones(len(images), dtype=torch.bool) for k in ("n_objects", "shape", "colour", "size", "position")}
    for i, a in enumerate(asked):
        k = a["n_objects"]
        out["n_objects"][i] = p["n_objects"][i] == k - 1
        out["shape"][i] = all(p[f"shape{j}"][i] == a["shape"][j] for j in range(k))
        out["colour"][i] = all(p[f"colour{j}"][i] == a["colour"][j] for j in range(k))
        if k == 1 and a["size"] is not None:
            out["size"][i] = p["size"][i] == a["size"]
        if k == 1 and a["position"] is not None:
            out["position"][i] = p["position"][i] == a["position"]
    out["all"] = torch.stack(list(out.values())).all(0)
    return out
