"""Audio input/output: read any soundfile-readable file as 16 kHz mono, trim, normalise, save.

Reading uses ``soundfile`` (``torchaudio.load`` needs torchcodec, which is not installed);
resampling uses ``torchaudio.functional.resample``. Every failure to get usable audio out
of a file raises :class:`AudioError` whose ``reason`` is one short line fit for
``rejected.csv`` (``empty file``, ``unreadable: ...``, ``not audio: ...``, ``too short: ...``,
``silent``).

Clipping is measured on the samples as stored (:func:`clipped_frames`), before resampling and
level normalisation, which would smear its flat tops into ordinary-looking peaks. The rule: a
sample is clipped when it lies in a run of at least :data:`CLIP_MIN_RUN` (3) consecutive
samples of one channel that all hold *exactly the same value*, at or beyond
:data:`CLIP_LEVEL` (0.999) of the format's full scale. Full scale is the largest positive
code after soundfile's float conversion: ``1 - 2**-(bits-1)`` for integer PCM (so 127/128 for
8-bit files, whose top code would otherwise never reach 0.999), the largest companded value
for u-law/A-law, and 1.0 for float and every other format. A frame of a multi-channel file is
clipped when any of its channels is (the mono mix-down keeps that channel's distortion).
Why each part:

* at full scale: hard clipping is a converter or encoder hitting the largest code it has;
  a loud file that stays below it (peak 0.98) is not clipped.
* exactly equal: a clipped top is one repeated code, while an unclipped waveform passing
  near full scale (a peak-normalised low voice at 48 kHz) changes value from sample to sample.
  For float files this is also what makes values above 1.0 safe: float keeps them, so
  ``|x| > 1`` alone is no distortion, but a flat top of equal values at >= 0.999 (clamped to
  1.0, or clamped and then amplified) is clipping.
* 3 in a row: a single full-scale sample (a peak that just touches the top code, a click)
  loses nothing; two equal neighbours happen at a rounded peak; three are a flat top.

Not detected: clipping followed by attenuation (flat tops below 0.999) and clipping seen
through a lossy codec (MP3/Vorbis ripple breaks up the flat tops).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from ..atomic import atomic_write_bytes

SILENCE_PEAK = 1e-3  # a file whose peak is below -60 dBFS is silent
CLIP_LEVEL = 0.999  # of full scale: samples this loud may be clipped
CLIP_MIN_RUN = 3  # equal samples in a row at CLIP_LEVEL that make a flat (clipped) top

# Largest positive value soundfile's float conversion gives, for formats whose top code
# decodes below CLIP_LEVEL; every other format's full scale is taken as 1.0.
_FULL_SCALE = {"PCM_S8": 127 / 128, "PCM_U8": 127 / 128, "ULAW": 32124 / 32768,
               "ALAW": 32256 / 32768}

# First bytes of the containers libsndfile reads; a file that fails to open and starts with
# none of them is reported as "not audio" rather than as a damaged audio file.
_AUDIO_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b".snd", b"ID3",
                b"caff", b"wvpk", b"MThd", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"BW64")


class AudioError(Exception):
    """A file that gives no usable audio; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """``(samples [frames, channels] float32, sample_rate)`` as stored; raises AudioError."""
    data, sr, _ = read_stored(path)
    return data, sr


def read_stored(path: str | Path) -> tuple[np.ndarray, int, str]:
    """:func:`read_audio` plus the file's libsndfile subtype (``PCM_16``, ``FLOAT``...), which
    fixes its full scale (:func:`full_scale`)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioError(f"unreadable: {_one_line(exc.strerror or exc)}") from exc
    if size == 0:
        raise AudioError("empty file")
    try:
        with sf.SoundFile(str(path)) as f:
            subtype = str(f.subtype)
            sr = f.samplerate
            data = f.read(dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/ValueError...
        message = _one_line(exc)
        prefix = str(path)
        # soundfile's message starts with "Error opening '<path>': "; keep the cause only.
        for quote in ("'", '"'):
            head = f"Error opening {quote}{prefix}{quote}: "
            if message.startswith(head):
                message = message[len(head):]
        try:
            with open(path, "rb") as f:
                head_bytes = f.read(16)
        except OSError:
            head_bytes = b""
        if not any(head_bytes.startswith(m) for m in _AUDIO_MAGIC):
            raise AudioError(f"not audio: {message}") from exc
        raise AudioError(f"unreadable: {message}") from exc
    if data.shape[0] == 0:
        raise AudioError("no audio samples (header only, or truncated)")
    if sr <= 0:
        raise AudioError(f"unreadable: invalid sample rate {sr}")
    if not np.all(np.isfinite(data)):
        raise AudioError("invalid samples (NaN or infinity)")
    return data, int(sr), subtype


def full_scale(subtype: str) -> float:
    """The largest positive sample value of ``subtype`` after soundfile's float conversion
    (the clipping level is relative to it; see the module docstring)."""
    return _FULL_SCALE.get(str(subtype).upper(), 1.0)


def clipped_frames(data: np.ndarray, scale: float = 1.0, level: float = CLIP_LEVEL,
                   min_run: int = CLIP_MIN_RUN) -> np.ndarray:
    """``[frames]`` bool: the frames where some channel of ``data`` ([frames] or
    [frames, channels], as stored) is in a flat top: ``min_run`` or more equal samples in a
    row with ``|x| >= level * scale``. Any channel counts, as mixing down keeps its distortion."""
    x = np.asarray(data)
    if x.ndim == 1:
        x = x[:, None]
    out = np.zeros(x.shape[0], dtype=bool)
    if x.shape[0] == 0:
        return out
    threshold = level * scale
    for v in x.T:
        hot = np.abs(v) >= threshold
        if not hot.any():
            continue
        joined = np.zeros(len(v), dtype=bool)  # same run as the sample before
        joined[1:] = hot[1:] & hot[:-1] & (v[1:] == v[:-1])
        run = np.cumsum(~joined) - 1
        out |= hot & (np.bincount(run)[run] >= min_run)
    return out


def clipped_fraction(data: np.ndarray, scale: float = 1.0) -> float:
    """The fraction of frames of ``data`` (as stored) in a clipped flat top, 0..1."""
    mask = clipped_frames(data, scale)
    return float(mask.mean()) if mask.size else 0.0


def resample(x: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling of a 1-D (or [..., T]) float tensor."""
    if int(orig_rate) == int(new_rate):
        return x
    g = math.gcd(int(orig_rate), int(new_rate))
    return AF.resample(x, int(orig_rate) // g, int(new_rate) // g)


def load_audio(path: str | Path, sample_rate: int = 16000) -> torch.Tensor:
    """The file as a 1-D float32 mono tensor at ``sample_rate`` (channels averaged)."""
    data, sr = read_audio(path)
    return to_mono(data, sr, sample_rate)


def to_mono(data: np.ndarray, sr: int, sample_rate: int = 16000) -> torch.Tensor:
    """Samples as read ([frames, channels], at ``sr``) as a 1-D float32 tensor at ``sample_rate``."""
    mono = data.mean(axis=1, dtype=np.float64).astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(mono))
    x = resample(x, sr, sample_rate)
    return x.contiguous().to(torch.float32)


