"""Model summary: parameters and compute per component, and the algorithmic latency.

Multiply-accumulates (MACs) per second of audio are counted with forward hooks on every
``Conv1d`` / ``ConvTranspose1d`` / ``Linear`` while one second of audio goes through each
component (a transposed convolution counts its full ``C_in x C_out x k`` per input frame, as
the streaming form computes it). Two components are counted analytically: the quantizer
(the distance matmul of every stage: ``codebook_size x codebook_dim`` per frame and stage) and
the Yin pitch tracker (three real FFTs per frame, an estimate). The speaker encoder runs once
per reference, so its figure is per second of *reference*, not of converted audio; the
streaming total leaves it out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from streamvc_rvq.model.streamvc import StreamVC

__all__ = ["ComponentCost", "summarize", "model_summary"]


@dataclass
class ComponentCost:
    name: str
    parameters: int
    macs_per_second: float
    note: str = ""


def _count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class _MacCounter:
    """Forward hooks that add up the MACs of conv and linear layers (per batch element)."""

    def __init__(self, module: nn.Module):
        self.macs = 0
        self._handles = [
            m.register_forward_hook(self._hook)
            for m in module.modules()
            if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear))
        ]

    def _hook(self, module: nn.Module, inputs, output) -> None:
        x = inputs[0]
        batch = x.shape[0] if x.dim() > 1 else 1
        if isinstance(module, nn.Conv1d):
            per_out = module.in_channels // module.groups * module.kernel_size[0]
            self.macs += output.numel() // batch * per_out
        elif isinstance(module, nn.ConvTranspose1d):
            frames = x.shape[-1]
            self.macs += module.in_channels * module.out_channels // module.groups * module.kernel_size[0] * frames
        else:
            self.macs += output.numel() // batch * module.in_features

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def _hooked_macs(module: nn.Module, fn) -> int:
    counter = _MacCounter(module)
    try:
        with torch.no_grad():
            fn()
    finally:
        counter.close()
    return counter.macs


def _yin_macs_per_frame(model: StreamVC) -> float:
    """Estimate: 3 real FFTs of n points (~2 n log2 n real MACs each) + O(segment) work."""
    n = model.pitch.n_fft
    return 3 * 2 * n * math.log2(n) + 10 * model.pitch.segment * len(model.pitch.thresholds)


def summarize(model_cfg: dict) -> tuple[list[ComponentCost], StreamVC]:
    """Per-component costs of a model built from ``model_cfg`` (random weights, eval mode)."""
    model = StreamVC(model_cfg).eval()
    sr, hop = model.sample_rate, model.hop_length
    frames = sr // hop
    audio = torch.zeros(1, frames * hop)
    seconds = frames * hop / sr

    content_macs = _hooked_macs(model.content_encoder, lambda: model.content_encoder(audio))
    speaker_macs = _hooked_macs(model.speaker_encoder, lambda: model.speaker_encoder(audio))
    dec = model.decoder
    content = torch.zeros(1, model.content_encoder.dim, frames)
    quantized = torch.zeros(1, dec.rvq.codebook_dim, frames)
    pitch = torch.zeros(1, model.pitch.num_features, frames)
    speaker = torch.zeros(1, model.speaker_encoder.dim)
    excitations = model.harmonic_sources(torch.full((1, frames), 150.0))
    decoder_macs = _hooked_macs(dec, lambda: (dec.pre_rvq(content), dec.synthesize(quantized, pitch, speaker, *excitations)))
    rvq = dec.rvq
    code_dim = rvq.projection_dim or rvq.codebook_dim  # DAC-style codes: lookup in d dims, two d x D projections
    per_stage = rvq.codebook_size * code_dim + (2 * rvq.codebook_dim * code_dim if rvq.projection_dim else 0)
    rvq_macs = rvq.num_quantizers * per_stage * frames

    decoder_params = _count_params(dec) - _count_params(rvq)
    rows = [
        ComponentCost("content encoder", _count_params(model.content_encoder), content_macs / seconds,
                      "with the label head" if model.content_encoder.label_head is not None else ""),
        ComponentCost("speaker encoder", _count_params(model.speaker_encoder), speaker_macs / seconds,
                      "per second of reference, once per conversion"),
        ComponentCost("pitch (Yin)", _count_params(model.pitch), _yin_macs_per_frame(model) * frames / seconds,
                      "FFT estimate"),
        ComponentCost("decoder", decoder_params, decoder_macs / seconds, "with the pre-RVQ encoder and FiLM"),
        ComponentCost("quantizer", _count_params(rvq), rvq_macs / seconds,
                      f"{rvq.num_quantizers} stages x {rvq.codebook_size} codes x {code_dim} dims"
                      + (f" (projected from {rvq.codebook_dim})" if rvq.projection_dim else "")),
    ]
    return rows, model


def model_summary(model_cfg: dict) -> str:
    """A text table: parameters and MACs per second per component, and the latency."""
    rows, model = summarize(model_cfg)
    sr, hop = model.sample_rate, model.hop_length
    delay = model.algorithmic_delay_samples
    lines = [
        f"StreamVC model summary: {sr} Hz, hop {hop} samples ({1000 * hop / sr:.1f} ms, {sr / hop:g} frames/s)",
        f"{'component':<17} {'parameters':>12} {'MMAC/s':>10}  note",
    ]
    for r in rows:
        lines.append(f"{r.name:<17} {r.parameters:>12,} {r.macs_per_second / 1e6:>10,.1f}  {r.note}")
    total_params = sum(r.parameters for r in rows)
    stream_macs = sum(r.macs_per_second for r in rows if r.name != "speaker encoder")
    lines.append(f"{'total':<17} {total_params:>12,} {stream_macs / 1e6:>10,.1f}  "
                 "MACs: conversion path per second of source (speaker encoder excluded)")
    lines.append(
        f"algorithmic latency: {delay} samples = {1000 * delay / sr:.1f} ms "
        "(one frame: output chunk n needs input chunk n, no look-ahead beyond it; compute time comes on top)"
    )
    return "\n".join(lines)
