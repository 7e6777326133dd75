import math

import pytest
import torch
from torch import nn

from course_utils.losses import dsm_loss, eps_loss, explicit_sm_loss, implicit_sm_loss, ssm_loss
from course_utils.nets import ScoreMLP, TimeEmbedding, TimeMLP, sinusoidal_features
from course_utils.sde import VESDE, VPSDE

D64 = torch.float64
MU = torch.tensor([0.5, -1.0], dtype=D64)
SIGMA = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=D64)
PREC = torch.linalg.inv(SIGMA)


def gaussian_data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return MU + torch.randn(n, 2, generator=g, dtype=D64) @ torch.linalg.cholesky(SIGMA).T


def true_score(x):
    return -(x - MU) @ PREC  # PREC is symmetric


def perturbed(delta):
    return lambda x: true_score(x) + delta * (x - MU) @ torch.tensor([[1.0, 0.5], [-0.2, 1.0]], dtype=D64)


def test_explicit_sm_value_at_the_true_score_is_closed_form():
    # J(s*) = E[tr grad s* + |s*|^2 / 2] = -tr(Sigma^-1) + tr(Sigma^-1) / 2 = -tr(Sigma^-1) / 2
    vals = implicit_sm_loss(true_score, gaussian_data(100_000))
    se = vals.std().item() / math.sqrt(len(vals))
    assert abs(vals.mean().item() + 0.5 * PREC.trace().item()) < 4 * se


@pytest.mark.parametrize("loss", ["explicit", "ssm-gauss", "ssm-rademacher", "ssm-vr"])
def test_true_score_minimises_static_losses(loss):
    x = gaussian_data(50_000, seed=1)

    def value(score_fn):
        g = torch.Generator().manual_seed(2)  # the same projections for every candidate
        if loss == "explicit":
            return implicit_sm_loss(score_fn, x).mean().item()
        kind = "rademacher" if loss == "ssm-rademacher" else "gaussian"
        return ssm_loss(score_fn, x, kind=kind, variance_reduced=loss == "ssm-vr", generator=g).mean().item()
    best = value(true_score)
    for delta in (-0.2, -0.05, 0.05, 0.2):
        assert value(perturbed(delta)) > best


def test_sliced_and_explicit_agree_in_expectation():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 3)).double()
    x = torch.randn(5, 3, dtype=D64)
    exact = implicit_sm_loss(net, x)
    for kind in ["gaussian", "rademacher"]:
        for vr in (False, True):
            g = torch.Generator().manual_seed(4)
            draws = torch.stack([ssm_loss(net, x, kind=kind, variance_reduced=vr, generator=g) for _ in range(4000)])
            se = draws.std(0) / math.sqrt(len(draws))
            assert ((draws.mean(0) - exact).abs() < 4 * se + 1e-12).all(), (kind, vr)
    # averaging n projections inside one call is the same estimator
    one = ssm_loss(net, x, n_projections=4000, generator=torch.Generator().manual_seed(5))
    assert (one - exact).abs().max() < 0.1 * exact.abs().max() + 0.05


def test_dsm_target_is_the_score_of_the_gaussian_kernel():
    sde = VPSDE()
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(64, 2, generator=g, dtype=D64)
    eps = torch.randn(64, 2, generator=g, dtype=D64)
    t = torch.rand(64, generator=g, dtype=D64) * 0.9 + 0.05
    xt = sde.perturb(x0, t, eps).requires_grad_(True)
    alpha, sigma = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    log_kernel = (-0.5 * ((xt - alpha * x0) / sigma) ** 2).sum()  # log N(x_t; alpha x0, sigma^2 I) + const
    kernel_score = torch.autograd.grad(log_kernel, xt)[0]
    torch.testing.assert_close(kernel_score, -eps / sigma)
    # and the loss is zero exactly for a model that outputs that target
    zero = dsm_loss(lambda x, tt: -eps / sigma, x0, sde, t=t.float(), eps=eps)
    assert zero.abs().max() < 1e-10


def noised_gaussian_score(sde, t):
    a, s = float(sde.alpha(torch.tensor(t))), float(sde.sigma(torch.tensor(t)))
    cov = a ** 2 * SIGMA + s ** 2 * torch.eye(2, dtype=D64)
    return lambda x: -(x - a * MU) @ torch.linalg.inv(cov)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(0.01, 10.0)], ids=["VP", "VE"])
