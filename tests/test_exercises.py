"""Each checker accepts a correct answer (the solutions hidden in the notebooks) and rejects wrong ones."""
import math

import torch

from course_utils import exercises as ex
from course_utils.sde import VPSDE


def euler_solve(f, z0, t0, t1, n_steps):
    z, h = z0, (t1 - t0) / n_steps
    for i in range(n_steps):
        z = z + h * f(t0 + i * h, z)
    return z


def _euler_from_zero(f, z0, t0, t1, n_steps):  # a common slip: step times k h, forgetting t0
    z, h = z0, (t1 - t0) / n_steps
    for i in range(n_steps):
        z = z + h * f(i * h, z)
    return z


def midpoint_solve(f, z0, t0, t1, n_steps):  # second order: not Euler
    z, h = z0, (t1 - t0) / n_steps
    for i in range(n_steps):
        z = z + h * f(t0 + (i + 0.5) * h, z + 0.5 * h * f(t0 + i * h, z))
    return z


def tanh_divergence(W, b, x):
    return ((1 - torch.tanh(x @ W.T + b) ** 2) * W.diagonal()).sum(1)


def affine_flow_log_prob(x, A, b):
    z = torch.linalg.solve(A, (x - b).T).T
    return -0.5 * (z ** 2).sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi) - torch.linalg.slogdet(A)[1]


def hutchinson_trace(matvec, D, n_probes, generator):
    v = torch.randint(0, 2, (D, n_probes), generator=generator, dtype=torch.float64) * 2 - 1
    return (v * matvec(v)).sum(0).mean()


def gaussian_hutchinson_trace(matvec, D, n_probes, generator):  # unbiased, but the wrong variance
    v = torch.randn(D, n_probes, generator=generator, dtype=torch.float64)
    return (v * matvec(v)).sum(0).mean()


def adjoint_state(theta, z0, T, t):
    zT = z0 * math.exp(theta * T)
    return zT * math.exp(theta * (T - t))


def not_attempted(*args):
    raise NotImplementedError


def test_checkers_accept_solutions(capsys):
    assert ex.check_euler_solve(euler_solve)
    assert ex.check_tanh_divergence(tanh_divergence)
    assert ex.check_affine_flow_log_prob(affine_flow_log_prob)
    assert ex.check_hutchinson_trace(hutchinson_trace)
    assert ex.check_adjoint_state(adjoint_state)
    assert capsys.readouterr().out.count("✓") == 5


def test_checkers_reject_wrong_answers(capsys):
    assert not ex.check_euler_solve(midpoint_solve)
    assert not ex.check_euler_solve(_euler_from_zero)  # forgot t0: evaluates f at k h instead of t0 + k h
    assert not ex.check_tanh_divergence(lambda W, b, x: (1 - torch.tanh(x @ W.T + b) ** 2).sum(1))
    assert not ex.check_affine_flow_log_prob(  # forgot the log-determinant
        lambda x, A, b: affine_flow_log_prob(x, A, b) + torch.linalg.slogdet(A)[1])
    assert not ex.check_hutchinson_trace(gaussian_hutchinson_trace)
    assert not ex.check_hutchinson_trace(lambda matvec, D, n, g: matvec(torch.eye(D, dtype=torch.float64)).trace())
    assert not ex.check_hutchinson_trace(  # one probe whatever n_probes says
        lambda matvec, D, n, g: hutchinson_trace(matvec, D, 1, g))
    assert not ex.check_adjoint_state(lambda theta, z0, T, t: z0 * math.exp(theta * t))  # z(t), not a(t)
    out = capsys.readouterr().out
    assert out.count("✗") == 8 and "✓" not in out


def test_checkers_report_unattempted_and_crashing_answers(capsys):
    assert not ex.check_euler_solve(not_attempted)
    assert not ex.check_tanh_divergence(lambda W, b, x: 1 / 0)
    out = capsys.readouterr().out
    assert "not attempted yet" in out and "ZeroDivisionError" in out


