"""Pre-RVQ normalisation (Phase 1 fix 1: scale matching), on ``B x D x T`` features.

The collapse it fixes: encoder features with std 0.31 against an N(0, 1) codebook make
``||e||^2`` dominate ``||x||^2 - 2 x.e + ||e||^2``, so the code with the smallest norm wins
nearly every nearest-neighbour search. Bringing the features to std 1 restores a fair
competition. Statistics are taken over the frames that are fit to set them (the
valid-frames rule, :mod:`streamvc_rvq.model.valid_frames`): start-up frames whose receptive
field reaches into the zero padding carry most of the energy of an untrained causal
encoder's output and, counted in, squash every real frame towards the origin. Three modes
(config key ``model.pre_rvq_norm``):

``utterance``
    The design note: per channel over the time axis, ``x - mean`` then
    ``/ (std + 1e-5)`` (unbiased std, as ``x.std(-1)``), with mean and std taken over the
    valid frames of each utterance (all frames when none is valid). With every frame valid
    it is the note's code verbatim. Needs the whole utterance, so it **cannot stream**.

``causal``
    The streaming counterpart of ``utterance``: per channel, the running (cumulative) mean
    and population std over the valid frames up to and including frame ``t``. Frame ``t``
    depends on frames ``<= t`` only, so streamed output equals offline output up to float
    rounding (the state is the running count and sums; chunked cumulative sums round in
    another order, ~1e-7 relative). Its estimates need a few frames to settle, so the mode
    adds :data:`CAUSAL_WARMUP_FRAMES` to the model's warm-up: frames normalised with fewer
    statistics are run but not scored. Before the first valid frame the output is zero
    (no statistics yet; never huge values that the decoder would carry into later frames).
    The sums are taken around the first valid frame (a shift per channel) so that a large
    constant offset, which the encoder output has, costs no precision. Caveat: a stream
    that starts in digital silence has zero running std at first; the warm-up frames and
    ``eps`` bound, but do not remove, that effect.

    (The earlier causal mode normalised each frame over its channels. It left the large
    per-channel offset that all frames share in place, so every normalised frame pointed
    the same way and stage 0 sat at perplexity 1.00 by construction; it is gone.)

``none``
    Identity: the pre-fix baseline.
"""

from __future__ import annotations

import torch
from torch import Tensor

from streamvc_rvq.model.valid_frames import valid_mask
from streamvc_rvq.modules.conv import StreamingModule

MODES = ("utterance", "causal", "none")
EPS = 1e-5
CAUSAL_WARMUP_FRAMES = 8  # frames of running statistics before a frame is scored (160 ms)

RunningState = tuple[Tensor, Tensor, Tensor, Tensor]  # shift, count, sum, sum of squares


def masked_channel_stats(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and unbiased std of ``x: B x D x T`` over frames where ``mask: B x T``
    (all frames of a row that has no masked-in frame)."""
    m = mask.unsqueeze(1).to(x.dtype)
    m = torch.where(m.sum(-1, keepdim=True) > 0, m, torch.ones_like(m))
    n = m.sum(-1, keepdim=True)
    mean = (x * m).sum(-1, keepdim=True) / n
    var = ((x - mean).pow(2) * m).sum(-1, keepdim=True) / (n - 1).clamp_min(1)
    return mean, var.sqrt()


def running_normalise(x: Tensor, mask: Tensor, state: RunningState | None, eps: float) -> tuple[Tensor, RunningState | None]:
    """Causal per-channel normalisation of ``x: B x D x T`` by cumulative statistics over the
    frames where ``mask: B x T``, continuing ``state`` (None at the start of a signal)."""
    m = mask.unsqueeze(1).to(x.dtype)
    if state is None:
        any_valid = m.amax(dim=(0, 1))
        if not bool(any_valid.any()):
            return torch.zeros_like(x), None
        first = int(any_valid.argmax())
        zero = x.new_zeros(x.shape[0], 1, 1)
        state = (x[..., first : first + 1].detach().clone(), zero, x.new_zeros(x.shape[0], x.shape[1], 1),
                 x.new_zeros(x.shape[0], x.shape[1], 1))
    shift, n0, s10, s20 = state
    y = (x - shift) * m
    n = n0 + m.cumsum(-1)
    s1 = s10 + y.cumsum(-1)
    s2 = s20 + y.pow(2).cumsum(-1)
    mean = s1 / n.clamp_min(1)
    var = (s2 / n.clamp_min(1) - mean.pow(2)).clamp_min(0)
    out = torch.where(n > 0, (x - shift - mean) / (var.sqrt() + eps), torch.zeros_like(x))
    return out, (shift, n[..., -1:], s1[..., -1:], s2[..., -1:])


class PreRVQNorm(StreamingModule):
    """Normalise ``x: B x D x T`` before the RVQ; no parameters.

    ``stats_start``: the first frame fit to set statistics when no mask is given (the
    warm-up of the path before this module; the model sets it).
    """

    def __init__(self, mode: str = "utterance", eps: float = EPS, stats_start: int = 0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"pre_rvq_norm mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.eps = eps
        self.stats_start = stats_start
        self._state: RunningState | None = None
        self._frames_seen = 0

    @property
    def streamable(self) -> bool:
        """Whether frame ``t`` of the output depends on frames ``<= t`` only."""
        return self.mode != "utterance"

    @property
    def warmup_frames(self) -> int:
        """Frames after ``stats_start`` whose normalisation is not yet fit to be scored."""
        return CAUSAL_WARMUP_FRAMES if self.mode == "causal" else 0

    def extra_repr(self) -> str:
        return f"mode={self.mode}, eps={self.eps}, stats_start={self.stats_start}"

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``mask: B x T`` bool, the frames fit to set statistics (default: from ``stats_start``)."""
        if self.mode == "none":
            return x
        if mask is None:
            mask = valid_mask(x.shape[-1], self.stats_start, batch=x.shape[0], device=x.device)
        if self.mode == "utterance":
            mean, std = masked_channel_stats(x, mask)
            return (x - mean) / (std + self.eps)
        return running_normalise(x, mask, None, self.eps)[0]

    def _reset_own_stream(self, keep_weights: bool = False) -> None:
        self._state, self._frames_seen = None, 0

    def stream_step(self, x: Tensor) -> Tensor:
        """Next frames ``B x D x n`` of a stream (frame ``t`` counted from the stream's start)."""
        if self.mode == "none":
            return x
        if self.mode == "utterance":
            raise ValueError("pre_rvq_norm 'utterance' needs the whole utterance and cannot stream")
        frames = x.shape[-1]
        idx = torch.arange(self._frames_seen, self._frames_seen + frames, device=x.device)
        mask = (idx >= self.stats_start).unsqueeze(0).expand(x.shape[0], frames)
        self._frames_seen += frames
        out, self._state = running_normalise(x, mask, self._state, self.eps)
        return out
