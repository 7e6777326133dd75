"""DDPM's schedules and the one forward-process interface shared with the SDEs, against exact answers."""
import math

import pytest
import torch
from torch import nn

from course_utils.losses import dsm_loss, eps_loss
from course_utils.nets import TimeEmbedding, sinusoidal_features
from course_utils.schedules import (
    DiscreteSchedule,
    ForwardProcess,
    alpha_bars,
    check_t_min,
    cosine_betas,
    linear_betas,
)
from course_utils.sde import VPSDE

D64 = torch.float64


def test_linear_and_cosine_betas_and_alpha_bars():
    b = linear_betas(1000)
    assert b.shape == (1000,) and b.dtype == D64 and b[0].item() == 1e-4 and b[-1].item() == pytest.approx(0.02)
    assert torch.allclose(b[1:] - b[:-1], torch.full((999,), (0.02 - 1e-4) / 999, dtype=D64))
    ab = alpha_bars(b)
    prod, want = 1.0, []
    for beta in b.tolist():  # alpha_bar[i] = prod_{s <= i} (1 - beta[s]), 0-based
        prod *= 1 - beta
        want.append(prod)
    torch.testing.assert_close(ab, torch.tensor(want, dtype=D64), rtol=1e-12, atol=0)
    assert ab[0].item() == pytest.approx(1 - 1e-4)  # alpha_bar[0] already has one step of noise
    # cosine: alpha_bar follows f(t) / f(0), f(t) = cos^2(pi/2 (t/T + s) / (1 + s)), until the clip
    T, s = 100, 0.008
    abc = alpha_bars(cosine_betas(T, s))
    k = torch.arange(1, T + 1, dtype=D64)
    f = lambda u: torch.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    exact = f(k) / f(torch.zeros(1, dtype=D64))
    torch.testing.assert_close(abc[:-1], exact[:-1], rtol=1e-10, atol=1e-14)
    assert cosine_betas(T, s).max().item() == pytest.approx(0.999)  # the last beta is clipped


def test_discrete_schedule_maps_indices_to_grid_times():
    ds = DiscreteSchedule(linear_betas(1000))
    i = torch.tensor([0, 1, 499, 999])
    t = ds.time(i)
    assert t.dtype == torch.float32
    torch.testing.assert_close(t, torch.tensor([1, 2, 500, 1000]) / 1000.0)
    assert torch.equal(ds.index(t), i)
    torch.testing.assert_close(ds.alpha(t.double()) ** 2, ds.alpha_bars[i])
    torch.testing.assert_close(ds.sigma(t.double()) ** 2, 1 - ds.alpha_bars[i])
    zero = ds.time(-1)  # t = 0 is clean data: alpha = 1, sigma = 0 (DDIM's last step goes there)
    assert zero.item() == 0.0 and ds.alpha(zero).item() == 1.0 and ds.sigma(zero).item() == 0.0
    # the network's time features at t = (i + 1) / N are DDPM's features of step number i + 1
    feats = sinusoidal_features(t, 8)
    w = torch.exp(-math.log(10_000) * torch.arange(4, dtype=D64) / 4)
    steps = (i + 1).double()[:, None] * w
    torch.testing.assert_close(feats.double(), torch.cat([steps.cos(), steps.sin()], 1), atol=2e-4, rtol=0)
    # adjacent steps do not alias
    assert (sinusoidal_features(ds.time(torch.tensor([500])), 64)
            - sinusoidal_features(ds.time(torch.tensor([501])), 64)).abs().max() > 0.5