# chapter 1 -------------------------------------------------------------------------------------
def wiener_paths(n_paths, n_steps, T, generator):
    dW = math.sqrt(T / n_steps) * torch.randn(n_paths, n_steps, generator=generator)
    return torch.cat([torch.zeros(n_paths, 1), dW.cumsum(1)], 1)


def ou_marginal(theta, s, x0, t):
    return x0 * math.exp(-theta * t), s ** 2 * (1 - math.exp(-2 * theta * t)) / (2 * theta)


def gaussian_flow(x_T, m, v, n_steps, lam=0.5):
    vp = VPSDE()
    ts = torch.linspace(1.0, 1e-3, n_steps + 1, dtype=torch.float64)
    x = x_T
    for t, t_next in zip(ts[:-1], ts[1:]):
        a, s = vp.alpha(t), vp.sigma(t)
        score = -(x - a * m) / (a ** 2 * v + s ** 2)
        x = x + (-0.5 * vp.beta(t) * x - lam * vp.beta(t) * score) * (t_next - t)
    return x


def stationary_log_density(x, g):
    return -2 * (x ** 4 / 4 - x ** 2 / 2) / g ** 2


def test_chapter1_checkers(capsys):
    assert ex.check_wiener_paths(wiener_paths)
    assert ex.check_ou_marginal(ou_marginal)
    assert ex.check_gaussian_flow(gaussian_flow)
    assert ex.check_stationary_log_density(stationary_log_density)
    assert not ex.check_wiener_paths(lambda n, m, T, g: wiener_paths(n, m, T, g) * 2)  # variance 4h
    assert not ex.check_wiener_paths(  # an off-by-one step size: increments 2% too small in variance
        lambda n, m, T, g: wiener_paths(n, m, T * m / (m + 1), g))
    assert not ex.check_wiener_paths(  # uniform increments of the right variance: not Gaussian
        lambda n, m, T, g: torch.cat([torch.zeros(n, 1), (math.sqrt(3 * T / m) * (2 * torch.rand(n, m, generator=g) - 1)
                                                          ).cumsum(1)], 1))
    assert not ex.check_ou_marginal(lambda th, s, x0, t: (x0 * math.exp(-th * t), s ** 2 * t))  # Brownian variance
    assert not ex.check_gaussian_flow(lambda x, m, v, n: gaussian_flow(x, m, v, n, lam=1.0))  # the SDE's drift
    assert not ex.check_gaussian_flow(lambda x, m, v, n: gaussian_flow(x, m, v, n, lam=-0.5))  # score's sign
    assert not ex.check_gaussian_flow(lambda x, m, v, n: gaussian_flow(x, m, v, 20))  # too few steps
    assert not ex.check_stationary_log_density(lambda x, g: -(x ** 4 / 4 - x ** 2 / 2))  # forgot 2 / g^2
    out = capsys.readouterr().out
    assert out.count("✓") == 4 and out.count("✗") == 8


# chapter 2 -------------------------------------------------------------------------------------
def fisher_divergence_1d(m1, v1, m2, v2):
    a, b = 1 / v1 - 1 / v2, m2 / v2 - m1 / v1
    return 0.5 * (a ** 2 * (v1 + m1 ** 2) + 2 * a * b * m1 + b ** 2)


def dsm_linear_minimiser(m, v, sigma):
    return -1 / (v + sigma ** 2), m / (v + sigma ** 2)


def tweedie_denoise(xt, score, alpha, sigma):
    return (xt + sigma ** 2 * score) / alpha


def dsm_floor(v, alpha, sigma, lam):
    return lam * alpha ** 2 * v / (sigma ** 2 * (alpha ** 2 * v + sigma ** 2))


