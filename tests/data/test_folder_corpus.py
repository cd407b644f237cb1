"""A user corpus folder with good and bad files, in VCTK-like and LibriTTS-like layouts."""

from __future__ import annotations

import csv
import hashlib
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from streamvc_rvq.data.audio import (AudioError, clipped_fraction, clipped_frames, full_scale, load_audio,
                                     normalise_level, trim_bounds, trim_silence)
from streamvc_rvq.data.dataset import read_manifest
from streamvc_rvq.data.folder_corpus import (MAX_ID_BYTES, MAX_ID_CHARS, _safe, clipping_verdict,
                                             find_candidates)
from streamvc_rvq.data.prepare import MANIFEST_COLUMNS, CorpusError, describe_splits, prepare_corpus


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
    with open(path, newline="", encoding="utf-8") as f:
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


def test_too_few_usable_files_is_one_clear_error(tmp_path, capsys):
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
                       "and >= 4 speakers: corpus.min_files, corpus.min_speakers); the 2 files not used and why "
                       "are listed above it in this log (`rejected:` lines)")
    assert len(_rows(out / "rejected.csv")) == 2
    # the workflow deletes a failed job's outputs: the evidence is in its log (stderr) too
    logged = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rejected: ")]
    assert len(logged) == 2 and any(line.endswith("empty file") for line in logged)
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


# --- ids: non-ASCII, colliding and hostile names -------------------------------------------

_SAFE_ID = re.compile(r"[^\s/\\;$()`'\"&|<>*?!#~{}\[\]\x00-\x1f\x7f]+")


def _assert_safe_id(uid: str) -> None:
    assert _SAFE_ID.fullmatch(uid), repr(uid)
    assert not uid.startswith((".", "-")), repr(uid)
    assert len(uid) <= MAX_ID_CHARS and len(uid.encode()) <= MAX_ID_BYTES, repr(uid)
    assert all(unicodedata.category(c)[0] in "LNM" or c in "_.-" for c in uid), repr(uid)


def _nfd(name: str) -> str:
    return unicodedata.normalize("NFD", name)


def _sha8(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:8]


@pytest.fixture
def unicode_folder(tmp_path):
    """Speakers 李明, 王芳 (each with a.wav), `a b` and `a_b`, and José spelt NFC and NFD."""
    root = tmp_path / "unicode"
    files = ["李明/a.wav", "李明/m2.wav", "王芳/a.wav", "王芳/w2.wav", "a b/s1.wav", "a_b/s1.wav",
             "José/j1.wav", _nfd("José") + "/j2.wav"]
    assert len({f.split("/")[0] for f in files}) == 6  # the two José folders are two folders
    for k, rel in enumerate(files):
        write(root / rel, speechlike(0.8, 16000, 100 + 15 * k, seed=k), 16000, "PCM_16")
    return root


