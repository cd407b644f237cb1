"""Offline speech synthesis with eSpeak NG through ctypes.

The library and its voice data come from the PyPI package ``espeakng-loader``. The binding
follows eSpeak NG's public header ``speak_lib.h`` (API revision 12): synchronous output, a
synth callback that collects the 16-bit samples and the events, and phoneme events
(``espeakINITIALIZE_PHONEME_EVENTS``) whose eSpeak mnemonic (e.g. ``aI``, ``_:``) gives the
frame labels of the built-in corpus.

eSpeak keeps global state, so the library is initialised once per process and calls are
serialised by a lock. Its wave generator also carries state from one utterance to the next
(glottal phase, flutter index, echo buffer), so the same text synthesised twice in one
process differs by a few samples. To make synthesis a pure function of its inputs, each call
runs in a child forked from the initialised, never-used instance (on platforms without
``fork`` it runs in-process and only the first call of a process is reproducible); eSpeak's
random seed is also reset before each call.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np

# --- constants of speak_lib.h -------------------------------------------------------------
AUDIO_OUTPUT_PLAYBACK = 0
AUDIO_OUTPUT_RETRIEVAL = 1
AUDIO_OUTPUT_SYNCHRONOUS = 2

espeakINITIALIZE_PHONEME_EVENTS = 0x0001
espeakINITIALIZE_PHONEME_IPA = 0x0002
espeakINITIALIZE_DONT_EXIT = 0x8000

espeakEVENT_LIST_TERMINATED = 0
espeakEVENT_WORD = 1
espeakEVENT_SENTENCE = 2
espeakEVENT_MARK = 3
espeakEVENT_PLAY = 4
espeakEVENT_END = 5
espeakEVENT_MSG_TERMINATED = 6
espeakEVENT_PHONEME = 7
espeakEVENT_SAMPLERATE = 8

POS_CHARACTER = 1

espeakCHARS_AUTO = 0
espeakCHARS_UTF8 = 1
espeakENDPAUSE = 0x1000

espeakRATE = 1
espeakVOLUME = 2
espeakPITCH = 3
espeakRANGE = 4
espeakPUNCTUATION = 5
espeakWORDGAP = 7

EE_OK = 0

espeakRATE_MINIMUM = 80
espeakRATE_MAXIMUM = 450


_CAN_FORK = hasattr(os, "fork")


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),  # WORD and SENTENCE events
        ("name", ctypes.c_char_p),  # MARK and PLAY events
        ("string", ctypes.c_char * 8),  # PHONEME events: mnemonic, NUL-terminated unless 8 bytes
    ]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds into the output
        ("sample", ctypes.c_int),  # sample index into the output ("internal use")
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


class EspeakError(RuntimeError):
    """eSpeak NG could not be loaded or refused a request."""


@dataclass
class SynthResult:
    """One synthesised utterance: mono float32 audio in [-1, 1] and its phoneme onsets."""

    audio: np.ndarray
    sample_rate: int
    phonemes: list[tuple[int, str]] = field(default_factory=list)  # (start sample, mnemonic)


class _Engine:
    """The process-wide eSpeak NG instance (created lazily, once)."""

    _instance: "_Engine | None" = None
    _create_lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        try:
            self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as exc:  # pragma: no cover - depends on the installation
            raise EspeakError(f"cannot load eSpeak NG: {exc}") from exc
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint),
                                     ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int

        data_path = espeakng_loader.get_data_path()
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(),
                                     espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (data path {data_path})")
        self.sample_rate = int(rate)
        self.data_path = data_path
        self.lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, str]] = []
        # Keep a reference to the callback object: eSpeak holds only the C pointer.
        self._callback = _CALLBACK(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)
        self._set_rand_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_rand_seed is not None:
            self._set_rand_seed.argtypes = [ctypes.c_long]
            self._set_rand_seed.restype = None
        try:
            self._libc = ctypes.CDLL(None)
            self._libc.srand.argtypes = [ctypes.c_uint]
        except (OSError, AttributeError):  # pragma: no cover
            self._libc = None

    @classmethod
    def get(cls) -> "_Engine":
        with cls._create_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_synth(self, wav, numsamples, events) -> int:
        if wav and numsamples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        if events:
            i = 0
            while True:
                ev = events[i]
                if ev.type == espeakEVENT_LIST_TERMINATED:
                    break
                if ev.type == espeakEVENT_PHONEME:
                    raw = bytes(ev.id.string).split(b"\0", 1)[0]
                    name = raw.decode("utf-8", errors="replace")
                else:
                    name = ""
                self._events.append((ev.type, ev.audio_position, ev.sample, name))
                i += 1
        return 0

    def _run(self, text: str, voice: str, pitch: int, pitch_range: int, rate: int,
             word_gap: int) -> tuple[np.ndarray, list[tuple[int, int, int, str]]]:
        """Synthesise in this process (changes eSpeak's internal wave-generator state)."""
        lib = self.lib
        if lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
            raise EspeakError(f"eSpeak NG has no voice {voice!r}")
        for param, value in ((espeakRATE, rate), (espeakPITCH, pitch), (espeakRANGE, pitch_range),
                             (espeakWORDGAP, word_gap), (espeakVOLUME, 100)):
            if lib.espeak_SetParameter(param, int(value), 0) != EE_OK:
                raise EspeakError(f"espeak_SetParameter({param}, {value}) failed")
        self._chunks = []
        self._events = []
        if self._set_rand_seed is not None:
            self._set_rand_seed(1)
        if self._libc is not None:
            self._libc.srand(1)
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        err = lib.espeak_Synth(buf, len(data), 0, POS_CHARACTER, 0, espeakCHARS_AUTO | espeakENDPAUSE,
                               None, None)
        if err != EE_OK:
            raise EspeakError(f"espeak_Synth failed with code {err}")
        lib.espeak_Synchronize()
        chunks, events = self._chunks, self._events
        self._chunks, self._events = [], []
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return pcm.astype(np.int16, copy=False), events

    def _run_isolated(self, *args) -> tuple[np.ndarray, list[tuple[int, int, int, str]]]:
        """Synthesise in a forked child, so that every call starts from the pristine state.

        eSpeak's wave generator keeps state between calls (glottal phase, flutter index, echo
        buffer), so the same text synthesised twice in one process differs by a few samples.
        A child forked from this never-used instance always starts from the same state.
        """
        rfd, wfd = os.pipe()
        with warnings.catch_warnings():
            # Python >= 3.12 warns about fork() in a process with threads (torch's); the child
            # only runs eSpeak and writes to a pipe, then _exit()s.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                os.close(rfd)
                try:
                    payload = pickle.dumps(("ok", self._run(*args)), protocol=pickle.HIGHEST_PROTOCOL)
                except BaseException as exc:  # noqa: BLE001 - reported to the parent
                    payload = pickle.dumps(("error", f"{type(exc).__name__}: {exc}"))
                    code = 1
                view = memoryview(payload)
                while view:
                    n = os.write(wfd, view)
                    view = view[n:]
                os.close(wfd)
            finally:
                os._exit(code)
        os.close(wfd)
        parts = []
        with os.fdopen(rfd, "rb") as f:
            while True:
                block = f.read(1 << 20)
                if not block:
                    break
                parts.append(block)
        os.waitpid(pid, 0)
        if not parts:
            raise EspeakError("eSpeak NG synthesis process died without a result")
        status, value = pickle.loads(b"".join(parts))
        if status != "ok":
            raise EspeakError(value)
        return value

    def synthesize(self, text: str, voice: str, pitch: int, pitch_range: int, rate: int,
                   word_gap: int = 0) -> SynthResult:
        args = (text, voice, int(pitch), int(pitch_range), int(rate), int(word_gap))
        with self.lock:
            if _CAN_FORK:
                pcm, events = self._run_isolated(*args)
            else:  # pragma: no cover - Windows: deterministic only for the first call
                pcm, events = self._run(*args)
        audio = (pcm.astype(np.float32) / 32768.0).astype(np.float32)
        sr = self.sample_rate
        phonemes: list[tuple[int, str]] = []
        for etype, ms, sample, name in events:
            if etype != espeakEVENT_PHONEME:
                continue
            # ``sample`` is the exact sample index; fall back to the millisecond position if
            # it disagrees (builds that leave it unset).
            if abs(sample - ms * sr / 1000.0) <= sr / 500.0:
                start = sample
            else:
                start = int(round(ms * sr / 1000.0))
            phonemes.append((int(start), name))
        return SynthResult(audio=audio, sample_rate=sr, phonemes=phonemes)


class Synthesizer:
    """``Synthesizer().synthesize(text, voice, pitch, pitch_range, rate)`` -> :class:`SynthResult`.

    ``voice`` is an eSpeak voice name, optionally with a variant (``en-us+f2``);
    ``pitch`` and ``pitch_range`` are espeakPITCH / espeakRANGE (0..100), ``rate`` is
    espeakRATE in words per minute (80..450).
    """

    def __init__(self) -> None:
        self._engine = _Engine.get()

    @property
    def sample_rate(self) -> int:
        return self._engine.sample_rate

    @property
    def data_path(self) -> str:
        return self._engine.data_path

    def synthesize(self, text: str, voice: str = "en", pitch: int = 50, pitch_range: int = 50,
                   rate: int = 175, word_gap: int = 0) -> SynthResult:
        return self._engine.synthesize(text, voice, pitch, pitch_range, rate, word_gap)


def variant_names() -> list[str]:
    """Sorted names of the voice variants shipped in the data path's ``voices/!v`` folder."""
    import os

    import espeakng_loader

    folder = os.path.join(espeakng_loader.get_data_path(), "voices", "!v")
    try:
        return sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n)))
    except OSError:
        return []
