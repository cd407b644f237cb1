"""The ``infer`` command: convert one file, with one-line errors for every bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from streamvc_rvq.config import schema_default
from streamvc_rvq.data.audio import AudioError, load_audio, save_wav
from streamvc_rvq.inference.conversion import PRECISIONS, convert, emulated_precision_note, load_trained_model
from streamvc_rvq.quantization.rvq import StageSchedule
from streamvc_rvq.training.checkpoint import CheckpointError


class InferenceError(RuntimeError):
    """A bad input or checkpoint; the message is one readable line."""


def _read(path: Path, role: str, sample_rate: int, min_samples: int) -> torch.Tensor:
    if not path.exists():
        raise InferenceError(f"{role} file not found: {path}")
    try:
        audio = load_audio(path, sample_rate)
    except AudioError as err:
        raise InferenceError(f"{role} file {path}: {err}") from None
    if audio.numel() < min_samples:
        raise InferenceError(
            f"{role} file {path} is too short: {audio.numel() / sample_rate:.3f} s "
            f"(need at least {min_samples / sample_rate:.3f} s)"
        )
    return audio


CHUNK_SECONDS = 5.0  # a longer source converts this much at a time (memory bounded by it, not the file)


def convert_file(
    *, checkpoint: Path, config: dict | None, source: Path, target_ref: Path, output: Path,
    device: str = "cpu", stream: bool = False, precision: str = "fp32", progress=None,
) -> dict:
    """Convert ``source`` to the voice in ``target_ref``; write ``output`` atomically; return
    stats; ``progress(done, total)`` as the conversion goes."""
    if precision not in PRECISIONS:
        raise InferenceError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    try:
        model, cfg, step = load_trained_model(checkpoint, config["model"] if config else None, device)
    except CheckpointError as err:
        raise InferenceError(str(err)) from None
    sample_rate = cfg["model"]["sample_rate"]
    src = _read(Path(source), "source", sample_rate, model.hop_length)
    ref = _read(Path(target_ref), "target reference", sample_rate, model.hop_length)
    if src.numel() < model.warmup_frames * model.hop_length:
        print(f"note: the source is {src.numel() / sample_rate:.2f} s, shorter than the model's "
              f"{model.warmup_frames * model.hop_length / sample_rate:.2f} s warm-up: all of it is converted with "
              "less context than training gave each scored frame", file=sys.stderr)
    note = emulated_precision_note(precision, device)
    if note:
        print(note, file=sys.stderr)
    if precision == "int8" and not stream:
        print("note: int8 converts offline frame by frame, as the stream does (the same output), and is slower than "
              "fp32 offline; it pays with --stream", file=sys.stderr)
    chunk_frames = int(CHUNK_SECONDS * sample_rate) // model.hop_length
    try:
        out = convert(model, src.to(device), ref.to(device), StageSchedule.of(cfg["model"]).in_checkpoint(step),
                      stream=stream, chunk_frames=chunk_frames, progress=progress, precision=precision)
    except ValueError as err:  # e.g. streaming refused for a non-causal config
        raise InferenceError(str(err)) from None
    out = out.float().cpu()
    save_wav(Path(output), out, sample_rate)
    return {
        "output": str(output),
        "seconds": out.numel() / sample_rate,
        "output_std": float(out.std()),
        "silent": bool(out.std() <= schema_default("evaluation.silence_std")),
        "step": step,
        "stream": stream,
        "precision": precision,
    }
