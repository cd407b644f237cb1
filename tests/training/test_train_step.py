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
