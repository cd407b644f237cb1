"""Tiny model configurations and signals shared by the model tests."""

from __future__ import annotations

import math

import pytest
import torch

from streamvc_rvq.config import deep_merge

SR = 16000
HOP = 320

TINY = {
    "content_encoder": {"channels": 4, "dim": 8, "num_labels": 5},
    "speaker_encoder": {"channels": 4, "dim": 8},
    "decoder": {"channels": 4},
    "rvq": {"num_quantizers": 3, "codebook_size": 16, "codebook_dim": 8},
}
CAUSAL = {"pre_rvq_norm": "causal", "pitch": {"whitening": "running"}}


def tiny_config(**overrides) -> dict:
    """The tiny model (channels 4, codebook 16, 3 stages) with ``overrides`` merged in."""
    return deep_merge(TINY, overrides)


def tiny_causal_config(**overrides) -> dict:
    return deep_merge(deep_merge(TINY, CAUSAL), overrides)


def voiced(seconds: float, f0: float = 150.0, seed: int = 0, noise: float = 0.02) -> torch.Tensor:
    """``1 x T`` harmonic tone with a slow f0 glide and a little noise."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * SR)
    t = torch.arange(n, dtype=torch.float32) / SR
    phase = 2 * math.pi * torch.cumsum(f0 * (1 + 0.1 * torch.sin(2 * math.pi * 0.7 * t)), 0) / SR
    tone = sum(torch.sin(h * phase) / h for h in range(1, 6))
    return (0.2 * tone + noise * torch.randn(n, generator=g)).unsqueeze(0)


@pytest.fixture
def speech_like() -> torch.Tensor:
    """3 s: voiced, then silence, then noise, then voiced at another pitch (1 x 48000)."""
    return torch.cat(
        [voiced(1.0, 140.0, 1), torch.zeros(1, SR // 4), 0.05 * torch.randn(1, SR // 4), voiced(1.5, 220.0, 2)], dim=-1
    )
