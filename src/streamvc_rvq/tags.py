"""TensorBoard tag names: one home for the trainer that writes them and the code that reads
them back (curve facts, plots, the verdict's trend criterion)."""

from __future__ import annotations

import re

PREFIX = "train/"
LOSS_TOTAL = "train/loss_total"
LOSS_STFT = "train/loss_stft"
LOSS_L1 = "train/loss_l1"
PRE_RVQ_STD = "train/pre_rvq_std"
NUM_ACTIVE = "train/num_active_quantizers"
# per-stage curves whose trends the curve facts and plots read
STAGE_CURVE = re.compile(r"^train/rvq_(?P<kind>perplexity|usage)_q(?P<index>\d+)$")


def train(name: str) -> str:
    """``train/{name}``: every training scalar's tag."""
    return f"{PREFIX}{name}"


def stage(kind: str, index: int) -> str:
    """A quantizer stage's statistic: ``train/rvq_{kind}_q{index}``."""
    return train(f"rvq_{kind}_q{index}")
