"""Perceived quality without a reference: DNSMOS P.835 (SIG speech, BAK background, OVRL
overall, 1-5) from ``speechmos``'s ONNX models, which ship inside its wheel.

DNSMOS scores 9.01 s windows; ``speechmos`` tiles a shorter clip until it fills one, and a
2 s clip repeated five times scores higher than the clip itself. So clips are never scored
alone: consecutive clips are concatenated into segments of at least 9.01 s
(:func:`segments`) and each segment is scored once. The corpus's reference level is
measured the same way, so outputs and corpus audio are compared like for like."""

from __future__ import annotations

import functools
import os
import warnings
from typing import Sequence

import numpy as np
import torch

from streamvc_rvq.quality.speaker_similarity import ENCODER_RATE, to_encoder_rate

WINDOW_SECONDS = 9.01  # speechmos.dnsmos.INPUT_LENGTH
SCORES = ("sig", "bak", "ovrl", "p808")


def segments(durations: Sequence[float], min_seconds: float = WINDOW_SECONDS) -> list[list[int]]:
    """Indices of consecutive clips grouped into segments of at least ``min_seconds``; a short
    remainder joins the last segment; no segment when all clips together are shorter."""
    groups, current, length = [], [], 0.0
    for i, seconds in enumerate(durations):
        current.append(i)
        length += seconds
        if length >= min_seconds:
            groups.append(current)
            current, length = [], 0.0
    if current and groups:
        groups[-1].extend(current)
    return groups


@functools.cache
def _run():
    """``speechmos``'s ``run`` with its two ONNX sessions opened here on torch's thread count:
    its own sessions take every core, which oversubscribes a CPU that parallel jobs share.
    ``run`` keeps a loaded model whose ``primary_model_path`` is the one it would load."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from speechmos import dnsmos
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    folder = os.path.join(os.path.dirname(os.path.abspath(dnsmos.__file__)), "dnsmos_models")
    model = object.__new__(dnsmos.DNSMOS)
    model.primary_model_path = os.path.join(folder, "sig_bak_ovr.onnx")
    model.onnx_sess = onnxruntime.InferenceSession(model.primary_model_path, options)
    model.p808_onnx_sess = onnxruntime.InferenceSession(os.path.join(folder, "model_v8.onnx"), options)
    dnsmos.dnsmos = model
    return dnsmos.run


def windows(num_samples: int) -> int:
    """How many 9.01 s windows (1 s hop) ``speechmos`` scores in a clip of ``num_samples``."""
    return int(np.floor(num_samples / ENCODER_RATE) - WINDOW_SECONDS) + 1


def score(audio: np.ndarray) -> dict:
    """DNSMOS of one 16 kHz clip of at least 9.01 s with samples in [-1, 1]: the mean over
    ``speechmos``'s windows plus one window ending at the clip's end (its hops stop up to 1 s
    short of it, and every clip of a segment should count)."""
    window = int(WINDOW_SECONDS * ENCODER_RATE)
    if audio.size < window:
        raise ValueError(f"DNSMOS needs {WINDOW_SECONDS} s of audio, got {audio.size / ENCODER_RATE:.2f} s "
                         "(shorter clips would be tiled, which inflates the score)")
    run = _run()
    audio = audio.astype(np.float32)
    result = run(audio, ENCODER_RATE)
    scores = {key: float(result[f"{key}_mos"]) for key in SCORES}
    n = windows(audio.size)
    if audio.size > (n - 1) * ENCODER_RATE + window:
        end = run(audio[-window:], ENCODER_RATE)
        scores = {key: (n * scores[key] + float(end[f"{key}_mos"])) / (n + 1) for key in SCORES}
    return scores


def dnsmos_of_clips(clips: Sequence[torch.Tensor | np.ndarray], sample_rate: int) -> dict:
    """Mean DNSMOS over the segments of ``clips`` (see module docstring), each segment's
    scores, and the share of samples clipped into [-1, 1]. Scores are None when the clips
    total less than one window."""
    audio = [to_encoder_rate(c, sample_rate) for c in clips]
    groups = segments([a.size / ENCODER_RATE for a in audio])
    scored, clipped, total = [], 0, 0
    for group in groups:
        joined = np.concatenate([audio[i] for i in group])
        finite = np.nan_to_num(joined, nan=0.0, posinf=1.0, neginf=-1.0)
        clipped += int((np.abs(finite) > 1).sum())
        total += finite.size
        scored.append({"clips": group, "seconds": finite.size / ENCODER_RATE,
                       **score(np.clip(finite, -1.0, 1.0))})
    means = {key: (sum(s[key] for s in scored) / len(scored) if scored else None) for key in SCORES}
    return {**means, "num_segments": len(scored), "segments": scored,
            "clipped_share": clipped / total if total else None,
            "seconds": sum(a.size for a in audio) / ENCODER_RATE}
