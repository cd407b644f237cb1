"""Speaker encoder: one global vector per reference, computed once per conversion.

``SpeakerEncoder(channels=C, dim=D, strides, front_end, pooling, n_mels)`` maps a reference
``B x T_ref`` to ``B x D`` in two parts:

Front end (frames ``B x W x F`` at the model's hop):
    ``log_mel``: the reference scaled to unit RMS, an ``n_mels`` log-mel spectrogram (40 ms
    window, the model's hop) and three ``k = 5`` conv + ELU layers of width ``W = 8 C``.
    Scaling to unit RMS makes the embedding exactly level-invariant; the log compresses the
    spectrum so that formants and harmonics, not the loudest bins, set the features.
    ``waveform``: StreamVC's SoundStream encoder on the raw waveform (``W = D``). Measured
    on the built-in corpus (RMS ~0.1), this nearly linear encoder averages a zero-mean
    waveform to a constant: every speaker's embedding had cosine 0.99999 to every other's
    (AUC 0.52-0.58 on held-out speakers). Kept as the ablation.

Pooling (learnable, to one vector):
    ``attentive_stats``: attentive statistics pooling (Okabe et al. 2018): per-frame
    weights ``softmax_t(v . tanh(U h_t))``, the weighted mean and standard deviation,
    a linear map to ``D``. The spread over time carries speaker information that a
    mean alone averages away.
    ``attention``: StreamVC's weighted mean of value projections ``sum_t a_t (V h_t)``.

The embedding is what the decoder's FiLM layers read and what the auxiliary speaker loss
(``train.loss_weights.speaker``, :func:`streamvc_rvq.training.losses.speaker_contrastive`)
trains to separate speakers.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn

from streamvc_rvq.modules.seanet import SEANetEncoder
from streamvc_rvq.options import check_one_of

__all__ = ["SpeakerEncoder", "FRONT_ENDS", "POOLINGS"]

FRONT_ENDS = ("log_mel", "waveform")
POOLINGS = ("attentive_stats", "attention")
MEL_WINDOW_SECONDS = 0.04
LOG_MEL_FLOOR = 1e-6
RMS_FLOOR = 1e-8
STD_FLOOR = 1e-5


class LogMelFrontEnd(nn.Module):
    """Waveform ``B x T`` -> frames ``B x W x F`` (``F = T // hop``), level-invariant."""

    def __init__(self, width: int, hop: int, sample_rate: int, n_mels: int):
        super().__init__()
        self.hop = hop
        window = int(round(MEL_WINDOW_SECONDS * sample_rate))
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=1 << (window - 1).bit_length(), win_length=window, hop_length=hop,
            n_mels=n_mels, center=True,
        )
        layers, channels = [], n_mels
        for _ in range(3):
            layers += [nn.Conv1d(channels, width, 5, padding=2), nn.ELU()]
            channels = width
        self.convs = nn.Sequential(*layers)

    def forward(self, reference: Tensor) -> Tensor:
        rms = reference.pow(2).mean(dim=-1, keepdim=True).sqrt()
        mel = self.mel(reference / (rms + RMS_FLOOR))[..., : reference.shape[-1] // self.hop]
        return self.convs(torch.log(mel + LOG_MEL_FLOOR))


class WaveformFrontEnd(nn.Module):
    def __init__(self, channels: int, dim: int, strides):
        super().__init__()
        self.encoder = SEANetEncoder(channels, dim, strides)

    def forward(self, reference: Tensor) -> Tensor:
        return self.encoder(reference.unsqueeze(1))


class AttentiveStatsPooling(nn.Module):
    """``B x W x F`` -> ``B x D``: attention-weighted mean and std, then a linear map."""

    def __init__(self, width: int, dim: int):
        super().__init__()
        self.attention = nn.Sequential(nn.Conv1d(width, width // 2 or 1, 1), nn.Tanh(), nn.Conv1d(width // 2 or 1, 1, 1))
        self.out = nn.Linear(2 * width, dim)

    def forward(self, h: Tensor) -> Tensor:
        weights = torch.softmax(self.attention(h), dim=-1)  # B x 1 x F
        mean = (h * weights).sum(dim=-1)
        var = ((h - mean.unsqueeze(-1)).pow(2) * weights).sum(dim=-1)
        return self.out(torch.cat((mean, (var + STD_FLOOR).sqrt()), dim=-1))


class AttentionPooling(nn.Module):
    """``B x W x F`` -> ``B x D``: StreamVC's learnable-query weighted mean of value projections."""

    def __init__(self, width: int, dim: int):
        super().__init__()
        self.score = nn.Conv1d(width, 1, 1)
        self.value = nn.Conv1d(width, dim, 1)

    def forward(self, h: Tensor) -> Tensor:
        weights = torch.softmax(self.score(h), dim=-1)
        return (self.value(h) * weights).sum(dim=-1)


class SpeakerEncoder(nn.Module):
    def __init__(self, channels: int = 32, dim: int = 64, strides=(2, 4, 5, 8), front_end: str = "log_mel",
                 pooling: str = "attentive_stats", n_mels: int = 40, sample_rate: int = 16000):
        super().__init__()
        check_one_of("speaker_encoder.front_end", front_end, FRONT_ENDS)
        check_one_of("speaker_encoder.pooling", pooling, POOLINGS)
        self.dim = dim
        self.hop = 1
        for s in strides:
            self.hop *= s
        if front_end == "log_mel":
            width = 8 * channels
            self.front_end = LogMelFrontEnd(width, self.hop, sample_rate, n_mels)
        else:
            width = dim
            self.front_end = WaveformFrontEnd(channels, dim, strides)
        self.pooling = (AttentiveStatsPooling if pooling == "attentive_stats" else AttentionPooling)(width, dim)

    def forward(self, reference: Tensor) -> Tensor:
        """``reference: B x T_ref`` (at least one frame) -> speaker embedding ``B x D``."""
        if reference.shape[-1] < self.hop:
            raise ValueError(f"reference needs at least {self.hop} samples, got {reference.shape[-1]}")
        return self.pooling(self.front_end(reference))
