"""Random draws and every other tensor the library makes follow the data's device.

On a CPU-only machine the ``meta`` device stands in for a GPU: with the *default* device set to meta,
any tensor the library creates without naming a device lands on meta, and combining it with the
CPU data raises (or the result comes back on meta). So every public function that draws noise is run
on CPU data under a meta default and must return CPU tensors. Where CUDA is present, the same
functions run on the GPU with a CPU generator.
"""
import pytest
import torch

from course_utils import tensors
from course_utils.losses import dsm_loss, eps_loss, ssm_loss
from course_utils.metrics import sliced_wasserstein
from course_utils.nets import CNF, ScoreMLP, TimeMLP, UNet
from course_utils.ode import sample_probe
from course_utils.samplers import (
    ddim_invert,
    ddim_sample,
    ddpm_sample,
    heun_sample,
    naive_reverse_sample,
    probability_flow_sample,
    reverse_sde_sample,
)
from course_utils.schedules import DiscreteSchedule, linear_betas
from course_utils.sde import VESDE, VPSDE, euler_maruyama

DRAWS = {
    "randn": lambda shape, **kw: tensors.randn(shape, **kw),
    "rand": lambda shape, **kw: tensors.rand(shape, **kw),
    "rademacher": lambda shape, **kw: tensors.rademacher(shape, **kw),
    "randint": lambda shape, **kw: tensors.randint(0, 7, shape, **{k: v for k, v in kw.items() if k != "dtype"}),
}
TORCH_EQUIV = {
    "randn": lambda g: torch.randn(3, 4, generator=g, dtype=torch.float64),
    "rand": lambda g: torch.rand(3, 4, generator=g, dtype=torch.float64),
    "rademacher": lambda g: torch.randint(0, 2, (3, 4), generator=g).double() * 2 - 1,
    "randint": lambda g: torch.randint(0, 7, (3, 4), generator=g),
}


@pytest.mark.parametrize("name", sorted(DRAWS))
def test_draws_follow_like_and_honour_a_cpu_generator(name):
    like_meta = torch.empty(2, device="meta", dtype=torch.float64)
    out = DRAWS[name]((3, 4), like=like_meta, generator=torch.Generator().manual_seed(0))
    assert out.device.type == "meta" and out.shape == (3, 4)
    assert out.dtype == (torch.int64 if name == "randint" else torch.float64)
    # on the CPU: the very numbers torch draws from the same seed, so seeds mean the same everywhere
    like_cpu = torch.empty(2, dtype=torch.float64)
    got = DRAWS[name]((3, 4), like=like_cpu, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, TORCH_EQUIV[name](torch.Generator().manual_seed(0)))
    g = torch.Generator().manual_seed(1)
    assert not torch.equal(DRAWS[name]((3, 4), like=like_cpu, generator=g),
                           DRAWS[name]((3, 4), like=like_cpu, generator=g))  # the generator advances
    # without a generator the draw is made on the target device directly
    assert DRAWS[name]((3, 4), like=like_meta).device.type == "meta"
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        DRAWS[name]((3, 4), like=like_cpu, generator=0)


def test_draws_are_made_on_the_generator_device_then_moved(monkeypatch):
    """With a generator, numbers must be drawn where the generator lives (a CPU generator cannot fill a
    CUDA tensor), then moved; without one, directly on the target device."""
    devices = []
    real = torch.randn

    def recording_randn(*args, **kwargs):
        devices.append(torch.device(kwargs["device"]))
        return real(*args, **{**kwargs, "device": "cpu"})
    monkeypatch.setattr(torch, "randn", recording_randn)
    out = tensors.randn((3,), like=torch.empty(1, device="meta"), generator=torch.Generator().manual_seed(0))
    assert devices == [torch.device("cpu")] and out.device.type == "meta"
    tensors.randn((3,), like=torch.empty(1, device="meta"))
    assert devices[-1] == torch.device("meta")


