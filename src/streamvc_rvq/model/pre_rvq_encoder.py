"""The learnable path that produces the RVQ input: content features -> pre-RVQ features.

Why more than the 1x1 ``pre_rvq_conv`` of the design note. StreamVC stops the decoder's
gradient at the content encoder, so the only parameters between the stop-gradient and the
RVQ were that 1x1 conv. The per-channel normalisation after it cancels its bias and the
scale of each output channel, so the commitment term β||r - sg(e)||^2 could only choose a
channel mix of frozen features: β had nothing to shape, and the β = 0.5 vs 1.0 A/B was void
whatever the truth. A small causal network here gives the commitment (and the decoder's
reconstruction loss, through the straight-through estimator) a non-linear, temporal path
to act on — it can move frames towards codes — while the content encoder keeps StreamVC's
stop-gradient and is trained by its label loss alone:

    content B x D x F --CausalConv1d(k, D -> H)--> ELU --pre_rvq_conv: CausalConv1d(1, H -> d)--> B x d x F

Causal at the frame rate (``k - 1`` frames of history, no look-ahead), so it streams and
adds ``k - 1`` frames to the RVQ input's warm-up.
"""

from __future__ import annotations

from torch import Tensor

from streamvc_rvq.modules.conv import CausalConv1d, StreamingModule
from streamvc_rvq.modules.native import elu

__all__ = ["PreRVQEncoder"]


class PreRVQEncoder(StreamingModule):
    def __init__(self, in_dim: int, out_dim: int, hidden: int = 0, kernel_size: int = 3):
        super().__init__()
        hidden = hidden or in_dim
        self.conv = CausalConv1d(in_dim, hidden, kernel_size)
        self.pre_rvq_conv = CausalConv1d(hidden, out_dim, 1)

    def forward(self, content: Tensor) -> Tensor:
        return self.pre_rvq_conv(elu(self.conv(content)))

    def stream_step(self, content: Tensor) -> Tensor:
        return self.pre_rvq_conv.stream_step(elu(self.conv.stream_step(content)))
