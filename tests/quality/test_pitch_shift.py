"""The pitch-only control's shifter (TD-PSOLA): pitch moves, formants and duration stay."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import signal

from streamvc_rvq.evaluation.conversion_controls import wilson_interval
from streamvc_rvq.quality.pitch_metrics import median_f0
from streamvc_rvq.quality.pitch_shift import pitch_only_control

RATE = 16000
FORMANT_HZ = 700.0


def _vowel(f0: float, seconds: float = 1.5) -> torch.Tensor:
    """A glottal pulse train at ``f0`` through a resonance at 700 Hz (and a weaker one at 2 kHz)."""
    n = int(seconds * RATE)
    pulses = np.zeros(n)
    pulses[(np.arange(0, seconds, 1 / f0) * RATE).astype(int)] = 1.0
    x = pulses
    for centre, width in ((FORMANT_HZ, 80.0), (2000.0, 200.0)):
        r = np.exp(-np.pi * width / RATE)
        x = signal.lfilter([1.0], [1.0, -2 * r * np.cos(2 * np.pi * centre / RATE), r * r], x)
    return torch.from_numpy((0.3 * x / np.abs(x).max()).astype(np.float32))


def _envelope_peak(audio: torch.Tensor) -> float:
    """The frequency of the largest smoothed-spectrum value in 300-1500 Hz (the first formant)."""
    f, p = signal.welch(audio.numpy(), RATE, nperseg=1024)
    smooth = np.convolve(p, np.ones(13) / 13, mode="same")  # ~200 Hz: over the harmonics
    band = (f > 300) & (f < 1500)
    return float(f[band][np.argmax(smooth[band])])


@pytest.mark.parametrize("ratio", [0.75, 1.5])
def test_the_pitch_moves_and_the_formant_stays(ratio):
    x = _vowel(120.0)
    y = pitch_only_control(x, 120.0 * ratio, 120.0)
    assert y.shape == x.shape
    assert median_f0(y, RATE) == pytest.approx(120.0 * ratio, rel=0.05)
    assert abs(_envelope_peak(y) - FORMANT_HZ) < 100
    # the control that must fail: resampling moves pitch and formant together
    resampled = torch.from_numpy(signal.resample(x.numpy(), int(x.numel() / ratio)).astype(np.float32))
    assert abs(_envelope_peak(resampled) - FORMANT_HZ * ratio) < 100


def test_a_ratio_of_one_gives_the_source_back_and_unknown_levels_give_nothing():
    x = _vowel(140.0)
    torch.testing.assert_close(pitch_only_control(x, 140.0, 140.0), x, atol=1e-6, rtol=0)
    assert pitch_only_control(x, None, 140.0) is None and pitch_only_control(x, 140.0, None) is None


def test_wilson_interval_holds_the_rate_and_narrows_with_trials():
    low, high = wilson_interval(15, 24)
    assert low < 15 / 24 < high and (round(low, 2), round(high, 2)) == (0.43, 0.79)  # the 15/24
    low84, high84 = wilson_interval(52, 84)
    assert high84 - low84 < high - low
    assert wilson_interval(24, 24)[1] == 1.0 and wilson_interval(0, 24)[0] < 1e-12


def test_the_controls_on_real_voices_reach_their_targets_pitch_and_the_oracle_its_speaker(micro_manifest):
    """On the micro corpus's eSpeak voices, with Resemblyzer: the oracle (another real utterance of
    the target) is identified as its target; the pitch-only shifts land on their targets' pitch."""
    from streamvc_rvq.data.dataset import load_utterances
    from streamvc_rvq.evaluation.evaluate import conversion_pairs
    from streamvc_rvq.evaluation.pitch_and_oracle_controls import pitch_and_oracle_controls
    from streamvc_rvq.quality.scorer import QualityScorer

    corpus = load_utterances(micro_manifest, None, labels=None)
    pairs = conversion_pairs(corpus, 6)
    controls = pitch_and_oracle_controls(QualityScorer(["speaker"], RATE), pairs, corpus, RATE, 320)
    assert "model" not in controls and controls["num_pairs"] == len(pairs)
    oracle, pitch = controls["oracle"]["identification"], controls["pitch_only"]["identification"]
    assert oracle["num_outputs"] == len(pairs) and oracle["rate"] >= 0.9, oracle
    assert pitch["num_outputs"] >= len(pairs) - 2 and 0 <= pitch["low"] <= pitch["rate"] <= pitch["high"] <= 1
    level = controls["pitch_only"]["pitch_level"]
    assert level["correlation_with_target"] > 0.8 and level["median_error_semitones"] < 2.0, level