def test_rademacher_values():
    v = tensors.rademacher((10_000,), generator=torch.Generator().manual_seed(2))
    assert set(v.unique().tolist()) == {-1.0, 1.0} and abs(v.mean().item()) < 0.04


def test_as_time_refuses_step_indices_and_wrong_shapes():
    x = torch.zeros(3, 2, dtype=torch.float64)
    t = tensors.as_time(0.25, x)
    assert t.shape == (3,) and t.dtype == torch.float64 and (t == 0.25).all()
    assert tensors.as_time(torch.tensor([0.1, 0.2, 0.3]), x).dtype == torch.float64
    with pytest.raises(TypeError, match="t must be continuous time"):
        tensors.as_time(torch.tensor([1, 2, 3]), x)
    with pytest.raises(ValueError, match="t must be a scalar or have shape"):
        tensors.as_time(torch.zeros(2), x)
    with pytest.raises(TypeError, match="t must be a float"):
        tensors.as_time("0.5", x)
    with pytest.raises(ValueError, match="more than the target ndim"):
        tensors.append_dims(torch.zeros(2, 3), 1)
    assert tensors.append_dims(torch.zeros(5), 4).shape == (5, 1, 1, 1)


def _cases(x2, img, g):
    """Every public function that draws random numbers, on data x2 (B, 2) and img (B, 1, 4, 4)."""
    vp, ve, ddpm = VPSDE(), VESDE(), DiscreteSchedule(linear_betas(50))
    score = lambda x, t: -x  # noqa: E731
    eps_net = lambda x, t: 0.1 * x  # noqa: E731
    net = ScoreMLP(2, 8, 1).to(x2.device)
    unet = UNet(in_ch=1, ch=16, n_res=1, n_classes=3).to(x2.device)
    cnf = CNF(TimeMLP(2, 8, 1), divergence="hutchinson", rtol=1e-3, atol=1e-3).to(x2.device)
    grid = [0.0, 0.5, 1.0]
    return {
        "euler_maruyama": lambda: euler_maruyama(lambda x, t: -x, lambda x, t: 1.0, img, grid, generator=g),
        "euler_maruyama, no generator": lambda: euler_maruyama(lambda x, t: -x, lambda x, t: 1.0, img, grid),
        "reverse_sde_sample": lambda: reverse_sde_sample(vp, score, img, n_steps=3, generator=g),
        "reverse_sde_sample, path": lambda: reverse_sde_sample(ve, score, x2, n_steps=3, generator=g,
                                                               return_path=True).xs,
        "naive_reverse_sample": lambda: naive_reverse_sample(vp, img, n_steps=3, generator=g),
        "probability_flow_sample": lambda: probability_flow_sample(vp, score, img, method="euler", n_steps=3),
        "probability_flow_sample, dopri5": lambda: probability_flow_sample(vp, score, x2, rtol=1e-3, atol=1e-3),
        "dsm_loss": lambda: dsm_loss(net, x2, vp, generator=g),
        "eps_loss, VP": lambda: eps_loss(eps_net, img, vp, generator=g),
        "eps_loss, DDPM": lambda: eps_loss(eps_net, img, ddpm, generator=g),
        "eps_loss, DDPM, no generator": lambda: eps_loss(eps_net, img, ddpm),
        "ssm_loss": lambda: ssm_loss(lambda y: -y, x2, generator=g),
        "sample_probe": lambda: sample_probe(x2.shape, "gaussian", like=x2, generator=g),
        "sample_times, DDPM": lambda: ddpm.sample_times(4, like=img, generator=g),
        "CNF.log_prob (Hutchinson)": lambda: cnf.log_prob(x2, generator=g),
        "CNF.sample": lambda: cnf.sample(4, generator=g, device=x2.device),
        "prior_sample": lambda: vp.prior_sample((4, 2), generator=g, device=x2.device),
        "sliced_wasserstein": lambda: sliced_wasserstein(x2, x2 + 1, generator=g),
        "ddpm_sample": lambda: ddpm_sample(ddpm, eps_net, img, generator=g),
        "ddim_sample, eta 1": lambda: ddim_sample(ddpm, eps_net, img, n_steps=5, eta=1.0, generator=g),
        "ddim_invert": lambda: ddim_invert(ddpm, eps_net, img, n_steps=5),
        "heun_sample": lambda: heun_sample(ddpm, eps_net, img, n_steps=5),
        "UNet": lambda: unet(img, torch.full((4,), 0.5, device=img.device)),
    }


