"""Chapter 5, sections 5-7: unCLIP's decoder and prior, the autoencoder's bound, DDPM's likelihood bound."""
import math

import pytest
import torch

from course_utils.autoencoder import KLAutoencoder, bound_terms, vae_loss
from course_utils.ddpm import nll_bound
from course_utils.guidance import classifier_free_guidance
from course_utils.schedules import DiscreteSchedule, cosine_betas, linear_betas
from course_utils.shapes import tokenize
from course_utils.text import CLIP, generate
from course_utils.unclip import DiffusionPrior, UnCLIPDecoder, decoder_cond, sample_prior, slerp

TINY_UNET = dict(in_ch=3, ch=16, ch_mult=(1, 2), n_res=1, attn_levels=(1,), heads=2, dropout=0.0, groups=4,
                 image_size=16)


# ------------------------------------------------------------------------------ DDPM's bound on -log p
def _gaussian_bound(schedule, D):
    """The bound in closed form for x0 ~ N(0, I) and the exact noise predictor E[eps | x_t] = sqrt(1 - ab) x_t:
    E||eps - eps_hat||^2 = D alpha_bar_t at level t."""
    b, ab = schedule.betas.double(), schedule.alpha_bars.double()
    ab_prev = torch.cat([1 - b[:1], ab[:-1]])
    weight = b / (2 * (1 - b) * (1 - ab_prev))
    prior_kl = 0.5 * (ab[-1] + (1 - ab[-1]) - 1 - torch.log(1 - ab[-1]))   # E over x0 of the prior term
    return D * float((weight * ab).sum() + 0.5 * math.log(2 * math.pi * b[0]) + prior_kl)


@pytest.mark.parametrize("betas", [linear_betas(1000), cosine_betas(1000)], ids=["linear", "cosine"])
def test_nll_bound_matches_its_closed_form_on_gaussian_data_and_bounds_the_true_nll(betas):
    schedule = DiscreteSchedule(betas)
    x0 = torch.randn(20_000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def exact(x, t):
        a = schedule.alpha_bars.double()[(t * schedule.N).round().long() - 1][:, None]
        return (1 - a).sqrt() * x

    bound = nll_bound(schedule, exact, x0, n_levels=100, generator=torch.Generator().manual_seed(1))
    se = bound.std().item() / math.sqrt(len(bound))
    assert abs(bound.mean().item() - _gaussian_bound(schedule, 2)) < 4 * se
    true_nll = (math.log(2 * math.pi) + 0.5 * x0.pow(2).sum(1)).mean().item()
    assert bound.mean().item() > true_nll                   # a bound: above -log p(x0) = 2.84 nats
    worse = nll_bound(schedule, lambda x, t: 0.9 * exact(x, t), x0, n_levels=100,
                      generator=torch.Generator().manual_seed(1))
    diff = worse - bound                                    # the same levels and noise: a paired comparison
    assert diff.mean().item() > 5 * diff.std().item() / math.sqrt(len(diff))  # a worse model, a looser bound


def test_nll_bound_bad_arguments():
    schedule = DiscreteSchedule(linear_betas(10))
    with pytest.raises(ValueError, match="n_levels"):
        nll_bound(schedule, lambda x, t: x, torch.zeros(2, 3), n_levels=0)
    with pytest.raises(ValueError, match="eps_model must return"):
        nll_bound(schedule, lambda x, t: x[:1], torch.zeros(2, 3))


# ------------------------------------------------------------------------------ the autoencoder
def test_bound_terms_are_the_gaussian_closed_forms():
    torch.manual_seed(0)
    ae = KLAutoencoder(width=16, sigma_x=0.1)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    terms = bound_terms(ae, x, torch.Generator().manual_seed(0))
    q = torch.distributions.Normal(terms["mean"], (0.5 * terms["logvar"]).exp())
    p = torch.distributions.Normal(torch.zeros_like(terms["mean"]), torch.ones_like(terms["mean"]))
    assert torch.allclose(terms["entropy"], q.entropy().flatten(1).sum(1), rtol=1e-5)
    assert torch.allclose(terms["kl"], torch.distributions.kl_divergence(q, p).flatten(1).sum(1), rtol=1e-4, atol=1e-3)
    lik = torch.distributions.Normal(terms["x_hat"], 0.1).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(terms["reconstruction"], -lik, rtol=1e-5)
    assert terms["mean"].shape == (3, 4, 8, 8)
    # the loss with kl_weight = 1 is the negative ELBO: reconstruction + cross-entropy - entropy
    torch.manual_seed(1)
    loss = vae_loss(ae, x, kl_weight=1.0)
    torch.manual_seed(1)
    t = bound_terms(ae, x)
    assert torch.allclose(loss, (t["reconstruction"] + t["cross_entropy"] - t["entropy"]).mean())


def test_autoencoder_latents_round_trip_and_bad_shapes():
    ae = KLAutoencoder(width=16)
    x = torch.rand(64, 3, 16, 16) * 2 - 1
    scale = ae.set_latent_scale(x)
    u = ae.to_latent(x)
    assert u.shape == (64, 4, 8, 8) and abs(u.std().item() - 1) < 1e-4 and scale == float(ae.latent_scale)
    assert torch.allclose(ae.from_latent(u), ae.decode(ae.encode(x)[0]).clamp(-1, 1), atol=1e-5)
    with pytest.raises(ValueError, match="x must be"):
        ae.encode(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="z must be"):
        ae.decode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="sigma_x"):
        KLAutoencoder(sigma_x=0.0)


