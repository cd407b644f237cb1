"""Which frames are fit to be measured: the one home of the valid-frames rule (SPEC section 7).

Every causal convolution pads its input with zeros on the left. A frame whose receptive
field reaches before the start of the input therefore sees that zero padding and not the
audio, and the content path's output climbs through a start-up transient over those frames
(measured on a trained quick model: the norm rose from 4.7 to 25 over the first frames, and
the first 8 frames of a crop held 95.5 % of the RVQ input's energy once the per-channel
normalisation had taken its statistics over them). Such frames are unlike any frame a
stream sees after its start, so they must not set normalisation statistics, losses, code
histograms or metrics.

The rule: frame ``n`` of an input that starts at sample 0 covers samples
``[(n + 1) * hop - R, (n + 1) * hop - 1]`` of the RVQ-input path (receptive field ``R``
samples); it is valid when that window starts at or after sample 0, i.e.
``n >= warmup = ceil(R / hop) - 1``, and when it lies before the end of the real signal
(``n < length``; trailing zero padding of a short crop is not signal either). A stage may
add warm-up of its own (the causal normalisation needs a few frames of statistics):
:meth:`StreamVC.warmup_frames` sums them.

Training crops carry ``warmup`` frames of the preceding audio as left context, which the
model runs but nothing scores, so every scored frame has real audio in its receptive field;
evaluation and streaming score a whole utterance from frame ``warmup`` on.
"""

from __future__ import annotations

import math

import torch


def warmup_frames(receptive_field: int, hop: int) -> int:
    """Leading frames whose receptive field (in samples) reaches before sample 0."""
    return max(0, math.ceil(receptive_field / hop) - 1)


def valid_mask(
    num_frames: int, warmup: int, lengths: torch.Tensor | None = None, batch: int = 1, device=None
) -> torch.Tensor:
    """``B x num_frames`` bool: ``warmup <= n < lengths[b]`` (``lengths`` None: every frame
    from ``warmup`` on, for ``batch`` rows)."""
    idx = torch.arange(num_frames, device=device)
    if lengths is None:
        return (idx >= warmup).unsqueeze(0).expand(batch, num_frames)
    lengths = lengths.to(device=idx.device)
    return (idx.unsqueeze(0) >= warmup) & (idx.unsqueeze(0) < lengths.unsqueeze(1))
