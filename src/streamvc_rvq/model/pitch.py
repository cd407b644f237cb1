"""Pitch and energy features per 20 ms frame: Yin f0 at several thresholds, whitened, + energy.

StreamVC (Yang et al. 2024) conditions its decoder on the source's f0 from Yin at thresholds
0.05, 0.10 and 0.15, each giving the (whitened) f0, an unvoiced flag and the CMND value at
the chosen lag, plus the frame energy. This module computes them, vectorised over batch and
frames (no Python loop at all: frames and thresholds are tensor dimensions), float32.

Causal analysis window (the choice this module documents and its tests check):
    frame ``n`` covers samples ``[n*hop, (n+1)*hop)``. Its Yin integration window is the frame
    itself (``W = hop`` samples) and the lags reach back into the past, so the analysis
    segment is the ``L = W + max_lag + 1`` samples ending at the frame's last sample
    ``(n+1)*hop - 1`` (zeros before the start of the signal). Nothing after the end of
    frame ``n`` is read. With the defaults (hop 320, fmin 60 Hz -> max_lag 267) a segment is
    588 samples (36.8 ms), an FFT of 1024 points.

Yin (de Cheveigne & Kawahara 2002) on a segment ``s`` with the frame ``f = s[L-W:]``:
    difference  ``d(tau) = sum_i (f_i - s_{L-W+i-tau})^2 = E_0 + E_tau - 2 r(tau)``
    with ``r`` the cross-correlation of ``f`` and ``s`` (one real FFT product) and ``E_tau`` the
    energy of the lagged window (differences of a cumulative sum);
    CMND  ``d'(0) = 1``, ``d'(tau) = d(tau) * tau / sum_{j=1..tau} d(j)`` (1 where the
    sum is 0: silence);
    for each threshold ``theta``, the chosen lag is the first dip of ``d'`` below ``theta``
    inside ``[min_lag, max_lag]`` (first ``tau`` with ``d'(tau) < theta`` and
    ``d'(tau+1) >= d'(tau)``: the bottom of the first valley that crosses the threshold),
    refined by parabolic interpolation; frames without such a dip are *unvoiced* and take
    the global minimum of ``d'`` as their lag (its CMND value is still informative).

Features (``num_features = 3 * len(thresholds) + 1`` channels, in this order):
    for each threshold: whitened log-f0 (0 on unvoiced frames), unvoiced flag (1/0),
    CMND value at the chosen lag; then the log energy ``log(var(frame) + 1e-6)``.

Target pitch level (``target: reference``, :meth:`PitchEnergy.retarget`): whitening removes
the source's pitch level, as it should, but then nothing tells the decoder the *target's*
level except the speaker embedding (measured: every conversion's median f0 was 75 Hz for
targets at 76-310 Hz). So the reference's voiced log-f0 mean and std
(:meth:`PitchEnergy.reference_statistics`, once per reference, like the embedding) turn the
source's whitened contour into the target's: ``white * std_ref + mean_ref`` (centred log-f0,
0 on unvoiced frames), one more channel per threshold after the features above
(``num_features = 4 * len(thresholds) + 1``). In training the reference is another
utterance of the source's speaker, so the channel is the source's own level; converting, it
is the target's.

Whitening of log-f0, over *voiced* frames only (SPEC section 3 item 6):
    ``utterance``: mean and std of the whole utterance -- offline only (uses the future).
    ``running``: causal cumulative mean and variance of the voiced frames up to and
    including frame ``n``; a stream carries the three running sums and continues them in the
    offline order, so streamed features equal offline ones exactly (on the CPU).
    Both divide by ``sqrt(var + 1e-4)`` (a 1 % floor on the std of log-f0), so a steady
    tone whitens to 0 instead of amplified jitter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from streamvc_rvq.modules.conv import StreamingModule
from streamvc_rvq.options import check_one_of

__all__ = ["PitchEnergy", "YinOutput", "WHITENING_MODES", "TARGET_MODES"]

WHITENING_MODES = ("utterance", "running")
TARGET_MODES = ("reference", "none")
ENERGY_FLOOR = 1e-6
LOGF0_VAR_FLOOR = 1e-4


def running_sum(x: Tensor, start: Tensor | None = None) -> Tensor:
    """Cumulative sum over the last dimension, one frame after the other from ``start``
    (``... x 1``; default 0). ``torch.cumsum`` rounds in an order of its own, so a stream that
    continues it chunk by chunk would differ from the offline sums in the last bits, and the
    harmonic excitation, which integrates the f0 they whiten, would drift; added in this one
    order, streamed and offline sums are equal."""
    total = torch.zeros_like(x[..., :1]) if start is None else start
    sums = []
    for n in range(x.shape[-1]):
        total = total + x[..., n : n + 1]
        sums.append(total)
    return torch.cat(sums, dim=-1) if sums else x


@dataclass
class YinOutput:
    """Raw Yin results, each ``B x K x F`` (``K`` thresholds), plus energy ``B x F``."""

    f0: Tensor  # Hz, from the chosen (interpolated) lag; meaningful where voiced
    unvoiced: Tensor  # bool
    cmnd: Tensor  # d' at the chosen lag
    energy: Tensor  # log(frame variance + 1e-6)


class PitchEnergy(StreamingModule):
    """``forward(audio: B x T) -> features: B x base_features x (T // hop)`` (no parameters);
    with ``target: reference`` :meth:`retarget` appends the target-level channels."""

    def __init__(
        self,
        sample_rate: int = 16000,
        hop_length: int = 320,
        thresholds: list[float] | tuple[float, ...] = (0.05, 0.10, 0.15),
        fmin: float = 60.0,
        fmax: float = 500.0,
        whitening: str = "utterance",
        target: str = "reference",
    ):
        super().__init__()
        check_one_of("pitch whitening", whitening, WHITENING_MODES)
        check_one_of("pitch target", target, TARGET_MODES)
        self.target = target
        if not 0 < fmin < fmax < sample_rate / 2:
            raise ValueError(f"need 0 < fmin < fmax < sample_rate / 2, got fmin={fmin}, fmax={fmax}")
        if not thresholds:
            raise ValueError("pitch needs at least one Yin threshold")
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.thresholds = tuple(float(t) for t in thresholds)
        self.whitening = whitening
        self.min_lag = max(2, int(math.floor(sample_rate / fmax)))
        self.max_lag = int(math.ceil(sample_rate / fmin))
        self.window = hop_length
        self.segment = self.window + self.max_lag + 1  # lags 0 .. max_lag + 1
        self.n_fft = 1 << (self.segment - 1).bit_length()
        self.log_f0_centre = 0.5 * (math.log(fmin) + math.log(fmax))
        self.base_features = 3 * len(self.thresholds) + 1
        self.num_features = self.base_features + (len(self.thresholds) if target == "reference" else 0)
        lags = torch.arange(self.max_lag + 2)
        L, W = self.segment, self.window
        self.register_buffer("_lags", lags.to(torch.float32), persistent=False)
        self.register_buffer("_thresholds", torch.tensor(self.thresholds).unsqueeze(-1), persistent=False)
        self.register_buffer("_energy_hi", (L - lags).long(), persistent=False)
        self.register_buffer("_energy_lo", (L - W - lags).long(), persistent=False)
        self._history: Tensor | None = None
        self._sums: Tensor | None = None

    @property
    def streamable(self) -> bool:
        return self.whitening == "running"

    def extra_repr(self) -> str:
        return (
            f"thresholds={self.thresholds}, lags=[{self.min_lag}, {self.max_lag}], "
            f"segment={self.segment}, whitening={self.whitening}"
        )

    # -- Yin on analysis segments ------------------------------------------------------------
    def segments(self, audio: Tensor) -> Tensor:
        """``audio: B x T`` -> analysis segments ``B x F x L`` (``F = T // hop``), each ending at
        its frame's last sample, zeros before the signal start."""
        audio = audio.to(torch.float32)
        frames = audio.shape[-1] // self.hop_length
        audio = audio[..., : frames * self.hop_length]
        padded = F.pad(audio, (self.segment - self.hop_length, 0))
        return padded.unfold(-1, self.segment, self.hop_length)

    def cmnd(self, segments: Tensor) -> Tensor:
        """Cumulative mean normalised difference ``d'(tau)`` for ``tau = 0 .. max_lag + 1``."""
        L, W, n = self.segment, self.window, self.n_fft
        frame = segments[..., L - W :]
        # S * conj(Fr) in plain real arithmetic: torch's vectorised complex product rounds
        # differently from its scalar tail loop, so the same segment would give slightly
        # different d' in a batch and alone -- and a stream must take the offline decisions.
        s_re, s_im = torch.view_as_real(torch.fft.rfft(segments, n)).unbind(-1)
        f_re, f_im = torch.view_as_real(torch.fft.rfft(frame, n)).unbind(-1)
        spec = torch.complex(s_re * f_re + s_im * f_im, s_im * f_re - s_re * f_im)
        corr = torch.fft.irfft(spec, n)[..., : self.max_lag + 2]  # corr[m] = sum_i f_i s_{i+m}
        r = corr.flip(-1)  # r(tau) = corr[max_lag + 1 - tau]
        csum = F.pad(torch.cumsum(segments * segments, dim=-1), (1, 0))
        e_tau = csum[..., self._energy_hi] - csum[..., self._energy_lo]
        d = (e_tau[..., :1] + e_tau - 2.0 * r).clamp_min(0.0)
        running = torch.cumsum(d[..., 1:], dim=-1)
        ratio = d[..., 1:] * self._lags[1:] / running.clamp_min(torch.finfo(torch.float32).tiny)
        ratio = torch.where(running > 0, ratio, torch.ones_like(ratio))
        return torch.cat((torch.ones_like(d[..., :1]), ratio), dim=-1)

    def yin_segments(self, segments: Tensor) -> YinOutput:
        """Yin on ``segments: B x F x L`` (see :meth:`segments`), all thresholds at once."""
        cmnd = self.cmnd(segments)
        lo, hi = self.min_lag, self.max_lag
        prev, cur, nxt = cmnd[..., lo - 1 : hi], cmnd[..., lo : hi + 1], cmnd[..., lo + 1 : hi + 2]
        cond = (cur.unsqueeze(-2) < self._thresholds) & (nxt >= cur).unsqueeze(-2)  # B x F x K x lags
        voiced = cond.any(dim=-1)  # B x F x K
        first = cond.to(torch.float32).argmax(dim=-1)  # first dip below each threshold
        idx = torch.where(voiced, first, cur.argmin(dim=-1, keepdim=True))  # else the global minimum
        a, b, c = prev.gather(-1, idx), cur.gather(-1, idx), nxt.gather(-1, idx)
        curvature = (a - 2.0 * b + c).clamp_min(1e-12)
        delta = (0.5 * (a - c) / curvature).clamp(-0.5, 0.5)  # parabolic interpolation
        f0 = self.sample_rate / (idx.to(torch.float32) + (lo + delta))
        frame = segments[..., self.segment - self.window :]
        energy = torch.log(frame.var(dim=-1, correction=0) + ENERGY_FLOOR)
        return YinOutput(f0.transpose(1, 2), ~voiced.transpose(1, 2), b.transpose(1, 2), energy)

    @torch.no_grad()
    def yin(self, audio: Tensor, frames_per_chunk: int | None = None) -> YinOutput:
        """Yin f0 of ``audio: B x T``: one value per 20 ms frame and threshold. With
        ``frames_per_chunk`` the segments are analysed that many frames at a time (the same
        values; memory bounded by the chunk, not the file: a segment spans 1024 FFT bins)."""
        if frames_per_chunk is None:
            return self.yin_segments(self.segments(audio))
        audio = audio.to(torch.float32)
        frames, hop, history = audio.shape[-1] // self.hop_length, self.hop_length, self.segment - self.hop_length
        parts = []
        for start in range(0, frames, frames_per_chunk):
            stop = min(frames, start + frames_per_chunk)
            first = start * hop - history
            piece = F.pad(audio[..., max(0, first) : stop * hop], (max(0, -first), 0))
            parts.append(self.yin_segments(piece.unfold(-1, self.segment, hop)))
        # joined in the whole-file layout (B x F x K, seen transposed): the whitening's sums then
        # add in the same order, so the features are bit-identical (a harmonic excitation turns
        # any f0 rounding into a phase drift that grows with the file's length)
        joined = [torch.cat([v.transpose(1, 2) for v in values], dim=1).transpose(1, 2)
                  for values in zip(*((p.f0, p.unvoiced, p.cmnd) for p in parts))]
        return YinOutput(*joined, torch.cat([p.energy for p in parts], dim=-1))

    # -- whitening and features -----------------------------------------------------------
    def _centred_log_f0(self, yin: YinOutput) -> tuple[Tensor, Tensor]:
        voiced = (~yin.unvoiced).to(torch.float32)
        log_f0 = torch.log(yin.f0) - self.log_f0_centre
        return log_f0 * voiced, voiced

    def _features(self, yin: YinOutput, white: Tensor) -> Tensor:
        per_threshold = torch.stack((white, yin.unvoiced.to(torch.float32), yin.cmnd), dim=2)  # B x K x 3 x F
        batch, _, _, frames = per_threshold.shape
        return torch.cat((per_threshold.reshape(batch, -1, frames), yin.energy.unsqueeze(1)), dim=1)

    @staticmethod
    def _whiten(x: Tensor, voiced: Tensor, count: Tensor, s1: Tensor, s2: Tensor) -> Tensor:
        n = count.clamp_min(1.0)
        mean = s1 / n
        var = (s2 / n - mean * mean).clamp_min(0.0)
        return (x - mean) * torch.rsqrt(var + LOGF0_VAR_FLOOR) * voiced

    @torch.no_grad()
    def forward(self, audio: Tensor) -> Tensor:
        return self.features_of(self.yin(audio))

    def features_of(self, yin: YinOutput) -> Tensor:
        """The whitened features of a whole utterance's Yin output (what :meth:`forward` returns)."""
        x, voiced = self._centred_log_f0(yin)
        if self.whitening == "utterance":
            count, s1, s2 = voiced.sum(-1, keepdim=True), x.sum(-1, keepdim=True), (x * x).sum(-1, keepdim=True)
        else:
            count, s1, s2 = (running_sum(v) for v in (voiced, x, x * x))
        return self._features(yin, self._whiten(x, voiced, count, s1, s2))

    # -- the target's pitch level ----------------------------------------------------------
    @torch.no_grad()
    def reference_statistics(self, reference: Tensor) -> Tensor:
        """Voiced centred log-f0 mean and std of ``reference: B x T`` per threshold, ``B x K x 2``
        (a reference without voiced frames: mean 0, the std floor)."""
        x, voiced = self._centred_log_f0(self.yin(reference))
        n = voiced.sum(-1).clamp_min(1.0)
        mean = x.sum(-1) / n
        var = ((x * x).sum(-1) / n - mean * mean).clamp_min(0.0)
        return torch.stack((mean, torch.sqrt(var + LOGF0_VAR_FLOOR)), dim=-1)

    def retarget(self, features: Tensor, statistics: Tensor) -> Tensor:
        """``features: B x base_features x F`` -> ``B x num_features x F``: the whitened contour at
        the reference's level appended (unchanged with ``target: none``)."""
        if self.target == "none":
            return features
        k = len(self.thresholds)
        per_threshold = features[:, : 3 * k].reshape(features.shape[0], k, 3, -1)
        white, voiced = per_threshold[:, :, 0], 1.0 - per_threshold[:, :, 1]
        level = (white * statistics[..., 1:] + statistics[..., :1]) * voiced
        return torch.cat((features, level), dim=1)

    def target_f0(self, features: Tensor) -> Tensor:
        """The target-level f0 in Hz ``B x F`` (0 on unvoiced frames) from :meth:`retarget`'s
        output, at the middle threshold: what the harmonic excitation follows."""
        if self.target != "reference":
            raise ValueError("the target f0 needs pitch.target: reference")
        k = len(self.thresholds) // 2
        voiced = 1.0 - features[:, 3 * k + 1]
        return torch.exp(features[:, self.base_features + k] + self.log_f0_centre) * voiced

    # -- streaming -------------------------------------------------------------------------
    def _reset_own_stream(self, keep_weights: bool = False) -> None:
        self._history = None
        self._sums = None

    @torch.no_grad()
    def stream_step(self, chunk: Tensor) -> Tensor:
        """Next ``chunk: B x (n * hop)`` samples -> features ``B x base_features x n`` (then :meth:`retarget`)."""
        if not self.streamable:
            raise ValueError(
                "pitch whitening 'utterance' uses whole-utterance statistics and cannot stream; "
                "use model.pitch.whitening: running"
            )
        chunk = chunk.to(torch.float32)
        if self._history is None:
            self._history = chunk.new_zeros(chunk.shape[0], self.segment - self.hop_length)
            self._sums = chunk.new_zeros(3, chunk.shape[0], len(self.thresholds), 1)
        buf = torch.cat((self._history, chunk), dim=-1)  # starts where the next segment starts
        frames = (buf.shape[-1] - self.segment) // self.hop_length + 1
        if frames <= 0:
            self._history = buf
            return chunk.new_zeros(chunk.shape[0], self.num_features, 0)
        used = frames * self.hop_length
        segments = buf[..., : self.segment - self.hop_length + used].unfold(-1, self.segment, self.hop_length)
        self._history = buf[..., used:]
        yin = self.yin_segments(segments)
        x, voiced = self._centred_log_f0(yin)
        count, s1, s2 = (running_sum(v, carried) for carried, v in zip(self._sums, (voiced, x, x * x)))
        self._sums = torch.stack((count[..., -1:], s1[..., -1:], s2[..., -1:]))
        return self._features(yin, self._whiten(x, voiced, count, s1, s2))
