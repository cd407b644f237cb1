"""Tests for the training losses and the MS-STFT discriminator."""

import math

import pytest
import torch
import torch.nn.functional as F

from streamvc_rvq.modules.discriminator import MultiScaleSTFTDiscriminator
from streamvc_rvq.training.losses import (
    MultiScaleSpectralLoss,
    content_cross_entropy,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    waveform_l1,
)

SR = 16000


def _signal(batch: int, length: int = 8192) -> torch.Tensor:
    """Sum of a few sines plus a little noise, amplitude ~0.3."""
    t = torch.arange(length, dtype=torch.float32) / SR
    freqs = torch.tensor([220.0, 440.0, 1250.0, 3100.0])[:, None]
    base = torch.sin(2 * math.pi * freqs * t).sum(0) * 0.08
    return base.expand(batch, -1) + 0.01 * torch.randn(batch, length)


@pytest.fixture(scope="module")
def spec_loss():
    return MultiScaleSpectralLoss(sample_rate=SR)


# ---------------------------------------------------------------- spectral loss


def test_spectral_loss_defaults(spec_loss):
    assert spec_loss.windows == [64, 128, 256, 512, 1024, 2048]
    assert spec_loss.alphas == pytest.approx([math.sqrt(w / 2) for w in spec_loss.windows])
    # every kept mel filter is non-empty and no scale has more than 64 bands
    for i, n in enumerate(spec_loss.n_mels_per_window):
        fb = getattr(spec_loss, f"mel_fb_{i}")
        assert fb.dtype == torch.float32
        assert fb.shape == (spec_loss.windows[i] // 2 + 1, n)
        assert 0 < n <= 64
        assert bool((fb.sum(0) > 0).all())


def test_spectral_loss_zero_for_identical(spec_loss):
    x = _signal(2)
    loss = spec_loss(x, x.clone())
    assert loss.dtype == torch.float32
    assert loss.item() == 0.0


def test_spectral_loss_grows_with_distortion(spec_loss):
    x = _signal(3)
    noise = torch.randn_like(x)
    values = [spec_loss(x, x + lvl * noise).item() for lvl in (1e-3, 1e-2, 1e-1, 1.0)]
    assert all(v > 0 for v in values)
    assert all(a < b for a, b in zip(values, values[1:])), values
    # means, not sums: a moderate distortion gives an O(1)-O(10) value
    assert 1e-2 < values[1] < 50


def test_spectral_loss_gradients_finite(spec_loss):
    x = _signal(2)
    x_hat = (x + 0.05 * torch.randn_like(x)).requires_grad_(True)
    loss = spec_loss(x, x_hat)
    loss.backward()
    assert x_hat.grad is not None
    assert torch.isfinite(x_hat.grad).all()
    assert x_hat.grad.abs().sum() > 0

    # identical inputs: zero loss, finite (zero) gradient
    y = x.clone().requires_grad_(True)
    spec_loss(x, y).backward()
    assert torch.isfinite(y.grad).all()


def test_spectral_loss_gradient_reaches_reference_when_needed(spec_loss):
    x = _signal(1).requires_grad_(True)
    x_hat = (x.detach() + 0.05 * torch.randn_like(x)).requires_grad_(True)
    spec_loss(x, x_hat).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_spectral_loss_batch_invariant(spec_loss):
    x = _signal(1)
    x_hat = x + 0.05 * torch.randn_like(x)
    one = spec_loss(x, x_hat)
    four = spec_loss(x.repeat(4, 1), x_hat.repeat(4, 1))
    torch.testing.assert_close(one, four, rtol=1e-5, atol=1e-6)


def test_spectral_loss_accepts_channel_dim_and_short_input(spec_loss):
    x = _signal(2)
    x_hat = x + 0.05 * torch.randn_like(x)
    torch.testing.assert_close(spec_loss(x[:, None], x_hat[:, None]), spec_loss(x, x_hat))
    short = spec_loss(x[:, :500], x_hat[:, :500])  # shorter than half the largest window
    assert torch.isfinite(short) and short > 0


def test_spectral_loss_custom_windows():
    loss = MultiScaleSpectralLoss(sample_rate=SR, windows=[256, 1024], n_mels=40)
    assert loss.n_mels_per_window == [40, 40]
    x = _signal(1)
    assert loss(x, x + 0.1 * torch.randn_like(x)) > 0


# ---------------------------------------------------------------- L1 / CE


def test_waveform_l1_by_hand():
    x = torch.tensor([[0.0, 1.0, -2.0], [0.5, 0.5, 0.5]])
    y = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.5, 0.5]])
    # |diffs| = 1, 0, 2, 0.5, 1, 0 -> 4.5 / 6
    assert waveform_l1(x, y).item() == pytest.approx(0.75)
    with pytest.raises(ValueError):
        waveform_l1(x, y[:, :2])


def test_content_cross_entropy_by_hand():
    logits = torch.tensor(
        [[[2.0, 0.0], [1.0, 0.0], [0.0, 3.0]]]
    )  # [B=1, C=3, F=2]
    labels = torch.tensor([[0, 2]])
    # frame 0: scores (2, 1, 0), target 0; frame 1: scores (0, 0, 3), target 2
    f0 = -2.0 + math.log(math.exp(2) + math.exp(1) + math.exp(0))
    f1 = -3.0 + math.log(2 + math.exp(3))
    expected = (f0 + f1) / 2
    got = content_cross_entropy(logits, labels)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert got.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)


