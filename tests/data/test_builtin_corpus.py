"""The built-in eSpeak NG corpus: layout, manifest, labels, determinism across builds."""

from __future__ import annotations

import csv

import numpy as np
import soundfile as sf

from streamvc_rvq.data.builtin_corpus import make_speakers
from streamvc_rvq.data.labels import VOCABULARY
from streamvc_rvq.data.prepare import MANIFEST_COLUMNS, prepare_corpus


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_speakers_are_distinct_and_deterministic():
    a = make_speakers(28, seed=1234)
    assert a == make_speakers(28, seed=1234)
    assert a != make_speakers(28, seed=99)
    assert len({s.name for s in a}) == 28
    assert len({s.voice for s in a}) == 28  # distinct accent+variant pairs
    assert len({s.voice.split("+")[0] for s in a}) >= 6  # many accents
    assert len({s.voice.split("+")[1][0] for s in a if s.voice.split("+")[1][0] in "mf"}) == 2
    assert max(s.pitch for s in a) - min(s.pitch for s in a) >= 40
    assert max(s.rate for s in a) - min(s.rate for s in a) >= 40
    assert all(0 <= s.pitch <= 100 and 0 <= s.pitch_range <= 100 and 80 <= s.rate <= 450 for s in a)


def test_tiny_corpus_layout_and_manifest(tiny_corpus):
    out, summary = tiny_corpus
    with open(out / "manifest.csv", newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header) == MANIFEST_COLUMNS
    rows = _rows(out / "manifest.csv")
    assert [r["utterance_id"] for r in rows] == sorted(r["utterance_id"] for r in rows)
    assert summary["num_utterances"] == len(rows) >= 10
    assert summary["num_speakers"] == 5 == len({r["speaker"] for r in rows})
    assert summary["minutes"] >= 1.0
    assert (out / "rejected.csv").read_text() == "path,reason\n"
    assert (out / "phonemes.json").is_file()
    total = 0.0
    for r in rows:
        info = sf.info(str(out / r["path"]))
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        assert r["path"] == f"audio/{r['speaker']}/{r['utterance_id']}.wav"
        assert abs(float(r["duration"]) - info.frames / 16000) < 1e-4
        assert r["duration"] == f"{info.frames / 16000:.4f}"
        labels = np.load(out / r["labels_path"])
        assert labels.dtype == np.int16 and len(labels) == info.frames // 320
        assert labels.min() >= 0 and labels.max() < len(VOCABULARY)
        assert labels[0] == 0 and labels[-1] == 0
        assert r["text"] and r["split"] in {"train", "valid", "heldout"}
        x, _ = sf.read(str(out / r["path"]))
        rms = float(np.sqrt(np.mean(x ** 2)))
        assert 0.05 < rms < 0.2 and np.abs(x).max() <= 0.99 + 1e-4  # -20 dBFS, peak-limited
        total += float(r["duration"])
    assert abs(total / 60 - summary["minutes"]) < 1e-2
    heldout = {r["speaker"] for r in rows if r["split"] == "heldout"}
    assert len(heldout) == 1
    assert {r["speaker"] for r in rows if r["split"] == "train"}.isdisjoint(heldout)


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_building_twice_is_byte_identical_whatever_the_workers(tiny_corpus, tiny_builtin_config, tmp_path):
    out, _ = tiny_corpus  # built with 2 workers
    again = tmp_path / "again"
    prepare_corpus(tiny_builtin_config, again, workers=1, progress=False)
    a, b = _tree_bytes(out), _tree_bytes(again)
    assert sorted(a) == sorted(b)
    assert any(k.endswith(".npy") for k in a) and any(k.endswith(".wav") for k in a)
    different = [k for k in a if a[k] != b[k]]
    assert not different, different[:5]
    # a different seed gives a different corpus
    other = dict(tiny_builtin_config, seed=8)
    prepare_corpus(other, tmp_path / "other", workers=2, progress=False)
    assert (tmp_path / "other" / "manifest.csv").read_bytes() != a["manifest.csv"]
