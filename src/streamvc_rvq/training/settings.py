"""The ``train`` section as typed settings, read once (as :class:`RVQSettings` is on the model
side): the trainer reads fields, not string keys. :meth:`TrainSettings.of` fills a key a
config lacks from the schema's default (a config written before the key existed) and names an
unknown key in one line. Its fields are the schema's ``train`` keys (a test checks)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Mapping

from streamvc_rvq.config import schema_default


@dataclass(frozen=True)
class TrainSettings:
    seed: int
    device: str
    steps: tuple[int, ...]
    batch_size: int
    crop_seconds: float
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    warmup_steps: int
    scale: float
    grad_clip: float
    precision: str
    deterministic: bool
    log_every: int
    num_threads: int
    allow_untrained_content_encoder: bool
    speaker_consistency_rows: int
    reconstruction_pitch: str
    discriminator: Mapping[str, int]
    loss_weights: Mapping[str, float]

    @classmethod
    def of(cls, train_cfg: Mapping) -> TrainSettings:
        """From a ``train`` section; keys it lacks take the schema's defaults."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(train_cfg) - set(names))
        if unknown:
            raise ValueError(f"unknown train setting(s) {unknown}: the schema's are {names}")
        defaults = schema_default("train") if any(n not in train_cfg for n in names) else {}
        values = {n: train_cfg[n] if n in train_cfg else defaults[n] for n in names}
        values.update(steps=tuple(int(s) for s in values["steps"]), betas=tuple(values["betas"]),
                      loss_weights=MappingProxyType(dict(values["loss_weights"])),
                      discriminator=MappingProxyType({**schema_default("train.discriminator"), **values["discriminator"]}))
        return cls(**values)
