"""Pitch preservation measures: each can fail, on a contour it should not accept."""

from __future__ import annotations

import math

import torch

from streamvc_rvq.evaluation.pitch_metrics import pitch_preservation

SR = 16000


def glide(direction: float = 1.0, base: float = 150.0, seconds: float = 2.0) -> torch.Tensor:
    """A harmonic tone whose F0 moves 0.4 octave up and down twice a second (or mirrored)."""
    t = torch.arange(int(seconds * SR)) / SR
    f0 = base * 2 ** (direction * 0.4 * torch.sin(2 * math.pi * 1.0 * t))
    phase = 2 * math.pi * torch.cumsum(f0, 0) / SR
    return 0.3 * sum(torch.sin(k * phase) / k for k in (1, 2, 3))


def test_f0_correlation_is_one_on_itself_high_an_octave_up_and_low_for_a_mirrored_contour():
    source = glide()
    same = pitch_preservation(source, source)
    assert same["log_f0_correlation"] > 0.99 and same["voicing_agreement"] == 1.0
    octave = pitch_preservation(source, glide(base=300.0))
    assert octave["log_f0_correlation"] > 0.9
    mirrored = pitch_preservation(source, glide(direction=-1.0))
    assert mirrored["log_f0_correlation"] < -0.5
    assert same["voiced_frames"] > 80


def test_silence_has_no_correlation_and_disagrees_on_voicing():
    source = glide()
    silent = pitch_preservation(source, torch.zeros_like(source))
    assert silent["log_f0_correlation"] is None and silent["voiced_frames"] == 0
    assert silent["voicing_agreement"] < 0.2
