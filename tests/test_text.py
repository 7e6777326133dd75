"""Chapter 5: the captioned shapes, the tokenizer, CLIP's loss, cross-attention and caption guidance."""
import math

import pytest
import torch

from course_utils.guidance import classifier_free_guidance
from course_utils.nets import Attention
from course_utils.shapes import (
    COLOUR_RGB,
    COLOURS,
    HELD_OUT_PAIRS,
    MAX_TOKENS,
    SHAPES,
    VOCAB,
    ShapeJudge,
    attribute_agreement,
    caption_attributes,
    novel_captions,
    pair_captions,
    partial_caption,
    shape_scenes,
    single_captions,
    tokenize,
)
from course_utils.text import CLIP, TextConditionalUNet, TextEncoder, clip_loss, same_caption

TINY_UNET = dict(in_ch=3, ch=16, ch_mult=(1, 2), n_res=1, attn_levels=(1,), heads=2, dropout=0.0, groups=4,
                 image_size=16)


# ------------------------------------------------------------------------------ tokenizer and captions
def test_tokenize_maps_words_to_ids_with_an_end_token_and_padding():
    ids, mask = tokenize(["a red circle left of a blue square", ""])
    words = "a red circle left of a blue square".split()
    assert ids.shape == mask.shape == (2, MAX_TOKENS)
    assert [VOCAB[i] for i in ids[0, :9]] == words + ["<end>"] and ids[0, 9] == 0
    assert mask[0].tolist() == [True] * 9 + [False]
    assert ids[1, 0] == VOCAB.index("<end>") and mask[1].sum() == 1          # the empty caption
    assert torch.equal(tokenize("A  RED circle left of a blue square")[0][0], ids[0])


def test_bad_captions_get_clear_errors():
    with pytest.raises(ValueError, match=r"unknown word\(s\) \['purple'\]"):
        tokenize("a purple circle")
    with pytest.raises(ValueError, match="at most 9 are allowed"):
        tokenize("a red circle left of a blue square left of a")
    with pytest.raises(ValueError, match="unknown word"):
        tokenize("<end>")                                                      # special tokens are not words
    with pytest.raises(ValueError, match="list of strings"):
        tokenize([1, 2])
    with pytest.raises(ValueError, match=r"is not 'a \[SIZE\] COLOUR SHAPE"):
        caption_attributes("a red circle at the top")
    with pytest.raises(ValueError, match="is not"):
        caption_attributes("a small red")


def test_every_caption_parses_back_to_its_attributes():
    singles, pairs = single_captions(), pair_captions()
    assert len(singles) == 128 == len(set(singles)) and len(pairs) == 144 == len(set(pairs))
    a = caption_attributes("a large blue cross at the bottom left")
    assert a == dict(n_objects=1, shape=(3,), colour=(2,), size=1, position=2)
    a = caption_attributes("a yellow triangle left of a green circle")
    assert a == dict(n_objects=2, shape=(2, 0), colour=(3, 1))
    for c in singles + pairs:
        a = caption_attributes(c)
        words = [COLOURS[k] for k in a["colour"]] + [SHAPES[k] for k in a["shape"]]
        assert all(w in c.split() for w in words)


