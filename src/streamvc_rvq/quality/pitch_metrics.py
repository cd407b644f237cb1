"""Does a conversion keep the source's intonation, at the target's pitch level? Log-F0
correlation and voicing agreement with the source (per conversion), and how far the median F0
of the conversions follows the target's (:func:`pitch_level_following`, over conversions).

Both use the project's own Yin (:class:`~streamvc_rvq.model.pitch.PitchEnergy`, threshold
0.10, 60-500 Hz) on the 20 ms frames of the source and of the conversion. The correlation is
Pearson's over the frames voiced in both, on log F0: it ignores a constant transposition (a
conversion to a higher voice keeps a correlation near 1) and is near -1 for a mirrored
contour. Voicing agreement is the share of frames whose voiced/unvoiced decision is the same.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from streamvc_rvq.model.pitch import PitchEnergy

MIN_VOICED_FRAMES = 3  # fewer frames voiced in both: no correlation (None)
MIN_CONVERSIONS = 3  # fewer conversions with a pitch level each: no level correlation (None)


def f0_track(audio: torch.Tensor, sample_rate: int = 16000, hop_length: int = 320) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f0 in Hz [F], voiced [F] bool)`` of 1-D ``audio`` at Yin threshold 0.10.

    A frame whose dip is at the shortest lag searched is not voiced here: its periodicity is at
    or above fmax (a 1 kHz tone's dips at 16, 32, ... samples read as "500 Hz"), not a voice's
    pitch. Measured: a quick-budget decoder's 50 Hz comb (the frame rate, spectral peaks at
    every multiple of 50 Hz) read as exactly 500 Hz in most of its outputs."""
    tracker = PitchEnergy(sample_rate, hop_length, thresholds=(0.10,))
    yin = tracker.yin(audio.reshape(1, -1).float())
    f0 = yin.f0[0, 0]
    return f0, ~yin.unvoiced[0, 0] & (f0 < sample_rate / (tracker.min_lag + 0.5))


def pearson(x: torch.Tensor, y: torch.Tensor, floor: float = 0.0) -> float | None:
    """Pearson correlation of two 1-D tensors; None when the product of their centred norms is
    not above ``floor`` (a flat series has no correlation)."""
    x, y = x - x.mean(), y - y.mean()
    denominator = float(x.norm() * y.norm())
    return float((x * y).sum()) / denominator if denominator > floor else None


def log_f0_correlation(f0_a: torch.Tensor, voiced_a: torch.Tensor, f0_b: torch.Tensor,
                       voiced_b: torch.Tensor) -> float | None:
    """Pearson correlation of log F0 over the frames voiced in both tracks (trimmed to the
    shorter); None with fewer than ``MIN_VOICED_FRAMES`` such frames or a flat contour."""
    n = min(f0_a.numel(), f0_b.numel())
    both = voiced_a[:n] & voiced_b[:n]
    if int(both.sum()) < MIN_VOICED_FRAMES:
        return None
    return pearson(torch.log(f0_a[:n][both]), torch.log(f0_b[:n][both]))


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


def median_f0(audio: torch.Tensor, sample_rate: int = 16000, hop_length: int = 320) -> float | None:
    """Median F0 (Hz) over the voiced frames of 1-D ``audio``: its pitch level; None with fewer
    than ``MIN_VOICED_FRAMES`` voiced frames."""
    f0, voiced = f0_track(audio, sample_rate, hop_length)
    return float(f0[voiced].median()) if int(voiced.sum()) >= MIN_VOICED_FRAMES else None


def pitch_level_following(levels: Sequence[Mapping[str, float | None]]) -> dict:
    """Does the conversions' pitch level follow the target's? ``levels``: one
    ``{"output", "target", "source"}`` median F0 (Hz) per conversion. Pearson correlation over
    conversions of log median F0 with the target's and, as the control that a model copying its
    source passes, with the source's; the median error to the target in semitones. A flat
    output level (one voice for every target) has no correlation: None; so has a set where more
    conversions have no measurable pitch (no voiced frame in range) than have one: the few
    left would say little about the rest."""
    rows = [r for r in levels if None not in (r.get("output"), r.get("target"), r.get("source"))]
    unpitched = sum(1 for r in levels if r.get("output") is None and None not in (r.get("target"), r.get("source")))
    if len(rows) < MIN_CONVERSIONS or unpitched > len(rows):
        return {"correlation_with_target": None, "correlation_with_source": None,
                "median_error_semitones": None, "num_conversions": len(rows), "num_without_pitch": unpitched}
    log = {key: torch.log(torch.tensor([r[key] for r in rows], dtype=torch.float32))
           for key in ("output", "target", "source")}
    errors = sorted(float(abs(o - t)) * 12 / math.log(2) for o, t in zip(log["output"], log["target"]))
    return {
        "correlation_with_target": pearson(log["output"], log["target"], floor=1e-12),
        "correlation_with_source": pearson(log["output"], log["source"], floor=1e-12),
        "median_error_semitones": errors[len(errors) // 2],
        "num_conversions": len(rows),
        "num_without_pitch": unpitched,
    }
