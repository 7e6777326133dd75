import math

import pytest
import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from course_utils.nets import CNF, TimeMLP
from course_utils.ode import (
    CNFDynamics,
    ODEFunc,
    divergence_exact,
    divergence_hutchinson,
    sample_probe,
    saved_tensor_bytes,
    standard_normal_log_prob,
)

D64 = torch.float64


class Linear(nn.Module):
    """dz/dt = A z, with the attribute ``dim`` that CNF expects."""

    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A.clone())
        self.dim = A.shape[0]

    def forward(self, z, t, cond=None):
        return z @ self.A.T


def test_divergence_of_linear_field_is_trace():
    A = torch.randn(5, 5, dtype=D64)
    x = torch.randn(8, 5, dtype=D64)
    div = divergence_exact(lambda y: y @ A.T, x)
    torch.testing.assert_close(div, torch.full((8,), A.trace().item(), dtype=D64))


def test_divergence_of_nonlinear_field_analytic():
    def f(x):
        return torch.stack([x[:, 0] ** 2 * x[:, 1], torch.sin(x[:, 0]) + x[:, 1] ** 3], 1)
    x = torch.randn(10, 2, dtype=D64)
    want = 2 * x[:, 0] * x[:, 1] + 3 * x[:, 1] ** 2
    torch.testing.assert_close(divergence_exact(f, x), want)
    # the Hutchinson estimate with both basis vectors summed is exact too: e1^T J e1 + e2^T J e2
    e = torch.eye(2, dtype=D64)
    parts = sum(divergence_hutchinson(f, x, e[i].expand(10, 2)) for i in range(2))
    torch.testing.assert_close(parts, want)


def test_divergence_gradcheck():
    W = torch.randn(3, 3, dtype=D64)

    def div_of_x(x):
        return divergence_exact(lambda y: torch.tanh(y @ W.T), x)
    x = torch.randn(4, 3, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(div_of_x, (x,))

    def hutch_of_x(x, v):
        return divergence_hutchinson(lambda y: torch.tanh(y @ W.T), x, v)
    v = torch.randn(4, 3, dtype=D64)
    assert torch.autograd.gradcheck(hutch_of_x, (x, v))


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_hutchinson_unbiased_with_closed_form_variance(kind):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 6, generator=g, dtype=D64)
    S = (A + A.T) / 2
    n = 200_000
    x = torch.zeros(n, 6, dtype=D64)
    v = sample_probe((n, 6), kind, generator=g, dtype=D64)
    est = divergence_hutchinson(lambda y: y @ A.T + 1.0, x, v)
    se = est.std().item() / math.sqrt(n)
    assert abs(est.mean().item() - A.trace().item()) < 4 * se
    var = 2 * (S ** 2).sum() if kind == "gaussian" else 2 * ((S ** 2).sum() - (S.diagonal() ** 2).sum())
    assert abs(est.var().item() / var.item() - 1) < 0.03  # relative SE of a variance here is ~0.5%


def test_linear_cnf_log_density_equals_matrix_exponential():
    torch.manual_seed(0)
    A = torch.tensor([[-0.3, 1.2], [-0.8, 0.4]], dtype=D64)
    T = 1.3
    cnf = CNF(Linear(A), T=T, rtol=1e-10, atol=1e-10)
    x = torch.randn(16, 2, dtype=D64)
    expm = torch.linalg.matrix_exp(A * T)
    z0 = x @ torch.linalg.inv(expm).T
    want = standard_normal_log_prob(z0) - torch.logdet(expm)
    with torch.no_grad():
        got = cnf.log_prob(x)
    torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-8)
    assert abs(torch.logdet(expm).item() - T * A.trace().item()) < 1e-12  # det e^{AT} = e^{T tr A}


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_cnf_forward_and_backward_agree(divergence):
    """Pushing z0 forwards and x back gives the same log-density: for Hutchinson's estimator too, when
    both solves hold the same probe (the same seed), since the ODE is then the same deterministic one."""
    torch.manual_seed(1)
    cnf = CNF(TimeMLP(2, 16, 2).double(), divergence=divergence, rtol=1e-9, atol=1e-9)
    z0 = torch.randn(32, 2, dtype=D64)
    with torch.no_grad():
        for p in cnf.parameters():  # a field that changes volume markedly, so agreement means something
            p.mul_(3)
        x, logp_fwd = cnf.push_forward(z0, return_log_prob=True, generator=torch.Generator().manual_seed(5))
        logp_bwd = cnf.log_prob(x, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(logp_fwd, logp_bwd, atol=1e-6, rtol=1e-6)
    # and the change in log-density is not trivially zero
    assert (logp_fwd - standard_normal_log_prob(z0)).abs().mean() > 0.5


def test_hutchinson_cnf_is_unbiased_for_the_exact_log_density():
    torch.manual_seed(2)
    velocity = TimeMLP(2, 16, 2).double()
    exact = CNF(velocity, rtol=1e-8, atol=1e-8)
    hutch = CNF(velocity, divergence="hutchinson", rtol=1e-8, atol=1e-8)
    x = torch.randn(4, 2, dtype=D64).repeat(2000, 1)  # many probes for each of 4 points
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        want = exact.log_prob(x[:4])
        est = hutch.log_prob(x, generator=g).reshape(2000, 4)
    se = est.std(0) / math.sqrt(2000)
    assert ((est.mean(0) - want).abs() < 4 * se).all()
    assert (se > 0).all()  # a real estimator: the probes differ


def test_adjoint_gradients_equal_backprop_gradients():
    torch.manual_seed(2)
    f = ODEFunc(TimeMLP(2, 32, 2).double())
    z0 = torch.randn(20, 2, dtype=D64)
    ts = torch.tensor([0.0, 1.0], dtype=D64)

    def grads(solve):
        f.zero_grad()
        zT = solve(f, z0, ts, rtol=1e-10, atol=1e-10, method="dopri5")[-1]
        (zT ** 2).sum().backward()
        return [p.grad.clone() for p in f.parameters()]
    for a, b in zip(grads(odeint), grads(odeint_adjoint)):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)