def test_content_cross_entropy_length_mismatch():
    logits = torch.randn(2, 5, 7)
    labels = torch.randint(0, 5, (2, 9))
    expected = F.cross_entropy(logits, labels[:, :7])
    torch.testing.assert_close(content_cross_entropy(logits, labels), expected)
    expected2 = F.cross_entropy(logits[..., :4], labels[:, :4])
    torch.testing.assert_close(content_cross_entropy(logits, labels[:, :4]), expected2)


def test_content_cross_entropy_ignore_index():
    logits = torch.randn(1, 4, 3)
    labels = torch.tensor([[1, -100, 2]])
    expected = F.cross_entropy(logits[..., [0, 2]], labels[:, [0, 2]])
    torch.testing.assert_close(content_cross_entropy(logits, labels), expected)


# ---------------------------------------------------------------- GAN losses


def test_hinge_losses_by_hand():
    real = [torch.tensor([2.0, -0.5])]
    fake = [torch.tensor([0.3, -2.0])]
    # D: mean(relu(1 - [2, -0.5])) + mean(relu(1 + [0.3, -2])) = 0.75 + 0.65
    assert discriminator_hinge_loss(real, fake).item() == pytest.approx(1.4)
    # G: mean(relu(1 - [0.3, -2])) = (0.7 + 3) / 2
    assert generator_adversarial_loss(fake).item() == pytest.approx(1.85)


def test_hinge_losses_average_over_scales():
    real = [torch.tensor([2.0, -0.5]), torch.tensor([[0.0]])]
    fake = [torch.tensor([0.3, -2.0]), torch.tensor([[1.0]])]
    # second scale: D = relu(1 - 0) + relu(1 + 1) = 3; G = relu(1 - 1) = 0
    assert discriminator_hinge_loss(real, fake).item() == pytest.approx((1.4 + 3.0) / 2)
    assert generator_adversarial_loss(fake).item() == pytest.approx((1.85 + 0.0) / 2)


def test_feature_matching():
    real = [[torch.tensor([1.0, -1.0]), torch.tensor([2.0, 2.0])], [torch.tensor([4.0])]]
    same = [[t.clone() for t in scale] for scale in real]
    assert feature_matching_loss(real, same).item() == 0.0

    fake = [
        [torch.tensor([0.0, -1.0], requires_grad=True), torch.tensor([2.0, 3.0], requires_grad=True)],
        [torch.tensor([2.0], requires_grad=True)],
    ]
    real_g = [[t.clone().requires_grad_(True) for t in scale] for scale in real]
    # layer terms: (0.5 / 1), (0.5 / 2), (2 / 4) -> mean over 3 layers
    loss = feature_matching_loss(real_g, fake)
    assert loss.item() == pytest.approx((0.5 + 0.25 + 0.5) / 3)
    loss.backward()
    assert all(t.grad is not None for scale in fake for t in scale)
    assert all(t.grad is None for scale in real_g for t in scale)  # real features detached


# ---------------------------------------------------------------- discriminator


def test_discriminator_shapes_and_gradients():
    disc = MultiScaleSTFTDiscriminator()
    n_params = sum(p.numel() for p in disc.parameters())
    assert 0.4e6 < n_params < 1.2e6
    x = 0.1 * torch.randn(2, 4096)
    logits, feats = disc(x)
    assert len(logits) == len(feats) == 3
    for n_fft, lg, fm in zip((1024, 2048, 512), logits, feats):
        frames = (4096 - n_fft) // (n_fft // 4) + 1
        freq = n_fft // 2 + 1
        for _ in range(3):  # three stride-2 layers along frequency
            freq = (freq - 1) // 2 + 1
        assert lg.shape == (2, 1, frames, freq)
        assert lg.dtype == torch.float32
        assert len(fm) == 5
        assert all(f.shape[0] == 2 and f.shape[2] == frames for f in fm)
    loss = generator_adversarial_loss(logits) + discriminator_hinge_loss(logits, logits)
    loss.backward()
    for name, p in disc.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert sum(p.grad.abs().sum() for p in disc.parameters()) > 0


def test_discriminator_end_to_end_with_losses():
    disc = MultiScaleSTFTDiscriminator(filters=8, max_filters=16)
    x = 0.1 * torch.randn(2, 3000)  # shorter than the largest n_fft: padded
    x_hat = (x + 0.05 * torch.randn_like(x)).requires_grad_(True)
    real_logits, real_feats = disc(x)
    fake_logits, fake_feats = disc(x_hat)
    g = generator_adversarial_loss(fake_logits) + feature_matching_loss(real_feats, fake_feats)
    g.backward()
    assert x_hat.grad is not None and torch.isfinite(x_hat.grad).all()
    assert x_hat.grad.abs().sum() > 0
    d = discriminator_hinge_loss(real_logits, disc(x_hat.detach())[0])
    assert torch.isfinite(d) and d.item() > 0
