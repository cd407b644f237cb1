"""Speaker encoder: a SoundStream encoder and learnable attention pooling to one vector.

``SpeakerEncoder(channels=C, dim=D, strides)`` maps a reference ``B x T_ref`` to
``B x D``: the encoder gives frames ``h_t`` (``B x D x F``), a learnable scoring vector
gives each frame a weight ``softmax_t(w . h_t + b)``, and the embedding is the weighted
mean of value projections ``sum_t a_t (V h_t)``. The reference is encoded once per
conversion, so it need not be causal (it is, because the encoder is shared code).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from streamvc_rvq.modules.seanet import SEANetEncoder

__all__ = ["SpeakerEncoder"]


class SpeakerEncoder(nn.Module):
    def __init__(self, channels: int = 32, dim: int = 64, strides=(2, 4, 5, 8)):
        super().__init__()
        self.dim = dim
        self.hop = 1
        for s in strides:
            self.hop *= s
        self.encoder = SEANetEncoder(channels, dim, strides)
        self.score = nn.Conv1d(dim, 1, 1)  # learnable query: attention logit per frame
        self.value = nn.Conv1d(dim, dim, 1)

    def forward(self, reference: Tensor) -> Tensor:
        """``reference: B x T_ref`` (at least one frame) -> speaker embedding ``B x D``."""
        if reference.shape[-1] < self.hop:
            raise ValueError(f"reference needs at least {self.hop} samples, got {reference.shape[-1]}")
        h = self.encoder(reference.unsqueeze(1))  # B x D x F
        weights = torch.softmax(self.score(h), dim=-1)  # B x 1 x F
        return (self.value(h) * weights).sum(dim=-1)
