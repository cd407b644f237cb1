"""A user corpus folder with good and bad files, in VCTK-like and LibriTTS-like layouts."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from streamvc_rvq.data.audio import AudioError, load_audio, normalise_level, trim_bounds, trim_silence
from streamvc_rvq.data.prepare import MANIFEST_COLUMNS, CorpusError, prepare_corpus


def speechlike(seconds: float, sr: int, f0: float = 140.0, lead: float = 0.3, tail: float = 0.3,
               seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated signal with silence before and after (float64, mono)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    voiced = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    x = 0.3 * voiced / 2.6 * envelope
    return np.concatenate([np.zeros(int(lead * sr)), x, np.zeros(int(tail * sr))])


def write(path, data, sr, subtype=None, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype=subtype, format=fmt)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def vctk(tmp_path):
    """root/wav48/pNNN/pNNN_MMM.wav: 4 speakers x 3 good files, plus every kind of bad file."""
    root = tmp_path / "VCTK" / "wav48"
    speakers = ["p225", "p226", "p227", "p228"]
    for i, spk in enumerate(speakers):
        for j in range(1, 4):
            write(root / spk / f"{spk}_00{j}.wav", speechlike(1.0, 48000, 100 + 30 * i, seed=j), 48000,
                  "PCM_16")
    # good but unusual formats
    stereo = speechlike(1.2, 44100, 180)
    write(root / "p225" / "p225_004.WAV", np.stack([stereo, 0.5 * stereo], axis=1), 44100, "PCM_16")
    write(root / "p226" / "p226_004.wav", speechlike(1.0, 8000, 120), 8000, "PCM_U8")
    write(root / "p227" / "p227_004.flac", speechlike(1.0, 22050, 150), 22050, "PCM_24")
    write(root / "p228" / "p228_004.wav", speechlike(1.0, 32000, 210).astype(np.float32), 32000, "FLOAT")
    # sidecar labels (one per 20 ms frame of the original file) for p225_001
    n_frames = int(1.6 * 16000) // 320
    np.save(root / "p225" / "p225_001.labels.npy", (np.arange(n_frames) % 7).astype(np.int64))
    (root / "p225" / "p225_001.txt").write_text("Please call Stella.\n")
    # bad files
    full = (root / "p225" / "p225_001.wav").read_bytes()
    (root / "p225" / "p225_010.wav").write_bytes(full[: len(full) // 2])  # data cut in half
    (root / "p225" / "p225_011.wav").write_bytes(full[:20])  # header cut
    (root / "p226" / "p226_010.wav").write_bytes(b"")
    (root / "p227" / "p227_010.wav").write_text("this is a text file, not audio\n" * 20)
    write(root / "p228" / "p228_010.wav", speechlike(0.1, 16000, lead=0, tail=0), 16000, "PCM_16")
    write(root / "p228" / "p228_011.wav", np.zeros(16000), 16000, "PCM_16")
    write(root / "stray.wav", speechlike(1.0, 16000), 16000, "PCM_16")  # no speaker folder
    (root / "p225" / "notes.txt").write_text("not a candidate")  # other extensions are ignored
    return root


def test_vctk_layout_good_files_ingested_bad_files_reported(vctk, tmp_path):
    out = tmp_path / "corpus"
    cfg = {"type": "folder", "seed": 3, "held_out_speakers": 1, "validation_fraction": 0.2,
           "min_files": 10, "min_speakers": 4, "folder": {"root": str(vctk)}}
    summary = prepare_corpus(cfg, out, workers=2, progress=False)
    rows = _rows(out / "manifest.csv")
    assert tuple(rows[0].keys()) == MANIFEST_COLUMNS
    ids = {r["utterance_id"]: r for r in rows}
    assert sorted(ids) == sorted([f"{s}_00{j}" for s in ["p225", "p226", "p227", "p228"]
                                  for j in range(1, 5)])
    assert summary["num_utterances"] == 16 and summary["num_speakers"] == 4
    for r in rows:
        assert r["speaker"] == r["utterance_id"][:4]
        info = sf.info(str(out / r["path"]))
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        # silence trimmed: 0.3 s before and after is gone (to the 20 ms frame)
        original = {"p225_004": 1.2, "p226_004": 1.0, "p227_004": 1.0, "p228_004": 1.0}.get(
            r["utterance_id"], 1.0)
        assert original - 0.03 <= float(r["duration"]) <= original + 0.05, r
    rejected = {r["path"]: r["reason"] for r in _rows(out / "rejected.csv")}
    assert rejected.keys() == {"p225/p225_010.wav", "p225/p225_011.wav", "p226/p226_010.wav",
                               "p227/p227_010.wav", "p228/p228_010.wav", "p228/p228_011.wav",
                               "stray.wav"}
    assert rejected["p225/p225_010.wav"].startswith("truncated")
    assert rejected["p225/p225_011.wav"].startswith("unreadable: ")
    assert rejected["p226/p226_010.wav"] == "empty file"
    assert rejected["p227/p227_010.wav"].startswith("not audio")
    assert re.fullmatch(r"too short: 0\.\d\d s < 0\.50 s", rejected["p228/p228_010.wav"])
    assert rejected["p228/p228_011.wav"] == "silent"
    assert rejected["stray.wav"] == "no speaker in path"
    assert summary["num_rejected"] == 7
    # the sidecar labels are copied, cut to the trimmed audio; the text file is read
    lab = np.load(out / ids["p225_001"]["labels_path"])
    frames = sf.info(str(out / ids["p225_001"]["path"])).frames // 320
    assert lab.dtype == np.int16 and len(lab) == frames
    f0, _ = trim_bounds(load_audio(vctk / "p225" / "p225_001.wav"), -40.0, 320)
    assert f0 // 320 in (14, 15)  # 0.3 s of leading silence = 15 frames
    np.testing.assert_array_equal(lab, np.arange(f0 // 320, f0 // 320 + frames) % 7)
    assert ids["p225_001"]["text"] == "Please call Stella."
    assert ids["p226_001"]["labels_path"] == ""
    # building again gives the same bytes
    again = tmp_path / "again"
    prepare_corpus(cfg, again, workers=1, progress=False)
    assert (again / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()
    assert (again / "rejected.csv").read_bytes() == (out / "rejected.csv").read_bytes()
    for r in rows:
        assert (again / r["path"]).read_bytes() == (out / r["path"]).read_bytes()


def test_libritts_layout_speaker_is_the_first_folder(tmp_path):
    root = tmp_path / "LibriTTS" / "train-clean-100"
    for spk, chapter in [("19", "198"), ("26", "495"), ("32", "21631"), ("40", "222")]:
        for k in range(3):
            stem = f"{spk}_{chapter}_000000_00000{k}"
            write(root / spk / chapter / f"{stem}.wav", speechlike(0.8, 24000, 90 + int(spk), seed=k),
                  24000, "PCM_16")
            (root / spk / chapter / f"{stem}.normalized.txt").write_text(f"Sentence {k} of {spk}.")
    (root / "19" / "198" / "19_198.book.tsv").write_text("ignored")
    out = tmp_path / "out"
    cfg = {"type": "folder", "held_out_speakers": 1, "min_files": 12, "min_speakers": 4,
           "folder": {"root": str(root), "extensions": ["WAV"]}}
    summary = prepare_corpus(cfg, out, workers=1, progress=False)
    rows = _rows(out / "manifest.csv")
    assert summary["num_speakers"] == 4 and len(rows) == 12
    assert {r["speaker"] for r in rows} == {"19", "26", "32", "40"}
    assert all(r["utterance_id"].startswith(r["speaker"] + "_") for r in rows)
    assert all(r["text"] == f"Sentence {r['utterance_id'][-1]} of {r['speaker']}." for r in rows)
    assert (out / "rejected.csv").read_text() == "path,reason\n"
    splits = {r["split"] for r in rows}
    assert splits == {"train", "valid", "heldout"}


def test_too_few_usable_files_is_one_clear_error(tmp_path):
    root = tmp_path / "small"
    write(root / "a" / "1.wav", speechlike(1.0, 16000), 16000, "PCM_16")
    write(root / "a" / "2.wav", speechlike(1.0, 16000, seed=1), 16000, "PCM_16")
    write(root / "b" / "1.wav", speechlike(1.0, 16000, 200), 16000, "PCM_16")
    (root / "b" / "2.wav").write_bytes(b"")
    (root / "b" / "3.flac").write_text("nope")
    out = tmp_path / "out"
    cfg = {"type": "folder", "min_files": 20, "min_speakers": 4, "folder": {"root": str(root)}}
    with pytest.raises(CorpusError) as err:
        prepare_corpus(cfg, out, workers=1, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert message == (f"only 3 usable files from 2 speakers in {root.resolve()} (need >= 20 files "
                       "and >= 4 speakers); see rejected.csv for the 2 files not used")
    assert len(_rows(out / "rejected.csv")) == 2
    assert not (out / "manifest.csv").exists()
    # a root that does not exist is a clear error too
    with pytest.raises(CorpusError, match="not a directory"):
        prepare_corpus({"type": "folder", "folder": {"root": str(tmp_path / "nope")}}, out,
                       progress=False)


def test_load_audio_resamples_and_mixes_down(tmp_path):
    x = speechlike(1.0, 44100, lead=0, tail=0)
    write(tmp_path / "s.wav", np.stack([x, np.zeros_like(x)], axis=1), 44100, "PCM_16")
    y = load_audio(tmp_path / "s.wav", 16000)
    assert y.dtype == torch.float32 and y.ndim == 1
    assert abs(len(y) - 16000) <= 1
    assert abs(float(y.abs().max()) - 0.5 * np.abs(x).max()) < 0.02
    for bad, reason in [(b"", "empty file"), (b"hello world" * 10, "not audio")]:
        (tmp_path / "b.wav").write_bytes(bad)
        with pytest.raises(AudioError, match=reason):
            load_audio(tmp_path / "b.wav")


def test_trim_and_normalise():
    x = torch.from_numpy(speechlike(1.0, 16000, lead=0.5, tail=0.25)).float()
    y = trim_silence(x, -40.0, 320)
    assert abs(len(y) - 16000) <= 320 and len(y) % 320 == 0
    z = normalise_level(0.01 * y)
    rms = float(z.pow(2).mean().sqrt())
    assert abs(20 * np.log10(rms) + 20) < 0.1
    loud = normalise_level(torch.tensor([1.0] + [0.0] * 9999))  # a click: peak limit wins
    assert abs(float(loud.abs().max()) - 0.99) < 1e-6