# ------------------------------------------------------------------------------ scenes
def test_scenes_are_deterministic_and_their_captions_describe_them():
    x, captions, attrs = shape_scenes(300, "train", seed=4)
    x2, captions2, _ = shape_scenes(300, "train", seed=4)
    assert torch.equal(x, x2) and captions == captions2
    assert not torch.equal(x, shape_scenes(300, "test", seed=4)[0])
    assert x.shape == (300, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    for i, c in enumerate(captions):
        a = caption_attributes(c)
        k = a["n_objects"]
        assert attrs["n_objects"][i] == k
        assert tuple(attrs["shape"][i, :k].tolist()) == a["shape"]
        assert tuple(attrs["colour"][i, :k].tolist()) == a["colour"]
        if k == 2:
            assert a["shape"][0] != a["shape"][1] and a["colour"][0] != a["colour"][1]


def test_an_objects_centre_pixel_has_its_colour_and_the_corners_show_the_background():
    x, _, attrs = shape_scenes(200, "train", seed=5, pair_fraction=0.0)
    rgb = (x + 1) / 2
    centres = {0: (4.5, 4.5), 1: (4.5, 11.5), 2: (11.5, 4.5), 3: (11.5, 11.5)}
    hits = 0
    for i in range(200):
        cy, cx = centres[int(attrs["position"][i])]
        # the centre moves by at most one pixel: some pixel of the 5x5 block around it is fully covered
        block = rgb[i, :, int(cy) - 2:int(cy) + 3, int(cx) - 2:int(cx) + 3].flatten(1).T  # (25, 3)
        want = COLOUR_RGB[attrs["colour"][i, 0]]
        hits += bool(((block - want).abs().max(1).values < 1e-4).any())
        far = {0: (15, 15), 1: (15, 0), 2: (0, 15), 3: (0, 0)}[int(attrs["position"][i])]
        assert torch.allclose(rgb[i, :, far[0], far[1]], attrs["background"][i].expand(3), atol=1e-6)
    assert hits == 200


def test_held_out_pairs_and_novel_captions_are_absent_from_training_and_make_their_own_splits():
    held = {(COLOURS.index(c), SHAPES.index(s)) for c, s in HELD_OUT_PAIRS}
    novel = set(novel_captions())
    assert len(novel) == 27
    for split, want_held, want_novel in (("train", False, False), ("test", False, False), ("novel", False, True),
                                         ("heldout", True, False)):
        _, captions, a = shape_scenes(400, split, seed=1)
        for i in range(400):
            k = int(a["n_objects"][i])
            pairs = {(int(a["colour"][i, j]), int(a["shape"][i, j])) for j in range(k)}
            assert bool(pairs & held) == want_held
            assert (captions[i] in novel) == want_novel
    # every colour-shape pair and every (size, position) of a novel caption occurs in training
    _, train_caps, _ = shape_scenes(3000, "train", seed=2)
    for c in novel:
        attrs = caption_attributes(c)
        for j in range(attrs["n_objects"]):
            pair = f"{COLOURS[attrs['colour'][j]]} {SHAPES[attrs['shape'][j]]}"
            assert any(pair in t for t in train_caps)
        if attrs["n_objects"] == 1:  # the same object at another position, and at this position in another size
            a_c = caption_attributes(c)
            others = [caption_attributes(t) for t in train_caps if " left of " not in t]
            same_obj = [o for o in others if (o["colour"], o["shape"]) == (a_c["colour"], a_c["shape"])]
            assert any(o["size"] == a_c["size"] and o["position"] != a_c["position"] for o in same_obj)
            assert any(o["size"] != a_c["size"] and o["position"] == a_c["position"] for o in same_obj)


def test_bad_scene_arguments():
    with pytest.raises(ValueError, match="split must be"):
        shape_scenes(3, "validation")
    with pytest.raises(ValueError, match="n must be a positive int"):
        shape_scenes(0)
    with pytest.raises(ValueError, match="pair_fraction"):
        shape_scenes(3, pair_fraction=1.5)


def test_attribute_agreement_counts_each_asked_attribute():
    class Oracle(ShapeJudge):  # predicts fixed attributes: one large red circle at the top left
        def predict(self, x):
            n = len(x)
            z = torch.zeros(n, dtype=torch.long)
            return dict(n_objects=z, shape0=z, colour0=z, shape1=z + 1, colour1=z + 1, size=z + 1, position=z)
    captions = ["a large red circle at the top left", "a small red circle at the top left",
                "a large red square at the top left", "a red circle left of a green square",
                "a red circle left of a blue square"]
    out = attribute_agreement(Oracle(), torch.zeros(5, 3, 16, 16), captions)
    assert out["all"].tolist() == [True, False, False, False, False]
    assert out["size"].tolist() == [True, False, True, True, True]
    assert out["shape"].tolist() == [True, True, False, True, True]   # the pair's shapes: circle, square = 0, 1
    assert out["colour"].tolist() == [True, True, True, True, False]  # the oracle's right object is green
    assert out["n_objects"].tolist() == [True, True, True, False, False]
    # a caption that leaves the size unsaid is not judged on it; one that leaves the position unsaid, not on that
    out = attribute_agreement(Oracle(), torch.zeros(4, 3, 16, 16), ["a red circle", "a small red circle",
                                                                   "a large red circle at the bottom left",
                                                                   "a small red circle at the top left"])
    assert out["all"].tolist() == [True, False, False, False]
    assert out["size"].tolist() == [True, False, True, False]
    assert out["position"].tolist() == [True, True, False, True]


def test_partial_captions_leave_size_and_position_unsaid():
    full = "a small red circle at the top left"
    assert partial_caption(full) == "a red circle"
    assert partial_caption(full, size=True) == "a small red circle"
    assert partial_caption(full, position=True) == "a red circle at the top left"
    assert partial_caption(full, size=True, position=True) == full
    assert partial_caption("a red circle") == "a red circle"
    assert partial_caption("a  Red circle left of a blue square") == "a red circle left of a blue square"
    for c in single_captions():
        a, b = caption_attributes(c), caption_attributes(partial_caption(c, position=True))
        assert b == dict(a, size=None)
        assert caption_attributes(partial_caption(c)) == dict(a, size=None, position=None)
        tokenize(partial_caption(c))  # every word known


# ------------------------------------------------------------------------------ CLIP
def test_clip_loss_against_a_hand_computed_case():
    logits = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    rows = [-math.log(math.e ** 2 / (math.e ** 2 + 1)), math.log(2)]
    cols = [-math.log(math.e ** 2 / (math.e ** 2 + math.e)), -math.log(math.e / (1 + math.e))]
    assert clip_loss(logits).item() == pytest.approx((sum(rows) / 2 + sum(cols) / 2) / 2, rel=1e-6)
    # both captions equal: each row's target is uniform over both columns
    same = torch.ones(2, 2, dtype=torch.bool)
    lsm_r, lsm_c = logits.log_softmax(1), logits.T.log_softmax(1)
    want = (-(lsm_r.sum(1) / 2).mean() - (lsm_c.sum(1) / 2).mean()) / 2
    assert clip_loss(logits, same).item() == pytest.approx(want.item(), rel=1e-6)
    assert same_caption(["a", "b", "a"]).tolist() == [[True, False, True], [False, True, False], [True, False, True]]
    with pytest.raises(ValueError, match="square"):
        clip_loss(torch.zeros(2, 3))


def test_clip_logits_are_scaled_cosines_and_the_pooled_text_ignores_padding():
    torch.manual_seed(0)
    clip = CLIP(embed_dim=16, text_dim=16, text_layers=1, width=8).eval()
    x, captions, _ = shape_scenes(4, seed=2)
    f, g = clip.encode_image(x), clip.encode_text(captions)
    assert torch.allclose(f.norm(dim=1), torch.ones(4)) and torch.allclose(g.norm(dim=1), torch.ones(4))
    assert torch.allclose(clip(x, captions), clip.scale * f @ g.T, atol=1e-6)
    enc = TextEncoder(16, 1).eval()
    ids, mask = tokenize(captions)
    ids2 = ids.clone()
    ids2[~mask] = 5                                                             # garbage where the mask is False
    assert torch.allclose(enc(ids, mask)[1], enc(ids2, mask)[1], atol=1e-5)


# ------------------------------------------------------------------------------ cross-attention and guidance
def test_cross_attention_equals_a_direct_einsum():
    """Each pixel attends to all pixels and to the caption's real tokens (keys and values of both)."""
    torch.manual_seed(3)
    C, heads, L = 8, 2, 4
    attn = Attention(C, heads=heads, groups=4, context_dim=6)
    torch.nn.init.normal_(attn.out.weight)
    x, ctx = torch.randn(2, C, 3, 3), torch.randn(2, L, 6)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    tok = attn.norm(x).flatten(2).transpose(1, 2)                               # (B, 9, C)
    q = attn.q(tok)
    k = torch.cat([attn.kv(tok)[..., :C], attn.kv_context(ctx)[..., :C]], 1)     # (B, 9 + L, C)
    v = torch.cat([attn.kv(tok)[..., C:], attn.kv_context(ctx)[..., C:]], 1)
    d = C // heads
    qh, kh, vh = (z.unflatten(-1, (heads, d)) for z in (q, k, v))               # (B, n, h, d)
    scores = torch.einsum("bnhd,bmhd->bhnm", qh, kh) / math.sqrt(d)
    keep = torch.cat([torch.ones(2, 9, dtype=torch.bool), mask], 1)
    scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    out = torch.einsum("bhnm,bmhd->bnhd", scores.softmax(-1), vh).flatten(2)
    want = x + attn.out(out).transpose(1, 2).reshape(x.shape)
    assert torch.allclose(attn(x, ctx, mask), want, atol=1e-5)


def test_caption_guidance_with_w_1_is_the_conditional_model_and_w_0_the_empty_caption():
    torch.manual_seed(4)
    model = TextConditionalUNet(TINY_UNET, dict(dim=16, layers=1)).eval()
    for p in model.parameters():  # the zero-initialised output layers would make every caption look alike
        torch.nn.init.normal_(p, std=0.2) if p.ndim > 1 else None
    x, t = torch.randn(3, 3, 16, 16), torch.rand(3)
    ids, _ = tokenize(["a red circle left of a blue square"] * 3)
    with torch.no_grad():
        cond, uncond = model(x, t, ids), model(x, t, None)
        assert not torch.allclose(cond, uncond, atol=1e-3)
        assert torch.allclose(classifier_free_guidance(model, ids[:1], 1.0)(x, t), cond, atol=1e-5)
        assert torch.allclose(classifier_free_guidance(model, ids, 0.0)(x, t), uncond, atol=1e-5)
        guided = classifier_free_guidance(model, ids, 3.0)(x, t)
        assert torch.allclose(guided, uncond + 3.0 * (cond - uncond), atol=1e-4)
    with pytest.raises(ValueError, match="token ids"):
        model(x, t, torch.zeros(3, 4))


def test_pooled_only_model_sees_one_vector_per_caption():
    torch.manual_seed(5)
    model = TextConditionalUNet(TINY_UNET, dict(dim=16, layers=1), pooled_only=True)
    x, t = torch.randn(2, 3, 16, 16), torch.rand(2)
    ids, _ = tokenize(["a red circle left of a blue square", "a blue circle left of a red square"])
    seen = []
    hook = model.unet.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["context"].shape), with_kwargs=True)
    model(x, t, ids)
    hook.remove()
    assert seen == [(2, 1, 16)]