def test_chapter2_checkers(capsys):
    assert ex.check_dsm_floor(dsm_floor)
    assert not ex.check_dsm_floor(lambda v, a, s, lam: a ** 2 * v / (s ** 2 * (a ** 2 * v + s ** 2)))  # ignores lam
    assert not ex.check_dsm_floor(lambda v, a, s, lam: lam / s ** 2)  # the noise alone: forgets what x_t predicts
    assert ex.check_fisher_divergence_1d(fisher_divergence_1d)
    assert ex.check_dsm_linear_minimiser(dsm_linear_minimiser)
    assert ex.check_tweedie_denoise(tweedie_denoise)
    assert not ex.check_fisher_divergence_1d(lambda m1, v1, m2, v2: (m1 - m2) ** 2 / 2)  # ignores variances
    assert not ex.check_dsm_linear_minimiser(lambda m, v, s: (-1 / v, m / v))  # the clean data's score
    assert not ex.check_tweedie_denoise(lambda xt, score, alpha, sigma: xt + sigma ** 2 * score)  # forgot 1/alpha
    out = capsys.readouterr().out
    assert out.count("✓") == 4 and out.count("✗") == 5


# chapter 3 -------------------------------------------------------------------------------------
def forward_variance(betas):
    var, out = 0.0, []
    for b in betas.tolist():
        var = (1 - b) * var + b
        out.append(var)
    return torch.tensor(out, dtype=torch.float64)


def posterior_mean_var(x0, xt, ab_prev, ab, beta):
    mean = (ab_prev ** 0.5 * beta / (1 - ab)) * x0 + ((1 - beta) ** 0.5 * (1 - ab_prev) / (1 - ab)) * xt
    return mean, (1 - ab_prev) / (1 - ab) * beta


def ddim_step(x, eps_hat, ab, ab_next, eta, z):
    x0_hat = (x - (1 - ab) ** 0.5 * eps_hat) / ab ** 0.5
    sigma = eta * ((1 - ab_next) / (1 - ab)) ** 0.5 * (1 - ab / ab_next) ** 0.5
    return ab_next ** 0.5 * x0_hat + (1 - ab_next - sigma ** 2) ** 0.5 * eps_hat + sigma * z


def vlb_weight(beta, ab, var):
    return beta ** 2 / (2 * var * (1 - beta) * (1 - ab))


def test_chapter3_checkers(capsys):
    assert ex.check_forward_variance(forward_variance)
    assert ex.check_posterior_mean_var(posterior_mean_var)
    assert ex.check_ddim_step(ddim_step)
    assert ex.check_vlb_weight(vlb_weight)
    assert not ex.check_forward_variance(lambda b: torch.cumsum(b, 0))  # adds the betas: no shrinking of x0
    assert not ex.check_posterior_mean_var(lambda x0, xt, abp, ab, b: (xt, b))  # the prior's variance and no x0
    assert not ex.check_ddim_step(lambda x, e, ab, abn, eta, z: ddim_step(x, e, ab, abn, 0.0, z))  # ignores eta
    assert not ex.check_vlb_weight(lambda b, ab, v: b / (2 * v))  # forgets the eps -> mean scaling
    out = capsys.readouterr().out
    assert out.count("✓") == 4 and out.count("✗") == 4


# Chapter 4: the reference solutions and one typical mistake each.
def langevin_step(x, score, h, tau, z):
    return x + 0.5 * h * score(x) + math.sqrt(tau * h) * z


def class_posterior_grad(mixture, x, y):
    xr = x.clone().requires_grad_(True)
    comp = mixture.component_log_probs(xr)
    logp = (comp[torch.arange(len(y)), y] - torch.logsumexp(comp, dim=1)).sum()
    return torch.autograd.grad(logp, xr)[0]


def ncsn_loss(score_fn, x0, sigmas, eps):
    s = sigmas[:, None]
    return (s[:, 0] ** 2 * (score_fn(x0 + s * eps, sigmas) + eps / s).pow(2).sum(1)).mean()


def grey_basis_solution():
    q, _ = torch.linalg.qr(torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64))
    return (q * torch.sign(q[0, 0])).T


