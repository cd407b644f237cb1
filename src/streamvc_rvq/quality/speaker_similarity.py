"""Does the output sound like the speaker it should? Cosine similarity of speaker embeddings
from Resemblyzer's GE2E encoder (256-d, 16 kHz; its weights ship inside the wheel, so nothing
downloads), and how well that similarity separates a corpus's speakers (EER, AUC).

Audio goes through Resemblyzer's own preprocessing (level raised to -30 dBFS, long silences
cut by its VAD) as in Seed-VC's evaluation. The encoder runs on the CPU in float32 (a small
LSTM; the same on every machine, so similarities compare across devices)."""

from __future__ import annotations

import functools
import itertools
import warnings
from typing import Sequence

import numpy as np
import torch

from streamvc_rvq.data.audio import resample

ENCODER_RATE = 16000
MIN_RMS = 1e-5  # below this the audio carries no voice: no embedding (None), not a NaN


@functools.cache
def _encoder():
    """(VoiceEncoder, preprocess_wav), loaded once per process (about 5 s with librosa)."""
    with warnings.catch_warnings():  # webrtcvad's pkg_resources, resemblyzer's scipy.ndimage.morphology
        warnings.simplefilter("ignore")
        import resemblyzer
    return resemblyzer.VoiceEncoder("cpu", verbose=False), resemblyzer.preprocess_wav


def to_encoder_rate(audio: torch.Tensor | np.ndarray, sample_rate: int) -> np.ndarray:
    """1-D float32 numpy audio at 16 kHz."""
    x = torch.as_tensor(audio, dtype=torch.float32).reshape(-1).cpu()
    if sample_rate != ENCODER_RATE:
        x = resample(x, sample_rate, ENCODER_RATE)
    return x.numpy()


def speaker_embedding(audio: torch.Tensor | np.ndarray, sample_rate: int) -> np.ndarray | None:
    """Unit-norm embedding of 1-D ``audio``; None for audio without signal (silent or non-finite)."""
    x = to_encoder_rate(audio, sample_rate)
    if not np.isfinite(x).all() or float(np.sqrt(np.mean(x ** 2))) < MIN_RMS:
        return None
    encoder, preprocess = _encoder()
    wav = preprocess(x)
    if wav.size < ENCODER_RATE // 10:  # the VAD found no speech: embed what is there
        wav = x
    embedding = encoder.embed_utterance(wav.astype(np.float32))
    return embedding if np.isfinite(embedding).all() else None


def cosine(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """Cosine similarity; None when either embedding is missing."""
    if a is None or b is None:
        return None
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b)) / denominator if denominator > 0 else None


def verification(same: Sequence[float], different: Sequence[float]) -> dict:
    """How well similarity tells speakers apart: AUC (probability that a same-speaker pair
    scores above a different-speaker pair, ties half) and the equal-error rate (where false
    acceptances equal false rejections), with both distributions' means."""
    s, d = np.asarray(same, dtype=np.float64), np.asarray(different, dtype=np.float64)
    if s.size == 0 or d.size == 0:
        return {"auc": None, "eer": None, "same_mean": float(s.mean()) if s.size else None,
                "different_mean": float(d.mean()) if d.size else None,
                "num_same": int(s.size), "num_different": int(d.size)}
    greater = (s[:, None] > d[None, :]).mean()
    ties = (s[:, None] == d[None, :]).mean()
    thresholds = np.unique(np.concatenate([s, d, [np.inf]]))
    false_accept = np.array([(d >= t).mean() for t in thresholds])
    false_reject = np.array([(s < t).mean() for t in thresholds])
    k = int(np.argmin(np.abs(false_accept - false_reject)))
    return {
        "auc": float(greater + 0.5 * ties),
        "eer": float((false_accept[k] + false_reject[k]) / 2),
        "same_mean": float(s.mean()),
        "different_mean": float(d.mean()),
        "num_same": int(s.size),
        "num_different": int(d.size),
    }


def verification_of(embeddings: Sequence[tuple[str, np.ndarray | None]]) -> dict:
    """:func:`verification` over every pair of ``(speaker, embedding)``: same- vs
    different-speaker cosine (pairs with a missing embedding are left out)."""
    same, different = [], []
    for (sa, ea), (sb, eb) in itertools.combinations(embeddings, 2):
        similarity = cosine(ea, eb)
        if similarity is not None:
            (same if sa == sb else different).append(similarity)
    return verification(same, different)
