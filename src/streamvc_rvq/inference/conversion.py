"""Loading a trained model and converting audio with it, offline or in 20 ms chunks, in float32
or at reduced precision.

Reduced precision (``precision: bf16 | fp16``) runs the conversion under autocast: the
convolutions of the content encoder, speaker encoder and decoder in the 16-bit type, the
pre-RVQ path and the nearest-code search in float32 (a code flipped by a rounded distance
changes the output by a whole code vector, see ``Decoder.rvq_input``). bfloat16 pays on CUDA
and on CPUs with AVX-512 BF16/AMX, float16 on MPS; on an AVX2-only CPU both are emulated and
2-20x slower than float32 (:func:`emulated_precision_note`). ``benchmarks/streaming_rtf.py
--precision`` states the deviation from float32.

``precision: int8`` (CPU only) multiplies the large folded weights of the causal convolutions
(the low-rate layers, where a 20 ms chunk reads most of its bytes) in int8 per output channel,
quantizing each call's activations on the fly (:func:`modules.conv.int8_products`); the sample-rate
layers, speaker encoder, pitch, pre-RVQ path and code search stay float32. It runs where the folded
weights live: the stream, and offline the chunked path (:func:`convert_in_chunks`) frame by frame,
as the stream does (not faster offline than float32). The paper-size stream on a 2-core Zen 4 (random
weights): RTF 0.50 against float32's 0.84 at an SI-SDR of 22 dB against the float32 output, streamed
equal to offline within 1.3e-7; on trained quick models 32 dB (phase1) and 15 dB (a GAN-trained decoder).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import torch

from streamvc_rvq.model.streamvc import StreamVC
from streamvc_rvq.modules.conv import int8_products, reset_streams
from streamvc_rvq.training.checkpoint import check_model_config, load_checkpoint

INT8_CHUNK_FRAMES = 1  # offline int8 converts frame by frame, as the stream: activation scales per 20 ms
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": None}  # autocast type, if any


def native_16bit_cpu() -> bool:
    """Whether this CPU multiplies 16-bit floats natively (AVX-512 BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def emulated_precision_note(precision: str, device: torch.device | str) -> str | None:
    """A one-line note when ``precision`` would be emulated on this CPU (slower than float32);
    None where it is native or float32."""
    if precision in ("fp32", "int8") or torch.device(device).type != "cpu" or native_16bit_cpu():
        return None
    return (f"note: this CPU has no AVX-512 BF16 or AMX: {precision} is emulated and runs 2-20x slower than fp32 "
            "here (the paper-size stream: 20x); it pays on CUDA, MPS or a CPU with AVX-512 BF16/AMX")


def precision_context(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast region of an inference ``precision`` (one of :data:`PRECISIONS`) on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8":
        if torch.device(device).type != "cpu":
            raise ValueError(f"precision int8 runs on the CPU only, not {torch.device(device).type}: use bf16 or fp16 there")
        return int8_products()
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def load_trained_model(
    checkpoint_path: Path, model_cfg: dict | None = None, device: str | torch.device = "cpu"
) -> tuple[StreamVC, dict, int]:
    """(model in eval mode, the checkpoint's resolved config, its global step).

    With ``model_cfg`` given, a checkpoint trained with another model config is refused
    (CheckpointError naming the differing keys).
    """
    checkpoint = load_checkpoint(checkpoint_path, map_location=device)
    if model_cfg is not None:
        check_model_config(checkpoint, model_cfg, checkpoint_path)
    cfg = checkpoint["config"]
    model = StreamVC(cfg["model"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), cfg, int(checkpoint["step"])


@torch.inference_mode()
def convert(model: StreamVC, source: torch.Tensor, reference: torch.Tensor, num_active: int, stream: bool = False,
            chunk_frames: int | None = None, progress: Callable[[int, int], None] | None = None,
            precision: str = "fp32") -> torch.Tensor:
    """Convert 1-D ``source`` to the voice of 1-D ``reference``; returns 1-D float32 audio.

    ``stream=True`` feeds 20 ms chunks through the streaming path (causal configs only);
    its output equals the offline output (tested to 1e-4). ``chunk_frames``: the offline
    conversion ``chunk_frames`` frames at a time (:func:`convert_in_chunks`) when the source is
    longer; ``progress(done, total)`` is called after each chunk. ``precision``: fp32, bf16, fp16
    or int8 (see the module docstring; int8 converts offline frame by frame, whatever ``chunk_frames``).
    """
    int8 = precision == "int8"  # its products live in the streaming layers: offline, the chunked path, frame by frame
    with precision_context(precision, source.device):
        return _convert(model, source, reference, num_active, stream, INT8_CHUNK_FRAMES if int8 else chunk_frames,
                        progress, chunked=int8).float()


def _convert(model: StreamVC, source: torch.Tensor, reference: torch.Tensor, num_active: int, stream: bool,
             chunk_frames: int | None, progress: Callable[[int, int], None] | None, chunked: bool = False) -> torch.Tensor:
    hop = model.hop_length
    frames = source.shape[-1] // hop
    source = source[: frames * hop]
    if stream:
        converter = model.stream(reference.unsqueeze(0), num_active)
        chunks = [converter.process(source[i * hop : (i + 1) * hop].unsqueeze(0)) for i in range(frames)]
        return torch.cat(chunks, dim=-1)[0]
    if chunk_frames and (frames > chunk_frames or chunked):
        return convert_in_chunks(model, source, reference, num_active, chunk_frames, progress)
    return model(source.unsqueeze(0), reference.unsqueeze(0), num_active).audio[0]


@torch.inference_mode()
def content_in_chunks(model: StreamVC, audio: torch.Tensor, chunk_frames: int,
                      progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """The content encoder's features of prepared ``audio: 1 x T``, ``chunk_frames`` frames at a
    time through its streaming state (left clean); ``progress(chunk, chunks)`` after each."""
    hop = model.hop_length
    frames = audio.shape[-1] // hop
    starts = range(0, frames, chunk_frames)
    reset_streams(model)
    parts = []
    for i, start in enumerate(starts, 1):
        # clone: a stream step's output can be a view into its layer's working buffer
        parts.append(model.content_encoder.stream_step(audio[:, start * hop : min(frames, start + chunk_frames) * hop]).clone())
        if progress:
            progress(i, len(starts))
    reset_streams(model)
    return torch.cat(parts, dim=-1)


@torch.inference_mode()
def convert_in_chunks(model: StreamVC, source: torch.Tensor, reference: torch.Tensor, num_active: int,
                      chunk_frames: int, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """The offline conversion of a long ``source`` in memory bounded by ``chunk_frames``, not by
    the file: the causal convolutions run chunk by chunk through their streaming state, while
    what needs the whole utterance (pitch whitening, the pre-RVQ normalisation's statistics, the
    RVQ) runs on frame-rate tensors of the whole file (a few MB for an hour). Any config, streamable
    or not; equal to ``model(source, reference)`` within float rounding (tested to 1e-4 up to the first
    RVQ code that flips on a tie at that rounding)."""
    hop, device = model.hop_length, source.device
    source = model._prepare(source.unsqueeze(0))
    reference = reference.unsqueeze(0).to(source.dtype)
    frames = source.shape[-1] // hop
    spans = [(start, min(frames, start + chunk_frames)) for start in range(0, frames, chunk_frames)]
    total, done = 2 * len(spans), 0
    model._active_stream = None  # an open streaming converter of this model must not resume on this state

    def counted(step: int, steps: int) -> None:
        nonlocal done
        done = step
        if progress:
            progress(done, total)

    content = content_in_chunks(model, source, chunk_frames, counted)
    pitch = model.pitch.retarget(model.pitch.features_of(model.pitch.yin(source, chunk_frames)),
                                 model.pitch_statistics(reference))
    stats, valid = model.frame_masks(frames, 1, None, device)
    quantized = model.decoder.quantize(content, num_active, stats, valid)[0].quantized
    films = model.decoder.film_coefficients(model.speaker_encoder(reference))
    audio = []
    for start, stop in spans:
        part = pitch[..., start:stop]
        audio.append(model.decoder.synthesize_step(torch.cat((quantized[..., start:stop], part), dim=1), films,
                                                   *model.excitations(part, stream=True)).clone())
        done += 1
        if progress:
            progress(done, total)
    reset_streams(model)
    return torch.cat(audio, dim=-1)[0]
