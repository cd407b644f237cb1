"""Frame labels for any corpus: the corpus's own files, or k-means on MFCCs (HuBERT's first
iteration), deterministic, and read by training only through frame_labels.npz."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from streamvc_rvq.data.content_labels import (
    LabelError,
    MFCCFeatures,
    load_frame_labels,
    make_frame_labels,
    save_frame_labels,
)
from streamvc_rvq.data.dataset import load_utterances, read_manifest
from streamvc_rvq.data.prepare import prepare_corpus

HOP = 320


@pytest.fixture(scope="module")
def unlabelled_manifest(tiny_corpus, tmp_path_factory):
    """The tiny built-in corpus's audio written as a folder corpus with no label files."""
    corpus, _ = tiny_corpus
    root = tmp_path_factory.mktemp("folder_src")
    for row in read_manifest(corpus / "manifest.csv"):
        dst = root / row["speaker"] / (row["utterance_id"] + ".wav")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(corpus / row["path"], dst)
    cfg = {"name": "tiny_folder", "type": "folder", "seed": 7, "held_out_speakers": 1, "validation_fraction": 0.2,
           "min_files": 8, "min_speakers": 4, "folder": {"root": str(root)}}
    out = tmp_path_factory.mktemp("tiny_folder")
    prepare_corpus(cfg, out, workers=1, progress=False)
    return out / "manifest.csv"


def test_mfcc_frames_match_model_frames_and_see_no_later_window():
    extract = MFCCFeatures(16000, HOP)
    x = torch.randn(16000)
    feats = extract(x)
    assert feats.shape == (16000 // HOP, 39)
    y = x.clone()
    y[10 * HOP + 400:] = 0  # frame 10's window is [10 * hop, 10 * hop + 400)
    # deltas reach two frames either side, so frames up to 6 are untouched by the change
    assert torch.allclose(extract(y)[:7, :13], feats[:7, :13], atol=1e-4)
    assert not torch.allclose(extract(y)[12:, :13], feats[12:, :13])


def test_auto_uses_the_corpus_files_when_every_utterance_has_them(tiny_corpus):
    corpus, _ = tiny_corpus
    labels, info = make_frame_labels(corpus / "manifest.csv", "auto", progress=False)
    assert info["method"] == "files"
    for u in load_utterances(corpus / "manifest.csv"):
        assert np.array_equal(labels[u.utterance_id], u.labels.numpy())


def test_kmeans_labels_for_an_unlabelled_corpus_are_seeded_and_cluster_the_mfccs(unlabelled_manifest, tmp_path):
    with pytest.raises(LabelError, match="corpus.labels is files but .* have no label file"):
        make_frame_labels(unlabelled_manifest, "files", progress=False)
    a, info = make_frame_labels(unlabelled_manifest, "auto", num_clusters=20, seed=3, progress=False)
    b, _ = make_frame_labels(unlabelled_manifest, "mfcc_kmeans", num_clusters=20, seed=3, progress=False)
    c, _ = make_frame_labels(unlabelled_manifest, "mfcc_kmeans", num_clusters=20, seed=4, progress=False)
    assert info["method"] == "mfcc_kmeans" and info["num_classes"] == 20
    assert all(np.array_equal(a[k], b[k]) for k in a)  # same seed, same labels
    assert any(not np.array_equal(a[k], c[k]) for k in a)  # the seed acts
    utts = load_utterances(unlabelled_manifest)
    extract = MFCCFeatures(16000, HOP)
    feats = torch.cat([extract(u.audio) for u in utts])
    labels = torch.from_numpy(np.concatenate([a[u.utterance_id] for u in utts]).astype(np.int64))
    for u in utts:
        assert a[u.utterance_id].shape == (u.audio.numel() // HOP,)
    assert labels.unique().numel() >= 15  # clusters in use, not one class
    z = (feats - feats.mean(0)) / feats.std(0)
    within = sum(((z[labels == k] - z[labels == k].mean(0)) ** 2).sum() for k in labels.unique().tolist())
    assert within / ((z - z.mean(0)) ** 2).sum() < 0.75  # 20 clusters explain over a quarter of 39-D MFCC variance
    shuffled = labels[torch.randperm(labels.numel())]
    within_random = sum(((z[shuffled == k] - z[shuffled == k].mean(0)) ** 2).sum() for k in shuffled.unique().tolist())
    assert within_random / ((z - z.mean(0)) ** 2).sum() > 0.9  # ... which random labels do not


def test_frame_labels_file_round_trip_and_clear_errors(unlabelled_manifest, tmp_path):
    labels, info = make_frame_labels(unlabelled_manifest, "mfcc_kmeans", num_clusters=8, progress=False)
    path = tmp_path / "frame_labels.npz"
    save_frame_labels(path, labels, info)
    back, info_back = load_frame_labels(path)
    assert info_back == info and back.keys() == labels.keys()
    utts = load_utterances(unlabelled_manifest, "train", labels=path)
    assert all(np.array_equal(u.labels.numpy(), labels[u.utterance_id]) for u in utts)
    assert all(u.labels is None for u in load_utterances(unlabelled_manifest, "train", labels=None))
    partial = tmp_path / "partial.npz"
    save_frame_labels(partial, dict(list(labels.items())[:2]), info)
    with pytest.raises(LabelError, match="has no labels for utterance .* rebuild it"):
        load_utterances(unlabelled_manifest, labels=partial)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(LabelError, match="cannot read frame labels"):
        load_frame_labels(text)