def test_discrete_schedule_refuses_what_it_cannot_mean():
    ds = DiscreteSchedule(linear_betas(10))
    with pytest.raises(ValueError, match="t must be a grid time k / N"):
        ds.alpha(torch.tensor([0.15]))
    with pytest.raises(ValueError, match="t must be a grid time"):
        ds.sigma(torch.tensor([1.1]))
    with pytest.raises(TypeError, match="t must be continuous time"):
        ds.alpha(torch.tensor([3]))
    with pytest.raises(ValueError, match="index must lie in \\[-1, N - 1\\] = \\[-1, 9\\]"):
        ds.time(10)
    with pytest.raises(TypeError, match="index must be an integer step index"):
        ds.time(torch.tensor([0.5]))
    for bad in ([0.1, 1.0], [0.0, 0.1], [[0.1]], [], [0.1, float("nan")]):
        with pytest.raises(ValueError, match="betas must"):
            DiscreteSchedule(torch.tensor(bad, dtype=D64))
    with pytest.raises(ValueError, match="T must be a positive int"):
        linear_betas(0)
    with pytest.raises(ValueError, match="need 0 < beta_start <= beta_end < 1"):
        linear_betas(10, 0.1, 0.01)
    with pytest.raises(ValueError, match="t_min must lie in \\[0, T\\)"):
        check_t_min(1.0, 1.0)
    with pytest.raises(ValueError, match="n must be a positive int"):
        ds.sample_times(0, like=torch.zeros(1))


def test_discrete_sample_times_are_uniform_over_the_grid():
    ds = DiscreteSchedule(linear_betas(10))
    x = torch.zeros(1)
    t = ds.sample_times(100_000, like=x, generator=torch.Generator().manual_seed(0))
    k = ds.index(t) + 1
    counts = torch.bincount(k, minlength=11).double() / len(t)
    assert counts[0] == 0 and ((counts[1:] - 0.1).abs() < 4 * math.sqrt(0.09 / 1e5)).all()
    t2 = ds.sample_times(10_000, like=x, t_min=0.5, generator=torch.Generator().manual_seed(1))
    assert set((ds.index(t2) + 1).tolist()) == {6, 7, 8, 9, 10}  # k / N > t_min
    u = VPSDE().sample_times(100_000, like=x, t_min=0.2, generator=torch.Generator().manual_seed(2))
    assert u.min() > 0.2 and u.max() <= 1.0 and abs(u.mean().item() - 0.6) < 4 * 0.8 / math.sqrt(12e5)


class TinyDenoiser(nn.Module):
    """A stand-in for chapter 3's U-Net: a conv net with a time embedding, forward(x, t, cond=None)."""

    def __init__(self):
        super().__init__()
        self.embed = TimeEmbedding(16)
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 1, 3, padding=1)

    def forward(self, x, t, cond=None):
        h = torch.relu(self.conv1(x) + self.embed(t)[:, :, None, None])
        return self.conv2(h)


