import os

import pytest
import torch

from course_utils.data import example_mixture
from course_utils.pretrain import checkpoint_path, load_pretrained, pretrain_cnf_gmm


def test_pretrain_is_deterministic(tmp_path):
    a, b = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    pretrain_cnf_gmm(a, iters=3, progress=False)
    pretrain_cnf_gmm(b, iters=3, progress=False)
    ma, ea = load_pretrained("cnf_gmm", a)
    mb, eb = load_pretrained("cnf_gmm", b)
    assert ea["losses"] == eb["losses"] and ea["config"]["iters"] == 3
    for x, y in zip(ma.state_dict().values(), mb.state_dict().values()):
        assert torch.equal(x, y)


def test_shipped_cnf_checkpoint_loads_and_is_a_good_model():
    path = checkpoint_path("cnf_gmm")
    assert os.path.getsize(path) < 1_000_000
    cnf, extra = load_pretrained("cnf_gmm")
    gm = example_mixture()
    x = gm.sample(2000, torch.Generator().manual_seed(7))
    with torch.no_grad():
        kl = (gm.log_prob(x) - cnf.log_prob(x)).mean().item()  # a Monte Carlo KL(p || q)
    assert -0.02 < kl < 0.03
    assert extra["config"]["iters"] >= 1000


def test_load_pretrained_bad_name():
    with pytest.raises(ValueError, match="name must be one of"):
        load_pretrained("cnf_imagenet")


def test_shipped_hutchinson_checkpoint_is_a_good_model():
    """Chapter 0's FFJORD claim: trained with Rademacher probes, the flow is as good (checked with the exact trace)."""
    from course_utils.nets import CNF
    model, extra = load_pretrained("cnf_gmm_hutchinson")
    assert extra["config"]["divergence"] == "hutchinson" and extra["config"]["iters"] >= 1000
    exact = CNF(model.dynamics.velocity, T=model.T)
    gm = example_mixture()
    x = gm.sample(2000, torch.Generator().manual_seed(8))
    with torch.no_grad():
        kl = (gm.log_prob(x) - exact.log_prob(x)).mean().item()
    assert -0.02 < kl < 0.03
