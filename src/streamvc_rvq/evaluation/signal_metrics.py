"""How close is a reconstruction to its input, sample by sample and spectrally: SI-SDR and
mel-cepstral distortion. Both need time-aligned signals, so they apply to reconstructions
(the model's causal output has its input's length), not to conversions."""

from __future__ import annotations

import math

import torch
import torchaudio

MCD_COEFFICIENTS = 13  # c1..c13; c0 (energy) is left out, as usual for MCD
SPEECH_RANGE_DB = 40.0  # MCD counts frames within 40 dB of the input's loudest frame


def si_sdr(reference: torch.Tensor, estimate: torch.Tensor, eps: float = 1e-8) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019)."""
    n = min(reference.numel(), estimate.numel())
    s, e = reference.reshape(-1)[:n].double(), estimate.reshape(-1)[:n].double()
    s, e = s - s.mean(), e - e.mean()
    target = (e @ s) / (s @ s + eps) * s
    noise = e - target
    return float(10 * torch.log10((target @ target + eps) / (noise @ noise + eps)))


def mel_cepstral_distortion(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int = 16000) -> float:
    """Frame-aligned mel-cepstral distortion in dB over the input's speech frames:
    ``10 / ln 10 * sqrt(2 * sum_d (c_d - c'_d)^2)`` averaged over frames, with natural-log
    mel cepstra c1..c13 (25 ms windows, 10 ms hop)."""
    n = min(reference.numel(), estimate.numel())
    win, hop = int(0.025 * sample_rate), int(0.010 * sample_rate)
    mfcc = torchaudio.transforms.MFCC(
        sample_rate, n_mfcc=MCD_COEFFICIENTS + 1, log_mels=True,
        melkwargs={"n_fft": 2 ** math.ceil(math.log2(win)), "win_length": win, "hop_length": hop, "n_mels": 40},
    )
    a, b = reference.reshape(-1)[:n].float(), estimate.reshape(-1)[:n].float()
    ca, cb = mfcc(a)[1:], mfcc(b)[1:]
    energy = a[: (n // hop) * hop].reshape(-1, hop).pow(2).mean(1).clamp_min(1e-12).log10() * 10
    frames = min(ca.shape[-1], energy.numel())
    speech = energy[:frames] >= energy[:frames].max() - SPEECH_RANGE_DB
    diff = (ca[:, :frames] - cb[:, :frames])[:, speech]
    return float((10 / math.log(10)) * (2 * diff.pow(2).sum(0)).sqrt().mean())
