"""Training batches: pure functions of (seed, step), frame-aligned crops, same-speaker references."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from streamvc_rvq.data.audio import save_labels, save_wav
from streamvc_rvq.data.dataset import load_utterances, sample_batch

HOP = 320


def test_load_utterances_by_split(tiny_corpus):
    out, summary = tiny_corpus
    train = load_utterances(out / "manifest.csv", "train")
    valid = load_utterances(out / "manifest.csv", "valid")
    held = load_utterances(out / "manifest.csv", "heldout")
    assert len(train) + len(valid) + len(held) == summary["num_utterances"]
    assert train and valid and held
    assert {u.speaker for u in held}.isdisjoint({u.speaker for u in train})
    for u in train:
        assert u.audio.dtype == torch.float32 and u.audio.ndim == 1
        assert u.labels.dtype == torch.int64 and len(u.labels) == len(u.audio) // HOP
    assert [u.utterance_id for u in train] == sorted(u.utterance_id for u in train)
    assert len(load_utterances(out / "manifest.csv")) == summary["num_utterances"]


def test_sample_batch_is_a_pure_function_of_seed_and_step(tiny_corpus):
    out, _ = tiny_corpus
    utts = load_utterances(out / "manifest.csv", "train")
    torch.manual_seed(123)  # the global RNG must not matter
    a = sample_batch(utts, seed=0, step=7, batch_size=6, crop_frames=64, hop_length=HOP)
    torch.manual_seed(456)
    _ = sample_batch(utts, seed=0, step=8, batch_size=6, crop_frames=64, hop_length=HOP)
    b = sample_batch(utts, seed=0, step=7, batch_size=6, crop_frames=64, hop_length=HOP)
    assert a.source.shape == a.reference.shape == (6, 64 * HOP)
    assert a.labels.shape == (6, 64) and a.labels.dtype == torch.int64
    assert torch.equal(a.source, b.source) and torch.equal(a.reference, b.reference)
    assert torch.equal(a.labels, b.labels) and a.speakers == b.speakers
    c = sample_batch(utts, seed=0, step=8, batch_size=6, crop_frames=64, hop_length=HOP)
    d = sample_batch(utts, seed=1, step=7, batch_size=6, crop_frames=64, hop_length=HOP)
    assert not torch.equal(a.source, c.source)
    assert not torch.equal(a.source, d.source)


def test_crops_are_frame_aligned_with_labels_and_references_share_the_speaker(tiny_corpus):
    out, _ = tiny_corpus
    utts = load_utterances(out / "manifest.csv", "train")
    by_id = {u.utterance_id: u for u in utts}
    assert all(sum(x.speaker == s for x in utts) >= 2 for s in {x.speaker for x in utts})
    for step in range(5):
        batch = sample_batch(utts, seed=3, step=step, batch_size=4, crop_frames=50, hop_length=HOP)
        for b in range(4):
            u = by_id[batch.utterance_ids[b]]
            r = by_id[batch.reference_ids[b]]
            assert batch.speakers[b] == u.speaker == r.speaker
            if sum(x.speaker == u.speaker for x in utts) > 1:
                assert r.utterance_id != u.utterance_id  # another utterance of the same speaker
            # find the crop in the utterance: it starts on a frame boundary
            starts = [f for f in range(len(u.audio) // HOP - 50 + 1)
                      if torch.equal(u.audio[f * HOP:(f + 50) * HOP], batch.source[b])]
            assert starts, "source crop is not a frame-aligned slice of its utterance"
            assert torch.equal(batch.labels[b], u.labels[starts[0]:starts[0] + 50])


def _manual_corpus(tmp_path, lengths, with_labels=True):
    rows = []
    for i, n in enumerate(lengths):
        spk = f"k{i % 2}"
        uid = f"{spk}_{i:02d}"
        x = np.full(n, 0.01 * (i + 1), dtype=np.float32)
        save_wav(tmp_path / f"audio/{uid}.wav", x, 16000)
        lab = ""
        if with_labels:
            save_labels(tmp_path / f"labels/{uid}.npy", np.full(n // HOP, i + 1))
            lab = f"labels/{uid}.npy"
        rows.append([uid, f"audio/{uid}.wav", spk, f"{n / 16000:.4f}", "train", lab, ""])
    with open(tmp_path / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["utterance_id", "path", "speaker", "duration", "split", "labels_path", "text"])
        w.writerows(sorted(rows))
    return tmp_path / "manifest.csv"


def test_short_utterances_are_zero_padded_and_missing_labels_give_none(tmp_path):
    manifest = _manual_corpus(tmp_path / "a", [10 * HOP, 12 * HOP, 11 * HOP])
    utts = load_utterances(manifest, "train")
    batch = sample_batch(utts, seed=0, step=0, batch_size=8, crop_frames=20, hop_length=HOP)
    for b in range(8):
        u = next(x for x in utts if x.utterance_id == batch.utterance_ids[b])
        n = len(u.audio)
        assert torch.all(batch.source[b, n:] == 0) and torch.all(batch.source[b, :n] != 0)
        assert torch.all(batch.labels[b, n // HOP:] == 0) and torch.all(batch.labels[b, :n // HOP] > 0)
    # k1 has a single utterance: its reference is that utterance itself
    assert all(r == s for s, r, spk in zip(batch.utterance_ids, batch.reference_ids, batch.speakers)
               if spk == "k1")
    unlabelled = load_utterances(_manual_corpus(tmp_path / "b", [30 * HOP] * 4, with_labels=False))
    assert sample_batch(unlabelled, 0, 0, 2, 10, HOP).labels is None
    with pytest.raises(ValueError):
        sample_batch([], 0, 0, 2, 10, HOP)


def test_sources_carry_real_left_context_and_say_where_their_audio_ends(tiny_corpus):
    out, _ = tiny_corpus
    utts = load_utterances(out / "manifest.csv", "train")
    by_id = {u.utterance_id: u for u in utts}
    context, crop = 18, 20
    for step in range(6):
        batch = sample_batch(utts, seed=0, step=step, batch_size=4, crop_frames=crop, hop_length=HOP,
                             context_frames=context)
        assert batch.context_frames == context
        assert batch.source.shape == (4, (context + crop) * HOP) and batch.reference.shape == (4, crop * HOP)
        assert batch.labels.shape == (4, context + crop)
        for b in range(4):
            audio = by_id[batch.utterance_ids[b]].audio
            window = batch.source[b]
            # the whole window, context included, is a contiguous piece of the utterance
            starts = [s for s in range(0, audio.numel() - HOP + 1, HOP) if torch.equal(audio[s : s + HOP], window[:HOP])]
            assert starts, "context is not the utterance's own audio"
            real = min(context + crop, (audio.numel() - starts[0]) // HOP)
            assert int(batch.lengths[b]) == real
    first = sample_batch(utts, seed=0, step=0, batch_size=4, crop_frames=crop, hop_length=HOP, context_frames=context)
    other = sample_batch(utts, seed=0, step=0, batch_size=4, crop_frames=crop, hop_length=HOP,
                         context_frames=context, stream="kmeans0")
    assert not torch.equal(other.source, first.source)  # another stream, other batches
