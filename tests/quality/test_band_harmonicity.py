"""The band harmonicity measure (issue 38), fed the inputs on which it must pass and fail."""

from __future__ import annotations

import numpy as np
import pytest

from streamvc_rvq.data.dataset import load_utterances
from streamvc_rvq.quality.band_harmonicity import band_hnr_db, band_pass

RATE = 16000


def _voice(seconds: float, f0: float = 140.0, top_hz: float = 4000.0, seed: int = 0) -> np.ndarray:
    """A gliding harmonic complex with every harmonic up to ``top_hz``, 1/k amplitudes."""
    t = np.arange(int(seconds * RATE)) / RATE
    contour = f0 * (1 + 0.08 * np.sin(2 * np.pi * 0.9 * t))
    phase = 2 * np.pi * np.cumsum(contour) / RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, int(top_hz / f0)))
    return tone + 0.001 * np.random.default_rng(seed).standard_normal(t.size)


def _noise_above(x: np.ndarray, edge_hz: float, seed: int = 1) -> np.ndarray:
    """``x`` below ``edge_hz``, and noise of the same power as ``x``'s band above it."""
    high = band_pass(x, RATE, (edge_hz, RATE / 2))
    noise = band_pass(np.random.default_rng(seed).standard_normal(x.size), RATE, (edge_hz, RATE / 2))
    return x - high + noise * high.std() / noise.std()


def test_a_voice_with_harmonics_to_4khz_reads_high():
    assert band_hnr_db(_voice(2.0), RATE) > 15.0


def test_noise_above_1khz_reads_low_on_the_voices_own_voiced_frames():
    """The quick decoders' failing case: harmonics below 1 kHz, noise above (the voicing is the
    source's, so the frames read are the same as for the clean voice)."""
    voice = _voice(2.0)
    broken = _noise_above(voice, 1000.0)
    assert band_hnr_db(broken, RATE, voicing_reference=voice) < 0.0
    assert band_hnr_db(voice, RATE, voicing_reference=voice) > band_hnr_db(broken, RATE, voicing_reference=voice) + 15.0


def test_noise_only_above_2khz_reads_between():
    """Half the band harmonic, half noise: between the two (the measure is graded, not a switch)."""
    voice = _voice(2.0)
    whole, half, none = (band_hnr_db(x, RATE, voicing_reference=voice)
                         for x in (voice, _noise_above(voice, 2000.0), _noise_above(voice, 1000.0)))
    assert none < half < whole


def test_silence_and_unvoiced_give_no_figure():
    assert band_hnr_db(np.zeros(RATE), RATE) is None
    assert band_hnr_db(np.random.default_rng(0).standard_normal(RATE), RATE) is None  # no voiced frame
    assert band_hnr_db(np.zeros(100), RATE) is None


def test_the_corpus_speech_is_harmonic_above_1khz(micro_manifest):
    """The ceiling the outputs are read against: the built-in corpus's own utterances."""
    utterances = [u for u in load_utterances(micro_manifest, None, labels=None) if u.audio.numel() >= RATE][:8]
    values = [band_hnr_db(u.audio.numpy(), RATE) for u in utterances]
    assert all(v is not None for v in values)
    assert float(np.median(values)) > 5.0
    noisy = [band_hnr_db(_noise_above(u.audio.numpy().astype(np.float64), 1000.0), RATE,
                         voicing_reference=u.audio.numpy()) for u in utterances]
    assert float(np.median(noisy)) < 0.0


def test_the_scorer_reports_the_band_deficit_of_outputs_with_noise_above_1khz(micro_manifest):
    """In the metrics: outputs whose band above 1 kHz is noise read a deficit against their sources;
    the sources against themselves read none."""
    import torch

    from streamvc_rvq.quality import scorer as quality

    utterances = [u for u in load_utterances(micro_manifest, None, labels=None) if u.audio.numel() >= RATE][:4]
    scorer = quality.QualityScorer([], RATE, frame_rate=50.0)
    noisy = [scorer.score("convert", u, u, torch.from_numpy(
        _noise_above(u.audio.numpy().astype(np.float64), 1000.0).astype(np.float32)))[0] for u in utterances]
    summary = quality.band_harmonicity_summary(noisy)
    assert summary["num_outputs"] == 4 and summary["deficit_db"] > 5.0 and summary["band_hz"] == [1000.0, 4000.0]
    same = quality.band_harmonicity_summary([scorer.score("convert", u, u, u.audio)[0] for u in utterances])
    assert abs(same["deficit_db"]) < 1e-9
