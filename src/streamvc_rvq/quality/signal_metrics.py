"""How close is a reconstruction to its input, sample by sample and spectrally: SI-SDR and
mel-cepstral distortion. Both need time-aligned signals, so they apply to reconstructions
(the model's causal output has its input's length), not to conversions."""

from __future__ import annotations

import math

import torch
import torchaudio

MCD_COEFFICIENTS = 13  # c1..c13; c0 (energy) is left out, as usual for MCD
SPEECH_RANGE_DB = 40.0  # MCD counts frames within 40 dB of the input's loudest frame
FLOOR_DB = 60.0  # each mel spectrogram is floored 60 dB under its own loudest band
N_MELS = 40
SILENT_ENERGY = 1e-10  # mean squared sample value under which an estimate is silent


def si_sdr(reference: torch.Tensor, estimate: torch.Tensor, eps: float = 1e-8) -> float | None:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019); None for a
    silent estimate, where it is undefined (the eps-regularised formula would give 0 dB, above
    any noisy reconstruction, so a silent output would raise the mean)."""
    n = min(reference.numel(), estimate.numel())
    s, e = reference.reshape(-1)[:n].double(), estimate.reshape(-1)[:n].double()
    s, e = s - s.mean(), e - e.mean()
    if float(e @ e) <= SILENT_ENERGY * n:
        return None
    target = (e @ s) / (s @ s + eps) * s
    noise = e - target
    return float(10 * torch.log10((target @ target + eps) / (noise @ noise + eps)))


def mel_cepstral_distortion(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int = 16000) -> float:
    """Frame-aligned mel-cepstral distortion in dB over the input's speech frames:
    ``10 / ln 10 * sqrt(2 * sum_d (c_d - c'_d)^2)`` averaged over frames, with natural-log
    mel cepstra c1..c13 of log amplitude (40 mel bands, 25 ms windows, 10 ms hop, orthonormal
    DCT). Each mel spectrogram is floored ``FLOOR_DB`` under its own loudest band: gain does not
    count (c0 is left out), and bands that neither signal fills (eSpeak has little energy at the
    top) sit at the same floor instead of dominating the distance."""
    n = min(reference.numel(), estimate.numel())
    win, hop = int(0.025 * sample_rate), int(0.010 * sample_rate)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate, n_fft=2 ** math.ceil(math.log2(win)), win_length=win, hop_length=hop, n_mels=N_MELS)
    a, b = reference.reshape(-1)[:n].float(), estimate.reshape(-1)[:n].float()
    dct = torchaudio.functional.create_dct(MCD_COEFFICIENTS + 1, N_MELS, "ortho")  # [mels, coefficients]

    def cepstra(x: torch.Tensor) -> torch.Tensor:  # log amplitude, as MCD's mel-cepstra are
        m = mel(x)
        return (0.5 * m.clamp_min(m.max().clamp_min(1e-20) * 10 ** (-FLOOR_DB / 10)).log().T @ dct)[:, 1:]

    ca, cb = cepstra(a), cepstra(b)
    energy = mel(a).sum(0).clamp_min(1e-20).log10() * 10  # the same frames as the cepstra
    speech = energy >= energy.max() - SPEECH_RANGE_DB
    diff = (ca - cb)[speech]
    return float((10 / math.log(10)) * (2 * diff.pow(2).sum(1)).sqrt().mean())
