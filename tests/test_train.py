import os

import pytest
import torch
from torch import nn

from course_utils.train import EMA, load_checkpoint, save_checkpoint, train


def make():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    return model, opt


def loss_for(model):
    w = torch.tensor([1.0, -2.0, 0.5])

    def loss(step):  # draws from the global generator, as the course's loss functions do
        x = torch.randn(32, 3)
        return ((model(x).squeeze(1) - x @ w) ** 2).mean()
    return loss


def test_training_reduces_loss():
    model, opt = make()
    out = train(model, loss_for(model), opt, 200, progress=False)
    assert len(out["losses"]) == 200
    assert sum(out["losses"][-20:]) / 20 < 0.2 * sum(out["losses"][:20]) / 20


def test_checkpoint_round_trip(tmp_path):
    model, opt = make()
    ema = EMA(model, 0.9)
    train(model, loss_for(model), opt, 5, ema=ema, progress=False)
    path = tmp_path / "ck.pt"
    save_checkpoint(str(path), model, opt, ema, step=5, note="hello", values=[1, 2])
    model2, opt2 = make()
    ema2 = EMA(model2, 0.9)
    state = load_checkpoint(str(path), model2, opt2, ema2)
    assert state["step"] == 5 and state["extra"] == {"note": "hello", "values": [1, 2]}
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(ema.state_dict().values(), ema2.state_dict().values()):
        assert torch.equal(a, b)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert not any(f.startswith(".tmp-") for f in os.listdir(tmp_path))  # no temporary file left


def test_resume_equals_uninterrupted(tmp_path):
    model, opt = make()
    straight = train(model, loss_for(model), opt, 30, progress=False)
    ref = [p.detach().clone() for p in model.parameters()]

    path = str(tmp_path / "run.pt")
    model, opt = make()
    train(model, loss_for(model), opt, 12, ckpt_path=path, progress=False)  # "interrupted" at 12
    model, opt = make()  # a fresh process: new model, new optimizer
    torch.manual_seed(123)  # whatever the global RNG is now, resume restores it
    resumed = train(model, loss_for(model), opt, 30, ckpt_path=path, resume=True, progress=False)
    assert resumed["losses"] == pytest.approx(straight["losses"], rel=1e-6)
    for a, b in zip(ref, model.parameters()):
        torch.testing.assert_close(a, b)


def test_ema_follows_exponential_average():
    """theta_ema <- d theta_ema + (1 - d) theta with d = 0.9 (d and 1 - d differ, so swapping them fails)."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, 0.9)
    values = [1.0, 1.0, 3.0]
    want = 0.0
    for v in values:
        with torch.no_grad():
            model.weight.fill_(v)
        ema.update(model)
        want = 0.9 * want + 0.1 * v
    assert ema.model.weight.item() == pytest.approx(want, rel=1e-6)  # 0.1 + 0.09 + 0.3 = 0.471
    assert want == pytest.approx(0.471)
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update(model, decay=0.25)  # a per-step decay (a warm-up) overrides 0.9 for this step only
    assert ema.model.weight.item() == pytest.approx(0.25 * 0.471 + 0.75 * 2.0, rel=1e-6)
    with pytest.raises(ValueError, match="decay must be in"):
        ema.update(model, decay=1.0)


def test_checkpoint_saves_and_restores_the_cuda_random_state(tmp_path, monkeypatch):
    """Where a GPU is present, a resumed run must also continue CUDA's random numbers. Checked here with
    a stand-in for torch.cuda's state functions (the real thing runs in test_device.py on a GPU)."""
    fake_state = [torch.arange(8, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: fake_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(states))

    def make_sgd():  # Adam (torch >= 2.14) asks the real CUDA driver about graph capture when CUDA "is available"
        model, _ = make()
        return model, torch.optim.SGD(model.parameters(), lr=1e-2)

    model, opt = make_sgd()
    path = str(tmp_path / "run.pt")
    train(model, loss_for(model), opt, 2, ckpt_path=path, progress=False)
    assert torch.equal(load_checkpoint(path)["cuda_rng"][0], fake_state[0])
    model, opt = make_sgd()
    train(model, loss_for(model), opt, 3, ckpt_path=path, resume=True, progress=False)
    assert len(restored) == 1 and torch.equal(restored[0][0], fake_state[0])


def test_checkpoint_bad_files(tmp_path):
    model, _ = make()
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_checkpoint(str(tmp_path / "missing.pt"), model)
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(str(bad), model)
    good = tmp_path / "good.pt"
    save_checkpoint(str(good), model)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(str(truncated), model)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(ValueError, match="not a course checkpoint"):
        load_checkpoint(str(other), model)
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(str(good), model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_save_refuses_extras_that_weights_only_cannot_load(tmp_path):
    model, _ = make()
    path = tmp_path / "x.pt"
    with pytest.raises(TypeError, match="extra: checkpoint contents must be"):
        save_checkpoint(str(path), model, version=torch.__version__)  # a TorchVersion object, not a str
    assert not path.exists() and not any(f.startswith(".tmp-") for f in os.listdir(tmp_path))


def test_checkpoint_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Evil()}, path)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(str(path))


def test_train_bad_arguments():
    model, opt = make()
    with pytest.raises(ValueError, match="ckpt_path is required"):
        train(model, loss_for(model), opt, 3, resume=True, progress=False)
    with pytest.raises(ValueError, match="decay must be in"):
        EMA(model, 1.5)
    with pytest.raises(FloatingPointError, match="loss became nan"):
        train(model, lambda s: torch.tensor(float("nan"), requires_grad=True), opt, 2, progress=False)
