"""Yin pitch and energy features: accuracy, voicing, causality, streaming, float32."""

from __future__ import annotations

import math

import pytest
import torch

from streamvc_rvq.model.pitch import PitchEnergy

from .conftest import HOP, SR, voiced


def harmonic_tone(f0: float, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(seconds * SR), dtype=torch.float32) / SR
    return sum(0.3 / h * torch.sin(2 * math.pi * h * f0 * t + h) for h in range(1, 6)).unsqueeze(0)


@pytest.mark.parametrize("f0", [100.0, 150.0, 220.0, 300.0])
def test_yin_tracks_harmonic_tones_within_two_percent(f0):
    yin = PitchEnergy().yin(harmonic_tone(f0))
    assert yin.f0.shape == (1, 3, SR // HOP)
    for k in range(3):  # every threshold
        voiced_frames = ~yin.unvoiced[0, k]
        assert voiced_frames.float().mean() > 0.9
        estimate = yin.f0[0, k][voiced_frames].median()
        assert abs(estimate / f0 - 1) < 0.02, (k, float(estimate))


def test_white_noise_and_silence_are_unvoiced():
    pitch = PitchEnergy()
    noise = pitch.yin(0.1 * torch.randn(1, SR))
    assert noise.unvoiced.float().mean() > 0.9
    silence = pitch.yin(torch.zeros(1, SR))
    assert bool(silence.unvoiced.all())
    assert torch.isfinite(silence.cmnd).all() and torch.isfinite(silence.energy).all()


def test_features_layout_and_whitening():
    pitch = PitchEnergy(whitening="utterance")
    x = torch.cat([voiced(1.0, 120.0), voiced(1.0, 240.0)], dim=-1)
    features = pitch(x)
    assert features.shape == (1, 3 * 3 + 1, 100) and features.dtype == torch.float32
    yin = pitch.yin(x)
    white, unvoiced_flag, cmnd = features[0, 0], features[0, 1], features[0, 2]
    torch.testing.assert_close(unvoiced_flag, yin.unvoiced[0, 0].float())
    torch.testing.assert_close(cmnd, yin.cmnd[0, 0])
    torch.testing.assert_close(features[0, -1], yin.energy[0])
    v = ~yin.unvoiced[0, 0]
    assert float(white[v].mean()).__abs__() < 1e-4 and abs(float(white[v].std(correction=0)) - 1) < 0.01
    assert bool((white[~v] == 0).all())
    assert float(white[:50][v[:50]].mean()) < 0 < float(white[50:][v[50:]].mean())  # low then high pitch


def test_running_whitening_uses_only_the_past():
    pitch = PitchEnergy(whitening="running")
    x = torch.cat([voiced(1.0, 120.0), voiced(1.0, 240.0)], dim=-1)
    full, head = pitch(x), pitch(x[:, : SR])
    torch.testing.assert_close(full[..., :50], head)  # the future does not change the past


@pytest.mark.parametrize("t", [0, 5 * HOP, 5 * HOP + 200, 40 * HOP - 1])
def test_frame_features_depend_only_on_samples_up_to_the_frame_end(t):
    pitch = PitchEnergy(whitening="running")
    x = voiced(1.0)
    x2 = x.clone()
    x2[0, t] += 0.5
    a, b = pitch(x), pitch(x2)
    frame = t // HOP  # frame n ends at sample (n + 1) * HOP - 1
    assert torch.equal(a[..., :frame], b[..., :frame])
    assert not torch.equal(a[..., frame], b[..., frame])


@pytest.mark.parametrize("chunk_frames", [1, 3])
def test_streaming_equals_offline(speech_like, chunk_frames):
    pitch = PitchEnergy(whitening="running")
    x = torch.cat([speech_like, voiced(3.0, 180.0, seed=5)])  # batch of 2
    offline = pitch(x)
    pitch.reset_stream()
    step = chunk_frames * HOP
    streamed = torch.cat([pitch.stream_step(x[:, i : i + step]) for i in range(0, x.shape[-1], step)], -1)
    assert streamed.shape == offline.shape
    flags = list(range(1, 9, 3))  # unvoiced flags: decisions must be identical
    assert torch.equal(streamed[:, flags], offline[:, flags])
    assert torch.equal(streamed, offline)  # the running sums continue in the offline order (running_sum)


def test_utterance_whitening_refuses_to_stream():
    with pytest.raises(ValueError, match="cannot stream"):
        PitchEnergy(whitening="utterance").stream_step(torch.zeros(1, HOP))


def test_float32_even_from_float64_input():
    features = PitchEnergy()(voiced(0.5).double())
    assert features.dtype == torch.float32


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="whitening"):
        PitchEnergy(whitening="global")
    with pytest.raises(ValueError, match="fmin"):
        PitchEnergy(fmin=500.0, fmax=60.0)


def test_reference_statistics_give_the_reference_level():
    pitch = PitchEnergy()
    stats = pitch.reference_statistics(harmonic_tone(200.0))  # 1 x K x 2
    assert stats.shape == (1, 3, 2)
    torch.testing.assert_close(stats[0, :, 0], torch.full((3,), math.log(200.0) - pitch.log_f0_centre), atol=0.02, rtol=0)
    assert float(stats[0, :, 1].max()) < 0.05  # a steady tone: the std is at its floor
    silent = pitch.reference_statistics(torch.zeros(1, SR))
    assert float(silent[0, :, 0].abs().max()) == 0.0 and torch.isfinite(silent).all()


def test_retarget_moves_the_contour_to_the_reference_level():
    """The appended channel is the source's whitened contour at the reference's level: a low
    and a high reference give levels log(240/120) apart; with target none nothing is appended."""
    pitch = PitchEnergy()
    source = voiced(1.0, 150.0)
    features = pitch(source)
    low, high = (pitch.retarget(features, pitch.reference_statistics(voiced(1.0, f0, seed=3))) for f0 in (120.0, 240.0))
    assert low.shape == (1, pitch.num_features, 50) and pitch.num_features == 4 * 3 + 1
    torch.testing.assert_close(low[:, : pitch.base_features], features)
    voiced_frames = features[0, 1] == 0
    gap = (high[0, pitch.base_features] - low[0, pitch.base_features])[voiced_frames]
    assert abs(float(gap.mean()) - math.log(2.0)) < 0.05
    assert bool((low[0, pitch.base_features][~voiced_frames] == 0).all())
    flat = PitchEnergy(target="none")
    assert flat.num_features == flat.base_features and flat.retarget(features, None) is features
    with pytest.raises(ValueError, match="target"):
        PitchEnergy(target="speaker")
