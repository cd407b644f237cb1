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
    off = {"stft": 0.0, "l1": 0.0, "rvq": 0.0, "content_ce": 0.0}
    scalars, grad = _speaker_grad(micro_manifest, {**off, "speaker": 1.0})
    assert scalars["train/loss_speaker"] > 0 and grad > 0
    scalars, grad = _speaker_grad(micro_manifest, {**off, "rvq": 1.0, "speaker": 0.0})
    assert "train/loss_speaker" not in scalars and grad == 0