def systematic_resample(w, u):
    K = len(w)
    return torch.searchsorted(torch.cumsum(w, 0), (u + torch.arange(K, dtype=w.dtype)) / K).clamp(max=K - 1)


def test_chapter4_checkers(capsys):
    assert ex.check_langevin_step(langevin_step)
    assert ex.check_class_posterior_grad(class_posterior_grad)
    assert ex.check_ncsn_loss(ncsn_loss)
    assert ex.check_grey_basis(grey_basis_solution)
    assert ex.check_systematic_resample(systematic_resample)
    assert not ex.check_langevin_step(lambda x, s, h, tau, z: x + h * s(x) + math.sqrt(2 * tau * h) * z)  # other form
    assert not ex.check_class_posterior_grad(lambda m, x, y: m.score(x))  # the mixture's score, not the class's
    assert not ex.check_ncsn_loss(lambda f, x0, s, e: (f(x0 + s[:, None] * e, s) + e / s[:, None]).pow(2).sum(1).mean())
    assert not ex.check_grey_basis(lambda: torch.eye(3))  # orthogonal, but no grey direction
    assert not ex.check_systematic_resample(  # K independent draws: right on average, not the systematic indices
        lambda w, u: torch.multinomial(w, len(w), replacement=True, generator=torch.Generator().manual_seed(0)))
    assert not ex.check_systematic_resample(  # the points u + k / K: u not divided by K, they run past 1
        lambda w, u: torch.searchsorted(torch.cumsum(w, 0), u + torch.arange(len(w), dtype=w.dtype) / len(w)).clamp(
            max=len(w) - 1))
    out = capsys.readouterr().out
    assert out.count("✓") == 5 and out.count("✗") == 6


def test_chapter5_checkers(capsys):
    from course_utils.guidance import threshold_x0

    def clip_loss_mine(logits):
        t = torch.arange(len(logits))
        return (torch.nn.functional.cross_entropy(logits, t) + torch.nn.functional.cross_entropy(logits.T, t)) / 2

    def cross_attention(q, kp, vp, kt, vt, mask):
        k, v = torch.cat([kp, kt], 1), torch.cat([vp, vt], 1)
        keep = torch.cat([torch.ones(mask.shape[0], kp.shape[1], dtype=torch.bool), mask], 1)
        s = (q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])).masked_fill(~keep[:, None, :], float("-inf"))
        return s.softmax(-1) @ v

    def dynamic(x0, p):
        s = torch.quantile(x0.abs().flatten(1), p, dim=1).clamp(min=1)[:, None, None, None]
        return torch.maximum(torch.minimum(x0, s), -s) / s

    assert ex.check_clip_loss(clip_loss_mine)
    assert ex.check_caption_log_probs(lambda f, g, s: torch.log_softmax(s * f @ g.T, dim=1))
    assert ex.check_cross_attention(cross_attention)
    assert ex.check_dynamic_threshold(dynamic)
    assert ex.check_dynamic_threshold(lambda x0, p: threshold_x0(x0, "dynamic", p))
    t = lambda lg: torch.nn.functional.cross_entropy(lg, torch.arange(len(lg)))  # noqa: E731  one half only
    assert not ex.check_clip_loss(t)
    assert not ex.check_caption_log_probs(lambda f, g, s: torch.log_softmax(s * f @ g.T, dim=0))  # over images
    assert not ex.check_cross_attention(lambda q, kp, vp, kt, vt, m: cross_attention(q, kp, vp, kt, vt, m | True))
    assert not ex.check_dynamic_threshold(lambda x0, p: x0.clamp(-1, 1))                         # static
    out = capsys.readouterr().out
    assert out.count("✓") == 5 and out.count("✗") == 4
    assert "only the image-to-caption half" in out and "normalise over captions" in out
    assert "padding tokens are attended to" in out and "that is static clipping" in out
