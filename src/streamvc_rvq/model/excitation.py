"""Harmonic excitation: the target's pitch as a signal the decoder filters (neural source-filter).

Measured on the quick preset: with the pitch level only among the decoder's frame features,
its outputs carried a 50 Hz comb (the frame rate: spectral peaks at every multiple of 50 Hz)
instead of the target's pitch, for conversions and reconstructions alike, so Yin read 400-500 Hz
or nothing from them; a decoder trained by spectral losses alone learns to make a periodic
waveform at a given f0 slowly. NSF (Wang et al. 2019) and its HiFi-GAN variants give the
decoder the periodicity instead: a sum of sines at the f0 contour that the network shapes.

``HarmonicSource(sample_rate, hop_length, rate_divisor, harmonics)`` maps a frame-level f0
``B x F`` (Hz; 0 = unvoiced) to ``B x H x (F * hop / rate_divisor)``: ``sin(2 pi k phi(t))``
for ``k = 1 .. H`` on voiced frames (0 on unvoiced ones and for harmonics at or above the
Nyquist frequency of its rate), at the sample rate divided by ``rate_divisor`` (the rate of
the decoder stage it enters). The phase ``phi`` runs on from frame to frame (no click at frame
edges): frame ``n`` starts at ``phi_n = frac(phi_{n-1} + f_{n-1} * hop / sr)`` and rises
linearly through it. Frame ``n`` uses only its own f0, so the excitation is causal at the frame
level, and the frame recursion is the same arithmetic offline and streaming: a stream carries
``phi`` and gives the offline values exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from streamvc_rvq.modules.conv import StreamingModule

__all__ = ["HarmonicSource"]


class HarmonicSource(StreamingModule):
    def __init__(self, sample_rate: int, hop_length: int, rate_divisor: int, harmonics: int):
        super().__init__()
        if hop_length % rate_divisor:
            raise ValueError(f"hop {hop_length} is not a multiple of the rate divisor {rate_divisor}")
        self.rate = sample_rate / rate_divisor
        self.samples_per_frame = hop_length // rate_divisor
        self.frame_seconds = hop_length / sample_rate
        self.harmonics = harmonics
        offsets = torch.arange(1, self.samples_per_frame + 1, dtype=torch.float32) / self.rate
        self.register_buffer("_offsets", offsets, persistent=False)  # seconds into the frame, per sample
        self.register_buffer("_orders", torch.arange(1, harmonics + 1, dtype=torch.float32), persistent=False)
        self._phase: Tensor | None = None

    def _start_phases(self, f0: Tensor, phase: Tensor) -> tuple[Tensor, Tensor]:
        """Each frame's starting phase (cycles, ``B x F``) from ``phase`` (``B``) before the first,
        and the phase after the last: the frame recursion, one small step per frame."""
        advance = f0 * self.frame_seconds
        starts = []
        for n in range(f0.shape[-1]):
            starts.append(phase)
            phase = torch.frac(phase + advance[:, n])
        return torch.stack(starts, dim=-1), phase

    def _excite(self, f0: Tensor, starts: Tensor) -> Tensor:
        batch, frames = f0.shape
        phase = starts.unsqueeze(-1) + f0.unsqueeze(-1) * self._offsets  # B x F x S (cycles)
        waves = torch.sin(2 * math.pi * phase.unsqueeze(1) * self._orders.view(1, -1, 1, 1))  # B x H x F x S
        audible = (f0.unsqueeze(1) * self._orders.view(1, -1, 1) < self.rate / 2) & (f0.unsqueeze(1) > 0)
        return (waves * audible.unsqueeze(-1)).reshape(batch, self.harmonics, frames * self.samples_per_frame)

    def forward(self, f0: Tensor) -> Tensor:
        f0 = f0.float()
        starts, _ = self._start_phases(f0, f0.new_zeros(f0.shape[0]))
        return self._excite(f0, starts)

    def _reset_own_stream(self, keep_weights: bool = False) -> None:
        self._phase = None

    def stream_step(self, f0: Tensor) -> Tensor:
        """Next frames' f0 ``B x n`` -> their excitation, continuing the phase."""
        f0 = f0.float()
        if self._phase is None:
            self._phase = f0.new_zeros(f0.shape[0])
        starts, self._phase = self._start_phases(f0, self._phase)
        return self._excite(f0, starts)