def peak(x: torch.Tensor) -> float:
    return float(x.abs().max()) if x.numel() else 0.0


def is_silent(x: torch.Tensor, threshold: float = SILENCE_PEAK) -> bool:
    return peak(x) < threshold


def check_usable(x: torch.Tensor, sample_rate: int, min_seconds: float = 0.0) -> None:
    """Raise AudioError (``silent`` / ``too short: ...``) unless ``x`` is usable speech."""
    if is_silent(x):
        raise AudioError("silent")
    duration = x.shape[-1] / float(sample_rate)
    if duration < min_seconds:
        raise AudioError(f"too short: {duration:.2f} s < {min_seconds:.2f} s")


def trim_bounds(x: torch.Tensor, threshold_db: float = -40.0, frame: int = 320) -> tuple[int, int]:
    """``(start, end)`` sample bounds of the non-silent part, both multiples of ``frame``
    (``end`` may be ``len(x)``). A frame is silent when its peak is more than
    ``-threshold_db`` dB below the peak of the whole signal. ``(0, 0)`` for a silent signal.
    """
    n = int(x.shape[-1])
    p = peak(x)
    if n == 0 or p <= 0.0:
        return 0, 0
    level = p * (10.0 ** (threshold_db / 20.0))
    num_frames = -(-n // frame)
    padded = torch.zeros(num_frames * frame, dtype=x.dtype)
    padded[:n] = x.abs()
    loud = (padded.view(num_frames, frame).amax(dim=1) >= level).nonzero().flatten()
    if loud.numel() == 0:
        return 0, 0
    start = int(loud[0]) * frame
    end = min(n, (int(loud[-1]) + 1) * frame)
    return start, end


def trim_silence(x: torch.Tensor, threshold_db: float = -40.0, frame: int = 320) -> torch.Tensor:
    """``x`` without its leading and trailing silence (whole frames, see :func:`trim_bounds`)."""
    start, end = trim_bounds(x, threshold_db, frame)
    return x[start:end]


def normalise_level(x: torch.Tensor, target_dbfs: float = -20.0, peak_limit: float = 0.99) -> torch.Tensor:
    """Scale to ``target_dbfs`` RMS, then down (if needed) so the peak is at most ``peak_limit``."""
    if x.numel() == 0:
        return x
    x64 = x.to(torch.float64)
    rms = float(torch.sqrt(torch.mean(x64 * x64)))
    if rms <= 0.0:
        return x.clone()
    gain = (10.0 ** (target_dbfs / 20.0)) / rms
    p = float(x64.abs().max()) * gain
    if p > peak_limit:
        gain *= peak_limit / p
    return (x64 * gain).to(torch.float32)


def save_wav(path: str | Path, x: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM WAV atomically (a temporary file in the same folder, then rename).

    Float input is clipped to [-1, 1] and scaled by 32767; int16 input is written as is.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if data.dtype != np.int16:
        data = np.clip(data.astype(np.float64), -1.0, 1.0)
        data = np.round(data * 32767.0).astype(np.int16)
    buffer = io.BytesIO()  # libsndfile would hide a write failure's cause: write the bytes ourselves
    sf.write(buffer, data, int(sample_rate), subtype="PCM_16", format="WAV")
    atomic_write_bytes(path, buffer.getvalue())


def save_labels(path: str | Path, labels: np.ndarray) -> None:
    """``np.save`` of int16 labels, atomically (the bytes depend only on the values)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(labels, dtype=np.int16), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