# ------------------------------------------------------------------------------ unCLIP
def test_decoder_cond_packs_ids_and_embedding_and_its_null_is_empty_caption_and_zero():
    dec = UnCLIPDecoder(TINY_UNET, dict(dim=16, layers=1), embed_dim=8, n_tokens=2)
    z = torch.randn(2, 8)
    cond = decoder_cond(["a red circle left of a blue square", "a small red circle at the top left"], z, 8)
    ids, zz = dec.split(cond)
    assert torch.equal(ids, tokenize(["a red circle left of a blue square", "a small red circle at the top left"])[0])
    assert torch.equal(zz, z)
    null_ids, null_z = dec.split(dec.null_cond(cond))
    empty = tokenize([""])[0][0]
    assert (null_ids[:, 0] == empty[0]).all() and (null_ids[:, 1:] == 0).all() and null_z.abs().max() == 0
    with pytest.raises(ValueError, match="z must be"):
        decoder_cond(["a red circle left of a blue square"], torch.zeros(1, 7), 8)
    with pytest.raises(ValueError, match="list of captions"):
        decoder_cond("a red circle left of a blue square", None, 8)
    with pytest.raises(ValueError, match="cond must be float rows"):
        dec(torch.zeros(2, 3, 16, 16), torch.full((2,), 0.5), ids)


def test_decoder_reads_the_embedding_and_guidance_with_w_1_is_the_conditional_decoder():
    torch.manual_seed(0)
    dec = UnCLIPDecoder(TINY_UNET, dict(dim=16, layers=1), embed_dim=8, n_tokens=2).eval()
    for p in dec.parameters():                      # move every weight off its initial value (the head starts at 0)
        p.data.add_(0.1 * torch.randn_like(p))
    x, t = torch.randn(2, 3, 16, 16), torch.full((2,), 0.5)
    captions = ["a red circle left of a blue square"] * 2
    c1, c2 = decoder_cond(captions, torch.randn(2, 8), 8), decoder_cond(captions, torch.randn(2, 8), 8)
    assert (dec(x, t, c1) - dec(x, t, c2)).abs().max() > 1e-3              # z matters
    assert torch.allclose(classifier_free_guidance(dec, c1, 1.0)(x, t), dec(x, t, c1), atol=1e-5)
    assert torch.allclose(classifier_free_guidance(dec, c1, 0.0)(x, t), dec(x, t, None), atol=1e-5)
    images = generate(dec, DiscreteSchedule(cosine_betas(50)), c1, w=2.0, n_steps=3)
    assert images.shape == (2, 3, 16, 16)


