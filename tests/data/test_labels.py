"""eSpeak NG synthesis and phoneme frame labels: determinism, alignment, silences."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamvc_rvq.data.builtin_corpus import Speaker, UtteranceTask, synthesize_utterance
from streamvc_rvq.data.espeak import Synthesizer, variant_names
from streamvc_rvq.data.labels import (SILENCE, UNKNOWN, VOCABULARY, frame_labels, normalise_phoneme,
                                      read_vocabulary, write_vocabulary)

HOP = 320


def _runs_of_silence_inside(labels: np.ndarray) -> list[int]:
    """Lengths of the runs of silence between the first and the last non-silent frame."""
    speech = np.flatnonzero(labels != 0)
    inner = labels[speech[0]:speech[-1] + 1]
    runs, n = [], 0
    for v in inner:
        if v == 0:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def test_synthesis_is_deterministic_and_voices_differ():
    s = Synthesizer()
    text = "Hello there, my friend. How are you today?"
    a = s.synthesize(text, "en-us+f2", 60, 50, 170)
    _ = s.synthesize("Something else entirely.", "en+m3", 30, 70, 200)  # changes eSpeak's state
    b = s.synthesize(text, "en-us+f2", 60, 50, 170)
    assert a.sample_rate == 22050
    assert a.audio.dtype == np.float32 and a.audio.ndim == 1
    assert len(a.audio) > a.sample_rate  # more than a second of speech
    assert np.array_equal(a.audio, b.audio)
    assert a.phonemes == b.phonemes
    c = s.synthesize(text, "en-gb-x-rp+m3", 30, 50, 170)
    assert len(c.audio) != len(a.audio) or not np.array_equal(c.audio, a.audio)


def test_phoneme_events_are_ordered_and_inside_the_audio():
    r = Synthesizer().synthesize("The cat sat on the mat.", "en", 50, 50, 175)
    starts = [s for s, _ in r.phonemes]
    names = [normalise_phoneme(m) for _, m in r.phonemes]
    assert starts == sorted(starts)
    assert 0 <= starts[0] and starts[-1] <= len(r.audio)
    # the words' phonemes, stress marks removed: k a t ... m a t
    assert {"k", "s", "m", "t", "D"} <= set(names)
    assert all(n in VOCABULARY for n in names), [n for n in names if n not in VOCABULARY]


def test_variants_exist_in_the_data_path():
    names = set(variant_names())
    assert {"m1", "m3", "f1", "f2"} <= names


def test_vocabulary_is_fixed_sorted_and_fits_the_content_head(tmp_path):
    assert VOCABULARY[0] == SILENCE and VOCABULARY[1] == UNKNOWN
    assert list(VOCABULARY[2:]) == sorted(VOCABULARY[2:])
    assert len(set(VOCABULARY)) == len(VOCABULARY) <= 128
    write_vocabulary(tmp_path / "phonemes.json")
    assert read_vocabulary(tmp_path / "phonemes.json") == list(VOCABULARY)
    assert json.loads((tmp_path / "phonemes.json").read_text())[0] == "_"


def test_frame_labels_majority_rate_scaling_and_edges():
    vocab = ["_", "<unk>", "a", "b"]
    # events at 22050 Hz: a from 0.1 s, pause at 0.2 s, b from 0.3 s, a final pause at 0.4 s
    ev = [(2205, "'a"), (4410, "_:"), (6615, ",b"), (8820, "_")]
    labels = frame_labels(ev, num_samples=16000 // 2 + 100, sample_rate=16000, hop_length=HOP,
                          vocabulary=vocab, event_sample_rate=22050)
    assert labels.dtype == np.int16
    assert len(labels) == (8000 + 100) // HOP  # one label per whole frame
    # at 16 kHz: a covers samples 1600..3200 = frames 5..9, b 4800..6400 = frames 15..19
    expected = np.zeros(len(labels), dtype=np.int16)
    expected[5:10] = 2
    expected[15:20] = 3
    np.testing.assert_array_equal(labels, expected)
    # an unknown phoneme gets <unk>, a frame goes to the label covering most of it
    lab2 = frame_labels([(0, "zz"), (100, "b")], 640, 16000, HOP, vocab)
    np.testing.assert_array_equal(lab2, [3, 3])
    lab3 = frame_labels([(0, "zz"), (200, "b")], 640, 16000, HOP, vocab)
    np.testing.assert_array_equal(lab3, [1, 3])
    assert len(frame_labels(ev, 100, 16000, HOP, vocab)) == 0


@pytest.mark.parametrize("text", [
    "The old man waited at the station, but nobody came.",
    "The dog slept under the table. Then it ran to the garden.",
])
def test_labels_align_with_the_audio_and_mark_pauses(text):
    spk = Speaker(name="s00", voice="en-us+m3", pitch=45, pitch_range=50, rate=170)
    res = synthesize_utterance(UtteranceTask(0, "s00_0000", spk, text), 16000, HOP)
    assert res.audio.dtype == np.int16
    assert len(res.labels) == len(res.audio) // HOP
    labels = res.labels
    # leading and trailing frames are silence, and speech is in between
    assert np.all(labels[:3] == 0) and np.all(labels[-3:] == 0)
    assert np.count_nonzero(labels) > len(labels) // 2
    # the comma or the full stop gives a pause of several frames inside the utterance
    assert max(_runs_of_silence_inside(labels), default=0) >= 3
    # silence labels sit on quiet audio, speech labels on loud audio
    x = res.audio.astype(np.float32) / 32768.0
    frames = x[:len(labels) * HOP].reshape(len(labels), HOP)
    rms = np.sqrt((frames ** 2).mean(axis=1))
    assert rms[labels != 0].mean() > 5 * rms[:3].mean() + 1e-6
    assert rms[:3].max() < 1e-3  # the leading silence is digital silence