def test_the_model_is_scored_on_the_controls_own_trials(micro_manifest):
    """A "model" that returns its target's reference is identified every time; one that returns
    its source (the failing input) is not; a known embedding is used instead of converting again."""
    from streamvc_rvq.data.dataset import load_utterances
    from streamvc_rvq.evaluation.evaluate import conversion_pairs
    from streamvc_rvq.evaluation.pitch_and_oracle_controls import pitch_and_oracle_controls
    from streamvc_rvq.quality.scorer import QualityScorer
    from streamvc_rvq.quality.speaker_similarity import speaker_embedding

    corpus = load_utterances(micro_manifest, None, labels=None)
    pairs = conversion_pairs(corpus, len(corpus))
    scorer = QualityScorer(["speaker"], RATE)

    def identification(convert, known=None):
        return pitch_and_oracle_controls(scorer, pairs, corpus, RATE, 320, convert=convert, known=known)["model"]["identification"]

    target = identification(lambda source, reference: reference.audio)
    copy = identification(lambda source, reference: source.audio)
    assert target["num_outputs"] == len(pairs) == 3 * len(corpus) and target["rate"] == 1.0
    assert copy["rate"] < 0.7, copy
    # whose voice: the copy is nearer another utterance of its own speaker than its target, the target's reference never
    kept = lambda convert: pitch_and_oracle_controls(scorer, pairs, corpus, RATE, 320, convert=convert)["model"]["source_kept"]
    assert kept(lambda source, reference: source.audio)["rate"] >= 0.8
    assert kept(lambda source, reference: reference.audio)["hits"] == 0
    first_source, first_reference = pairs[0]
    known = {(first_source.utterance_id, first_reference.speaker): speaker_embedding(first_source.audio, RATE)}
    assert identification(lambda source, reference: reference.audio, known)["hits"] == target["hits"] - 1


def test_the_timbre_only_conversion_of_a_target_blind_model_is_identified_at_chance(micro_manifest):
    """``timbre_only`` (the target's speaker vector at the source's own pitch): a "model" that
    keeps its source whatever the target (the failing input) is identified exactly once per
    source, at chance; one that returns the target's reference, every time."""
    from streamvc_rvq.data.dataset import load_utterances
    from streamvc_rvq.evaluation.evaluate import conversion_pairs
    from streamvc_rvq.evaluation.pitch_and_oracle_controls import pitch_and_oracle_controls
    from streamvc_rvq.quality.scorer import QualityScorer

    corpus = load_utterances(micro_manifest, None, labels=None)
    pairs = conversion_pairs(corpus, len(corpus))
    scorer = QualityScorer(["speaker"], RATE)

    def timbre(convert_timbre):
        controls = pitch_and_oracle_controls(scorer, pairs, corpus, RATE, 320, convert_timbre=convert_timbre)
        assert "model" not in controls
        return controls["timbre_only"]["identification"]

    blind = timbre(lambda source, reference: source.audio)
    sources = len({s.utterance_id for s, _ in pairs})
    assert blind["hits"] == sources and blind["rate"] == pytest.approx(blind["chance"]) and blind["num_outputs"] == len(pairs)
    assert timbre(lambda source, reference: reference.audio)["rate"] == 1.0

