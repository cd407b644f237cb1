"""The frame-rate tone measure (issue 38), fed the inputs on which it must pass and fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamvc_rvq.data.dataset import load_utterances
from streamvc_rvq.quality import scorer as quality
from streamvc_rvq.quality.frame_tone import frame_rate_tone_db, line_prominences

RATE, FRAME_RATE = 16000, 50.0
# The verdict's bound on the outputs' excess over real speech (Thresholds.frame_tone_max_excess_db)
BOUND_DB = 3.0


@pytest.fixture(scope="module")
def speech(micro_manifest):
    """Real corpus utterances (eSpeak) of at least a second."""
    utterances = [u for u in load_utterances(micro_manifest, None, labels=None) if u.audio.numel() >= RATE]
    assert len(utterances) >= 10
    return utterances


def _buzz(n: int, rms: float, seed: int = 0) -> np.ndarray:
    """A comb of lines at every multiple of 50 Hz up to 1 kHz, ``rms`` in all."""
    t = np.arange(n) / RATE
    rng = np.random.default_rng(seed)
    comb = sum(np.sin(2 * np.pi * FRAME_RATE * k * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 21))
    return comb * rms / np.sqrt(np.mean(comb ** 2))


def test_real_speech_has_no_frame_rate_tone(speech):
    tones = [frame_rate_tone_db(u.audio, RATE, FRAME_RATE) for u in speech]
    assert max(tones) < 0.0, tones  # the lines stand no higher than the spectrum between them


def test_a_50_hz_comb_ten_db_under_the_speech_fails_the_bound(speech):
    """The failing input: the same speech with a 50 Hz comb added 10 dB under it."""
    clean, buzzed = [], []
    for u in speech[:10]:
        x = u.audio.numpy().astype(np.float64)
        clean.append(frame_rate_tone_db(x, RATE, FRAME_RATE))
        buzzed.append(frame_rate_tone_db(x + _buzz(x.size, np.sqrt(np.mean(x ** 2)) / np.sqrt(10)), RATE, FRAME_RATE))
    assert np.median(buzzed) - np.median(clean) > BOUND_DB, (clean, buzzed)
    assert all(b > c for b, c in zip(buzzed, clean))


@pytest.mark.parametrize("f0", [100.0, 150.0, 200.0])
def test_a_steady_voice_on_a_multiple_of_the_frame_rate_is_not_read_as_the_tone(f0):
    """A monotone voice whose harmonics fall on every 2nd/3rd/4th line: their median prominence
    is high (the naive measure fails it), the quantile reads the lines between them."""
    t = np.arange(3 * RATE) / RATE
    voice = 0.3 * sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 15))
    x = voice + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    if f0 == 100.0:  # half the lines are harmonics
        assert np.median(line_prominences(x, RATE, FRAME_RATE)) > 10 * BOUND_DB
    assert frame_rate_tone_db(x, RATE, FRAME_RATE) < BOUND_DB
    # the same voice with the comb fails
    assert frame_rate_tone_db(x + _buzz(x.size, 0.3 * np.std(voice)), RATE, FRAME_RATE) > BOUND_DB


def test_silent_or_short_audio_gives_no_figure():
    assert frame_rate_tone_db(np.zeros(RATE), RATE, FRAME_RATE) is None
    assert frame_rate_tone_db(np.random.default_rng(0).standard_normal(RATE // 8), RATE, FRAME_RATE) is None


def test_the_scorer_reports_the_outputs_tone_next_to_their_sources(speech):
    scorer = quality.QualityScorer([], RATE, frame_rate=FRAME_RATE)
    entries = []
    for u in speech[:4]:
        buzzed = u.audio + torch.from_numpy(
            _buzz(u.audio.numel(), float(u.audio.pow(2).mean().sqrt()) / 3).astype(np.float32))
        entries.append(scorer.score("convert", u, u, buzzed)[0])
    summary = quality.frame_tone_summary(entries)
    assert summary["num_outputs"] == 4 and summary["excess_db"] > BOUND_DB
    assert summary["source_db"] < 0.0
    # the sources against themselves: no excess
    same = quality.frame_tone_summary([scorer.score("convert", u, u, u.audio)[0] for u in speech[:4]])
    assert abs(same["excess_db"]) < 1e-9
