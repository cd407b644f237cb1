"""Frame-scale statistics of the RVQ input: each can fail, and each is fed the input that fails it."""

import math

import pytest
import torch

from streamvc_rvq.quantization.frame_stats import FrameScaleAccumulator, frame_scale_stats, participation_ratio

D = 32


def all_valid(z):
    return torch.ones(z.shape[0], z.shape[-1], dtype=torch.bool)


def test_unit_gaussian_frames_are_at_the_codebook_scale():
    z = torch.randn(4, D, 200)
    s = frame_scale_stats(z, all_valid(z), torch.randn(1024, D))
    assert 0.95 < s["frame_scale"] < 1.05
    assert 0.9 < s["frame_scale_vs_codebook"] < 1.1
    assert s["effective_rank"] > 0.8 * D


def test_a_shrunk_input_is_outside_the_band():
    # the design note's 0.31 and the reviewed artefact's ~0.11
    for scale in (0.31, 0.11):
        z = scale * torch.randn(4, D, 200)
        s = frame_scale_stats(z, all_valid(z))
        assert s["frame_scale"] < 0.5
        assert s["frame_scale"] == pytest.approx(scale, rel=0.1)


def test_a_start_up_transient_shows_in_the_first_frames_energy_share():
    z = torch.randn(2, D, 64) * 0.1
    z[..., :8] *= 50.0
    s = frame_scale_stats(z, all_valid(z))
    assert s["first_frames_share"] == pytest.approx(8 / 64)
    assert s["first_frames_energy_share"] > 0.95
    valid = all_valid(z)
    valid[:, :8] = False  # the same frames, not counted: the share drops to the frame share
    s = frame_scale_stats(z, valid)
    assert s["first_frames_energy_share"] == pytest.approx(8 / 56, rel=0.3)


def test_a_rank_one_input_has_effective_rank_one():
    direction = torch.randn(D, 1)
    z = (direction * torch.randn(1, 500)).unsqueeze(0)
    assert frame_scale_stats(z, all_valid(z))["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert math.isnan(participation_ratio(torch.zeros(D), torch.zeros(D, D), 1))


def test_accumulating_utterances_equals_one_batch():
    z = torch.randn(3, D, 50)
    codebook = torch.randn(64, D)
    one = frame_scale_stats(z, all_valid(z), codebook)
    acc = FrameScaleAccumulator()
    for row in z:
        acc.update(row.unsqueeze(0), torch.ones(1, 50, dtype=torch.bool))
    many = acc.result(codebook)
    for key in one:
        assert many[key] == pytest.approx(one[key], rel=1e-4), key
