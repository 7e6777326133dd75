"""The chapter-3 U-Net and its blocks: shapes, the conditioning hooks, exact symmetries, bad input."""
import pytest
import torch

from course_utils.nets import Attention, DigitClassifier, ResBlock, UNet


def randomise_zero_inits(net):
    """The blocks' last layers start at zero (each block the identity); give them weights so that
    what flows through a block can be tested."""
    for p in net.parameters():
        if p.abs().max() == 0:
            torch.nn.init.normal_(p, std=0.1)
    return net


def test_unet_shapes_for_digits_and_colour_images():
    torch.manual_seed(0)
    net = UNet(in_ch=1, ch=32, ch_mult=(1, 2), n_res=1)
    x = torch.randn(3, 1, 8, 8)
    assert net(x, torch.rand(3)).shape == x.shape
    rgb = UNet(in_ch=3, ch=32, ch_mult=(1, 2, 2), n_res=2, attn_levels=(1, 2))
    x = torch.randn(2, 3, 16, 16)
    assert rgb(x, torch.rand(2)).shape == x.shape


def test_every_parameter_learns():
    """No block is dead: after three Adam steps on a random target every parameter has a gradient (the
    zero-initialised head passes gradients back from step 2, the blocks' zero convolutions from step 3)."""
    torch.manual_seed(1)
    net = UNet(in_ch=1, ch=16, ch_mult=(1, 2), n_res=1, n_classes=10, context_dim=8, dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, target = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    kw = dict(cond=torch.tensor([0, 3, 10, 9]), context=torch.randn(4, 5, 8))
    for _ in range(3):
        opt.zero_grad()
        (net(x, torch.rand(4), **kw) - target).pow(2).mean().backward()
        opt.step()
    dead = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not dead, dead


def test_self_attention_is_equivariant_to_pixel_permutations():
    """One token per pixel and no positional code: permuting pixels permutes the output."""
    torch.manual_seed(2)
    attn = Attention(16, heads=4)
    torch.nn.init.normal_(attn.out.weight)  # the zero-initialised output would make the test trivial
    x = torch.randn(2, 16, 4, 4)
    perm = torch.randperm(16)
    permute = lambda z: z.flatten(2)[:, :, perm].reshape(z.shape)  # noqa: E731
    assert torch.allclose(attn(permute(x)), permute(attn(x)), atol=1e-5)
    assert not torch.allclose(attn(x), x, atol=1e-3)


def test_cross_attention_reads_the_context_and_respects_its_mask():
    torch.manual_seed(3)
    attn = Attention(16, heads=2, context_dim=8)
    torch.nn.init.normal_(attn.out.weight)
    x, ctx = torch.randn(2, 16, 4, 4), torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, True, False, False]] * 2)
    y = attn(x, ctx, mask)
    ctx2 = ctx.clone()
    ctx2[:, 3:] = torch.randn(2, 2, 8)  # change only the masked-out tokens
    assert torch.allclose(attn(x, ctx2, mask), y, atol=1e-6)
    ctx2[:, 0] = torch.randn(2, 8)      # change a visible token
    assert not torch.allclose(attn(x, ctx2, mask), y, atol=1e-4)


def test_resblock_skip_and_embedding():
    torch.manual_seed(4)
    block = ResBlock(16, 32, emb_dim=8, dropout=0.0)
    torch.nn.init.normal_(block.conv2.weight)
    x, emb = torch.randn(2, 16, 4, 4), torch.randn(2, 8)
    assert block(x, emb).shape == (2, 32, 4, 4)
    assert isinstance(block.skip, torch.nn.Conv2d)          # channels change: a 1x1 convolution
    assert not torch.allclose(block(x, emb), block(x, emb + 1.0), atol=1e-4)  # the embedding matters


def test_class_embedding_has_a_no_label_index():
    torch.manual_seed(5)
    net = randomise_zero_inits(UNet(in_ch=1, ch=16, n_res=1, n_classes=10, dropout=0.0))
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    none = net(x, t)
    assert torch.allclose(none, net(x, t, cond=torch.full((2,), net.null_label)))
    assert not torch.allclose(none, net(x, t, cond=torch.tensor([1, 2])), atol=1e-5)
    with pytest.raises(ValueError, match="class labels"):
        net(x, t, cond=torch.tensor([11, 0]))
    with pytest.raises(ValueError, match="without n_classes"):
        UNet(in_ch=1, ch=16)(x, t, cond=torch.tensor([1, 2]))


