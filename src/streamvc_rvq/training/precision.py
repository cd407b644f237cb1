"""Mixed precision (``train.precision: mixed``): autocast where the device is fast in a
16-bit type, float32 where precision decides what is measured.

bfloat16 on CUDA and CPU (float32's range: no loss scaling), float16 on MPS (Apple GPUs have
no fast bfloat16), whose small range needs a gradient scaler. Only the model's forward pass
runs under autocast, and in it the content, speaker and pitch encoders: the quantizer
(nearest-code search, codebook updates, statistics, see ``Decoder.rvq_input``), the decoder
(``Decoder.synthesize``: in bfloat16 its backward shrank and turned the gradients), the
losses and the optimiser stay in float32.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "mixed")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast type of ``precision`` on ``device``; None for float32 throughout."""
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    return torch.float16 if device.type == "mps" else torch.bfloat16


class Precision:
    """The autocast context and gradient scaler of one training run."""

    def __init__(self, precision: str, device: torch.device):
        self.device = device
        self.dtype = autocast_dtype(precision, device)
        # float16 overflows where float32 does not: scale the loss, skip steps with inf grads
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @property
    def scaling(self) -> bool:
        return self.scaler.is_enabled()
