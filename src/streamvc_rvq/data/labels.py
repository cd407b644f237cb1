"""Frame labels (one phoneme id per 20 ms frame) from eSpeak NG's phoneme events.

The vocabulary is fixed (ids never depend on the corpus): id 0 is silence (eSpeak's pause
phonemes ``_``, ``_:``, ``_!``, ... and everything before the first or after the last
phoneme), id 1 is any phoneme outside the list, then the English phoneme mnemonics of
eSpeak NG (stress marks removed), sorted. It is written as ``phonemes.json`` (a JSON list,
index = id) in the corpus folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SILENCE = "_"
UNKNOWN = "<unk>"

# eSpeak NG's English phonemes (tables en, en-us, en-rp, en-sc, en-wi, en-n, en-wm, en-us-nyc
# and the base consonants they use), stress marks removed.
_ENGLISH_PHONEMES = (
    "0", "0#", "02", "3", "3:", ";", "?", "@", "@#", "@-", "@2", "@5", "@L", "A#", "A:", "A@",
    "A~", "D", "E", "E#", "E2", "I", "I#", "I2", "I2#", "IR", "N", "O", "O2", "O:", "O@", "OI",
    "O~", "S", "T", "U", "U@", "V", "VR", "Z", "a", "a#", "a#2", "a/", "a2", "aI", "aI2", "aI3",
    "aI@", "aU", "aU@", "aa", "b", "d", "d#", "dZ", "e", "e#", "e:", "e@", "eI", "f", "g", "h",
    "i", "i:", "i@", "i@3", "j", "k", "l", "l-", "l/2", "m", "m-", "n", "n-", "o", "o:", "o@",
    "oU", "oU#", "p", "r", "r-", "r/", "s", "t", "t#", "t2", "tS", "u", "u:", "v", "w", "w#",
    "x", "z", "z#", "z/2",
)

VOCABULARY: tuple[str, ...] = (SILENCE, UNKNOWN) + tuple(sorted(_ENGLISH_PHONEMES))

_STRESS_MARKS = "',%=!"


def normalise_phoneme(mnemonic: str) -> str:
    """The vocabulary entry of an eSpeak phoneme mnemonic: stress marks removed, pauses -> ``_``."""
    m = mnemonic.strip()
    if not m or m.startswith("_"):
        return SILENCE
    stripped = m.lstrip(_STRESS_MARKS)
    return stripped if stripped else SILENCE


def label_id(mnemonic: str, index: dict[str, int]) -> int:
    name = normalise_phoneme(mnemonic)
    if name == SILENCE:
        return 0
    return index.get(name, index.get(UNKNOWN, 0))


def frame_labels(phoneme_events: Sequence[tuple[int, str]], num_samples: int, sample_rate: int,
                 hop_length: int, vocabulary: Sequence[str] = VOCABULARY,
                 event_sample_rate: int | None = None) -> np.ndarray:
    """One label per frame (``num_samples // hop_length`` frames), int16.

    ``phoneme_events`` are ``(start sample, mnemonic)`` at ``event_sample_rate`` (eSpeak's
    rate, e.g. 22050 Hz; default: ``sample_rate``); their starts are scaled by
    ``sample_rate / event_sample_rate``, i.e. to the resampled audio of ``num_samples``
    samples. A phoneme lasts until the next event; the last one until the end. Each frame
    gets the label covering most of its samples (ties: the lower id). Before the first
    event is silence (0).
    """
    hop = int(hop_length)
    num_frames = int(num_samples) // hop
    if num_frames <= 0:
        return np.zeros(0, dtype=np.int16)
    index = {name: i for i, name in enumerate(vocabulary)}
    if len(vocabulary) > np.iinfo(np.int16).max:
        raise ValueError("vocabulary too large for int16 labels")
    scale = 1.0 if event_sample_rate is None else float(sample_rate) / float(event_sample_rate)
    total = num_frames * hop
    per_sample = np.zeros(total, dtype=np.int64)
    events = sorted(((int(round(s * scale)), label_id(m, index)) for s, m in phoneme_events),
                    key=lambda e: e[0])
    for k, (start, lab) in enumerate(events):
        end = events[k + 1][0] if k + 1 < len(events) else total
        start, end = max(0, start), min(total, end)
        if end > start:
            per_sample[start:end] = lab
    v = len(vocabulary)
    flat = np.repeat(np.arange(num_frames, dtype=np.int64) * v, hop) + per_sample
    counts = np.bincount(flat, minlength=num_frames * v).reshape(num_frames, v)
    return counts.argmax(axis=1).astype(np.int16)


def write_vocabulary(path: str | Path, vocabulary: Sequence[str] = VOCABULARY) -> None:
    """``phonemes.json``: the list of label names, index = id."""
    from ..atomic import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(list(vocabulary), indent=1) + "\n").encode())


def read_vocabulary(path: str | Path) -> list[str]:
    return json.loads(Path(path).read_text())
