"""One training step's scalars: Python floats for the logger, converted in one place."""

from __future__ import annotations

import torch

from micro import micro_config
from streamvc_rvq.data.dataset import load_utterances
from streamvc_rvq.training.trainer import Trainer, build_state


def test_train_step_returns_python_floats_for_every_tag(micro_manifest):
    cfg = micro_config("phase2_gan")
    state = build_state(cfg, torch.device("cpu"))
    trainer = Trainer(cfg, state, torch.device("cpu"))
    state.model.train()
    utterances = load_utterances(micro_manifest, "train", labels="manifest")
    scalars = trainer.train_step(trainer.batch(utterances, 0), 0)
    assert {"train/loss_total", "train/loss_feature_matching", "train/loss_discriminator", "train/grad_norm",
            "train/pre_rvq_std", "train/rvq_perplexity_q0", "train/rvq_redrawn_q0"} <= set(scalars)
    assert all(type(value) is float for value in scalars.values()), {k: type(v) for k, v in scalars.items()}


def _speaker_grad(micro_manifest, weights: dict) -> tuple[dict, float]:
    cfg = micro_config("phase1", train={"loss_weights": weights})
    torch.manual_seed(0)
    state = build_state(cfg, torch.device("cpu"))
    trainer = Trainer(cfg, state, torch.device("cpu"))
    state.model.train()
    utterances = load_utterances(micro_manifest, "train", labels="manifest")
    batch = trainer.batch(utterances, 0)
    assert len(set(batch.speakers)) > 1  # the loss has speakers to tell apart
    scalars = trainer.train_step(batch, 0)  # the step's gradients stay on the parameters until the next
    grad = sum(float(p.grad.abs().sum()) for p in state.model.speaker_encoder.parameters() if p.grad is not None)
    return scalars, grad


def test_speaker_loss_is_logged_and_alone_moves_the_speaker_encoder(micro_manifest):
    """The lever acts: with every other loss off, loss_speaker alone gives the speaker encoder a
    gradient; with its weight 0 too, nothing does (and the term is not logged)."""
    off = {"stft": 0.0, "l1": 0.0, "rvq": 0.0, "content_ce": 0.0, "speaker_consistency": 0.0}
    scalars, grad = _speaker_grad(micro_manifest, {**off, "speaker": 1.0})
    assert scalars["train/loss_speaker"] > 0 and grad > 0
    scalars, grad = _speaker_grad(micro_manifest, {**off, "rvq": 1.0, "speaker": 0.0})
    assert "train/loss_speaker" not in scalars and grad == 0


def test_speaker_consistency_teaches_the_decoder_and_never_the_quantizer(micro_manifest):
    """The lever acts where it claims: alone, loss_speaker_consistency moves FiLM (the decoder's
    use of the target voice) and leaves the pre-RVQ encoder and the codebooks untouched (the
    codes are detached: the codebook question stays the reconstruction's)."""
    off = {"stft": 0.0, "l1": 0.0, "rvq": 0.0, "content_ce": 0.0, "speaker": 0.0}
    cfg = micro_config("phase1", train={"loss_weights": {**off, "speaker_consistency": 1.0}})
    torch.manual_seed(0)
    state = build_state(cfg, torch.device("cpu"))
    trainer = Trainer(cfg, state, torch.device("cpu"))
    state.model.train()
    batch = trainer.batch(load_utterances(micro_manifest, "train", labels="manifest"), 0)
    scalars = trainer.train_step(batch, 0)
    assert scalars["train/loss_speaker_consistency"] > 0

    def grad(module) -> float:
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    decoder = state.model.decoder
    assert grad(decoder.films) > 0 and grad(decoder.blocks) > 0
    assert grad(decoder.pre_rvq) == 0 and grad(decoder.rvq) == 0 and grad(state.model.content_encoder) == 0
    assert all(p.requires_grad for p in state.model.speaker_encoder.parameters())  # held only for the judging pass


def test_speaker_consistency_is_on_in_every_arm_by_default():
    """On in the control too: it never reaches the quantizer, so phase1 and baseline still differ by the RVQ fix alone."""
    for arm in ("phase1", "baseline"):
        assert micro_config(arm)["train"]["loss_weights"]["speaker_consistency"] == 1.0