def test_adjoint_gradient_closed_form():
    """dz/dt = theta z, L = z(T)^2 / 2: dL/dtheta = T z(T)^2."""
    class Scalar(nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = nn.Parameter(torch.tensor(0.4, dtype=D64))

        def forward(self, t, z):
            return self.theta * z
    m = Scalar()
    z0 = torch.tensor([1.7], dtype=D64)
    zT = odeint_adjoint(m, z0, torch.tensor([0.0, 2.0], dtype=D64), rtol=1e-11, atol=1e-11)[-1]
    (0.5 * zT ** 2).sum().backward()
    exact = 2.0 * (1.7 * math.exp(0.8)) ** 2
    assert abs(m.theta.grad.item() - exact) < 1e-7 * exact


def test_saved_memory_grows_for_backprop_not_for_adjoint():
    torch.manual_seed(3)
    f = ODEFunc(TimeMLP(2, 64, 2))
    z0 = torch.randn(256, 2)

    def run(solve, n):
        ts = torch.tensor([0.0, 1.0])  # n solver steps, but only the end point is returned
        return saved_tensor_bytes(
            lambda: solve(f, z0, ts, method="rk4", options=dict(step_size=1.0 / n))[-1].sum())
    direct = [run(odeint, n) for n in (10, 20, 40)]
    adjoint = [run(odeint_adjoint, n) for n in (10, 20, 40)]
    assert direct[0] < direct[1] < direct[2]
    assert 1.8 < direct[2] / direct[1] < 2.2  # linear in the number of steps
    assert adjoint[0] == adjoint[1] == adjoint[2]
    assert adjoint[2] < direct[0] / 10


def test_bad_inputs():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="f must map x of shape"):
        divergence_exact(lambda y: y[:, :1], x)
    with pytest.raises(ValueError, match="v must have the shape of x"):
        divergence_hutchinson(lambda y: y, x, torch.randn(4, 3))
    with pytest.raises(ValueError, match="x must have 2 dimensions"):
        divergence_exact(lambda y: y, torch.randn(4))
    with pytest.raises(TypeError, match="f must be callable"):
        divergence_exact(3, x)
    with pytest.raises(ValueError, match="kind must be"):
        sample_probe((3, 2), "uniform")
    with pytest.raises(ValueError, match="divergence must be"):
        CNFDynamics(TimeMLP(), divergence="approximate")
    with pytest.raises(ValueError, match="x must have last dimension 2"):
        CNF(TimeMLP()).log_prob(torch.randn(5, 3))
    with pytest.raises(ValueError, match="T must be positive"):
        CNF(TimeMLP(), T=0.0)


def test_ode_func_adapts_a_course_network_to_torchdiffeq():
    net = TimeMLP(2, 8, 1).double()
    z, t = torch.randn(5, 2, dtype=D64), torch.tensor(0.3, dtype=D64)
    torch.testing.assert_close(ODEFunc(net)(t, z), net(z, torch.full((5,), 0.3, dtype=D64)))
    assert len(list(ODEFunc(net).parameters())) == len(list(net.parameters()))


def test_peak_memory_of_solves_measures_what_backprop_holds():
    from course_utils.ode import peak_memory_of_solves
    direct = peak_memory_of_solves("backprop", [4, 64], batch=256, hidden=32)
    adjoint = peak_memory_of_solves("adjoint", [4, 64], batch=256, hidden=32)
    # back-propagation keeps each step's activations: 60 more RK4 steps of a 256 x 32 MLP save
    # 60 * 4 evaluations * several (256, 32) float32 tensors, well over 10 MiB; the adjoint keeps none
    assert direct[1] - direct[0] > 10, direct
    assert adjoint[1] - adjoint[0] < 0.1 * (direct[1] - direct[0]), (adjoint, direct)


def test_peak_memory_of_solves_rejects_bad_arguments():
    from course_utils.ode import peak_memory_of_solves
    with pytest.raises(ValueError, match="method"):
        peak_memory_of_solves("euler", [4])
    with pytest.raises(ValueError, match="increasing"):
        peak_memory_of_solves("adjoint", [8, 4])
    with pytest.raises(ValueError, match="positive"):
        peak_memory_of_solves("adjoint", [0, 4])