def test_one_loss_serves_sdes_and_ddpm():
    """eps_loss with a DiscreteSchedule is DDPM's L_simple computed by hand; the network sees the
    continuous times of the drawn steps, and trains without any special case."""
    ds = DiscreteSchedule(linear_betas(100))
    x0 = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    eps = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    i = torch.tensor([0, 5, 17, 50, 98, 99])
    seen = []

    def eps_fn(x, t):
        seen.append(t)
        return 0.3 * x
    got = eps_loss(eps_fn, x0, ds, t=ds.time(i), eps=eps)
    ab = ds.alpha_bars[i].float()[:, None, None, None]
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    torch.testing.assert_close(got, ((0.3 * xt - eps) ** 2).flatten(1).sum(1))
    assert seen[0].dtype == torch.float32 and torch.equal(seen[0], ds.time(i))
    # eps-prediction is DSM with lambda = sigma^2 for the discrete process too
    torch.manual_seed(0)
    net = TinyDenoiser()
    with torch.no_grad():
        a = eps_loss(net, x0, ds, t=ds.time(i), eps=eps)
        b = dsm_loss(lambda x, t: -net(x, t) / ds.sigma(t)[:, None, None, None], x0, ds, t=ds.time(i), eps=eps)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # a few training steps on random times: the drawn times are grid times, the loss falls
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(5)
    data = torch.randn(64, 1, 4, 4, generator=g).sign() * 0.8
    losses = []
    for _ in range(150):
        loss = eps_loss(net, data, ds, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # predicting eps = 0 scores E|eps|^2 = 16 (the number of pixels) exactly; the trained net does better
    assert sum(losses[-20:]) / 20 < 0.75 * 16
    assert isinstance(ds, ForwardProcess) and isinstance(VPSDE(), ForwardProcess)


def test_x0_estimates_invert_the_forward_process():
    for proc, t in ((VPSDE(), torch.tensor([0.3, 0.7], dtype=D64)),
                    (DiscreteSchedule(linear_betas(100)), torch.tensor([0.3, 0.7], dtype=D64))):
        x0, eps = torch.randn(2, 3, dtype=D64), torch.randn(2, 3, dtype=D64)
        xt = proc.perturb(x0, t, eps)
        torch.testing.assert_close(proc.x0_from_eps(xt, t, eps), x0)
        sigma = proc.sigma(t)[:, None]
        # for a point mass at x0 the noised score at x_t is -eps / sigma, and Tweedie gives back x0
        torch.testing.assert_close(proc.x0_from_score(xt, t, -eps / sigma), x0)


def test_times_keep_their_precision_next_to_low_precision_data():
    """Half-precision data must not round DDPM's grid times (neighbouring steps would coincide)."""
    ds = DiscreteSchedule(linear_betas(1000))
    for dtype in (torch.float16, torch.bfloat16):
        x0 = torch.randn(8, 1, 2, 2).to(dtype)
        t = ds.sample_times(1000, like=x0, generator=torch.Generator().manual_seed(6))
        assert t.dtype == torch.float32 and ds.index(t).min() >= 0
        seen = []
        loss = eps_loss(lambda x, tt, seen=seen: seen.append(tt) or torch.zeros_like(x), x0, ds,
                        generator=torch.Generator())
        assert loss.dtype == dtype and seen[0].dtype == torch.float32
    # what rounding to the data's dtype would do: bfloat16 keeps 8 significant bits
    assert len(torch.unique(ds.time(torch.arange(1000)).to(torch.bfloat16))) < 600
    assert ds.time(torch.tensor([332]), dtype=D64).item() == 0.333


def test_sample_times_respect_an_open_lower_end():
    for dtype in (torch.float32, D64):
        like = torch.zeros(1, dtype=dtype)
        ds = DiscreteSchedule(linear_betas(100))
        t = ds.sample_times(20_000, like=like, t_min=0.29, generator=torch.Generator().manual_seed(7))
        assert t.min() > 0.29 and t.min().item() == pytest.approx(0.30)  # k = 30 is the first k / N > 0.29
    # the continuous draw reaches T and stays above t_min even at the ends of rand's range, where
    # t_min + (T - t_min)(1 - u) rounds to t_min when t_min is close to T
    vp = VPSDE()
    import course_utils.schedules as sch
    orig = sch.rand
    try:
        for dtype, u_max in ((torch.float32, 1 - 2 ** -24), (D64, 1 - 2 ** -53)):
            for u in (0.0, u_max):
                sch.rand = lambda shape, u=u, **kw: torch.full(shape, u, dtype=kw["dtype"])
                for t_min in (0.3, 0.999):
                    t = vp.sample_times(3, like=torch.zeros(1, dtype=dtype), t_min=t_min)
                    assert (t > t_min).all() and (t <= 1.0).all(), (dtype, u, t_min, t)
                    assert u != 0.0 or (t == 1.0).all()
    finally:
        sch.rand = orig


def test_non_finite_times_are_refused():
    ds, vp = DiscreteSchedule(linear_betas(10)), VPSDE()
    x0 = torch.zeros(3, 2)
    nan = torch.tensor([0.5, float("nan"), 0.5])
    with pytest.raises(ValueError, match="t must be finite"):
        eps_loss(lambda x, t: x, x0, vp, t=nan)
    with pytest.raises(ValueError, match="t must be finite"):
        vp.perturb(x0, float("nan"), x0)
    with pytest.raises(ValueError, match="t must be finite"):
        ds.alpha(nan)
