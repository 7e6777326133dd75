import math

import pytest
import torch

from course_utils.data import GaussianMixture, example_mixture
from course_utils.metrics import (
    distance_ratio,
    energy_distance,
    flops_per_item,
    interleaved_best_seconds,
    mode_weights,
    noise_floor,
    sample_quality,
    sliced_wasserstein,
)


def test_energy_distance_of_shifted_gaussians_closed_form():
    # 1-D: for X ~ N(0, 1), Y ~ N(m, 1): E|X - Y| = E|N(m, 2)|, E|X - X'| = 2 / sqrt(pi)
    g = torch.Generator().manual_seed(0)
    m, n = 1.0, 4000
    x = torch.randn(n, 1, generator=g, dtype=torch.float64)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64) + m
    s = math.sqrt(2)
    e_xy = s * math.sqrt(2 / math.pi) * math.exp(-m ** 2 / (2 * s ** 2)) + m * math.erf(m / (s * math.sqrt(2)))
    exact = 2 * e_xy - 2 * 2 / math.sqrt(math.pi)
    assert abs(energy_distance(x, y) - exact) < 0.05 * exact


def test_energy_distance_zero_for_identical_and_symmetric():
    x = torch.randn(100, 2)
    y = torch.randn(120, 2) + 0.5
    assert abs(energy_distance(x, x)) < 1e-12
    assert abs(energy_distance(x, y) - energy_distance(y, x)) < 1e-12


def test_sliced_wasserstein_of_translation():
    # W2 of a translation by m projected on a unit direction u is |u.m|; E[(u.m)^2] = |m|^2 / D
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2000, 2, generator=g)
    m = torch.tensor([3.0, 4.0])
    sw = sliced_wasserstein(x, x + m, n_projections=4000, generator=g)
    assert abs(sw - 5.0 / math.sqrt(2)) < 0.05


def test_noise_floor_has_its_closed_form_mean():
    """For two independent samples of size n of one law, the V-statistic energy distance has mean
    2 E|X - X'| / n exactly (the diagonal terms of the within-sample means are zero). For N(0, I_2),
    X - X' ~ N(0, 2 I_2) and E|X - X'| = sqrt(2) * sqrt(pi / 2) = sqrt(pi)."""
    n, repeats = 200, 400
    g = torch.Generator().manual_seed(2)
    floor, spread = noise_floor(lambda m, gen: torch.randn(m, 2, generator=gen, dtype=torch.float64), n,
                                repeats=repeats, generator=g)
    want = 2 * math.sqrt(math.pi) / n
    assert abs(floor - want) < 4 * spread / math.sqrt(repeats), (floor, want, spread)
    assert 0 < spread < floor  # it varies from draw to draw, by less than its mean


def test_distance_ratio():
    gm = example_mixture()
    g = torch.Generator().manual_seed(2)
    good = [gm.sample(1000, g) for _ in range(10)]
    ratio, _, _ = distance_ratio(good, gm.sample, generator=g)
    assert 0.6 < ratio < 1.6
    bad = [1.3 * gm.sample(1000, g) for _ in range(10)]
    assert distance_ratio(bad, gm.sample, generator=g)[0] > 3


def test_mode_weights_of_true_samples():
    gm = example_mixture()
    n = 50_000
    w = mode_weights(gm.sample(n, torch.Generator().manual_seed(3)), gm)
    assert w.shape == (3,) and abs(w.sum().item() - 1) < 1e-12
    # assignment by largest posterior is not the true label, but the overlap here is small
    assert (w - gm.weights.double()).abs().max() < 0.02


def test_bad_inputs():
    with pytest.raises(ValueError, match="same dimension"):
        energy_distance(torch.randn(5, 2), torch.randn(5, 3))
    with pytest.raises(ValueError, match="same number of points"):
        sliced_wasserstein(torch.randn(5, 2), torch.randn(6, 2))
    with pytest.raises(ValueError, match="samples must be a non-empty list"):
        distance_ratio([], example_mixture().sample)
    with pytest.raises(ValueError, match="repeats"):
        noise_floor(example_mixture().sample, 10, repeats=0)


def test_sample_quality_passes_true_samples_and_catches_inflation():
    gm = example_mixture()
    g = torch.Generator().manual_seed(4)
    ref = gm.log_prob(gm.sample(200_000, g)).mean().item()
    ratio, dw, dlogp = sample_quality(gm.sample(20_000, g), gm, ref, generator=g)
    assert ratio < 1.5 and dw < 0.02 and abs(dlogp) < 0.03
    inflated = GaussianMixture(gm.means, 1.2 * gm.covs, gm.weights).sample(20_000, g)
    assert sample_quality(inflated, gm, ref, generator=g)[2] < -0.1
    with pytest.raises(ValueError, match="at least 2 \\* chunk"):
        sample_quality(gm.sample(600, g), gm, ref)


def test_gaussian_frechet_closed_forms():
    from course_utils.metrics import gaussian_frechet
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 1.0])
    # diagonal (commuting) covariances: |dmu|^2 + sum (sqrt a - sqrt b)^2
    want = 5.0 + ((a.sqrt() - b.sqrt()) ** 2).sum().item()
    assert abs(gaussian_frechet(mu1, torch.diag(a), mu2, torch.diag(b)) - want) < 1e-10
    # a rotation of both covariances leaves the distance unchanged; identical Gaussians are at 0
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    ra, rb = q @ torch.diag(a).double() @ q.T, q @ torch.diag(b).double() @ q.T
    assert abs(gaussian_frechet(mu1, ra, mu2, rb) - want) < 1e-9
    assert abs(gaussian_frechet(mu1, ra, mu1, ra)) < 1e-9
    # general (non-commuting) case against scipy's matrix square root
    import scipy.linalg
    c1 = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]], dtype=torch.float64)
    c2 = torch.tensor([[1.0, -0.4, 0.2], [-0.4, 2.0, 0.0], [0.2, 0.0, 1.5]], dtype=torch.float64)
    cross = scipy.linalg.sqrtm(c1.numpy() @ c2.numpy()).real.trace()
    want = 5.0 + (c1.trace() + c2.trace()).item() - 2 * cross
    assert abs(gaussian_frechet(mu1, c1, mu2, c2) - want) < 1e-8