# ------------------------------------------------------------------------------ Imagen's thresholding
def test_dynamic_thresholding_stays_in_range_and_is_static_clipping_when_the_percentile_is_at_most_1():
    from course_utils.guidance import threshold_x0
    torch.manual_seed(6)
    x0 = torch.randn(4, 3, 16, 16) * 3                                        # overshoots [-1, 1]
    dyn = threshold_x0(x0, "dynamic", 0.9)
    assert dyn.abs().max() <= 1 + 1e-6
    s = torch.quantile(x0.abs().flatten(1), 0.9, dim=1)
    assert torch.allclose(dyn, x0.clamp(-s[:, None, None, None], s[:, None, None, None]) / s[:, None, None, None])
    # an image whose 90th percentile of |x0| is <= 1: dynamic is static clipping (s = 1)
    small = torch.randn(2, 3, 16, 16) * 0.5
    small[:, 0, 0, :3] = torch.tensor([4.0, -3.0, 2.0])                       # a few outliers only
    assert torch.quantile(small.abs().flatten(1), 0.9, dim=1).max() <= 1
    assert torch.equal(threshold_x0(small, "dynamic", 0.9), threshold_x0(small, "static"))
    assert torch.equal(threshold_x0(small, "static"), small.clamp(-1, 1))
    with pytest.raises(ValueError, match="method must be"):
        threshold_x0(x0, "percentile")
    with pytest.raises(ValueError, match="percentile must be"):
        threshold_x0(x0, "dynamic", 1.5)