def test_non_ascii_speakers_stay_apart_and_ids_have_one_extension(unicode_folder, tmp_path):
    cfg = {"type": "folder", "seed": 1, "held_out_speakers": 1, "validation_fraction": 0.2,
           "min_files": 8, "min_speakers": 4, "folder": {"root": str(unicode_folder)}}
    out = tmp_path / "out"
    summary = prepare_corpus(cfg, out, workers=2, progress=False)
    rows = _rows(out / "manifest.csv")
    assert tuple(rows[0].keys()) == MANIFEST_COLUMNS
    by_id = {r["utterance_id"]: r for r in rows}
    assert len(by_id) == len(rows) == 8
    speakers = {r["speaker"] for r in rows}
    # 李明 and 王芳 are two speakers; `a b` and `a_b` stay apart; José's two spellings are one
    assert speakers == {"李明", "王芳", "a_b", f"a_b_{_sha8('a b')}", "José"}
    assert summary["num_speakers"] == 5 and summary["num_rejected"] == 0
    assert {r["utterance_id"] for r in rows if r["speaker"] == "José"} == {"j1", "j2"}
    # the shared stem `a` gives path-based ids, without the extension
    assert by_id["李明__a"]["speaker"] == "李明" and by_id["王芳__a"]["speaker"] == "王芳"
    for r in rows:
        name = Path(r["path"]).name
        assert name == r["utterance_id"] + ".wav" and name.count(".wav") == 1
        assert r["path"] == f"audio/{r['speaker']}/{name}"
        assert (out / r["path"]).is_file()
    # UTF-8 whatever the locale, readable by the training side
    raw = (out / "manifest.csv").read_bytes()
    assert "李明".encode("utf-8") in raw
    assert [r["utterance_id"] for r in read_manifest(out / "manifest.csv")] == sorted(by_id)
    # the same folder gives the same bytes with another number of workers
    again = tmp_path / "again"
    prepare_corpus(cfg, again, workers=1, progress=False)
    for name in ("manifest.csv", "rejected.csv", "flagged.csv"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_sanitising_never_merges_two_names(tmp_path):
    root = tmp_path / "r"
    rels = ["a b/1.wav", "a_b/1.wav", "a?b/2.wav", "x y/3.wav", "Alice/4.wav", "alice/5.wav",
            "s/dup.wav", "s/dup.flac", "t/x y.wav", "t/x_y.wav"]
    for rel in rels:
        write(root / rel, np.zeros(10), 16000, "PCM_16")
    cands = find_candidates(root, ["wav", "flac"], "^([^/]+)/")
    assert sorted(c.rel for c in cands) == sorted(rels)
    spk = {c.rel.split("/")[0]: c.speaker for c in cands}
    assert len(set(spk.values())) == len(spk) == 8
    assert spk["a_b"] == "a_b" and spk["x y"] == "x_y"  # an already safe name keeps its id
    assert spk["a b"] == f"a_b_{_sha8('a b')}" and spk["a?b"] == f"a_b_{_sha8('a?b')}"
    assert spk["Alice"].casefold() != spk["alice"].casefold()  # case-insensitive file systems
    uids = [c.utterance_id for c in cands]
    assert len({u.casefold() for u in uids}) == len(uids)
    for c in cands:
        _assert_safe_id(c.speaker)
        _assert_safe_id(c.utterance_id)
        assert "wav" not in c.utterance_id and "flac" not in c.utterance_id
    # the result does not depend on the order the files are found in
    assert find_candidates(root, ["flac", "wav"], "^([^/]+)/") == cands


def test_hostile_names_give_safe_files_inside_the_corpus_folder(tmp_path):
    root = tmp_path / "hostile"
    folders = ["x;y", "$(rm)", "a\nb", ".dot", "dot", " lead", "-rf", "\u202eevil", "tab\there",
               "L" * 200, "李" * 80]
    for k, folder in enumerate(folders):
        for j in range(2):
            write(root / folder / f"{'`id`' if j else '..'}{k}.wav",
                  speechlike(0.6, 16000, 100 + 10 * k, seed=j), 16000, "PCM_16")
    out = tmp_path / "out"
    cfg = {"type": "folder", "held_out_speakers": 1, "min_files": 22, "min_speakers": 11,
           "folder": {"root": str(root)}}
    summary = prepare_corpus(cfg, out, workers=2, progress=False)
    assert summary["num_speakers"] == len(folders) and summary["num_utterances"] == 22
    rows = _rows(out / "manifest.csv")
    for r in rows:
        _assert_safe_id(r["speaker"])
        _assert_safe_id(r["utterance_id"])
        path = (out / r["path"]).resolve()
        assert path.is_file() and out.resolve() in path.parents
        assert path.parent.parent == (out / "audio").resolve()
    written = [p for p in out.rglob("*") if p.is_file()]
    assert all(not p.name.startswith(".") for p in written)
    # names no folder can have: path traversal and separators are gone
    for name in ["../x", "..", "/etc/passwd", "a/../../b", "\x00", "."]:
        uid = _safe(name)
        _assert_safe_id(uid)
        assert "/" not in uid and uid not in {".", ".."} and Path(uid).name == uid


def test_nfd_and_nfc_spellings_are_one_speaker(tmp_path):
    root = tmp_path / "r"
    for rel in ["José/a.wav", _nfd("José") + "/a.wav", "Zoë/b.wav"]:
        write(root / rel, np.zeros(10), 16000, "PCM_16")
    cands = find_candidates(root, ["wav"], "^([^/]+)/")
    assert [c.speaker for c in cands].count("José") == 2
    assert len({c.utterance_id for c in cands}) == 3  # the two a.wav are two utterances


# --- clipping -------------------------------------------------------------------------------

def _with_clipped_sine(amplitude: float, periods: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """1 s of speech at 16 kHz with a burst of a 100 Hz sine of ``amplitude`` clipped to +-1,
    and the fraction of its samples in the flat tops."""
    x = speechlike(1.0, 16000, lead=0, tail=0, seed=seed)
    t = np.arange(160 * periods) / 16000
    burst = np.clip(amplitude * np.sin(2 * np.pi * 100 * t), -1.0, 1.0)
    x[4000:4000 + len(burst)] = burst
    return x, float(np.mean(np.abs(x) >= 1.0))


def test_clipped_files_are_rejected_over_the_limit_and_flagged_under_it(tmp_path):
    root = tmp_path / "loud"
    for i, spk in enumerate(["s1", "s2", "s3", "s4"]):
        for j in range(3):
            write(root / spk / f"{spk}_{j}.wav", speechlike(0.8, 16000, 100 + 30 * i, seed=j), 16000,
                  "PCM_16")
    heavy, heavy_fraction = _with_clipped_sine(2.0, 8)
    light, light_fraction = _with_clipped_sine(1.05, 1, seed=1)
    assert 0.04 < heavy_fraction < 0.06 and 0.001 < light_fraction < 0.003
    write(root / "s1" / "heavy.wav", heavy, 16000, "PCM_16")
    write(root / "s2" / "light.wav", light, 16000, "PCM_16")
    loud = speechlike(1.0, 16000, lead=0, tail=0, seed=2)
    write(root / "s3" / "loud.wav", 0.98 * loud / np.abs(loud).max(), 16000, "PCM_16")
    click = speechlike(1.0, 16000, lead=0, tail=0, seed=3)
    click[5000] = 1.0
    write(root / "s4" / "click.wav", click, 16000, "PCM_16")
    out = tmp_path / "out"
    cfg = {"type": "folder", "held_out_speakers": 1, "min_files": 12, "min_speakers": 4,
           "folder": {"root": str(root)}}
    summary = prepare_corpus(cfg, out, workers=2, progress=False)
    rejected = {r["path"]: r["reason"] for r in _rows(out / "rejected.csv")}
    assert list(rejected) == ["s1/heavy.wav"]
    m = re.fullmatch(r"clipped: (\d+\.\d)% of samples at full scale "
                     r"\(limit 1\.0%, corpus\.max_clipped_fraction\)", rejected["s1/heavy.wav"])
    assert m and abs(float(m[1]) - 100 * heavy_fraction) < 0.15, rejected
    flagged = _rows(out / "flagged.csv")
    assert [tuple(r) for r in flagged] == [("path", "utterance_id", "reason")]
    assert [(r["path"], r["utterance_id"]) for r in flagged] == [("s2/light.wav", "light")]
    m = re.fullmatch(r"clipped: (\d+\.\d)% of samples at full scale "
                     r"\(within the 1\.0% limit, corpus\.max_clipped_fraction\)", flagged[0]["reason"])
    assert m and abs(float(m[1]) - 100 * light_fraction) < 0.05, flagged
    ids = {r["utterance_id"] for r in _rows(out / "manifest.csv")}
    assert {"light", "loud", "click"} <= ids and "heavy" not in ids
    assert summary["num_flagged"] == 1 and summary["num_rejected"] == 1
    assert describe_splits(summary)[-1] == ("note: 1 file used despite some clipping (within "
                                            "corpus.max_clipped_fraction); see flagged.csv")
    again = tmp_path / "again"
    prepare_corpus(cfg, again, workers=1, progress=False)
    for name in ("manifest.csv", "rejected.csv", "flagged.csv"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    # the limit is a setting: 0 rejects any clipping, 1 only flags it
    strict = prepare_corpus(dict(cfg, max_clipped_fraction=0.0), tmp_path / "strict", workers=1,
                            progress=False)
    assert strict["num_rejected"] == 2 and strict["num_flagged"] == 0
    lax = prepare_corpus(dict(cfg, max_clipped_fraction=1.0), tmp_path / "lax", workers=1,
                         progress=False)
    assert lax["num_rejected"] == 0 and lax["num_flagged"] == 2


def test_clipping_is_a_flat_top_at_full_scale():
    speech = 0.5 * np.sin(np.arange(1000) / 7.0)
    assert clipped_fraction(speech) == 0.0
    x = speech.copy()
    x[100] = 1.0  # one full-scale sample: a peak touching the top, not clipping
    x[200:202] = -1.0  # two equal neighbours: a rounded peak
    assert clipped_fraction(x) == 0.0
    x[300:303] = 1.0  # three: a flat top
    x[400:410] = -1.0
    np.testing.assert_array_equal(np.flatnonzero(clipped_frames(x)),
                                  [300, 301, 302, *range(400, 410)])
    # loud but not flat: a peak-normalised low voice at 48 kHz passes near full scale
    t = np.arange(48000) / 48000
    low = np.round(32767 * np.sin(2 * np.pi * 100 * t)) / 32768
    assert np.abs(low).max() > 0.999 and clipped_fraction(low) == 0.0
    # float files: above 1.0 is no clipping unless it is flat (clamped, then amplified)
    hot = 1.5 * np.sin(np.arange(1000) / 7.0)
    assert clipped_fraction(hot) == 0.0
    hot[500:505] = 1.3
    assert clipped_frames(hot).sum() == 5
    # any channel counts; the fraction is of frames
    stereo = np.stack([speech, x], axis=1)
    assert clipped_fraction(stereo) == pytest.approx(13 / 1000)
    assert clipping_verdict(0.0, 0.01) == (False, None)
    assert clipping_verdict(0.032, 0.01) == (
        True, "clipped: 3.2% of samples at full scale (limit 1.0%, corpus.max_clipped_fraction)")
    assert clipping_verdict(0.00004, 0.01)[1].startswith("clipped: 0.004% of samples")


def test_eight_bit_files_clip_at_their_own_full_scale(tmp_path):
    x = speechlike(1.0, 8000, lead=0, tail=0)
    x[1000:1010] = 1.0  # stored as 127/128, below 0.999
    for subtype in ("PCM_U8", "PCM_16"):
        write(tmp_path / "c.wav", x, 8000, subtype)
        data, _ = sf.read(str(tmp_path / "c.wav"), dtype="float32", always_2d=True)
        scale = full_scale(sf.info(str(tmp_path / "c.wav")).subtype)
        assert clipped_frames(data, scale).sum() == 10, subtype


def test_the_builtin_corpus_has_an_empty_flagged_csv(tiny_corpus):
    out, summary = tiny_corpus
    assert (out / "flagged.csv").read_bytes() == b"path,utterance_id,reason\n"
    assert summary["num_flagged"] == 0
    assert not any(line.startswith("note: 0 files") for line in describe_splits(summary))
