"""Does a conversion keep the source's intonation? Log-F0 correlation and voicing agreement.

Both use the project's own Yin (:class:`~streamvc_rvq.model.pitch.PitchEnergy`, threshold
0.10, 60-500 Hz) on the 20 ms frames of the source and of the conversion. The correlation is
Pearson's over the frames voiced in both, on log F0: it ignores a constant transposition (a
conversion to a higher voice keeps a correlation near 1) and is near -1 for a mirrored
contour. Voicing agreement is the share of frames whose voiced/unvoiced decision is the same.
"""

from __future__ import annotations

import torch

from streamvc_rvq.model.pitch import PitchEnergy

MIN_VOICED_FRAMES = 3  # fewer frames voiced in both: no correlation (None)


def f0_track(audio: torch.Tensor, sample_rate: int = 16000, hop_length: int = 320) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f0 in Hz [F], voiced [F] bool)`` of 1-D ``audio`` at Yin threshold 0.10."""
    yin = PitchEnergy(sample_rate, hop_length, thresholds=(0.10,)).yin(audio.reshape(1, -1).float())
    return yin.f0[0, 0], ~yin.unvoiced[0, 0]


def log_f0_correlation(f0_a: torch.Tensor, voiced_a: torch.Tensor, f0_b: torch.Tensor,
                       voiced_b: torch.Tensor) -> float | None:
    """Pearson correlation of log F0 over the frames voiced in both tracks (trimmed to the
    shorter); None with fewer than ``MIN_VOICED_FRAMES`` such frames or a flat contour."""
    n = min(f0_a.numel(), f0_b.numel())
    both = voiced_a[:n] & voiced_b[:n]
    if int(both.sum()) < MIN_VOICED_FRAMES:
        return None
    a, b = torch.log(f0_a[:n][both]), torch.log(f0_b[:n][both])
    a, b = a - a.mean(), b - b.mean()
    denominator = float(a.norm() * b.norm())
    return float((a * b).sum()) / denominator if denominator > 0 else None


def voicing_agreement(voiced_a: torch.Tensor, voiced_b: torch.Tensor) -> float:
    """Share of frames (of the shorter track) with the same voiced/unvoiced decision."""
    n = min(voiced_a.numel(), voiced_b.numel())
    return float((voiced_a[:n] == voiced_b[:n]).float().mean()) if n else float("nan")


def pitch_preservation(source: torch.Tensor, output: torch.Tensor, sample_rate: int = 16000,
                       hop_length: int = 320) -> dict:
    """``{"log_f0_correlation", "voicing_agreement", "voiced_frames"}`` of ``output`` against ``source``."""
    f0_s, v_s = f0_track(source, sample_rate, hop_length)
    f0_o, v_o = f0_track(output, sample_rate, hop_length)
    n = min(v_s.numel(), v_o.numel())
    return {
        "log_f0_correlation": log_f0_correlation(f0_s, v_s, f0_o, v_o),
        "voicing_agreement": voicing_agreement(v_s, v_o),
        "voiced_frames": int((v_s[:n] & v_o[:n]).sum()),
    }
