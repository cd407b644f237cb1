"""vector-quantize-pytorch's ``ResidualVQ`` behind the native RVQ's interface: the cross-check arm.

If our quantizer's findings (collapse or not, perplexity, dead codes) come from a bug in
:mod:`streamvc_rvq.quantization.rvq`, an independent implementation with equivalent settings
disagrees. The settings map as follows (``model.rvq`` -> library):

* ``distance: cosine`` -> ``use_cosine_sim``; ``commitment_cost`` -> ``commitment_weight``;
  ``ema_decay`` -> ``decay``; ``laplace_eps`` -> ``eps``; ``kmeans_init`` -> ``kmeans_init``
  with the native number of Lloyd iterations; ``straight_through: rotation_stage`` ->
  ``rotation_trick`` (the library rotates per stage; the whole-stack ``rotation`` is refused;
  off otherwise: the straight-through estimator, as in the native quantizer).
* ``dead_code_threshold`` is relative (x the expected assignments per code per step); the
  library's ``threshold_ema_dead_code`` is absolute, so it is set before every training
  forward from that batch's valid frames, and a redrawn code restarts at the expected count,
  as in the native quantizer.
* The trainer's multi-batch k-means initialisation goes through the library's own
  ``init_embed_``; its cluster sizes are then put in per-step units like the native ones.
* Only ``codebook_update: ema`` and no ``projection_dim``: the library trains a learnable
  codebook and projects differently (one shared projection), so those would not be the same
  experiment. Asking for them raises ``ValueError``.

Progressive RVQ runs the first ``num_active`` of ``ResidualVQ.layers`` with ``ResidualVQ``'s own
residual step (``residual - sg(quantized)``); with every stage active this is
``ResidualVQ.forward`` (a test checks it). Frames outside ``valid`` pass through unquantized
(the library's ``return_zeros_for_masked_padding=False``) and get the code of their nearest
codebook row, so code streams are complete; only valid frames update the codebooks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from vector_quantize_pytorch import ResidualVQ

from streamvc_rvq.quantization import stats as code_stats
from streamvc_rvq.quantization.rvq import (
    KMEANS_ITERS,
    QuantizerStack,
    RVQOutput,
    RVQSettings,
    checked_num_active,
    nearest_codes,
)


class LibraryResidualVQ(QuantizerStack):
    """``ResidualVQ`` with the native RVQ's constructor (the keywords of :class:`RVQSettings`;
    ``codebook_update`` defaults to ``ema``, the only update it supports), ``forward``,
    ``decode`` and stage hooks."""

    def __init__(self, codebook_update: str = "ema", implementation: str = "vector_quantize_pytorch", **settings):
        settings = RVQSettings(codebook_update=codebook_update, implementation=implementation, **settings)
        if settings.codebook_update != "ema":
            raise ValueError(
                f"the vector_quantize_pytorch cross-check needs codebook_update: ema, got {settings.codebook_update!r}"
            )
        if settings.straight_through == "rotation":
            raise ValueError("the vector_quantize_pytorch cross-check rotates per stage: set straight_through: "
                             "rotation_stage (the whole-stack rotation is the native quantizer's alone)")
        if settings.projection_dim:
            raise ValueError("the vector_quantize_pytorch cross-check has no per-stage projection: set projection_dim: 0")
        super().__init__(settings)
        self.dead_code_threshold = settings.dead_code_threshold
        self.rvq = ResidualVQ(
            dim=settings.codebook_dim,
            num_quantizers=settings.num_quantizers,
            codebook_size=settings.codebook_size,
            use_cosine_sim=settings.cosine,
            decay=settings.ema_decay,
            eps=settings.laplace_eps,
            kmeans_init=settings.kmeans_init,
            kmeans_iters=KMEANS_ITERS,
            # relative, rescaled per batch in forward; any positive value turns replacement on
            threshold_ema_dead_code=settings.dead_code_threshold,
            commitment_weight=settings.commitment_cost,
            rotation_trick=settings.straight_through == "rotation_stage",
            return_zeros_for_masked_padding=False,
        )
        self.layers = self.rvq.layers

    def extra_repr(self) -> str:
        return f"vector_quantize_pytorch.ResidualVQ, dead_code_threshold={self.dead_code_threshold} (relative)"

    # -- the stage hooks the trainer and the frame statistics use --------------------------
    def pending_kmeans(self, stage: int) -> bool:
        return not bool(self.layers[stage]._codebook.initted)

    @torch.no_grad()
    def init_stage_(self, stage: int, samples: torch.Tensor, frames_per_step: int) -> None:
        codebook = self.layers[stage]._codebook
        codebook.init_embed_(samples.unsqueeze(0))
        scale = frames_per_step / samples.shape[0]
        codebook.cluster_size.mul_(scale)
        codebook.embed_avg.mul_(scale)

    @torch.no_grad()
    def input_space_codebook(self, stage: int = 0) -> torch.Tensor:
        return self.layers[stage].codebook

    def _set_dead_code_threshold(self, num_valid: int) -> None:
        """The relative threshold in the library's absolute units for a batch of ``num_valid`` frames."""
        if self.dead_code_threshold <= 0 or num_valid == 0:
            return
        expected = num_valid / self.codebook_size
        for layer in self.layers:
            layer._codebook.threshold_ema_dead_code = self.dead_code_threshold * expected
            layer._codebook.reset_cluster_size = expected

    def _nearest(self, stage: int, residual: torch.Tensor) -> torch.Tensor:
        """Codes of ``residual: ... x D`` against a stage's codebook, as the library picks them."""
        embed = self.layers[stage].codebook
        flat = residual.reshape(-1, residual.shape[-1])
        if self.cosine:
            flat = F.normalize(flat, dim=-1)
        return nearest_codes(flat, embed, self.cosine).view(residual.shape[:-1])

    # -- the native interface --------------------------------------------------------------
    def forward(self, x: torch.Tensor, num_active: int | None = None, valid: torch.Tensor | None = None) -> RVQOutput:
        n_q = checked_num_active(num_active, self.num_quantizers)
        latents = x.transpose(1, 2)  # B x T x D, the library's channel-last layout
        mask = None if valid is None else valid.to(x.device)
        num_valid = latents.shape[0] * latents.shape[1] if mask is None else int(mask.sum())
        if self.training:
            self._set_dead_code_threshold(num_valid)

        residual, quantized = latents, torch.zeros_like(latents)
        codes, commitment_losses, stage_stats = [], [], []
        for stage, layer in enumerate(self.layers[:n_q]):
            q, indices, loss = layer(residual, mask=mask)
            if mask is not None:  # masked frames come back with index -1 and unquantized
                indices = torch.where(mask, indices, self._nearest(stage, residual.detach()))
            residual = residual - q.detach()  # ResidualVQ's step (quant_grad_frac 0)
            quantized = quantized + q
            codes.append(indices)
            commitment_losses.append(loss.reshape(()) if loss.numel() == 1 else loss.mean())
            stage_stats.append(self._stats(stage, indices if mask is None else indices[mask], num_valid))

        zeros = [latents.new_zeros(()) for _ in codes]
        return RVQOutput(
            quantized=quantized.transpose(1, 2).contiguous(),
            codes=codes,
            codebook_losses=zeros,
            commitment_losses=commitment_losses,
            loss=torch.stack(commitment_losses).sum(),
            stats=stage_stats,
            latents=x,
        )

    def _stats(self, stage: int, codes: torch.Tensor, num_valid: int) -> dict:
        counts = code_stats.code_histogram(codes.reshape(-1), self.codebook_size)
        if self.dead_code_threshold > 0 and num_valid > 0:
            threshold = self.dead_code_threshold * num_valid / self.codebook_size
            dead = code_stats.dead_code_count(self.layers[stage]._codebook.cluster_size, threshold)
        else:
            dead = code_stats.dead_code_count(counts, 1.0)
        return code_stats.stage_stats(counts, dead, float("nan"))  # the library does not report its replacements

    @torch.no_grad()
    def stage_inputs(self, x: torch.Tensor, stage: int, valid: torch.Tensor | None = None) -> torch.Tensor:
        residual = x.transpose(1, 2).reshape(-1, x.shape[1])
        for index in range(stage):
            residual = residual - self.layers[index].codebook[self._nearest(index, residual)]
        if valid is not None:
            residual = residual[valid.reshape(-1).to(residual.device)]
        return F.normalize(residual, dim=-1) if self.cosine else residual

    @torch.no_grad()
    def decode(self, codes: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        if len(codes) > self.num_quantizers:
            raise ValueError(f"{len(codes)} code streams for {self.num_quantizers} stages")
        total = sum(F.embedding(c, layer.codebook) for layer, c in zip(self.layers, codes))
        return total.transpose(1, 2).contiguous()
