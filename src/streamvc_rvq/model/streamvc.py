"""StreamVC: causal streaming voice conversion with an RVQ on the content stream.

Assembly (Yang et al., ICASSP 2024, with the quantizer of SPEC section 3)::

    source B x T --ContentEncoder--> content B x D x F ------(stop-gradient)----+
          |                              +--label head--> logits B x L x F    |
          +--PitchEnergy (Yin f0 x thresholds, energy)--> B x P x F --------+  |
    reference B x T_ref --SpeakerEncoder--> B x S --FiLM--+                |  |
                                                          v                v  v
                          Decoder: PreRVQEncoder -> PreRVQNorm -> RVQ -> ++ pitch -> blocks -> B x F*hop

``F = T // hop`` (a source not a multiple of ``hop`` is truncated to ``F * hop`` samples).

Valid frames (:mod:`streamvc_rvq.model.valid_frames`). The RVQ input of frame ``n`` has a
receptive field of ``R`` samples through the content encoder and the pre-RVQ encoder;
the first :attr:`StreamVC.content_warmup_frames` frames reach into the zero padding before
the input and are unfit to set the normalisation's statistics; :attr:`StreamVC.warmup_frames`
adds the normalisation's own warm-up, and frames from there on (up to each row's
``lengths``) are the ``valid`` frames that losses, code statistics and metrics use.

Latency. Every path from the source to the output is causal at the frame level: output
sample ``p`` (in frame ``n = p // hop``) depends on source samples ``<= (n + 1) * hop - 1``,
the end of its own frame, and on nothing later. A stream therefore emits output chunk ``n``
as soon as input chunk ``n`` is complete: the algorithmic delay is one frame,
``hop = 320`` samples (20 ms at 16 kHz), with no look-ahead beyond the frame; compute
time comes on top. (Within a frame, output sample ``p`` may use input up to ``hop - 1``
samples later than ``p``; that is the frame's buffering, which the delay already counts.)

Streaming (:meth:`StreamVC.stream`) needs every stage causal: ``pre_rvq_norm: causal`` or
``none`` and ``pitch.whitening: running``; ``utterance`` statistics use the future and raise
``ValueError``. Streamed output equals offline ``forward`` output (eval mode) to float32
rounding: each layer keeps a cache of its past inputs instead of padding.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from streamvc_rvq.config import hop_length, load_schema, validate
from streamvc_rvq.model.content_encoder import ContentEncoder
from streamvc_rvq.model.decoder import Decoder
from streamvc_rvq.model.excitation import HarmonicSource
from streamvc_rvq.model.pitch import PitchEnergy
from streamvc_rvq.model.speaker_encoder import SpeakerEncoder
from streamvc_rvq.model.valid_frames import valid_mask, warmup_frames
from streamvc_rvq.modules.conv import int8_active, int8_products, receptive_field, reset_streams
from streamvc_rvq.quantization.rvq import RVQOutput

__all__ = ["StreamVC", "StreamVCOutput", "StreamingConverter"]


@dataclass
class StreamVCOutput:
    audio: Tensor  # B x (F * hop)
    content_logits: Tensor | None  # B x num_labels x F, or None without a label head
    rvq: RVQOutput
    pre_rvq_std: Tensor  # scalar, detached: std of the normalised RVQ input over valid frames
    content_features: Tensor  # B x D x F (before the stop-gradient)
    rvq_input: Tensor  # B x d x F, detached: what the codebooks see
    valid: Tensor  # B x F bool: the frames fit to be measured
    speaker: Tensor  # B x S: the reference's speaker embedding (what FiLM reads)
    source_pitch: Tensor  # B x base_features x F: the source's pitch and energy, before retargeting
    pitch_level: Tensor | None  # B x K x 2: the level the output takes (the reference's, or pitch_reference's; None with target: none)


class EncodedSource(NamedTuple):
    """A source through :meth:`StreamVC.encode`: everything of a conversion that the reference does not change."""

    source: Tensor  # B x (F * hop): the prepared source
    content: Tensor  # B x D x F
    logits: Tensor | None
    stats: Tensor  # B x F: frames fit to set the normalisation's statistics
    valid: Tensor  # B x F: frames fit to be measured
    pitch: Tensor  # B x base_features x F: the source's pitch and energy, before retargeting


def resolve_model_config(model_cfg: dict) -> dict:
    """A validated copy of a ``model`` config section with every default filled in."""
    return validate(copy.deepcopy(model_cfg), load_schema()["properties"]["model"])


class StreamVC(nn.Module):
    def __init__(self, model_cfg: dict):
        super().__init__()
        cfg = resolve_model_config(model_cfg)
        self.config = cfg
        self.sample_rate = cfg["sample_rate"]
        self.hop_length = hop_length(cfg)
        ce, se, pc = cfg["content_encoder"], cfg["speaker_encoder"], cfg["pitch"]
        self.stop_gradient = ce["stop_gradient"]
        self.content_encoder = ContentEncoder(ce["channels"], ce["dim"], cfg["strides"], ce["num_labels"])
        self.speaker_encoder = SpeakerEncoder(se["channels"], se["dim"], cfg["strides"], se["front_end"], se["pooling"],
                                              se["n_mels"], self.sample_rate)
        self.pitch = PitchEnergy(
            self.sample_rate, self.hop_length, pc["thresholds"], pc["fmin"], pc["fmax"], pc["whitening"], pc["target"]
        )
        self.decoder = Decoder(
            cfg["decoder"]["channels"],
            ce["dim"],
            self.pitch.num_features,
            se["dim"],
            cfg["strides"],
            cfg["rvq"],
            cfg["pre_rvq_norm"],
            cfg["pre_rvq_encoder"],
            pc["excitation_harmonics"],
            cfg["decoder"].get("upsample", "transposed"),  # checkpoints from before the key: transposed
            pc.get("output_excitation_harmonics", 0),  # checkpoints from before the key: none
            pc.get("output_excitation_mix", "add"),
        )
        for key in ("excitation_harmonics", "output_excitation_harmonics"):
            if pc.get(key, 0) and pc["target"] != "reference":
                raise ValueError(f"model.pitch.{key} needs pitch.target: reference (the excitation follows "
                                 f"the target's f0); set {key}: 0 with target: none")
        self.excitation = (HarmonicSource(self.sample_rate, self.hop_length, self.decoder.excitation_rate_divisor,
                                          pc["excitation_harmonics"]) if pc["excitation_harmonics"] else None)
        self.output_excitation = (HarmonicSource(self.sample_rate, self.hop_length, 1, pc["output_excitation_harmonics"])
                                  if pc.get("output_excitation_harmonics", 0) else None)
        field = receptive_field(self.content_encoder.encoder) + (receptive_field(self.decoder.pre_rvq) - 1) * self.hop_length
        self.content_warmup_frames = warmup_frames(field, self.hop_length)
        self.decoder.norm.stats_start = self.content_warmup_frames
        self.warmup_frames = self.content_warmup_frames + self.decoder.norm.warmup_frames

    @property
    def algorithmic_delay_samples(self) -> int:
        """One frame: output chunk ``n`` needs input chunk ``n`` complete, nothing later."""
        return self.hop_length

    def frame_masks(self, frames: int, batch: int, lengths: Tensor | None, device) -> tuple[Tensor, Tensor]:
        """(frames fit to set normalisation statistics, frames fit to be measured), ``B x F``."""
        stats = valid_mask(frames, self.content_warmup_frames, lengths, batch, device)
        return stats, valid_mask(frames, self.warmup_frames, lengths, batch, device)

    def _prepare(self, source: Tensor) -> Tensor:
        frames = source.shape[-1] // self.hop_length
        if frames == 0:
            raise ValueError(f"source needs at least one frame ({self.hop_length} samples), got {source.shape[-1]}")
        dtype = self.decoder.input_conv.bias.dtype  # float32: inputs of another dtype are cast
        return source[..., : frames * self.hop_length].to(dtype)

    def _encode(self, source: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """(content, label logits, statistics mask, valid mask) of a prepared ``source``."""
        content, logits = self.content_encoder(source)
        return (content, logits, *self.frame_masks(content.shape[-1], content.shape[0], lengths, content.device))

    def rvq_input(self, source: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(RVQ input ``B x d x F``, valid frames ``B x F``) of ``source: B x T``, without the RVQ."""
        content, _, stats, valid = self._encode(self._prepare(source), lengths)
        return self.decoder.rvq_input(content, stats), valid

    def encode(self, source: Tensor, lengths: Tensor | None = None) -> "EncodedSource":
        """What :meth:`forward` computes from ``source: B x T`` alone (the content path and the
        source's pitch), so one source converted to several references is encoded once."""
        source = self._prepare(source)
        content, logits, stats, valid = self._encode(source, lengths)
        return EncodedSource(source, content, logits, stats, valid, self.pitch(source))

    def decode(
        self, encoded: "EncodedSource", reference: Tensor, num_active_quantizers: int | None = None,
        pitch_reference: Tensor | None = None,
    ) -> StreamVCOutput:
        """:meth:`forward` of a source that :meth:`encode` returned (left unchanged: decode it again)."""
        reference = reference.to(encoded.source.dtype)
        level_of = reference if pitch_reference is None else pitch_reference.to(encoded.source.dtype)
        level = self.pitch_statistics(level_of)
        pitch = self.pitch.retarget(encoded.pitch, level)
        speaker = self.speaker_encoder(reference)
        content = encoded.content
        decoder_input = content.detach() if self.stop_gradient else content
        audio, rvq_out, z = self.decoder(decoder_input, pitch, speaker, num_active_quantizers, encoded.stats,
                                         encoded.valid, *self.excitations(pitch))
        z = z.detach()
        picked = z.transpose(1, 2)[encoded.valid]
        pre_rvq_std = picked.std() if picked.numel() > 1 else z.std()
        return StreamVCOutput(audio, encoded.logits, rvq_out, pre_rvq_std, content, z, encoded.valid, speaker,
                              encoded.pitch, level)

    def forward(
        self, source: Tensor, reference: Tensor, num_active_quantizers: int | None = None,
        lengths: Tensor | None = None, pitch_reference: Tensor | None = None,
    ) -> StreamVCOutput:
        """Convert ``source: B x T`` to the voice of ``reference: B x T_ref``.

        ``lengths: B``: frames of real signal per row (trailing padding beyond it is not
        measured); default: all frames. ``pitch_reference``: the utterance whose pitch level
        the output takes instead of the reference's (the source itself: its timbre changed,
        its pitch kept; the evaluation's timbre-only conversion)."""
        return self.decode(self.encode(source, lengths), reference, num_active_quantizers, pitch_reference)

    def excitations(self, pitch: Tensor, stream: bool = False) -> tuple[Tensor | None, Tensor | None]:
        """The decoder's harmonic sources at the target f0 of frame features ``pitch``."""
        if self.excitation is None and self.output_excitation is None:
            return None, None
        return self.harmonic_sources(self.pitch.target_f0(pitch), stream)

    def harmonic_sources(self, f0: Tensor, stream: bool = False) -> tuple[Tensor | None, Tensor | None]:
        """(last block's, output block's) excitation for a frame f0 ``B x F``, None where the model has no
        such path; ``stream``: the next frames of a stream (the phase carried on)."""
        return tuple(None if source is None else (source.stream_step(f0) if stream else source(f0))
                     for source in (self.excitation, self.output_excitation))

    def reconvert(self, out: StreamVCOutput, order: Tensor) -> Tensor:
        """Row ``i``'s codes in the voice of row ``order[i]``'s reference (its speaker vector
        and pitch level), for the first ``len(order)`` rows: a conversion inside a training
        batch, for the speaker-consistency loss. The codes are detached, so this path teaches
        the decoder and the speaker encoder, never the quantizer (the codebook question stays
        the reconstruction's)."""
        rows = len(order)
        level = None if out.pitch_level is None else out.pitch_level[order]
        pitch = self.pitch.retarget(out.source_pitch[:rows], level)
        return self.decoder.synthesize(out.rvq.quantized[:rows].detach(), pitch, out.speaker[order], *self.excitations(pitch))

    def pitch_statistics(self, reference: Tensor) -> Tensor | None:
        """The reference's pitch level for :meth:`PitchEnergy.retarget` (None with ``pitch.target: none``)."""
        return self.pitch.reference_statistics(reference) if self.pitch.target == "reference" else None

    def streamable_error(self) -> str | None:
        """Why this configuration cannot stream, or None if it can."""
        reasons = []
        if not self.decoder.norm.streamable:
            reasons.append(
                f"pre_rvq_norm {self.decoder.norm.mode!r} normalises each channel over the whole utterance "
                "(use 'causal' or 'none')"
            )
        if not self.pitch.streamable:
            reasons.append(
                f"pitch.whitening {self.pitch.whitening!r} uses whole-utterance f0 statistics (use 'running')"
            )
        return "; ".join(reasons) or None

    def stream(self, reference: Tensor, num_active_quantizers: int | None = None) -> "StreamingConverter":
        """A chunk-by-chunk converter to the voice of ``reference: B x T_ref`` (eval mode)."""
        reason = self.streamable_error()
        if reason:
            raise ValueError(f"this StreamVC configuration cannot stream: {reason}")
        if self.training:
            raise ValueError("stream() needs eval mode (the RVQ updates its codebook state in training); call model.eval()")
        return StreamingConverter(self, reference, num_active_quantizers)


