"""Which residual quantizer a ``model.rvq`` section builds.

``implementation: native`` is :class:`~streamvc_rvq.quantization.rvq.ResidualVectorQuantizer`;
``vector_quantize_pytorch`` is the same interface around that library's ``ResidualVQ``
(:mod:`streamvc_rvq.quantization.library_rvq`), an independent cross-check of the native
quantizer's findings; ``fsq`` is residual finite scalar quantization
(:mod:`streamvc_rvq.quantization.fsq`), a quantizer without a codebook. The library is optional: :func:`library_available` says whether it can
be imported, and asking for it when it cannot gives one line naming the package to install.
"""

from __future__ import annotations

import importlib

from torch import nn

from streamvc_rvq.quantization.rvq import ResidualVectorQuantizer

IMPLEMENTATIONS = ("native", "vector_quantize_pytorch", "fsq")
LIBRARY = "vector_quantize_pytorch"
LIBRARY_REQUIREMENT = "vector-quantize-pytorch==1.32.0"


def library_available() -> bool:
    """Whether ``vector_quantize_pytorch`` imports here (an import error counts as absent)."""
    try:
        importlib.import_module(LIBRARY)
    except ImportError:
        return False
    return True


def unavailable_reason(rvq_cfg: dict) -> str | None:
    """Why this machine cannot build the quantizer of ``rvq_cfg`` (None when it can)."""
    if rvq_cfg.get("implementation", "native") == LIBRARY and not library_available():
        return f"{LIBRARY} is not installed (pip install '{LIBRARY_REQUIREMENT}')"
    return None


def build_rvq(rvq_cfg: dict) -> nn.Module:
    """The quantizer of a validated ``model.rvq`` section."""
    implementation = rvq_cfg.get("implementation", "native")
    if implementation == "native":
        return ResidualVectorQuantizer(**rvq_cfg)
    if implementation == "fsq":
        from streamvc_rvq.quantization.fsq import ResidualFSQ

        return ResidualFSQ(**rvq_cfg)
    if implementation == LIBRARY:
        reason = unavailable_reason(rvq_cfg)
        if reason:
            raise ImportError(f"model.rvq.implementation {LIBRARY}: {reason}")
        from streamvc_rvq.quantization.library_rvq import LibraryResidualVQ

        return LibraryResidualVQ(**rvq_cfg)
    raise ValueError(f"model.rvq.implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
