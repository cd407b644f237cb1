"""Pre-RVQ normalisation: the design note's utterance mode, the streamable causal mode, none."""

import pytest
import torch

from streamvc_rvq.quantization.normalization import PreRVQNorm


def test_utterance_is_the_design_note():
    """The note's formula, up to float rounding: the masked statistics sum in another order
    than ``x.mean``, and which order rounds how depends on the CPU's vector units (bit
    equality held on one machine and failed on an AVX-512 one)."""
    x = 0.31 * torch.randn(2, 8, 50) + 0.7
    expected = x - x.mean(dim=-1, keepdim=True)
    expected = expected / (expected.std(dim=-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(PreRVQNorm("utterance")(x), expected, rtol=0, atol=2e-6)
    assert not torch.allclose(PreRVQNorm("none")(x), expected, atol=1e-3)  # the comparison can fail


def test_utterance_normalises_each_channel_over_time():
    y = PreRVQNorm("utterance")(0.31 * torch.randn(2, 8, 50) - 3.0)
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 8), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(-1), torch.ones(2, 8), atol=1e-4, rtol=0)


def test_causal_uses_running_statistics_of_past_valid_frames():
    x = 0.3 * torch.randn(2, 8, 50) + 2.0
    mask = torch.zeros(2, 50, dtype=torch.bool)
    mask[:, 5:] = True
    y = PreRVQNorm("causal")(x, mask)
    assert torch.equal(y[..., :5], torch.zeros(2, 8, 5))  # no statistics yet: zero, never huge
    for t in (6, 20, 49):
        past = x[..., 5 : t + 1]
        mean, std = past.mean(-1), past.std(-1, correction=0)
        torch.testing.assert_close(y[..., t], (x[..., t] - mean) / (std + 1e-5), atol=1e-4, rtol=1e-4)


def test_causal_removes_an_offset_shared_by_all_frames():
    # The old per-frame causal mode mapped every frame of this input to nearly the same
    # vector (the offset dominates each frame), so stage 0 sat at perplexity 1.
    x = torch.randn(1, 16, 200) * 0.015 + torch.linspace(-3, 3, 16).view(1, 16, 1)
    y = PreRVQNorm("causal")(x)[..., 20:]
    cos = torch.nn.functional.cosine_similarity(y[..., :-1], y[..., 1:], dim=1)
    assert cos.abs().mean() < 0.5
    torch.testing.assert_close(y.std(-1), torch.ones(1, 16), atol=0.15, rtol=0)


def test_causal_streams_chunk_by_chunk_like_offline():
    norm = PreRVQNorm("causal", stats_start=3)
    x = torch.randn(1, 16, 40) + 4.0
    offline = norm(x)
    norm.reset_stream()
    streamed = torch.cat([norm.stream_step(chunk) for chunk in x.split([1, 7, 12, 20], dim=-1)], dim=-1)
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=1e-5)
    future = x.clone()
    future[..., 20:] += 5.0  # changing the future leaves the past untouched
    assert torch.equal(norm(future)[..., :20], offline[..., :20])


def test_statistics_ignore_invalid_frames():
    # A start-up transient (8 frames of large norm) ahead of near-constant real frames: the
    # artefact found in review. Taken over all frames, the statistics squash the real frames;
    # taken over the valid frames only, the real frames come out at unit scale.
    real = torch.randn(1, 32, 56) * 0.015 + 3.0
    transient = torch.randn(1, 32, 8) * 5.0
    x = torch.cat((transient, real), dim=-1)
    mask = torch.zeros(1, 64, dtype=torch.bool)
    mask[:, 8:] = True
    for mode in ("utterance", "causal"):
        squashed = PreRVQNorm(mode, stats_start=0)(x)[..., 8 + 16 :]
        fixed = PreRVQNorm(mode)(x, mask)[..., 8 + 16 :]
        assert squashed.norm(dim=1).median() / 32**0.5 < 0.3, mode  # outside the [0.5, 2] band
        assert 0.7 < fixed.norm(dim=1).median() / 32**0.5 < 1.3, mode
    torch.testing.assert_close(PreRVQNorm("utterance")(x, mask)[..., 8:].std(-1), torch.ones(1, 32), atol=1e-3, rtol=0)


def test_utterance_looks_at_the_future_and_says_so():
    norm = PreRVQNorm("utterance")
    x = torch.randn(1, 4, 20)
    future = x.clone()
    future[..., -1] += 5.0
    assert not torch.allclose(norm(future)[..., 0], norm(x)[..., 0])
    assert norm.streamable is False
    assert PreRVQNorm("causal").streamable is True
    assert PreRVQNorm("none").streamable is True


def test_none_is_identity_and_no_mode_has_parameters():
    x = torch.randn(2, 4, 10)
    assert torch.equal(PreRVQNorm("none")(x), x)
    for mode in ("utterance", "causal", "none"):
        assert list(PreRVQNorm(mode).parameters()) == []


def test_unknown_mode_raises():
    with pytest.raises(ValueError):
        PreRVQNorm("batch")
