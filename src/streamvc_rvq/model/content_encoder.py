"""Content encoder: causal SoundStream encoder from 16 kHz audio to 50 Hz content features.

``ContentEncoder(channels=C, dim=D, strides, num_labels)`` maps ``audio: B x T`` to
``features: B x D x (T // hop)`` (``hop = prod(strides)``, 320 -> 50 Hz), frame ``n``
depending on samples ``<= (n + 1) * hop - 1`` only. With ``num_labels > 0`` a linear head
(1x1 conv) gives frame-label logits ``B x num_labels x F`` for the content cross-entropy --
the StreamVC paper trains this encoder on HuBERT pseudo-labels; here the labels come from
the corpus (SPEC section 3).
"""

from __future__ import annotations

from torch import Tensor, nn

from streamvc_rvq.modules.conv import StreamingModule
from streamvc_rvq.modules.seanet import SEANetEncoder

__all__ = ["ContentEncoder"]


class ContentEncoder(StreamingModule):
    def __init__(self, channels: int = 64, dim: int = 64, strides=(2, 4, 5, 8), num_labels: int = 0):
        super().__init__()
        self.dim = dim
        self.encoder = SEANetEncoder(channels, dim, strides)
        self.label_head = nn.Conv1d(dim, num_labels, 1) if num_labels > 0 else None

    def forward(self, audio: Tensor) -> tuple[Tensor, Tensor | None]:
        """``audio: B x T`` -> ``(features B x D x F, logits B x num_labels x F or None)``."""
        features = self.encoder(audio.unsqueeze(1))
        logits = self.label_head(features) if self.label_head is not None else None
        return features, logits

    def stream_step(self, chunk: Tensor) -> Tensor:
        """Next ``chunk: B x (n * hop)`` samples -> features ``B x D x n`` (no label head)."""
        return self.encoder.stream_step(chunk.unsqueeze(1))
