"""Decoder: content features -> pre-RVQ conv -> normalisation -> RVQ (50 Hz) -> waveform.

The path (SPEC section 3, "where the quantizer sits"):

    content B x D x F --PreRVQEncoder (causal conv, ELU, 1x1 pre_rvq_conv)--> B x d x F
        --PreRVQNorm (statistics over valid frames)--> RVQ (per frame; valid frames counted)
        --> quantized B x d x F ++ pitch/energy B x P x F --conv7--> B x 2^n C x F
        --> n decoder blocks, upsampling by reversed(strides) (8, 5, 4, 2), channels halving,
            each followed by FiLM from the speaker vector; the last block's input also gets the
            harmonic excitation at the target's f0 (1x1 conv, :mod:`streamvc_rvq.model.excitation`)
        (+ optionally a second excitation at the full sample rate: ``add``, 1x1 conv, before the last ELU;
           or ``gated``, each harmonic times a per-sample gain the last features set, added to the waveform)
        --> ELU --> conv7 --> waveform B x (F * hop)       (linear output, no tanh/clamp)

The RVQ runs at the frame rate: one code vector per 20 ms frame and stage (the origin
implementation quantized every audio sample, SPEC section 3 item 1). Every layer after the
RVQ is causal, so output sample ``p`` depends on frames ``<= p // hop`` only.

Streaming: :meth:`quantize_step` and :meth:`synthesize_step` process the next frames; the
FiLM coefficients of the (fixed) speaker vector are computed once per stream
(:meth:`film_coefficients`).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamvc_rvq.model.pre_rvq_encoder import PreRVQEncoder
from streamvc_rvq.modules.conv import CausalConv1d, StreamingModule, int8_products
from streamvc_rvq.modules.native import elu
from streamvc_rvq.modules.seanet import KERNEL, DecoderBlock, FiLM
from streamvc_rvq.quantization.normalization import PreRVQNorm
from streamvc_rvq.quantization.build import build_rvq
from streamvc_rvq.quantization.rvq import RVQOutput

__all__ = ["Decoder"]


class Decoder(StreamingModule):
    def __init__(
        self,
        channels: int,
        content_dim: int,
        pitch_dim: int,
        speaker_dim: int,
        strides: list[int] | tuple[int, ...],
        rvq: dict,
        pre_rvq_norm: str = "utterance",
        pre_rvq_encoder: dict | None = None,
        excitation_harmonics: int = 0,
        upsample: str = "transposed",
        output_excitation_harmonics: int = 0,
        output_excitation_mix: str = "add",
    ):
        super().__init__()
        code_dim = rvq["codebook_dim"]
        self.pre_rvq = PreRVQEncoder(content_dim, code_dim, **(pre_rvq_encoder or {}))
        self.norm = PreRVQNorm(pre_rvq_norm)
        self.rvq = build_rvq(rvq)
        up = tuple(reversed(tuple(strides)))
        widths = [channels * 2 ** (len(up) - i) for i in range(len(up) + 1)]  # 16C, 8C, 4C, 2C, C
        self.input_conv = CausalConv1d(code_dim + pitch_dim, widths[0], KERNEL)
        self.blocks = nn.ModuleList(DecoderBlock(widths[i], widths[i + 1], s, upsample) for i, s in enumerate(up))
        self.films = nn.ModuleList(FiLM(speaker_dim, widths[i + 1]) for i in range(len(up)))
        self.output_conv = CausalConv1d(channels, 1, KERNEL)
        # the harmonic excitation enters the last block's input, at its rate (sample rate / last stride)
        self.excitation_rate_divisor = up[-1]
        self.source_conv = CausalConv1d(excitation_harmonics, widths[-2], 1) if excitation_harmonics else None
        # ... and optionally the output block's, at the sample rate: the third stage runs at 2 kHz, so the blocks
        # before it cannot hand harmonics above 1 kHz to the last ones (a quick screen with it: that band stayed
        # noise all the same; docs/measurements/conversion_beyond_pitch.md)
        # ``gated`` instead: the waveform gets each harmonic times a gain the output block's features set, sample by
        # sample (a harmonic-plus-noise output, as DDSP's): a 1x1 mix before an ELU can only scale a harmonic by a
        # fixed weight, not draw it under a moving formant envelope (its quick screen: harmonic at step 100, noise again by 500)
        adds = output_excitation_harmonics and output_excitation_mix == "add"
        self.output_source_conv = CausalConv1d(output_excitation_harmonics, channels, 1) if adds else None
        self.output_source_gain = (_quiet(CausalConv1d(channels, output_excitation_harmonics, 1))
                                   if output_excitation_harmonics and not adds else None)
        self._fast_rvq: list | None = None

    # -- offline -------------------------------------------------------------------------
    def rvq_input(self, content: Tensor, stats_mask: Tensor | None = None) -> Tensor:
        """``content: B x D x F`` -> the normalised RVQ input ``B x d x F`` (float32).

        Always float32, also inside an autocast region: nearest-code search in bfloat16
        would tie distances that differ in the third digit."""
        with torch.autocast(device_type=content.device.type, enabled=False):
            return self.norm(self.pre_rvq(content.float()), stats_mask)

    def quantize(
        self, content: Tensor, num_active: int | None = None, stats_mask: Tensor | None = None,
        valid: Tensor | None = None,
    ) -> tuple[RVQOutput, Tensor]:
        """-> (RVQ output, RVQ input ``z``). ``stats_mask``: frames that set the normalisation
        statistics; ``valid``: frames the RVQ counts (both ``B x F`` bool)."""
        z = self.rvq_input(content, stats_mask)
        with torch.autocast(device_type=content.device.type, enabled=False):
            return self.rvq(z, num_active, valid), z

    def film_coefficients(self, speaker: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``(gamma, beta)`` of every FiLM layer for ``speaker: B x S``."""
        return [film.coefficients(speaker) for film in self.films]

    def synthesize(self, quantized: Tensor, pitch: Tensor, speaker: Tensor, excitation: Tensor | None = None,
                   output_excitation: Tensor | None = None) -> Tensor:
        """Frame features (``B x d x F`` codes, ``B x P x F`` pitch) -> waveform ``B x (F * hop)``;
        ``excitation``: the harmonic source at the last block's input rate (``B x H x T'``);
        ``output_excitation``: the one at the sample rate (``B x H' x T``), when the decoder has that path.

        Float32 whenever gradients are taken, also inside an autocast region: in bfloat16 the
        decoder's backward shrank the gradient reaching its input conv to 0.25 x and its output
        conv to 0.61 x of the float32 one (quick phase1 at step 100, one batch), and a quick run
        trained that way measured 19-28 % above float32's validation loss_stft at steps 50, 100
        and 250, outside the range of three float32 seeds. Without gradients (inference at
        reduced precision, :mod:`streamvc_rvq.inference.conversion`) it follows the autocast
        region it runs in."""
        with _float32_for_gradients(quantized.device.type):
            x = self.input_conv(torch.cat((quantized.float(), pitch.float()), dim=1))
            last = len(self.blocks) - 1
            for i, (block, (gamma, beta)) in enumerate(zip(self.blocks, self.film_coefficients(speaker.float()))):
                if i == last and self.source_conv is not None:
                    x = x + self.source_conv(excitation.float())
                x = FiLM.modulate(block(x), gamma, beta)
            if self.output_source_conv is not None:
                x = x + self.output_source_conv(output_excitation.float())
            x = elu(x)
            audio = self.output_conv(x)
            if self.output_source_gain is not None:
                audio = audio + (self.output_source_gain(x) * output_excitation.float()).sum(1, keepdim=True)
            return audio.squeeze(1)

    def forward(
        self, content: Tensor, pitch: Tensor, speaker: Tensor, num_active: int | None = None,
        stats_mask: Tensor | None = None, valid: Tensor | None = None, excitation: Tensor | None = None,
        output_excitation: Tensor | None = None,
    ) -> tuple[Tensor, RVQOutput, Tensor]:
        """-> ``(audio B x (F * hop), RVQ output, RVQ input z)``."""
        rvq_out, z = self.quantize(content, num_active, stats_mask, valid)
        return self.synthesize(rvq_out.quantized, pitch, speaker, excitation, output_excitation), rvq_out, z

    # -- streaming -------------------------------------------------------------------------
    def _reset_own_stream(self, keep_weights: bool = False) -> None:
        if not keep_weights:
            self._fast_rvq = None

    def _prepare_fast_rvq(self) -> list | None:
        """Per-stage ``(codebook, ||e||^2, cosine)`` for a lean eval-mode RVQ lookup, or None
        if the RVQ does not expose what that needs (then the RVQ module itself is called)."""
        if getattr(self.rvq, "projection_dim", 0):
            return None
        try:
            stages = []
            for layer in self.rvq.layers:
                embed = layer.lookup_codebook().detach()
                stages.append((embed, embed.pow(2).sum(-1), bool(layer.cosine)))
            return stages
        except AttributeError:
            return None

    def quantize_step(self, content: Tensor, num_active: int | None = None) -> Tensor:
        """Next content frames ``B x D x n`` -> quantized ``B x d x n`` (eval mode, no stats).

        Same values as ``quantize(...)[0].quantized`` in eval mode (the RVQ and the causal
        normalisation are per frame), without the losses and code statistics that make the
        full RVQ call cost ~1 ms per frame.
        """
        if self._fast_rvq is None:
            self._fast_rvq = self._prepare_fast_rvq() or []
        # the weights' type and float32 products, as rvq_input: a rounded RVQ input flips codes
        with torch.autocast(device_type=content.device.type, enabled=False), int8_products(False):
            content = content.to(self.input_conv.bias.dtype)
            return self._quantize_frames(self.norm.stream_step(self.pre_rvq.stream_step(content)), num_active)

    def _quantize_frames(self, z: Tensor, num_active: int | None) -> Tensor:
        if not self._fast_rvq:
            return self.rvq(z, num_active).quantized
        batch, dim, frames = z.shape
        latents = z.transpose(1, 2).reshape(batch * frames, dim)
        if self.rvq.cosine:
            latents = F.normalize(latents, dim=-1)
        residual, total = latents, torch.zeros_like(latents)
        for embed, sq_norm, cosine in self._fast_rvq[: num_active or len(self._fast_rvq)]:
            if cosine:
                residual = F.normalize(residual, dim=-1)
                codes = (residual @ embed.t()).argmax(dim=-1)
            else:
                codes = torch.addmm(sq_norm, residual, embed.t(), alpha=-2.0).argmin(dim=-1)  # ||e||^2 - 2 r.e
            vectors = embed[codes]
            total = total + vectors
            residual = residual - vectors
        quantized = latents + (total - latents)  # the RVQ's straight-through value
        return quantized.view(batch, frames, dim).transpose(1, 2)

    def synthesize_step(self, frames: Tensor, films: list[tuple[Tensor, Tensor]],
                        excitation: Tensor | None = None, output_excitation: Tensor | None = None) -> Tensor:
        """Next decoder input frames ``B x (d + P) x n`` (and their excitations) -> waveform ``B x (n * hop)``."""
        x = self.input_conv.stream_step(frames)
        last = len(self.blocks) - 1
        for i, (block, (gamma, beta)) in enumerate(zip(self.blocks, films)):
            if i == last and self.source_conv is not None:
                x = x + self.source_conv.stream_step(excitation)
            x = FiLM.modulate(block.stream_step(x), gamma, beta)
        if self.output_source_conv is not None:
            x = x + self.output_source_conv.stream_step(output_excitation)
        x = elu(x)
        audio = self.output_conv.stream_step(x)
        if self.output_source_gain is not None:
            audio = audio + (self.output_source_gain.stream_step(x) * output_excitation).sum(1, keepdim=True)
        return audio.reshape(frames.shape[0], -1)


def _quiet(conv: CausalConv1d, scale: float = 1e-3) -> CausalConv1d:
    """``conv`` with its weight norm's magnitudes x ``scale`` and no bias: a gain path that starts near silent
    (unit-amplitude harmonics at the default initialisation would sum to a waveform louder than speech)."""
    with torch.no_grad():
        conv.parametrizations.weight.original0.mul_(scale)
        conv.bias.zero_()
    return conv


def _float32_for_gradients(device_type: str):
    """Autocast off where a backward pass will follow; the caller's region otherwise."""
    return torch.autocast(device_type=device_type, enabled=False) if torch.is_grad_enabled() else nullcontext()
