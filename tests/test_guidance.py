"""Chapter 4's library against exact answers: Langevin on Gaussian targets (its stationary law at a finite
step size in closed form), annealed Langevin and Tweedie's denoising step, classifier guidance on a
Gaussian mixture whose p(y | x) is exact, classifier-free guidance, inpainting and colorization."""
import math

import pytest
import torch

from course_utils.data import GaussianMixture
from course_utils.guidance import classifier_free_guidance, classifier_guidance, guided_score
from course_utils.inpainting import grey_basis, inpaint, inpaint_smc, repaint_moves
from course_utils.nets import UNet
from course_utils.samplers import annealed_langevin, geometric_sigmas, langevin
from course_utils.schedules import DiscreteSchedule, linear_betas
from course_utils.sde import VPSDE

S2 = torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
MU = torch.tensor([1.0, -2.0], dtype=torch.float64)


def gaussian_score(mu, cov):
    prec = torch.linalg.inv(cov)
    return lambda x: -(x - mu) @ prec


def ula_covariance(cov, step, tau=1.0):
    """The stationary covariance of x' = x + (h/2) score(x) + sqrt(tau h) z for N(mu, cov): per eigen-direction
    of variance v, tau v / (1 - h / (4 v)); i.e. tau cov (I - h/4 cov^-1)^-1."""
    eye = torch.eye(len(cov), dtype=cov.dtype)
    return tau * cov @ torch.linalg.inv(eye - step / 4 * torch.linalg.inv(cov))


# ------------------------------------------------------------------------------ Langevin
@pytest.mark.parametrize("step,tau", [(0.02, 1.0), (0.4, 1.0), (0.4, 2.0)])
def test_langevin_reaches_its_closed_form_stationary_law(step, tau):
    n = 40_000
    g = torch.Generator().manual_seed(0)  # chains start at exact draws of the target: little burn-in needed
    x0 = MU + torch.randn(n, 2, dtype=torch.float64, generator=g) @ torch.linalg.cholesky(S2).T
    x = langevin(gaussian_score(MU, S2), x0, step_size=step, n_steps=int(6 / step), temperature=tau, generator=g)
    want = ula_covariance(S2, step, tau)
    se_mean = torch.sqrt(torch.diag(want) / n)
    assert ((x.mean(0) - MU).abs() < 4 * se_mean).all()
    cov = torch.cov(x.T)
    se_cov = torch.sqrt((want ** 2 + torch.outer(torch.diag(want), torch.diag(want))) / n)  # Gaussian: var of s_ij
    assert ((cov - want).abs() < 4 * se_cov).all(), (cov, want)
    if step == 0.4 and tau == 1.0:  # the bias is real: the exact target's covariance is many errors away
        assert ((cov - S2).abs() / se_cov).max() > 10


def test_langevin_bad_input_and_path():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="step_size"):
        langevin(lambda x: -x, x, step_size=0.0, n_steps=2)
    with pytest.raises(ValueError, match="temperature"):
        langevin(lambda x: -x, x, step_size=0.1, n_steps=2, temperature=-1)
    with pytest.raises(ValueError, match="score_fn must return"):
        langevin(lambda x: x[:, :1], x, step_size=0.1, n_steps=2)
    path = langevin(lambda x: -x, x, step_size=0.1, n_steps=5, return_path=True)
    assert path.xs.shape == (6, 3, 2) and torch.allclose(path.ts, torch.arange(6, dtype=torch.float64) * 0.1)


