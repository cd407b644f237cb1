"""Residual finite scalar quantization (FSQ, Mentzer et al. 2023, arXiv 2309.15505) behind the RVQ's interface.

FSQ has no codebook to collapse: a linear ``project_in`` takes each frame's ``D`` channels to
``len(levels)`` numbers, each is bounded (``tanh``) and rounded to one of ``levels[j]``
values, and the code is the grid point, an index ``< prod(levels)`` (mixed radix). Rounding
passes the gradient straight through. The residual form (as vector-quantize-pytorch's
``ResidualFSQ``) quantizes stage ``i``'s residual at the scale ``(levels - 1) ** -i`` of the
grid, so later stages refine inside the cell the earlier ones chose; ``project_out`` maps the
sum back to ``D`` channels.

What still means something: per-stage code usage, perplexity and top-code share over the
``prod(levels)`` grid points (``codebook_size`` must equal that product). What does not: a
codebook loss (there is none: ``loss`` is 0), dead-code redraws, k-means initialisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from streamvc_rvq.quantization import stats as code_stats
from streamvc_rvq.quantization.rvq import QuantizerStack, RVQOutput, RVQSettings, checked_num_active

BOUND_EPS = 1e-3  # keeps tanh's bound just inside the outermost levels, as the paper's code does


def bound(z: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """``z: ... x J`` squashed so that rounding gives ``levels[j]`` values per channel
    (even levels get the half-step offset that centres them)."""
    half = (levels - 1) * (1 + BOUND_EPS) / 2
    offset = torch.where(levels % 2 == 0, 0.5, 0.0)
    shift = torch.atanh(offset / half)
    return torch.tanh(z + shift) * half - offset


def quantize(z: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Bounded, rounded (straight-through) and scaled to ``[-1, 1]``: the grid value of ``z``."""
    bounded = bound(z, levels)
    rounded = bounded + (torch.round(bounded) - bounded).detach()
    return rounded / (levels // 2)


def codes_of(q: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Grid values ``... x J`` (from :func:`quantize`) -> integer codes ``...`` (mixed radix)."""
    digits = torch.round(q * (levels // 2) + levels // 2).long()
    basis = torch.cumprod(torch.cat((levels.new_ones(1), levels[:-1])), dim=0).long()
    return (digits * basis).sum(-1)


def grid_of(codes: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Integer codes ``...`` -> grid values ``... x J``: the inverse of :func:`codes_of`."""
    basis = torch.cumprod(torch.cat((levels.new_ones(1), levels[:-1])), dim=0).long()
    digits = (codes.unsqueeze(-1) // basis) % levels.long()
    return (digits - levels // 2) / (levels // 2)


class ResidualFSQ(QuantizerStack):
    """``num_quantizers`` FSQ stages on successive residuals, with the native RVQ's interface."""

    def __init__(self, implementation: str = "fsq", **settings):
        settings = RVQSettings(implementation=implementation, **settings)
        levels = [int(v) for v in settings.fsq_levels]
        if len(levels) < 1 or min(levels) < 2:
            raise ValueError(f"model.rvq.fsq_levels needs one or more levels >= 2, got {levels}")
        if math.prod(levels) != settings.codebook_size:
            raise ValueError(f"model.rvq.codebook_size must be the product of fsq_levels {levels} = "
                             f"{math.prod(levels)} (the grid's points are the codes), got {settings.codebook_size}")
        for key, off in (("kmeans_init", False), ("dead_code_threshold", 0.0), ("projection_dim", 0),
                         ("codebook_update", "gradient"), ("straight_through", "identity")):
            if getattr(settings, key) != off:
                raise ValueError(f"model.rvq.{key} does not apply to FSQ (no codebook): leave it at {off!r}")
        super().__init__(settings)
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        self.register_buffer("scales", (self.levels - 1).unsqueeze(0) ** -torch.arange(
            settings.num_quantizers, dtype=torch.float32).unsqueeze(1), persistent=False)  # stages x J
        self.project_in = nn.Linear(settings.codebook_dim, len(levels))
        self.project_out = nn.Linear(len(levels), settings.codebook_dim)

    def extra_repr(self) -> str:
        return f"levels={[int(v) for v in self.levels]}, stages={self.num_quantizers}"

    # -- the stage hooks the trainer and the frame statistics use --------------------------
    def pending_kmeans(self, stage: int) -> bool:
        return False

    @torch.no_grad()
    def input_space_codebook(self, stage: int = 0) -> torch.Tensor:
        """``prod(levels) x D``: every grid point of stage ``stage`` as the RVQ input sees it."""
        codes = torch.arange(self.codebook_size, device=self.levels.device)
        return self.project_out(grid_of(codes, self.levels) * self.scales[stage])

    @torch.no_grad()
    def stage_inputs(self, x: torch.Tensor, stage: int, valid: torch.Tensor | None = None) -> torch.Tensor:
        residual = self.project_in(x.transpose(1, 2)).reshape(-1, len(self.levels))
        for index in range(stage):
            residual = residual - quantize(residual / self.scales[index], self.levels) * self.scales[index]
        if valid is not None:
            residual = residual[valid.reshape(-1).to(residual.device)]
        return residual / self.scales[stage]

    # -- the native interface --------------------------------------------------------------
    def forward(self, x: torch.Tensor, num_active: int | None = None, valid: torch.Tensor | None = None) -> RVQOutput:
        n_q = checked_num_active(num_active, self.num_quantizers)
        batch = x.shape[0]
        residual = self.project_in(x.transpose(1, 2))  # B x T x J
        mask = None if valid is None else valid.to(x.device)
        total = torch.zeros_like(residual)
        codes, stage_stats = [], []
        for stage in range(n_q):
            scale = self.scales[stage]
            q = quantize(residual / scale, self.levels)
            indices = codes_of(q.detach(), self.levels)
            total = total + q * scale
            residual = residual - (q * scale).detach()
            codes.append(indices)
            counted = indices.reshape(-1) if mask is None else indices[mask]
            counts = code_stats.code_histogram(counted, self.codebook_size)
            stage_stats.append(code_stats.stage_stats(counts, code_stats.dead_code_count(counts, 1.0), 0.0))
        zero = x.new_zeros(())
        return RVQOutput(
            quantized=self.project_out(total).transpose(1, 2).contiguous(),
            codes=codes,
            codebook_losses=[zero] * n_q,
            commitment_losses=[zero] * n_q,
            loss=zero,
            stats=stage_stats,
            latents=x,
        )

    @torch.no_grad()
    def decode(self, codes: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        if len(codes) > self.num_quantizers:
            raise ValueError(f"{len(codes)} code streams for {self.num_quantizers} stages")
        total = sum(grid_of(c, self.levels) * self.scales[i] for i, c in enumerate(codes))
        return self.project_out(total).transpose(1, 2).contiguous()
