"""The content encoder really trains, on any corpus: k-means labels reach it, its gradient is
not scaled away by the decoder's, and a config that would leave it frozen is refused."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

from micro import micro_config
from streamvc_rvq.config import ConfigError, deep_merge, load_config, resolve_experiment
from streamvc_rvq.data.content_labels import make_frame_labels, save_frame_labels
from streamvc_rvq.data.dataset import load_utterances, read_manifest
from streamvc_rvq.data.prepare import prepare_corpus
from streamvc_rvq.evaluation.evaluate import content_label_metrics
from streamvc_rvq.inference.conversion import load_trained_model
from streamvc_rvq.training.trainer import Trainer, TrainingError, build_state, clip_groups, train_to_step
from micro import CONFIG_FILES


def test_a_config_without_content_gradient_is_refused_unless_opted_in(tmp_path):
    config = load_config(*CONFIG_FILES)
    for change, reason in [
        ({"corpus": {"labels": "none"}}, "corpus.labels is none"),
        ({"model": {"content_encoder": {"num_labels": 0}}}, "model.content_encoder.num_labels is 0"),
        ({"train": {"loss_weights": {"content_ce": 0.0}}}, "train.loss_weights.content_ce is 0"),
    ]:
        with pytest.raises(ConfigError, match=f"content encoder would never be trained \\({reason}"):
            resolve_experiment(deep_merge(config, change), "phase1")
        opted = deep_merge(config, deep_merge(change, {"train": {"allow_untrained_content_encoder": True}}))
        resolve_experiment(opted, "phase1")
        unstopped = deep_merge(config, deep_merge(change, {"model": {"content_encoder": {"stop_gradient": False}}}))
        resolve_experiment(unstopped, "phase1")  # the decoder's gradient reaches it


def test_training_without_labels_is_refused_in_one_line(micro_manifest, tmp_path):
    cfg = micro_config()
    with pytest.raises(TrainingError, match="content encoder would never be trained: .* have no frame labels"):
        train_to_step(cfg, manifest=micro_manifest, step=1, output=tmp_path / "a.pt", device="cpu", labels=None)
    opted = deep_merge(cfg, {"train": {"allow_untrained_content_encoder": True}})
    train_to_step(opted, manifest=micro_manifest, step=1, output=tmp_path / "b.pt", device="cpu", labels=None)


def test_labels_beyond_the_head_are_refused(micro_manifest, tmp_path):
    cfg = deep_merge(micro_config(), {"model": {"content_encoder": {"num_labels": 4}}})
    with pytest.raises(TrainingError, match="frame labels go up to \\d+ but model.content_encoder.num_labels is 4"):
        train_to_step(cfg, manifest=micro_manifest, step=1, output=tmp_path / "a.pt", device="cpu")


def test_the_content_encoder_step_does_not_depend_on_the_decoder_loss(micro_manifest):
    """With stop_gradient its loss is its own: one global clip would shrink its step by the
    decoder's gradient norm (~40x on this model)."""
    cfg = micro_config()
    utts = load_utterances(micro_manifest, "train")
    after = []
    for weights in ({}, {"stft": 0.0, "l1": 0.0, "rvq": 0.0}):
        c = deep_merge(cfg, {"train": {"loss_weights": weights}})
        state = build_state(c, torch.device("cpu"))
        trainer = Trainer(c, state, torch.device("cpu"))
        trainer.train_step(trainer.batch(utts, 0), 0)
        after.append([p.detach().clone() for p in state.model.content_encoder.parameters()])
    for a, b in zip(*after):
        assert torch.allclose(a, b, atol=1e-7)
    groups = clip_groups(state.model)
    assert len(groups) == 2 and sum(len(g) for g in groups) == len(list(state.model.parameters()))


@pytest.mark.slow
def test_a_folder_corpus_without_labels_trains_its_content_encoder_above_chance(tmp_path):
    """k-means labels on eSpeak audio written as a folder corpus without label files: the
    content encoder's weights change and its validation label accuracy beats always guessing
    the most frequent label."""
    cfg = micro_config()
    builtin = deep_merge(cfg["corpus"], {"builtin": {"minutes": 3.0, "num_sentences": 60}})
    prepare_corpus(builtin, tmp_path / "builtin", progress=False)
    root = tmp_path / "speech"
    for row in read_manifest(tmp_path / "builtin/manifest.csv"):
        dst = root / row["speaker"] / (row["utterance_id"] + ".wav")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "builtin" / row["path"], dst)
    folder = deep_merge(cfg["corpus"], {"type": "folder", "name": "speech", "folder": {"root": str(root)}})
    prepare_corpus(folder, tmp_path / "speech_corpus", progress=False)
    manifest = tmp_path / "speech_corpus/manifest.csv"
    assert all(u.labels is None for u in load_utterances(manifest))  # no label files at all
    labels, info = make_frame_labels(manifest, "auto", num_clusters=20, seed=1234, progress=False)
    assert info["method"] == "mfcc_kmeans"
    save_frame_labels(tmp_path / "frame_labels.npz", labels, info)

    # a small content encoder, a constant-ish learning rate (the cosine ends far beyond step 260)
    train_cfg = deep_merge(cfg, {
        "model": {"content_encoder": {"channels": 8, "dim": 16}},
        "train": {"steps": [260, 100000], "warmup_steps": 5, "lr": 3e-3, "batch_size": 4, "crop_seconds": 0.64},
    })
    init = build_state(train_cfg, torch.device("cpu")).model.content_encoder.state_dict()
    ckpt = train_to_step(train_cfg, manifest=manifest, step=260, output=tmp_path / "step_260.pt", device="cpu",
                         labels=tmp_path / "frame_labels.npz")
    model, _, _ = load_trained_model(ckpt)
    trained = model.content_encoder.state_dict()
    changed = [k for k in init if not torch.equal(init[k], trained[k])]
    assert len(changed) == len(init)  # every content-encoder tensor moved
    valid = load_utterances(manifest, "valid", labels=tmp_path / "frame_labels.npz")
    result = content_label_metrics(model, valid, "cpu")
    assert result["num_frames"] > 500
    assert result["accuracy"] > 2 * result["chance"], result