def test_annealed_langevin_levels_and_tweedie_step():
    sigmas = geometric_sigmas(5.0, 0.1, 6)
    assert torch.allclose(sigmas[1:] / sigmas[:-1], torch.full((5,), (0.1 / 5.0) ** 0.2, dtype=torch.float64))

    def score(x, sigma):  # the exact score of N(MU, S2) + sigma^2 I
        cov = S2 + sigma[0].item() ** 2 * torch.eye(2, dtype=torch.float64)
        return gaussian_score(MU, cov)(x)

    n, lr = 20_000, 0.02
    x0 = torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 5
    out = annealed_langevin(score, x0, sigmas=sigmas, n_steps_each=150, step_lr=lr,
                            generator=torch.Generator().manual_seed(2))
    want = ula_covariance(S2 + 0.01 * torch.eye(2, dtype=torch.float64), lr)  # the last level: step = step_lr
    se_cov = torch.sqrt((want ** 2 + torch.outer(torch.diag(want), torch.diag(want))) / n)
    assert ((torch.cov(out.T) - want).abs() < 4 * se_cov).all()
    # the denoising step is Tweedie's formula: E[x0 | x] = MU + S2 (S2 + s^2 I)^-1 (x - MU) for a Gaussian
    den = annealed_langevin(score, x0, sigmas=sigmas, n_steps_each=150, step_lr=lr, denoise=True,
                            generator=torch.Generator().manual_seed(2))
    cov_L = S2 + 0.01 * torch.eye(2, dtype=torch.float64)
    torch.testing.assert_close(den, MU + (out - MU) @ torch.linalg.solve(cov_L, S2))
    # one level is plain Langevin with step step_lr, draw for draw
    one = annealed_langevin(score, x0[:5], sigmas=[0.3], n_steps_each=7, step_lr=0.05,
                            generator=torch.Generator().manual_seed(3))
    ref = langevin(lambda x: score(x, torch.full((5,), 0.3, dtype=torch.float64)), x0[:5], step_size=0.05, n_steps=7,
                   generator=torch.Generator().manual_seed(3))
    assert torch.equal(one, ref)
    with pytest.raises(ValueError, match="strictly decreasing"):
        annealed_langevin(score, x0, sigmas=[0.1, 0.5], n_steps_each=1, step_lr=0.1)


# ------------------------------------------------------------------------------ guidance
def _two_class_mixture():
    return GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]),
                           torch.stack([torch.eye(2) * 0.5, torch.tensor([[1.0, 0.3], [0.3, 0.4]])]),
                           torch.tensor([0.3, 0.7]))


