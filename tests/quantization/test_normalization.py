"""Pre-RVQ normalisation: the design note's utterance mode, the streamable causal mode, none."""

import pytest
import torch

from streamvc_rvq.quantization.normalization import PreRVQNorm


def test_utterance_is_exactly_the_design_note():
    x = 0.31 * torch.randn(2, 8, 50) + 0.7
    expected = x - x.mean(dim=-1, keepdim=True)
    expected = expected / (expected.std(dim=-1, keepdim=True) + 1e-5)
    assert torch.equal(PreRVQNorm("utterance")(x), expected)


def test_utterance_normalises_each_channel_over_time():
    y = PreRVQNorm("utterance")(0.31 * torch.randn(2, 8, 50) - 3.0)
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 8), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(-1), torch.ones(2, 8), atol=1e-4, rtol=0)


def test_causal_normalises_each_frame_over_channels():
    x = torch.randn(2, 8, 50) * torch.linspace(0.1, 3.0, 50) + 2.0
    y = PreRVQNorm("causal")(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 50), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(1, correction=0), torch.ones(2, 50), atol=1e-3, rtol=0)  # eps 1e-5
    # every frame has the squared norm D of a typical N(0, 1) code
    torch.testing.assert_close(y.square().sum(1), torch.full((2, 50), 8.0), atol=2e-2, rtol=0)


def test_causal_streams_chunk_by_chunk_like_offline():
    norm = PreRVQNorm("causal")
    x = torch.randn(1, 16, 40)
    offline = norm(x)
    streamed = torch.cat([norm(chunk) for chunk in x.split([1, 7, 12, 20], dim=-1)], dim=-1)
    assert torch.equal(streamed, offline)
    future = x.clone()
    future[..., 20:] += 5.0  # changing the future leaves the past untouched
    assert torch.equal(norm(future)[..., :20], offline[..., :20])


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