def test_a_fresh_decoder_ignores_the_embedding_like_the_glide_model_it_starts_from():
    torch.manual_seed(0)
    dec = UnCLIPDecoder(TINY_UNET, dict(dim=16, layers=1), embed_dim=8, n_tokens=2).eval()
    for p in dec.glide.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    x, t = torch.randn(2, 3, 16, 16), torch.full((2,), 0.5)
    captions = ["a red circle left of a blue square"] * 2
    a = dec(x, t, decoder_cond(captions, torch.randn(2, 8), 8))
    assert torch.allclose(a, dec(x, t, decoder_cond(captions, None, 8)), atol=1e-6)


def test_slerp_stays_on_the_sphere_and_hits_its_ends():
    a = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose((mid * a).sum(-1), (mid * b).sum(-1), atol=1e-5)   # equal angles to both ends


def test_prior_samples_are_unit_vectors_fixed_by_the_seed():
    torch.manual_seed(0)
    clip = CLIP(embed_dim=8, text_dim=16, text_layers=1, width=8).eval()
    prior = DiffusionPrior(embed_dim=8, text_dim=16, dim=16, layers=1, heads=2)
    schedule = DiscreteSchedule(cosine_betas(100))
    caps = ["a small red circle at the top left", "a red circle left of a blue square"]
    z = sample_prior(prior, clip, schedule, caps, n_steps=5, seed=3)
    assert z.shape == (2, 8) and torch.allclose(z.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.equal(z, sample_prior(prior, clip, schedule, caps, n_steps=5, seed=3))
    assert not torch.equal(z, sample_prior(prior, clip, schedule, caps, n_steps=5, seed=4))
    with pytest.raises(ValueError, match="z_t and text_emb"):
        prior(torch.zeros(2, 7), torch.zeros(2), torch.zeros(2, 3, 16), torch.ones(2, 3, dtype=torch.bool),
              torch.zeros(2, 8))


def test_nll_bound_equals_the_sum_of_kls_written_from_the_definitions():
    """On a 10-step schedule with large betas (where every factor of the weights matters), nll_bound with one
    stratum per level equals the bound assembled term by term from its definition: KL(q(x_N | x0) || N(0, 1))
    + sum over t >= 2 of KL(q(x_{t-1} | x_t, x0) || N(mu_theta(x_t), beta~_t)) - log N(x0; mu_theta(x_1), beta_1),
    with mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(1 - beta_t) (DDPM's Eq. 11)."""
    betas = torch.linspace(0.05, 0.5, 10, dtype=torch.float64)
    schedule = DiscreteSchedule(betas)
    b, ab = schedule.betas.double(), schedule.alpha_bars.double()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(200_000, 1, dtype=torch.float64, generator=g)

    def model(x, t):                       # any fixed predictor will do; a deliberately imperfect one
        i = (t * schedule.N).round().long() - 1
        return 0.8 * (1 - ab[i][:, None]).sqrt() * x + 0.1

    total = 0.5 * (ab[-1] * x0 ** 2 + (1 - ab[-1]) - 1 - torch.log(1 - ab[-1]))
    for i in range(schedule.N):
        eps = torch.randn(x0.shape, dtype=torch.float64, generator=g)
        xt = ab[i].sqrt() * x0 + (1 - ab[i]).sqrt() * eps
        t = schedule.time(torch.full((len(x0),), i))
        mu = (xt - b[i] / (1 - ab[i]).sqrt() * model(xt, t)) / (1 - b[i]).sqrt()
        if i == 0:                            # the last step: the Gaussian likelihood of x0
            total = total + 0.5 * math.log(2 * math.pi * b[0]) + (x0 - mu) ** 2 / (2 * b[0])
        else:                                 # KL between Gaussians of equal variance beta~
            mean_q = (ab[i - 1].sqrt() * b[i] * x0 + (1 - b[i]).sqrt() * (1 - ab[i - 1]) * xt) / (1 - ab[i])
            var_q = b[i] * (1 - ab[i - 1]) / (1 - ab[i])
            total = total + (mean_q - mu) ** 2 / (2 * var_q)
    by_definition = total.sum(1)
    estimate = nll_bound(schedule, model, x0, n_levels=10, generator=torch.Generator().manual_seed(1))
    se = math.hypot(by_definition.std().item(), estimate.std().item()) / math.sqrt(len(x0))
    assert abs(estimate.mean().item() - by_definition.mean().item()) < 4 * se
