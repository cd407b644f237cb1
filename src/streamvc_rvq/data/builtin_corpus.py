"""The built-in corpus: multi-speaker English speech synthesised offline with eSpeak NG.

A speaker is a distinct combination of an English accent voice (``en``, ``en-us``,
``en-gb-x-rp``, ...), a voice variant from the data path's ``voices/!v`` folder (``m1``..``m8``,
``f1``..``f5`` and a few named ones, alternating male and female), a base pitch
(espeakPITCH), a pitch range (espeakRANGE) and a speaking rate (espeakRATE, words/min), all
drawn by a seeded RNG. Utterances go round-robin over the speakers, each speaking the next
of ``num_sentences`` distinct sentences (a seeded permutation), until ``minutes`` of audio
exist and every speaker has at least two utterances. Each is synthesised, resampled to
16 kHz, level-normalised and saved as ``audio/{speaker}/{utt_id}.wav`` with its phoneme
frame labels in ``labels/{speaker}/{utt_id}.npy``.

Every utterance is a pure function of its settings (see ``espeak.py``), and the cut-off at
``minutes`` is taken in utterance order, so the files are byte-identical whatever the number
of worker processes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .audio import normalise_level, resample, save_labels, save_wav
from .espeak import Synthesizer, variant_names
from .labels import VOCABULARY, frame_labels
from .sentences import sentences

ACCENTS = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc",
           "en-gb-x-gbclan", "en-gb-x-gbcwmd")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Andy", "john", "robert",
                 "quincy", "ian")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "Annie", "belinda", "steph", "anika", "aunty")

LEAD_SILENCE_S = 0.1  # silence put before each utterance (eSpeak starts speaking at ~13 ms)
MIN_UTTERANCES_PER_SPEAKER = 2  # a reference utterance needs another one of the same speaker


@dataclass(frozen=True)
class Speaker:
    name: str
    voice: str  # accent+variant, as given to espeak_SetVoiceByName
    pitch: int  # espeakPITCH 0..100
    pitch_range: int  # espeakRANGE 0..100
    rate: int  # espeakRATE, words per minute


@dataclass(frozen=True)
class UtteranceTask:
    index: int
    utterance_id: str
    speaker: Speaker
    text: str


@dataclass
class UtteranceResult:
    index: int
    utterance_id: str
    speaker: str
    text: str
    audio: np.ndarray  # int16 PCM, as stored
    labels: np.ndarray  # int16, one per hop


def _spread(rng: random.Random, n: int, lo: float, hi: float) -> list[int]:
    """``n`` integers evenly spread over [lo, hi] (stratified jitter), in random order."""
    if n == 1:
        return [int(round((lo + hi) / 2))]
    step = (hi - lo) / n
    values = [int(round(lo + step * (i + rng.random()))) for i in range(n)]
    rng.shuffle(values)
    return values


def make_speakers(num_speakers: int, seed: int) -> list[Speaker]:
    """``num_speakers`` distinct synthetic speakers, a pure function of the arguments."""
    available = set(variant_names())
    males = [v for v in MALE_VARIANTS if v in available] or ["m1"]
    females = [v for v in FEMALE_VARIANTS if v in available] or ["f1"]
    rng = random.Random(f"speakers:{seed}")
    rng.shuffle(males)
    rng.shuffle(females)
    variants: list[str] = []
    for i in range(max(len(males), len(females))):
        if i < len(males):
            variants.append(males[i])
        if i < len(females):
            variants.append(females[i])
    accents = list(ACCENTS)
    rng.shuffle(accents)
    pitches = _spread(rng, num_speakers, 20, 80)
    ranges = _spread(rng, num_speakers, 25, 95)
    rates = _spread(rng, num_speakers, 135, 205)
    width = max(2, len(str(num_speakers - 1)))
    out = []
    for i in range(num_speakers):
        # i mod len(variants) and i mod len(accents) give distinct pairs up to their lcm.
        voice = f"{accents[i % len(accents)]}+{variants[i % len(variants)]}"
        out.append(Speaker(name=f"s{i:0{width}d}", voice=voice, pitch=pitches[i],
                           pitch_range=ranges[i], rate=rates[i]))
    return out


def plan(speakers: list[Speaker], texts: list[str], seed: int) -> Iterator[UtteranceTask]:
    """The endless, deterministic sequence of utterances: round-robin speakers, permuted texts."""
    order = list(range(len(texts)))
    random.Random(f"sentences:{seed}").shuffle(order)
    k = 0
    while True:
        spk = speakers[k % len(speakers)]
        n = k // len(speakers)
        yield UtteranceTask(index=k, utterance_id=f"{spk.name}_{n:04d}", speaker=spk,
                            text=texts[order[k % len(texts)]])
        k += 1


# --- worker side ------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _worker_init() -> None:
    torch.set_num_threads(1)
    _WORKER.clear()


def synthesize_utterance(task: UtteranceTask, sample_rate: int = 16000,
                         hop_length: int = 320) -> UtteranceResult:
    """Synthesise one utterance at ``sample_rate`` with its frame labels."""
    synth = _WORKER.get("synth")
    if synth is None:
        synth = _WORKER["synth"] = Synthesizer()
    spk = task.speaker
    res = synth.synthesize(task.text, spk.voice, spk.pitch, spk.pitch_range, spk.rate)
    lead = int(round(LEAD_SILENCE_S * res.sample_rate))
    raw = np.concatenate([np.zeros(lead, dtype=np.float32), res.audio])
    events = [(s + lead, m) for s, m in res.phonemes]
    x = resample(torch.from_numpy(raw), res.sample_rate, sample_rate)
    x = normalise_level(x)
    # Quantise here (the WAV file stores exactly these samples).
    audio = (torch.clamp(x, -1.0, 1.0).numpy() * 32767.0).round().astype(np.int16)
    labels = frame_labels(events, len(audio), sample_rate, hop_length, VOCABULARY,
                          event_sample_rate=res.sample_rate)
    return UtteranceResult(index=task.index, utterance_id=task.utterance_id, speaker=spk.name,
                           text=task.text, audio=audio, labels=labels)


def _call(args):
    fn, item = args
    return fn(item)


def parallel_map(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """``map(fn, items)`` in order, over ``workers`` forked processes when > 1."""
    items = list(items)
    if workers <= 1 or len(items) <= 1 or "fork" not in mp.get_all_start_methods():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for item in items:
                yield fn(item)
        finally:
            torch.set_num_threads(threads)
        return
    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap(_call, [(fn, item) for item in items], chunksize=1)


class Progress:
    """Progress lines on stderr, at most one every ``every`` seconds (and a last one)."""

    def __init__(self, label: str, every: float = 2.0, stream=None) -> None:
        self.label = label
        self.every = every
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.monotonic()
        self.last = -1e9

    def update(self, done: int, total: int, detail: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.start
        total = max(total, done, 1)
        eta = elapsed / done * (total - done) if done else float("nan")
        eta_s = f"{eta:.0f} s" if eta == eta else "?"
        width = len(str(total))
        print(f"[{done:{width}d}/{total}] {100 * done // total:3d}%  {self.label} {detail} "
              f"elapsed {elapsed:.0f} s, ETA {eta_s}", file=self.stream, flush=True)


def build_builtin_corpus(cfg: dict, out_dir: Path, sample_rate: int = 16000, hop_length: int = 320,
                         workers: int | None = None, progress: bool = True) -> dict:
    """Synthesise the corpus into ``out_dir``; returns ``{"utterances": [...], "speakers": [...],
    "rejected": []}`` with one dict per utterance (utterance_id, speaker, path, labels_path,
    num_samples, text), paths relative to ``out_dir``.
    """
    seed = int(cfg.get("seed", 1234))
    b = cfg.get("builtin", {}) or {}
    num_speakers = int(b.get("num_speakers", 28))
    num_sentences = int(b.get("num_sentences", 400))
    target_s = float(b.get("minutes", 48)) * 60.0
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    out_dir = Path(out_dir)

    speakers = make_speakers(num_speakers, seed)
    texts = sentences(num_sentences, seed)
    tasks = plan(speakers, texts, seed)
    min_utts = MIN_UTTERANCES_PER_SPEAKER * num_speakers
    prog = Progress("synthesising") if progress else None

    records: list[dict] = []
    total_s = 0.0
    chunk = max(8, 8 * workers)
    done = False
    fn = _UttFn(sample_rate, hop_length)
    while not done:
        batch = [next(tasks) for _ in range(chunk)]
        for res in parallel_map(fn, batch, workers):
            if total_s >= target_s and len(records) >= min_utts:
                done = True  # the rest of this chunk is not used
                continue
            spk = res.speaker
            wav_rel = f"audio/{spk}/{res.utterance_id}.wav"
            lab_rel = f"labels/{spk}/{res.utterance_id}.npy"
            save_wav(out_dir / wav_rel, res.audio, sample_rate)
            save_labels(out_dir / lab_rel, res.labels)
            n = len(res.audio)
            total_s += n / sample_rate
            records.append({"utterance_id": res.utterance_id, "speaker": spk, "path": wav_rel,
                            "labels_path": lab_rel, "num_samples": n, "text": res.text})
            if prog is not None:
                k = len(records)
                est = max(min_utts, int(np.ceil(k * target_s / max(total_s, 1e-9))))
                prog.update(k, est, f"speaker {spk}")
        if total_s >= target_s and len(records) >= min_utts:
            done = True
    if prog is not None:
        prog.update(len(records), len(records), f"{total_s / 60:.1f} min", force=True)
    return {"utterances": records, "speakers": [asdict(s) for s in speakers], "rejected": []}


class _UttFn:
    """Picklable ``task -> UtteranceResult`` for the pool."""

    def __init__(self, sample_rate: int, hop_length: int) -> None:
        self.sample_rate = sample_rate
        self.hop_length = hop_length

    def __call__(self, task: UtteranceTask) -> UtteranceResult:
        return synthesize_utterance(task, self.sample_rate, self.hop_length)
