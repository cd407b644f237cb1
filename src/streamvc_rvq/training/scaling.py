"""The scaled protocol: one knob, ``train.scale``, that shrinks the paper-size protocol
while keeping its training dynamics in protocol time (step / protocol length).

Cutting the steps alone (the quick preset before this rule) cut the summed learning rate
20-fold (0.025 against the paper-size 0.50): the codebook and the content encoder barely
moved, so a quick verdict said little about the 10k protocol. The rule, for a scale ``s``:

* every step count (``train.steps``, ``train.warmup_steps``, ``model.rvq.progressive_steps``)
  is multiplied by ``s``, so each phase of the protocol (warm-up, each checkpoint interval,
  each stage's time alone) keeps its share of the run;
* the peak learning rate is divided by ``s``, so the learning-rate integral of every phase
  (Adam's update per step is about the learning rate, so this is how far a weight can move)
  equals the paper-size one; AdamW's decoupled weight decay is lr x wd per step and follows;
* the EMA codebook decay ``g`` becomes ``g ** (1 / s)``, so the weight of the statistics of
  a given protocol time ago is the paper-size one (0.99 -> 0.818 at s = 1/20).

Left alone: Adam's betas (they average gradient noise over steps, a per-step matter), the
batch (20 times fewer steps see 20 times fewer crops, which no rule can restore: the
two-scale comparison measures what that costs) and dead-code thresholds (already per step).
"""

from __future__ import annotations

import copy
from typing import Sequence

from streamvc_rvq.training.schedule import lr_factor


def scaled_count(count: int, scale: float) -> int:
    """``count`` steps at ``scale``, rounded; a positive count stays at least 1."""
    if count <= 0:
        return count
    return max(1, int(round(count * scale)))


def scale_protocol(model: dict, train: dict) -> tuple[dict, dict]:
    """New ``model`` and ``train`` sections at ``train.scale`` (identity at 1). The sections
    hold paper-size values; the result is what the trainer runs."""
    scale = float(train.get("scale", 1.0))
    model, train = copy.deepcopy(model), copy.deepcopy(train)
    if scale == 1.0:
        return model, train
    train["steps"] = [scaled_count(s, scale) for s in train["steps"]]
    train["warmup_steps"] = scaled_count(train["warmup_steps"], scale)
    train["lr"] = train["lr"] / scale
    rvq = model["rvq"]
    rvq["progressive_steps"] = scaled_count(rvq["progressive_steps"], scale)
    rvq["ema_decay"] = rvq["ema_decay"] ** (1.0 / scale)
    return model, train


def lr_integral(lr: float, warmup_steps: int, total_steps: int, start: int, end: int) -> float:
    """Summed learning rate over steps ``[start, end)`` of a run of ``total_steps``."""
    return sum(lr * lr_factor(step, warmup_steps, total_steps) for step in range(start, end))


def phase_integrals(train: dict, boundaries: Sequence[int]) -> list[float]:
    """The learning-rate integral of each phase between consecutive ``boundaries`` (steps of
    this config) of the run ``train`` describes."""
    total = train["steps"][-1]
    return [lr_integral(train["lr"], train["warmup_steps"], total, a, b) for a, b in zip(boundaries, boundaries[1:])]