def test_frechet_distance_of_samples_converges_and_checks_input():
    from course_utils.metrics import frechet_distance, gaussian_frechet
    g = torch.Generator().manual_seed(1)
    c2 = torch.tensor([[1.0, 0.6], [0.6, 1.0]], dtype=torch.float64)
    x = torch.randn(200_000, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(200_000, 2, generator=g, dtype=torch.float64)
    y = torch.tensor([1.0, 0.0], dtype=torch.float64) + noise @ torch.linalg.cholesky(c2).T
    want = gaussian_frechet(torch.zeros(2), torch.eye(2), torch.tensor([1.0, 0.0]), c2)
    assert abs(frechet_distance(x, y) - want) < 0.01
    small = frechet_distance(x[:100], x[100:200])  # same law, small n: positive (the estimation noise)
    assert small > 0
    with pytest.raises(ValueError, match="feature dimensions"):
        frechet_distance(x, x[:, :1])
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(x[:1], x)


def test_flops_per_item_counts_linear_and_conv_layers_by_their_closed_forms():
    lin = torch.nn.Linear(7, 5)
    assert flops_per_item(lin, torch.zeros(3, 7)) == 2 * 7 * 5          # a multiply-add per weight, per item
    conv = torch.nn.Conv2d(2, 4, 3, padding=1)
    assert flops_per_item(conv, torch.zeros(6, 2, 5, 5)) == 2 * (2 * 9) * 4 * 25   # per output value
    two = torch.nn.Sequential(lin, torch.nn.SiLU(), torch.nn.Linear(5, 3))
    assert flops_per_item(two, torch.zeros(4, 7)) == 2 * (7 * 5 + 5 * 3)
    assert flops_per_item(lambda a, b: a @ b, torch.zeros(2, 3, 4), torch.zeros(4, 6)) == 2 * 3 * 4 * 6
    with pytest.raises(ValueError, match="first input"):
        flops_per_item(lin, torch.zeros(()))
    with pytest.raises(TypeError, match="fn must be callable"):
        flops_per_item("net", torch.zeros(3, 7))


def test_interleaved_best_seconds_takes_the_fastest_counted_call_of_each(monkeypatch):
    import course_utils.metrics as metrics
    clock = [0.0]
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: clock[0])
    durations = {"a": [0.5, 9.0, 3.0, 7.0], "b": [0.1, 2.0, 4.0, 2.5]}   # first of each: the warm-up round
    order = []

    def timed(name):
        def call():
            order.append(name)
            clock[0] += durations[name][sum(n == name for n in order) - 1]
        return call
    best = interleaved_best_seconds({"a": timed("a"), "b": timed("b")}, rounds=3)
    assert best == {"a": 3.0, "b": 2.0}                  # the warm-up's faster calls are not counted
    assert order == ["a", "b"] * 4                        # interleaved: one call of each per round
    with pytest.raises(ValueError, match="calls must be"):
        interleaved_best_seconds({})
    with pytest.raises(ValueError, match="rounds"):
        interleaved_best_seconds({"a": timed("a")}, rounds=0)


def test_paired_difference_plain_and_clustered_standard_errors():
    from course_utils.metrics import paired_difference
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(50, generator=g) < 0.7).double(), (torch.rand(50, generator=g) < 0.5).double()
    m, se = paired_difference(a, b)
    assert m == pytest.approx((a - b).mean().item()) and se == pytest.approx((a - b).std().item() / math.sqrt(50))
    # every item its own group: the clustered standard error is the plain one
    assert paired_difference(a, b, groups=range(50)) == pytest.approx((m, se))
    # by hand: d = 1, 1, 0, 0 in groups A, A, B, B: mean 1/2, group sums of d - 1/2: +1 and -1,
    # se = sqrt(2 / 1 * 2) / 4 = 1/2, against the plain sqrt(1/3) / 2
    d_a, d_b = torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.zeros(4)
    assert paired_difference(d_a, d_b, groups="AABB") == pytest.approx((0.5, 0.5))
    assert paired_difference(d_a, d_b) == pytest.approx((0.5, math.sqrt(1 / 3) / 2))
    assert paired_difference(d_a, d_b, groups="ABAB") == pytest.approx((0.5, 0.0))  # each group's sum is 0
    # mean_se: one column's mean and standard error, plain or clustered (labels may be a tensor)
    from course_utils.metrics import mean_se
    assert mean_se(a) == pytest.approx((a.mean().item(), a.std().item() / math.sqrt(50)))
    assert mean_se(d_a, groups="AABB") == pytest.approx((0.5, 0.5))
    assert mean_se(d_a, groups=torch.tensor([0, 0, 1, 1])) == pytest.approx((0.5, 0.5))
    with pytest.raises(ValueError, match="a must be 1-D with at least 2 items"):
        mean_se(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="a and b must be 1-D"):
        paired_difference(d_a, torch.zeros(3))
    with pytest.raises(ValueError, match="groups must have one label per item"):
        paired_difference(d_a, d_b, groups="AAB")
    with pytest.raises(ValueError, match="at least 2 different labels"):
        paired_difference(d_a, d_b, groups="AAAA")
