"""Codebook-usage statistics: the numbers that say whether an RVQ stage has collapsed.

All functions take a histogram of code counts (``counts[k]`` = how often code ``k`` was
chosen), so per-batch statistics and whole-validation-set statistics are the same maths
applied to different sums. Counts are float32 so the functions run on MPS.

The named functions return Python numbers (for whole-set summaries); :func:`stage_stats`,
which the quantizers call at every training step, returns 0-d tensors from the same maths on
the histogram's device, so the forward pass never waits for the device: the caller converts
when it logs.
"""

from __future__ import annotations

import torch


def code_histogram(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts of each code id in ``codes`` (any shape), as float32 of length ``codebook_size``."""
    flat = codes.reshape(-1).long()
    return torch.bincount(flat, minlength=codebook_size).to(torch.float32)


def _perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(-sum p log p), a 0-d tensor; NaN for an empty histogram (p = 0 / 0)."""
    p = counts / counts.sum()
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()
    return torch.exp(entropy)


def _top_code_share(counts: torch.Tensor) -> torch.Tensor:
    """``max_k counts[k] / sum counts``, a 0-d tensor; NaN for an empty histogram."""
    return counts.max() / counts.sum()


def _check_not_empty(counts: torch.Tensor, what: str) -> None:
    if counts.sum() <= 0:
        raise ValueError(f"{what} of an empty histogram is undefined")


def perplexity(counts: torch.Tensor) -> float:
    """exp(-sum p log p) of the code distribution: 1 when one code wins every search,
    ``K`` when all ``K`` codes are used equally."""
    _check_not_empty(counts, "perplexity")
    return float(_perplexity(counts))


def usage(counts: torch.Tensor) -> float:
    """Fraction of the codebook used at least once (unique codes / codebook size)."""
    return float((counts > 0).sum()) / counts.numel()


def codes_used(counts: torch.Tensor) -> int:
    """How many codes were picked at least once."""
    return int((counts > 0).sum())


def top_code_share(counts: torch.Tensor) -> float:
    """Share of all assignments taken by the single most frequent code (1.0 = monopoly)."""
    _check_not_empty(counts, "top-code share")
    return float(_top_code_share(counts))


def dead_code_count(counts: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """Codes with ``counts[k] < threshold``, a 0-d int64 tensor on the counts' device."""
    return (counts < threshold).sum()


def dead_codes(counts: torch.Tensor, threshold: float = 1.0) -> int:
    """Number of codes chosen fewer than ``threshold`` times."""
    return int(dead_code_count(counts, threshold))


def stage_stats(counts: torch.Tensor, dead: torch.Tensor, redrawn: float) -> dict[str, torch.Tensor]:
    """One stage's per-batch statistics from its histogram, as 0-d tensors on its device
    (float32; ``dead_codes`` int64): the maths of the functions above without a host sync.
    Perplexity and share are NaN when no frame counted; ``dead`` (a count tensor) and the
    ``redrawn`` share come from the stage's own dead-code rule."""
    return {
        "perplexity": _perplexity(counts),
        "usage": (counts > 0).sum() / counts.numel(),
        "top_code_share": _top_code_share(counts),
        "dead_codes": dead,
        "redrawn": counts.new_full((), redrawn),
    }
