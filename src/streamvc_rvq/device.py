"""Device choice: ``auto`` prefers Apple's ``mps``, then ``cuda``, then the CPU."""

from __future__ import annotations

import os
from typing import Callable

import torch


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def select_device(
    requested: str = "auto",
    *,
    mps_available: Callable[[], bool] = _mps_available,
    cuda_available: Callable[[], bool] = torch.cuda.is_available,
) -> torch.device:
    """Resolve ``requested`` (auto, cpu, mps, cuda, cuda:N) to a device that exists here.

    Asking for a device this machine lacks is an error rather than a silent CPU run,
    because a protocol meant for a GPU would otherwise take days without saying why.
    """
    if requested == "auto":
        if mps_available():
            return torch.device("mps")
        if cuda_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if requested == "mps" and not mps_available():
        raise RuntimeError("device 'mps' was requested but torch.backends.mps.is_available() is False")
    if requested.startswith("cuda") and not cuda_available():
        raise RuntimeError(f"device {requested!r} was requested but torch.cuda.is_available() is False")
    if requested not in ("cpu", "mps") and not requested.startswith("cuda"):
        raise ValueError(f"unknown device {requested!r}; use auto, cpu, mps, cuda or cuda:N")
    return torch.device(requested)


def use_deterministic_algorithms(enabled: bool) -> None:
    """Bit-reproducible GPU training (a resumed run equal to a straight one), at some speed.

    cuDNN's autotuned and atomic-add kernels sum in a varying order; cuBLAS needs a fixed
    workspace (read when its first handle is made, so this runs before any CUDA work).
    Ops without a deterministic kernel warn rather than stop the run."""
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