class StreamingConverter:
    """Converts a stream chunk by chunk: ``process(chunk B x hop) -> B x hop``.

    Output chunk ``n`` is the offline output for the samples of input chunk ``n``
    (:attr:`algorithmic_delay_samples` = one chunk). At construction the converter takes a
    snapshot of the model for inference: the speaker embedding, FiLM coefficients and pitch level of the
    reference, and every layer's folded weight (primed on one silent chunk, so the first
    real chunk costs no more than the others), in int8 where it was made inside
    :func:`~streamvc_rvq.modules.conv.int8_products` (kept so, whatever region later chunks run in).
    :meth:`reset` restarts the stream from silence and keeps that snapshot (or folds the same
    weights again the same way, if another conversion of the model dropped it); after changing the
    weights, make a new converter.
    The streaming state lives in the model's layers, so one model serves one stream at a
    time: an older converter of the same model refuses to run once a new one exists.
    """

    def __init__(self, model: StreamVC, reference: Tensor, num_active_quantizers: int | None = None):
        self.model = model
        self.hop = model.hop_length
        self.algorithmic_delay_samples = model.algorithmic_delay_samples
        stages = model.decoder.rvq.num_quantizers
        self.num_active = stages if num_active_quantizers is None else int(num_active_quantizers)
        if not 1 <= self.num_active <= stages:
            raise ValueError(f"num_active_quantizers must be in [1, {stages}], got {num_active_quantizers}")
        self.dtype = model.decoder.input_conv.bias.dtype
        self.batch = reference.shape[0]
        self.int8 = int8_active()  # the products it folds: refolds after a reset take the same
        with torch.no_grad():
            speaker = model.speaker_encoder(reference.to(self.dtype))
            self.films = [(g.detach(), b.detach()) for g, b in model.decoder.film_coefficients(speaker)]
            self.pitch_statistics = model.pitch_statistics(reference.to(self.dtype))
        reset_streams(model)  # fold the current weights
        model._active_stream = weakref.ref(self)
        self.process(torch.zeros(self.batch, self.hop, dtype=self.dtype, device=reference.device))
        self.reset()

    def reset(self) -> None:
        """Start a new stream from silence (same reference, same weight snapshot)."""
        active = getattr(self.model, "_active_stream", None)
        # folds another conversion left in the layers are not this converter's (another precision, perhaps)
        reset_streams(self.model, keep_weights=active is not None and active() is self)
        self.model._active_stream = weakref.ref(self)

    def process(self, chunk: Tensor) -> Tensor:
        """Next ``chunk: B x (k * hop)`` samples -> converted ``B x (k * hop)``."""
        model = self.model
        active = getattr(model, "_active_stream", None)
        if active is None or active() is not self:
            raise RuntimeError("another stream was started on this model; call reset() to restart this one")
        if chunk.dim() != 2 or chunk.shape[-1] % self.hop or chunk.shape[0] != self.batch:
            raise ValueError(f"chunk must be {self.batch} x (k * {self.hop}) samples, got {tuple(chunk.shape)}")
        with torch.inference_mode(), int8_products(self.int8):
            chunk = chunk.to(self.dtype)
            content = model.content_encoder.stream_step(chunk)
            pitch = model.pitch.retarget(model.pitch.stream_step(chunk), self.pitch_statistics)
            quantized = model.decoder.quantize_step(content, self.num_active)
            return model.decoder.synthesize_step(torch.cat((quantized, pitch), dim=1), self.films,
                                                 *model.excitations(pitch, stream=True))