def test_thresholded_noise_prediction_gives_the_thresholded_clean_image():
    from course_utils.guidance import threshold_x0, thresholded
    from course_utils.schedules import DiscreteSchedule, cosine_betas
    schedule = DiscreteSchedule(cosine_betas(100))
    torch.manual_seed(7)
    x, t = torch.randn(3, 3, 4, 4), torch.tensor([0.2, 0.5, 0.9])
    wild = lambda z, tt: 4 * torch.randn_like(z)  # noqa: E731  a noise predictor whose x0_hat overshoots
    torch.manual_seed(8)
    e = thresholded(wild, schedule, "dynamic", 0.99)(x, t)
    torch.manual_seed(8)
    e_raw = wild(x, t)
    a, s = schedule.alpha(t)[:, None, None, None], schedule.sigma(t)[:, None, None, None]
    x0_raw, x0_new = (x - s * e_raw) / a, (x - s * e) / a
    assert torch.allclose(x0_new, threshold_x0(x0_raw, "dynamic", 0.99), atol=1e-5)
    assert x0_raw.abs().max() > 1.5 and x0_new.abs().max() <= 1 + 1e-5


def test_thresholded_method_as_a_function_of_t_and_the_observer():
    """method(t) picks the thresholding per step: a constant function is the named method, a switch at t = 0.5
    thresholds each step as the named method for its t would; observe sees x0_hat before thresholding."""
    from course_utils.guidance import threshold_x0, thresholded
    from course_utils.schedules import DiscreteSchedule, cosine_betas
    schedule = DiscreteSchedule(cosine_betas(100))
    wild = lambda z, tt: 4 * torch.sin(3 * z + tt[:, None, None, None])  # noqa: E731  deterministic, overshoots
    x = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    switch = thresholded(wild, schedule, lambda t: "dynamic" if t > 0.5 else "static", 0.99)
    for t in (0.2, 0.9):
        tt = torch.full((4,), t)
        named = "dynamic" if t > 0.5 else "static"
        assert torch.equal(switch(x, tt), thresholded(wild, schedule, named, 0.99)(x, tt))
        assert torch.equal(thresholded(wild, schedule, lambda _, m=named: m, 0.99)(x, tt),
                           thresholded(wild, schedule, named, 0.99)(x, tt))
        # the two methods differ on this input at both times, so the switch is tested, not a tie
        assert not torch.equal(thresholded(wild, schedule, "dynamic", 0.99)(x, tt),
                               thresholded(wild, schedule, "static", 0.99)(x, tt))
    tt = torch.full((4,), 0.9)
    seen = []
    e = thresholded(wild, schedule, "static", observe=lambda t, x0: seen.append((t, x0)))(x, tt)
    a, s = schedule.alpha(tt)[:, None, None, None], schedule.sigma(tt)[:, None, None, None]
    x0_raw = (x - s * wild(x, tt)) / a
    assert len(seen) == 1 and torch.equal(seen[0][0], tt) and torch.allclose(seen[0][1], x0_raw)
    assert x0_raw.abs().max() > 1.5 and torch.allclose((x - s * e) / a, threshold_x0(x0_raw, "static"), atol=1e-5)
    # the observer is given a copy: one that changes it in place changes nothing
    assert torch.equal(thresholded(wild, schedule, "static", observe=lambda t, x0: x0.zero_())(x, tt), e)
    with pytest.raises(ValueError, match="method: a function of t needs one t"):
        switch(x, torch.tensor([0.2, 0.9, 0.9, 0.9]))
    with pytest.raises(ValueError, match="method must be"):
        thresholded(wild, schedule, lambda t: "clip")(x, tt)
    for method in ("static", lambda t: "static"):
        with pytest.raises(ValueError, match="percentile must be"):
            thresholded(wild, schedule, method, 1.5)
