"""Each checker accepts a correct answer (the solutions hidden in the notebooks) and rejects wrong ones."""
import math

import torch

from course_utils import exercises as ex


def euler_solve(f, z0, t0, t1, n_steps):
    z, h = z0, (t1 - t0) / n_steps
    for i in range(n_steps):
        z = z + h * f(t0 + i * h, z)
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


def hutchinson_variance(A, kind):
    S = (A + A.T) / 2
    if kind == "gaussian":
        return 2 * (S ** 2).sum()
    return 2 * ((S ** 2).sum() - (S.diagonal() ** 2).sum())


def adjoint_gradient(theta, z0, T):
    zT = z0 * math.exp(theta * T)
    return T * zT ** 2


def not_attempted(*args):
    raise NotImplementedError


def test_checkers_accept_solutions(capsys):
    assert ex.check_euler_solve(euler_solve)
    assert ex.check_tanh_divergence(tanh_divergence)
    assert ex.check_affine_flow_log_prob(affine_flow_log_prob)
    assert ex.check_hutchinson_variance(hutchinson_variance)
    assert ex.check_adjoint_gradient(adjoint_gradient)
    assert capsys.readouterr().out.count("✓") == 5


def test_checkers_reject_wrong_answers(capsys):
    assert not ex.check_euler_solve(midpoint_solve)
    assert not ex.check_tanh_divergence(lambda W, b, x: (1 - torch.tanh(x @ W.T + b) ** 2).sum(1))
    assert not ex.check_affine_flow_log_prob(  # forgot the log-determinant
        lambda x, A, b: affine_flow_log_prob(x, A, b) + torch.linalg.slogdet(A)[1])
    assert not ex.check_hutchinson_variance(lambda A, kind: 2 * (A ** 2).sum())
    assert not ex.check_adjoint_gradient(lambda theta, z0, T: z0 * math.exp(theta * T))
    out = capsys.readouterr().out
    assert out.count("✗") == 5 and "✓" not in out


def test_checkers_report_unattempted_and_crashing_answers(capsys):
    assert not ex.check_euler_solve(not_attempted)
    assert not ex.check_tanh_divergence(lambda W, b, x: 1 / 0)
    out = capsys.readouterr().out
    assert "not attempted yet" in out and "ZeroDivisionError" in out