def test_classifier_guidance_is_bayes_rule_on_a_mixture():
    sde, gm = VPSDE(), _two_class_mixture()
    t = 0.3
    alpha, sigma = sde.alpha(torch.tensor(t)).item(), sde.sigma(torch.tensor(t)).item()
    noised = gm.noised(alpha, sigma)
    x = noised.sample(256, generator=torch.Generator().manual_seed(0))
    score = lambda x, t: noised.score(x)  # noqa: E731
    log_p_y = lambda x, t: noised.component_log_probs(x)  # noqa: E731  (log_softmax gives p(y | x_t) exactly)
    y = torch.randint(0, 2, (256,), generator=torch.Generator().manual_seed(1))
    # the conditional score: the score of component y alone, noised
    comp = [GaussianMixture(gm.means[k:k + 1], gm.covs[k:k + 1], torch.ones(1)).noised(alpha, sigma) for k in (0, 1)]
    exact = torch.where((y == 0)[:, None], comp[0].score(x), comp[1].score(x))
    torch.testing.assert_close(guided_score(score, log_p_y, y, 1.0)(x, t), exact, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(guided_score(score, log_p_y, y, 0.0)(x, t), noised.score(x))
    w3 = guided_score(score, log_p_y, y, 3.0)(x, t)
    torch.testing.assert_close(w3, noised.score(x) + 3 * (exact - noised.score(x)), rtol=1e-4, atol=1e-3)
    # the noise-prediction form: eps = -sigma score
    eps = lambda x, t: -sigma * noised.score(x)  # noqa: E731
    got = classifier_guidance(eps, log_p_y, y, 3.0, sde)(x, torch.full((256,), t))
    torch.testing.assert_close(got, -sigma * w3, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="y must lie in"):
        guided_score(score, log_p_y, 2, 1.0)(x, t)
    with pytest.raises(ValueError, match="w must be a finite number"):
        guided_score(score, log_p_y, y, float("nan"))


def test_classifier_free_guidance():
    torch.manual_seed(0)
    net = UNet(in_ch=1, ch=8, ch_mult=(1, 2), n_res=1, groups=4, n_classes=10, dropout=0.0).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)  # a network with an opinion (the head is zero at initialisation)
    x, t, y = torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([3, 1, 4, 1])
    with torch.no_grad():
        cond, uncond = net(x, t, y), net(x, t, None)
        assert (cond - uncond).abs().max() > 1e-2
        torch.testing.assert_close(classifier_free_guidance(net, y, 1.0)(x, t), cond, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(classifier_free_guidance(net, y, 0.0)(x, t), uncond, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(classifier_free_guidance(net, y, 2.5)(x, t), uncond + 2.5 * (cond - uncond),
                                   rtol=1e-4, atol=1e-4)

    def plain(x, t, c):  # a model without null_label: called twice, cond=None for the unconditional half
        return x * (1.0 if c is None else 2.0 + c[:, None, None, None])
    torch.testing.assert_close(classifier_free_guidance(plain, 0, 3.0)(x, t), x * (1 + 3 * (2 - 1)))
    with pytest.raises(TypeError, match="integer class labels"):
        classifier_free_guidance(net, torch.tensor([0.5]), 1.0)(x, t)


def test_classifier_free_guidance_computes_only_the_half_that_counts_at_w_0_and_1():
    """w = 1 is the conditional model and w = 0 the unconditional one: one call on B inputs, the same numbers
    as the two halves computed apart; any other w is one call on 2B inputs (a model with a "none" condition)
    or two on B (one without)."""
    torch.manual_seed(0)
    net = UNet(in_ch=1, ch=8, ch_mult=(1, 2), n_res=1, groups=4, n_classes=10, dropout=0.0).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x, t, y = torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([3, 1, 4, 1])
    calls = []

    def counted(x, t, c):
        calls.append((len(x), None if c is None else c.tolist()))
        return net(x, t, c)
    counted.null_label = net.null_label
    null = [net.null_label] * 4
    with torch.no_grad():
        cond, uncond = net(x, t, y), net(x, t, torch.full_like(y, net.null_label))
        for w, expected, want in ((1.0, [(4, y.tolist())], cond), (0.0, [(4, null)], uncond),
                                  (2.0, [(8, null + y.tolist())], 2 * cond - uncond)):
            calls.clear()
            torch.testing.assert_close(classifier_free_guidance(counted, y, w)(x, t), want, rtol=1e-5, atol=1e-5)
            assert calls == expected, (w, calls)
        del counted.null_label                          # no "none" class: cond=None is the unconditional half
        for w, expected in ((1.0, [(4, y.tolist())]), (0.0, [(4, None)]), (2.0, [(4, None), (4, y.tolist())])):
            calls.clear()
            classifier_free_guidance(counted, y, w)(x, t)
            assert calls == expected, (w, calls)


    class Captioned:                                    # token ids as the condition, all-zero ids as "none"
        def null_cond(self, c):
            return torch.zeros_like(c)

        def __call__(self, x, t, c):
            calls.append((len(x), c.tolist()))
            return x * (1.0 + c.sum(1, keepdim=True)[..., None, None])
    ids = torch.tensor([[2, 5], [1, 1], [3, 0], [4, 4]])
    zeros = [[0, 0]] * 4
    for w, expected, factor in ((1.0, [(4, ids.tolist())], 1 + ids.sum(1)), (0.0, [(4, zeros)], torch.ones(4)),
                                (3.0, [(8, zeros + ids.tolist())], 1 + 3 * ids.sum(1))):
        calls.clear()
        torch.testing.assert_close(classifier_free_guidance(Captioned(), ids, w)(x, t),
                                   x * factor.float()[:, None, None, None])
        assert calls == expected, (w, calls)


# ------------------------------------------------------------------------------ inpainting
def _gaussian_eps_model(schedule, cov):
    """The exact noise predictor E[eps | x_t] for x0 ~ N(0, cov), on images of shape (B, 1, 1, D)."""
    def eps(x, t):
        ab = float(schedule.alpha(t[:1].double()) ** 2)
        a = ab * cov + (1 - ab) * torch.eye(len(cov), dtype=cov.dtype)
        z = x.reshape(x.shape[0], -1).double()
        return (math.sqrt(1 - ab) * torch.linalg.solve(a, z.T).T).reshape(x.shape).to(x.dtype)
    return eps


def test_inpainting_keeps_known_pixels_and_resampling_conditions_better():
    cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    sched = DiscreteSchedule(linear_betas(100, 1e-3, 0.2))
    eps = _gaussian_eps_model(sched, cov)
    x_known = torch.zeros(10_000, 1, 1, 2)
    x_known[..., 0] = 1.5
    mask = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    errors = {}
    for U in (1, 10):
        out = inpaint(sched, eps, x_known, mask, n_steps=100, resample=U, generator=torch.Generator().manual_seed(1))
        assert torch.equal(out[..., 0], x_known[..., 0])  # bit-identical
        errors[U] = abs(out[..., 1].double().mean().item() - 0.9 * 1.5)  # exact E[x_u | x_k = 1.5] = 1.35
    assert errors[10] < 0.1 and errors[1] > 3 * errors[10], errors
    # RePaint's jumps, same U: on this one-mode Gaussian (nothing to re-decide) longer jumps only add error
    # (100 steps: 0.04 one step at a time, 0.08 with jumps of 10, 0.24 with jumps of 25)
    for jump in (10, 25):
        out = inpaint(sched, eps, x_known, mask, n_steps=100, resample=10, jump=jump,
                      generator=torch.Generator().manual_seed(1))
        assert torch.equal(out[..., 0], x_known[..., 0])
        errors[10, jump] = abs(out[..., 1].double().mean().item() - 0.9 * 1.5)
    assert errors[10] < errors[10, 10] < errors[10, 25] and errors[10, 25] > 3 * errors[10], errors


def _mixture_eps_model(schedule, means, covs, weights):
    """The exact noise predictor for x0 ~ sum_k weights_k N(means_k, covs_k) on images of shape (B, 1, 1, D): at
    noise level alpha_bar the data are the mixture with means sqrt(ab) m_k and covariances ab S_k + (1 - ab) I
    (``GaussianMixture.noised``, written out here for speed), and eps = -sqrt(1 - ab) score."""
    means, covs, log_pi = means.double(), covs.double(), weights.double().log()

    def eps(x, t):
        ab = float(schedule.alpha(t[:1].double()) ** 2)
        z = x.reshape(x.shape[0], -1).double()
        a = ab * covs + (1 - ab) * torch.eye(covs.shape[-1], dtype=torch.float64)
        d = z[:, None, :] - math.sqrt(ab) * means
        sol = torch.einsum("mij,bmj->bmi", torch.linalg.inv(a), d)  # a_k^-1 (x - mean_k), (B, M, D)
        r = torch.softmax(log_pi - 0.5 * (d * sol).sum(-1) - 0.5 * torch.logdet(a), 1)
        return (math.sqrt(1 - ab) * (r[..., None] * sol).sum(1)).reshape(x.shape).to(x.dtype)
    return eps


def test_smc_inpainting_weighs_the_modes_that_resampling_does_not():
    # two modes, (1, 2) and (-1, -2), of variances 0.5 (known coordinate) and 0.1; knowing x_k = 0.3, the exact
    # conditional puts 1 / (1 + e^-1.2) = 0.769 on the upper mode. Measured with 10,000 draws (standard error
    # 0.004): replacement 0.55, RePaint U = 10 0.61; the particle filter 0.54 (K = 1), 0.71, 0.76, 0.77 (K = 64)
    sched = DiscreteSchedule(linear_betas(100, 1e-3, 0.2))
    means, covs = torch.tensor([[1.0, 2.0], [-1.0, -2.0]]), torch.diag(torch.tensor([0.5, 0.1])).expand(2, 2, 2)
    eps = _mixture_eps_model(sched, means, covs, torch.tensor([0.5, 0.5]))
    z, a = torch.randn(5, 2, dtype=torch.float64), float(sched.alpha(torch.tensor([0.3], dtype=torch.float64)))
    torch.testing.assert_close(eps(z.view(5, 1, 1, 2), torch.full((5,), 0.3)).view(5, 2).double(),  # the library's
                               -math.sqrt(1 - a * a) * GaussianMixture(means, covs, [0.5, 0.5]).noised(  # exact score
                                   a, math.sqrt(1 - a * a)).score(z).double(), rtol=1e-4, atol=1e-4)
    exact = 1 / (1 + math.exp(-1.2))
    x_known = torch.full((10_000, 1, 1, 2), 0.3)
    mask = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    upper = {}
    for K in (1, 16):
        out = inpaint_smc(sched, eps, x_known, mask, n_steps=100, particles=K,
                          generator=torch.Generator().manual_seed(1))
        assert torch.equal(out[..., 0], x_known[..., 0])
        upper[K] = (out[..., 1] > 0).double().mean().item()
    out = inpaint(sched, eps, x_known, mask, n_steps=100, resample=10, generator=torch.Generator().manual_seed(1))
    upper["RePaint"] = (out[..., 1] > 0).double().mean().item()
    assert abs(upper[16] - exact) < 0.025, upper
    assert upper[1] < exact - 0.15 and upper["RePaint"] < exact - 0.1, upper
    with pytest.raises(ValueError, match="particles"):
        inpaint_smc(sched, eps, x_known, mask, n_steps=10, particles=0)
    with pytest.raises(ValueError, match="ess_threshold"):
        inpaint_smc(sched, eps, x_known, mask, n_steps=10, particles=2, ess_threshold=0)
    with pytest.raises(ValueError, match="only 0 and 1"):
        inpaint_smc(sched, eps, x_known, mask * 0.5, n_steps=10, particles=2)


def test_smc_inpainting_on_a_gaussian_and_in_a_colour_basis():
    # one mode: the conditional mean E[x_u | x_k = 1.5] = 1.35 (error 0.014 with K = 16; replacement's 0.43)
    cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    sched = DiscreteSchedule(linear_betas(100, 1e-3, 0.2))
    x_known = torch.zeros(10_000, 1, 1, 2)
    x_known[..., 0] = 1.5
    out = inpaint_smc(sched, _gaussian_eps_model(sched, cov), x_known, torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2),
                      n_steps=100, particles=16, generator=torch.Generator().manual_seed(1))
    assert abs(out[..., 1].double().mean().item() - 1.35) < 0.04
    q = grey_basis(3)  # colorization: the grey level is kept, the colours redrawn
    x_rgb = torch.rand(6, 3, 4, 4) * 2 - 1
    seen = []
    out = inpaint_smc(sched, lambda x, t: torch.zeros_like(x), x_rgb, torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1),
                      n_steps=10, particles=3, basis=q, generator=torch.Generator().manual_seed(0),
                      callback=lambda d: seen.append(d["ess"]))
    torch.testing.assert_close(out.mean(1), x_rgb.mean(1), rtol=0, atol=3e-5)  # float32 rounding, basis and back
    assert (out - x_rgb).abs().max() > 0.1 and len(seen) == 9  # 10 steps, the last one not weighted
    assert all(((e >= 1 - 1e-9) & (e <= 3 + 1e-9)).all() for e in seen)  # 1 <= ESS <= K