def test_unet_bad_input():
    net = UNet(in_ch=1, ch=16, ch_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.randn(2, 1, 6, 6), torch.rand(2))
    with pytest.raises(ValueError, match="channels"):
        net(torch.randn(2, 3, 8, 8), torch.rand(2))
    with pytest.raises(TypeError, match="DiscreteSchedule.time"):
        net(torch.randn(2, 1, 8, 8), torch.tensor([3, 4]))
    with pytest.raises(ValueError, match="image_size"):
        UNet(ch=16, ch_mult=(1, 2, 2), image_size=10)
    with pytest.raises(ValueError, match="context"):
        UNet(ch=16, context_dim=4)(torch.randn(2, 1, 8, 8), torch.rand(2))
    with pytest.raises(ValueError, match="divisible"):
        UNet(ch=12, groups=8)
    with pytest.raises(ValueError, match="attn_levels"):
        UNet(ch=16, attn_levels=(2,))


def test_digit_classifier_shapes():
    net = DigitClassifier()
    x = torch.randn(5, 1, 8, 8)
    assert net(x).shape == (5, 10) and net.features(x).shape == (5, 128)
    with pytest.raises(ValueError, match="8x8"):
        net(torch.randn(5, 1, 16, 16))


def test_unet_conditioning_image_and_level():
    """cond_ch: the image is concatenated to the input (it changes the output), cond_level is embedded (it
    changes the output), the output keeps in_ch channels, and missing or misshapen inputs are clear errors."""
    torch.manual_seed(0)
    net = UNet(in_ch=1, ch=16, ch_mult=(1, 2), n_res=1, groups=8, cond_ch=1).eval()
    for p in net.parameters():  # the zero-initialised head and embedding projections would hide every difference
        if (p == 0).all():
            torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(3, 1, 8, 8), torch.full((3,), 0.5)
    low = torch.randn(3, 1, 8, 8)
    out = net(x, t, x_cond=low)
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, t, x_cond=-low))
    assert torch.equal(out, net(x, t, x_cond=low, cond_level=torch.zeros(3)))
    assert not torch.allclose(out, net(x, t, x_cond=low, cond_level=torch.full((3,), 0.3)))
    with pytest.raises(ValueError, match="x_cond must be"):
        net(x, t)
    with pytest.raises(ValueError, match="x_cond must be"):
        net(x, t, x_cond=low[:, :, :4, :4])
    with pytest.raises(ValueError, match="cond_ch=0"):
        UNet(in_ch=1, ch=16, ch_mult=(1, 2), n_res=1, groups=8)(x, t, x_cond=low)
    with pytest.raises(ValueError, match="cond_ch"):
        UNet(cond_ch=-1)


def test_noise_conditional_score_is_minus_eps_over_sigma():
    """s(x, sigma) = -net(x / sqrt(1 + sigma^2), t(sigma)) / sigma, t(sigma) log-linear from 0 at sigma_min to 1
    at sigma_max; an exact eps-predictor for Gaussian data gives the exact score of the noised Gaussian."""
    from course_utils.nets import NoiseConditionalScore

    class ExactEps(torch.nn.Module):  # data N(0, v I): E[eps | x_sigma] = sigma x_sigma / (v + sigma^2)
        def forward(self, x_scaled, t):
            sigma = 0.01 * (10 / 0.01) ** t
            x = x_scaled * torch.sqrt(1 + sigma ** 2)[:, None]
            return sigma[:, None] * x / (0.5 + sigma[:, None] ** 2)

    ncsn = NoiseConditionalScore(ExactEps(), sigma_max=10.0, sigma_min=0.01)
    x = torch.randn(5, 3, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.1, 1.0, 3.0, 10.0], dtype=torch.float64)
    torch.testing.assert_close(ncsn.level_time(sigma), torch.log10(sigma / 0.01) / 3)
    torch.testing.assert_close(ncsn(x, sigma), -x / (0.5 + sigma[:, None] ** 2))
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        NoiseConditionalScore(ExactEps(), sigma_max=0.01, sigma_min=1.0)
    with pytest.raises(ValueError, match="sigma must be positive"):
        ncsn(x, torch.zeros(5, dtype=torch.float64))
