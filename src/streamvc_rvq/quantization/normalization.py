"""Pre-RVQ normalisation (Phase 1 fix 1: scale matching), on ``B x D x T`` features.

The collapse it fixes: encoder features with std 0.31 against an N(0, 1) codebook make
``||e||^2`` dominate ``||x||^2 - 2 x.e + ||e||^2``, so the code with the smallest norm wins
nearly every nearest-neighbour search. Bringing the features to std 1 restores a fair
competition. Three modes (config key ``model.pre_rvq_norm``):

``utterance``
    Exactly the design note: per channel over the time axis,
    ``x - x.mean(-1, keepdim=True)`` then ``/ (x.std(-1, keepdim=True) + 1e-5)``.
    Needs the whole utterance, so it **cannot stream** (``streamable`` is False).

``causal``
    Per-frame normalisation over channels: each frame's ``D`` values get mean 0 and
    (population) std 1, ``(x - mean_D) / (std_D + 1e-5)``, with no learnable affine.
    Why this form:

    * *Streamable with zero delay and no state.* Frame ``t`` depends on frame ``t`` only, so
      streamed output equals offline output exactly, whatever the chunking, and there is no
      state to carry, reset or warm up.
    * *It matches the codebook scale frame by frame.* A normalised frame has
      ``||x_t||^2 = D`` (up to eps), the expected squared norm of an N(0, 1) code, so every
      search compares vectors of the codebook's scale; a quiet frame is not left at a small
      scale where the smallest code would win again.
    * *No learnable gain* on purpose: a learned scale could shrink the features back below
      the codebook's scale and re-open the collapse.
    * *Against running statistics* (a causal cumulative or exponential mean/std per channel):
      those are the closest streaming analogue of ``utterance`` and keep per-frame energy,
      but they need state, are poorly estimated on the first frames (the std of one frame is
      undefined), depend on what came before (leading silence skews them), and make train and
      streaming inference agree only if both start from the same state. The costs of the
      per-frame form: each frame's mean and gain across channels is removed (the decoder
      receives energy and pitch as separate features, so little is lost), and a constant
      per-channel offset shared by all frames is *not* removed (unlike ``utterance``): if it
      is large against the frame-to-frame variation, normalised frames all point the same way
      and codes concentrate again. ``pre_rvq_conv``'s bias can learn to cancel it.

``none``
    Identity: the pre-fix baseline.
"""

from __future__ import annotations

import torch
from torch import nn

MODES = ("utterance", "causal", "none")
EPS = 1e-5


class PreRVQNorm(nn.Module):
    """Normalise ``x: B x D x T`` before the RVQ; no parameters, no state."""

    def __init__(self, mode: str = "utterance", eps: float = EPS):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"pre_rvq_norm mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.eps = eps

    @property
    def streamable(self) -> bool:
        """Whether frame ``t`` of the output depends on frames ``<= t`` only."""
        return self.mode != "utterance"

    def extra_repr(self) -> str:
        return f"mode={self.mode}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "utterance":
            # Design note, verbatim: per channel over time (unbiased std, as torch's default).
            x = x - x.mean(dim=-1, keepdim=True)
            return x / (x.std(dim=-1, keepdim=True) + self.eps)
        if self.mode == "causal":
            # Per frame over channels; population std so that ||x_t||^2 = D. Reducing over the
            # contiguous last axis of a B x T x D copy makes every frame's arithmetic the same
            # whatever T is, so chunked (streamed) output equals offline output bit for bit.
            f = x.transpose(1, 2).contiguous()
            f = f - f.mean(dim=-1, keepdim=True)
            f = f / (f.std(dim=-1, keepdim=True, correction=0) + self.eps)
            return f.transpose(1, 2)
        return x