def test_true_noised_score_minimises_dsm(sde):
    x0 = gaussian_data(50_000, seed=7)
    t = torch.full((len(x0),), 0.6)  # noise level sigma(t) well above 0: the DSM target is not too noisy
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(8), dtype=D64)

    def value(fn):
        return dsm_loss(lambda x, tt: fn(x), x0, sde, t=t, eps=eps).mean().item()
    s_t = noised_gaussian_score(sde, 0.6)
    best = value(s_t)
    for delta in (-0.2, -0.05, 0.05, 0.2):
        assert value(lambda x, d=delta: s_t(x) + d * x) > best


def test_linear_model_trained_with_dsm_recovers_the_closed_form_score():
    sde = VPSDE()
    t_fixed = 0.2
    model = nn.Linear(2, 2).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 1500)
    torch.manual_seed(9)
    for _ in range(1500):
        x0 = gaussian_data(1024, seed=torch.randint(0, 10 ** 9, (1,)).item())
        loss = dsm_loss(lambda x, tt: model(x), x0, sde, t=torch.full((1024,), t_fixed)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    a, s = float(sde.alpha(torch.tensor(t_fixed))), float(sde.sigma(torch.tensor(t_fixed)))
    prec_t = torch.linalg.inv(a ** 2 * SIGMA + s ** 2 * torch.eye(2, dtype=D64))
    torch.testing.assert_close(model.weight.detach(), -prec_t, atol=0.05, rtol=0.05)
    torch.testing.assert_close(model.bias.detach(), prec_t @ (a * MU), atol=0.05, rtol=0.05)


def test_eps_loss_is_dsm_with_sigma_squared_weighting():
    sde = VPSDE()
    torch.manual_seed(10)
    net = ScoreMLP(2, 32, 2)
    x0 = torch.randn(16, 2)
    t, eps = sde.sample_times(16, like=x0), torch.randn(16, 2)
    with torch.no_grad():
        a = eps_loss(net, x0, sde, t=t, eps=eps)
        b = dsm_loss(lambda x, tt: -net(x, tt) / sde.sigma(tt)[:, None], x0, sde, t=t, eps=eps)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_losses_return_one_value_per_example_and_train():
    sde = VPSDE()
    net = ScoreMLP(2, 32, 2)
    x0 = torch.randn(10, 2)
    assert dsm_loss(net, x0, sde).shape == (10,)
    assert eps_loss(net, x0, sde).shape == (10,)
    static = nn.Linear(2, 2)
    assert implicit_sm_loss(static, x0).shape == (10,) and ssm_loss(static, x0).shape == (10,)
    implicit_sm_loss(static, x0).mean().backward()  # differentiable w.r.t. parameters
    assert static.weight.grad is not None


def test_nets_shapes_and_time_features():
    net = ScoreMLP(2, 32, 2, n_classes=3)
    x = torch.randn(5, 2)
    assert net(x, torch.rand(5)).shape == (5, 2)
    assert net(x, torch.tensor(0.5)).shape == (5, 2)
    assert net(x, torch.rand(5), cond=torch.tensor([0, 1, 2, 0, 1])).shape == (5, 2)
    f = sinusoidal_features(torch.tensor([0.0, 0.5]), 8)
    assert f.shape == (2, 8) and torch.equal(f[0], torch.cat([torch.ones(4), torch.zeros(4)]))
    assert TimeEmbedding(16)(torch.rand(3)).shape == (3, 16)
    # a float64 network gets float64 features; a float32 one float32, whatever t's dtype
    double = ScoreMLP(2, 16, 1).double()
    assert double(torch.randn(5, 2, dtype=D64), torch.rand(5, dtype=D64)).dtype == D64
    assert net(x, torch.rand(5, dtype=D64)).dtype == torch.float32
    half = ScoreMLP(2, 16, 1).to(torch.bfloat16)  # times stay float32; the features follow the network
    assert half(torch.randn(5, 2).to(torch.bfloat16), torch.rand(5)).dtype == torch.bfloat16


def test_losses_and_nets_bad_inputs():
    sde = VPSDE()
    x0 = torch.randn(4, 2)
    with pytest.raises(ValueError, match="score_fn must return the shape of the data"):
        dsm_loss(lambda x, t: x[:, :1], x0, sde)
    with pytest.raises(ValueError, match="eps_fn must return the shape of the data"):
        eps_loss(lambda x, t: x.sum(1), x0, sde)
    with pytest.raises(ValueError, match="non-negative weights"):
        dsm_loss(lambda x, t: x, x0, sde, weighting=lambda t: -torch.ones_like(t))
    with pytest.raises(ValueError, match="weighting must be"):
        dsm_loss(lambda x, t: x, x0, sde, weighting="likelihood")
    with pytest.raises(ValueError, match="t must lie in \\(t_min, T\\]"):
        dsm_loss(lambda x, t: x, x0, sde, t=torch.tensor([0.5, 0.5, 0.0, 0.5]))
    with pytest.raises(ValueError, match="t must lie in \\[0, T\\]"):
        eps_loss(lambda x, t: x, x0, sde, t=torch.full((4,), 1.5))
    with pytest.raises(ValueError, match="t must be a scalar or have shape \\(B,\\)"):
        dsm_loss(lambda x, t: x, x0, sde, t=torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="t must be a scalar or have shape \\(B,\\)"):
        dsm_loss(lambda x, t: x, x0, sde, t=torch.full((4, 1), 0.5))
    # a scalar time is repeated over the batch
    torch.testing.assert_close(dsm_loss(lambda x, t: -x, x0, sde, t=torch.tensor(0.5), eps=x0),
                               dsm_loss(lambda x, t: -x, x0, sde, t=torch.full((4,), 0.5), eps=x0))
    with pytest.raises(TypeError, match="t must be continuous time"):
        eps_loss(lambda x, t: x, x0, sde, t=torch.full((4,), 1))
    with pytest.raises(TypeError, match="process must be a schedules.ForwardProcess"):
        eps_loss(lambda x, t: x, x0, "vp")
    with pytest.raises(ValueError, match="n_projections must be a positive int"):
        ssm_loss(lambda x: x, x0, n_projections=0)
    with pytest.raises(ValueError, match="t_min must lie in"):
        dsm_loss(lambda x, t: x, x0, sde, t_min=2.0)
    with pytest.raises(ValueError, match="score_fn must return the shape"):
        implicit_sm_loss(lambda x: x[:, :1], x0)
    with pytest.raises(ValueError, match="kind must be"):
        ssm_loss(lambda x: x, x0, kind="uniform")
    net = ScoreMLP(2, 16, 1)
    with pytest.raises(ValueError, match="x must have last dimension 2"):
        net(torch.randn(4, 3), torch.rand(4))
    with pytest.raises(ValueError, match="t must be a scalar or have shape \\(B,\\)"):
        net(torch.randn(4, 2), torch.rand(3))
    with pytest.raises(ValueError, match="built without n_classes"):
        net(torch.randn(4, 2), torch.rand(4), cond=torch.zeros(4, dtype=torch.long))
    labelled = ScoreMLP(2, 16, 1, n_classes=3)
    with pytest.raises(ValueError, match="class labels in \\[0, n_classes\\) = \\[0, 3\\)"):
        labelled(torch.randn(4, 2), torch.rand(4), cond=torch.tensor([0, 1, 3, 2]))
    with pytest.raises(ValueError, match="class labels in"):
        labelled(torch.randn(4, 2), torch.rand(4), cond=torch.tensor([0, -1, 1, 2]))
    with pytest.raises(ValueError, match="cond must be an int64 tensor"):
        labelled(torch.randn(4, 2), torch.rand(4), cond=torch.tensor([0.0, 1.0, 1.0, 2.0]))
    # networks take continuous time; a DDPM step index must be converted first
    for bad in (999, 0):
        with pytest.raises(TypeError, match="t must be continuous time \\(a float\\), got the int"):
            net(torch.randn(4, 2), bad)
        with pytest.raises(TypeError, match="got the int"):
            TimeMLP(2, 8, 1)(torch.randn(4, 2), bad)
    for bad in (torch.tensor([0, 1, 2, 999]), torch.arange(4, dtype=torch.int32)):
        with pytest.raises(TypeError, match="t must be continuous time"):
            net(torch.randn(4, 2), bad)
        with pytest.raises(TypeError, match="t must be continuous time"):
            TimeEmbedding(16)(bad)
    with pytest.raises(ValueError, match="dim must be even"):
        sinusoidal_features(torch.rand(3), 7)


def test_implicit_and_explicit_score_matching_differ_by_a_constant():
    """J(s) - F(s) does not depend on s (Hyvarinen's integration by parts): the same constant for two
    different scores, on the same samples, within Monte Carlo error."""
    x = gaussian_data(200_000, seed=11)
    diffs = []
    for delta in (0.0, 0.3):
        f = perturbed(delta)
        J = implicit_sm_loss(f, x).detach()
        F = explicit_sm_loss(f, x, true_score).detach()
        diffs.append(J - F)
    gap = (diffs[1] - diffs[0]).mean().item()
    se = (diffs[1] - diffs[0]).std().item() / math.sqrt(len(x))
    assert abs(gap) < 4 * se
    assert explicit_sm_loss(perturbed(0.3), x, true_score).mean() > 0.01  # and F itself is not constant
    assert explicit_sm_loss(true_score, x, true_score).abs().max() == 0