def test_nothing_is_created_off_the_data_device():
    x2 = torch.randn(4, 2)
    img = torch.randn(4, 1, 4, 4)
    g = torch.Generator().manual_seed(3)
    cases = _cases(x2, img, g)
    failures = []
    torch.set_default_device("meta")
    try:
        for name, run in cases.items():
            try:
                out = run()
                if isinstance(out, torch.Tensor) and out.device.type != "cpu":
                    failures.append(f"{name}: returned a tensor on {out.device}")
            except Exception as e:  # a tensor made on the default (meta) device met the CPU data
                failures.append(f"{name}: {type(e).__name__}: {str(e)[:120]}")
    finally:
        torch.set_default_device(None)
    assert not failures, "\n".join(failures)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_everything_runs_on_cuda_with_a_cpu_generator():
    dev = torch.device("cuda")
    x2 = torch.randn(4, 2, device=dev)
    img = torch.randn(4, 1, 4, 4, device=dev)
    for name, run in _cases(x2, img, torch.Generator().manual_seed(4)).items():
        out = run()
        if isinstance(out, torch.Tensor):
            assert out.device.type == "cuda", name
    # the same seed gives the same noise on either device
    a = euler_maruyama(lambda x, t: -x, lambda x, t: 1.0, img.cpu(), [0.0, 0.5, 1.0],
                       generator=torch.Generator().manual_seed(5))
    b = euler_maruyama(lambda x, t: -x, lambda x, t: 1.0, img, [0.0, 0.5, 1.0],
                       generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b.cpu(), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_checkpoints_resume_cuda_random_numbers(tmp_path):
    from course_utils.train import load_checkpoint, save_checkpoint
    model = torch.nn.Linear(2, 2)
    torch.cuda.manual_seed_all(6)
    save_checkpoint(str(tmp_path / "c.pt"), model)
    want = torch.randn(5, device="cuda")
    torch.cuda.manual_seed_all(7)
    torch.cuda.set_rng_state_all(load_checkpoint(str(tmp_path / "c.pt"))["cuda_rng"])
    assert torch.equal(torch.randn(5, device="cuda"), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_unet_and_samplers_agree_between_cpu_and_cuda():
    """The same weights, x_T and CPU generator give the same DDIM (eta = 1) samples on either device."""
    torch.manual_seed(8)
    net = UNet(in_ch=1, ch=16, n_res=1, dropout=0.0).eval()
    for p in net.parameters():  # leave the zero-initialised identity behind
        if p.abs().max() == 0:
            torch.nn.init.normal_(p, std=0.05)
    sched = DiscreteSchedule(linear_betas(100))
    x_T = torch.randn(8, 1, 8, 8)
    outs = {}
    for dev in ("cpu", "cuda"):
        model = net.to(dev)
        outs[dev] = ddim_sample(sched, model, x_T.to(dev), n_steps=10, eta=1.0,
                                generator=torch.Generator().manual_seed(9)).cpu()
    torch.testing.assert_close(outs["cuda"], outs["cpu"], rtol=1e-3, atol=1e-3)
    with torch.autocast("cuda", dtype=torch.bfloat16):  # mixed precision runs, times stay float32
        out = ddim_sample(sched, net.to("cuda"), x_T.cuda(), n_steps=10)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
