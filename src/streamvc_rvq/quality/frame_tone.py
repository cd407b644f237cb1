"""The frame-rate tone ("mosquito tone", issue 38): how far the lines at multiples of the model's
frame rate (16 kHz / hop 320 = 50 Hz) stand above the spectrum between them.

A decoder that builds each 20 ms frame from a code held for the frame, then upsampled, can
imprint the frame grid on its output: a comb of exactly periodic lines at k x 50 Hz. Speech has
harmonics too, but its f0 moves, so over an utterance they smear across the spectrum while the
frame grid's lines stay sharp: on the quick phase1 outputs (step 500) the lines at 100-1000 Hz
stood a median 15.4 dB above the spectrum between them, on real held-out speech 0.2 dB.

The measure is a low quantile (:data:`QUANTILE`) of the per-line prominences, not their median:
a voice whose f0 sits on a multiple of the frame rate (100 Hz: every second line; 150 Hz: every
third) puts harmonics on at most half of the lines, and the quantile reads the lines between
them; the frame grid raises every line. Against the same utterance's source (the excess) it also
reads what the voice itself puts there.
"""

from __future__ import annotations

import math

import numpy as np
import torch

BAND_HZ = (100.0, 1000.0)  # lines measured: the frame rate's multiples in this band
RESOLUTION_HZ = 1.0  # Welch segments of 1 / RESOLUTION_HZ seconds (Hann, half overlap)
QUANTILE = 0.25  # of the per-line prominences
MIN_SECONDS = 0.25  # shorter audio gives no figure
SILENT_RMS = 1e-5


def welch_power(audio: np.ndarray, sample_rate: int, resolution_hz: float = RESOLUTION_HZ) -> np.ndarray:
    """Mean power spectrum over Hann segments of ``sample_rate / resolution_hz`` samples, half
    overlapping (one zero-padded segment for shorter audio); bins ``resolution_hz`` apart."""
    n = int(round(sample_rate / resolution_hz))
    x = np.asarray(audio, dtype=np.float64)
    if x.size < n:
        x = np.pad(x, (0, n - x.size))
    window = np.hanning(n)
    starts = range(0, x.size - n + 1, n // 2)
    return np.mean([np.abs(np.fft.rfft(x[s : s + n] * window)) ** 2 for s in starts], axis=0)


def line_prominences(audio: torch.Tensor | np.ndarray, sample_rate: int, frame_rate: float,
                     band: tuple[float, float] = BAND_HZ) -> list[float]:
    """Per multiple of ``frame_rate`` in ``band``: its line's power over the median power between
    it and the next line (the middle half of the gap), in dB."""
    x = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    power = welch_power(x.reshape(-1), sample_rate)
    freqs = np.arange(power.size) * RESOLUTION_HZ
    out = []
    for k in range(math.ceil(band[0] / frame_rate), math.floor(band[1] / frame_rate) + 1):
        f = k * frame_rate
        line = power[int(round(f / RESOLUTION_HZ))]  # the frame grid's lines fall on exact bins
        gap = power[(freqs > f + frame_rate / 4) & (freqs < f + 3 * frame_rate / 4)]
        out.append(float(10 * np.log10(max(line, 1e-30) / max(np.median(gap), 1e-30))))
    return out


def frame_rate_tone_db(audio: torch.Tensor | np.ndarray, sample_rate: int, frame_rate: float) -> float | None:
    """The frame-rate tone of one signal in dB (:data:`QUANTILE` of :func:`line_prominences`);
    None for audio shorter than :data:`MIN_SECONDS` or silent."""
    x = audio.detach().cpu().float().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio, np.float32)
    x = x.reshape(-1)
    if x.size < MIN_SECONDS * sample_rate or float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) < SILENT_RMS:
        return None
    return float(np.quantile(line_prominences(x, sample_rate, frame_rate), QUANTILE))