def test_repaint_moves_walk_the_grid():
    for n, U, jump in ((10, 1, 1), (10, 3, 1), (10, 3, 5), (7, 4, 3), (5, 2, 10)):
        moves = repaint_moves(n, U, jump)
        assert moves[0] == (0, 1) and moves[-1] == (n - 1, n)
        assert all(b == a + 1 or b == a - jump >= 0 for a, b in moves)
        assert all(moves[k][1] == moves[k + 1][0] for k in range(len(moves) - 1))  # one connected walk
        down = [a for a, b in moves if b > a]
        # the walk turns back at n - 1, n - 1 - jump, ... (at least jump): every step from the first turn's
        # start to the one before the last is taken U times; the noisiest ones before that, and the last, once
        turns = list(range(n - 1, jump - 1, -jump))
        first = turns[-1] - jump if turns else n - 1
        assert [down.count(p) for p in range(n)] == [U if first <= p < n - 1 else 1 for p in range(n)], (n, U, jump)
        if jump == 1:
            assert len(down) == (n - 1) * U + 1
    with pytest.raises(ValueError, match="jump"):
        repaint_moves(10, 2, 0)


def test_colorization_basis_keeps_the_grey_level():
    q = grey_basis(3)
    torch.testing.assert_close(q @ q.T, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(q[0], torch.full((3,), 1 / math.sqrt(3), dtype=torch.float64))
    sched = DiscreteSchedule(linear_betas(50, 1e-3, 0.3))
    x_known = torch.rand(6, 3, 4, 4) * 2 - 1
    mask = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1)  # coordinate 0 of q @ rgb: the grey level
    out = inpaint(sched, lambda x, t: torch.zeros_like(x), x_known, mask, n_steps=10, basis=q,
                  generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.mean(1), x_known.mean(1), rtol=0, atol=1e-5)
    assert (out - x_known).abs().max() > 0.1  # the colours themselves were redrawn
    with pytest.raises(ValueError, match="orthogonal"):
        inpaint(sched, lambda x, t: x, x_known, mask, n_steps=2, basis=torch.ones(3, 3))
    with pytest.raises(ValueError, match="only 0 and 1"):
        inpaint(sched, lambda x, t: x, x_known, mask * 0.5, n_steps=2)
    with pytest.raises(ValueError, match="broadcast"):
        inpaint(sched, lambda x, t: x, x_known, torch.ones(2, 2), n_steps=2)
