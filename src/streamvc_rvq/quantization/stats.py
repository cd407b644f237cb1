"""Codebook-usage statistics: the numbers that say whether an RVQ stage has collapsed.

All functions take a histogram of code counts (``counts[k]`` = how often code ``k`` was
chosen), so per-batch statistics and whole-validation-set statistics are the same maths
applied to different sums. Counts are float32 so the functions run on MPS.
"""

from __future__ import annotations

import torch


def code_histogram(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts of each code id in ``codes`` (any shape), as float32 of length ``codebook_size``."""
    flat = codes.reshape(-1).long()
    return torch.bincount(flat, minlength=codebook_size).to(torch.float32)


def perplexity(counts: torch.Tensor) -> float:
    """exp(-sum p log p) of the code distribution: 1 when one code wins every search,
    ``K`` when all ``K`` codes are used equally."""
    total = counts.sum()
    if total <= 0:
        raise ValueError("perplexity of an empty histogram is undefined")
    p = counts / total
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()
    return float(torch.exp(entropy))


def usage(counts: torch.Tensor) -> float:
    """Fraction of the codebook used at least once (unique codes / codebook size)."""
    return float((counts > 0).sum()) / counts.numel()


def top_code_share(counts: torch.Tensor) -> float:
    """Share of all assignments taken by the single most frequent code (1.0 = monopoly)."""
    total = counts.sum()
    if total <= 0:
        raise ValueError("top-code share of an empty histogram is undefined")
    return float(counts.max() / total)


def dead_codes(counts: torch.Tensor, threshold: float = 1.0) -> int:
    """Number of codes chosen fewer than ``threshold`` times."""
    return int((counts < threshold).sum())


def stage_stats(counts: torch.Tensor, dead: int, redrawn: float) -> dict:
    """One stage's per-batch statistics from its histogram (NaN perplexity and share when no
    frame counted); ``dead`` and ``redrawn`` come from the stage's own dead-code rule."""
    empty = float(counts.sum()) == 0
    return {
        "perplexity": float("nan") if empty else perplexity(counts),
        "usage": usage(counts),
        "top_code_share": float("nan") if empty else top_code_share(counts),
        "dead_codes": dead,
        "redrawn": redrawn,
    }
