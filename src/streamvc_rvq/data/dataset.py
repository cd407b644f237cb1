"""Training-side access to a prepared corpus: utterances in memory and deterministic batches.

A batch is a pure function of ``(seed, step)`` and the utterance list: ``sample_batch`` draws
from a ``torch.Generator`` seeded from ``(seed, step)`` only, so resuming training at step
``s`` sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch


@dataclass
class Utterance:
    utterance_id: str
    speaker: str
    split: str
    audio: torch.Tensor  # [T] float32 at the corpus sample rate
    labels: torch.Tensor | None  # [T // hop] int64, or None
    text: str = ""
    path: str = ""

    @property
    def num_frames_audio(self) -> int:
        return int(self.audio.shape[-1])


@dataclass
class Batch:
    source: torch.Tensor  # [B, (context_frames + crop_frames) * hop] float32
    reference: torch.Tensor  # [B, crop_frames * hop] float32, same speakers, other utterances
    labels: torch.Tensor | None  # [B, context_frames + crop_frames] int64, or None
    lengths: torch.Tensor  # [B] int64: frames of real audio in each source (the rest is padding)
    speakers: list[str]
    utterance_ids: list[str]
    reference_ids: list[str]
    context_frames: int = 0  # leading frames of each source that are run but not scored


def read_manifest(manifest_path: str | Path) -> list[dict]:
    with open(manifest_path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def corpus_audio(path: str | Path) -> torch.Tensor:
    """A prepared corpus file (16 kHz) as a 1-D float32 tensor, channels averaged."""
    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]))


def load_utterances(manifest_path: str | Path, split: str | Iterable[str] | None = None,
                    labels: str | Path | None = "manifest", max_utterances: int | None = None) -> list[Utterance]:
    """The utterances of ``split`` (a name, several names, or None for all), sorted by id,
    with audio as float32 tensors and labels as int64 tensors.

    ``labels``: ``"manifest"`` (the corpus's own label files, None where there are none), the
    path of a ``frame_labels.npz`` (:mod:`~streamvc_rvq.data.content_labels`), or None (no labels).
    ``max_utterances``: read only that many, evenly spaced over the split's sorted rows.
    """
    manifest_path = Path(manifest_path)
    base = manifest_path.parent
    wanted = None if split is None else ({split} if isinstance(split, str) else set(split))
    table = None
    if labels is not None and str(labels) != "manifest":
        from .content_labels import LabelError, load_frame_labels

        table, _ = load_frame_labels(Path(labels))
    rows = sorted((r for r in read_manifest(manifest_path) if wanted is None or r["split"] in wanted),
                  key=lambda r: r["utterance_id"])
    if max_utterances is not None and len(rows) > max_utterances:
        rows = [rows[i * len(rows) // max_utterances] for i in range(max_utterances)]
    out = []
    for row in rows:
        audio = corpus_audio(base / row["path"])
        lab = None
        if table is not None:
            if row["utterance_id"] not in table:
                raise LabelError(f"{labels} has no labels for utterance {row['utterance_id']}: "
                                 f"it was made from another manifest; rebuild it")
            lab = torch.from_numpy(table[row["utterance_id"]].astype(np.int64))
        elif labels is not None and row.get("labels_path"):
            lab = torch.from_numpy(np.load(base / row["labels_path"]).astype(np.int64))
        out.append(Utterance(utterance_id=row["utterance_id"], speaker=row["speaker"],
                             split=row["split"], audio=audio, labels=lab,
                             text=row.get("text", ""), path=row["path"]))
    return out


def batch_generator(seed: int, step: int, stream: str = "batch") -> torch.Generator:
    """A CPU generator seeded from ``(stream, seed, step)`` alone; other streams (k-means
    initialisation batches) never repeat a training batch."""
    digest = hashlib.sha256(f"{stream}:{int(seed)}:{int(step)}".encode()).digest()
    g = torch.Generator(device="cpu")
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


def _randint(g: torch.Generator, high: int) -> int:
    return int(torch.randint(0, max(1, int(high)), (1,), generator=g))


def _crop(u: Utterance, start_frame: int, crop_frames: int, hop: int,
          with_labels: bool) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """(audio, labels, frames of real audio) of a crop, zero-padded on the right."""
    n = crop_frames * hop
    a = u.audio[start_frame * hop:start_frame * hop + n]
    audio = torch.zeros(n, dtype=torch.float32)
    audio[:a.shape[0]] = a
    labels = None
    if with_labels:
        lab = u.labels[start_frame:start_frame + crop_frames]
        labels = torch.zeros(crop_frames, dtype=torch.int64)
        labels[:lab.shape[0]] = lab
    return audio, labels, min(crop_frames, a.shape[0] // hop)


def sample_batch(utterances: Sequence[Utterance], seed: int, step: int, batch_size: int,
                 crop_frames: int, hop_length: int, context_frames: int = 0,
                 stream: str = "batch") -> Batch:
    """A batch of ``batch_size`` sources of ``context_frames + crop_frames`` frames, a pure
    function of ``(utterances, seed, step, stream)``.

    Each source is a random utterance and a random window starting on a frame boundary at or
    after the utterance's start: its first ``context_frames`` frames are the left context the
    model runs but does not score (the valid-frames rule), so every scored frame has real
    audio in its receptive field. Its reference is a ``crop_frames`` crop of another
    utterance of the same speaker (the same one only if the speaker has no other). Short
    utterances are zero-padded on the right (labels with 0 = silence) and ``lengths`` says
    where their audio ends. ``labels`` is None when any utterance of the list has no labels.
    """
    if not utterances:
        raise ValueError("sample_batch needs at least one utterance")
    g = batch_generator(seed, step, stream)
    window = context_frames + crop_frames
    hop = int(hop_length)
    with_labels = all(u.labels is not None for u in utterances)
    by_speaker: dict[str, list[int]] = {}
    for i, u in enumerate(utterances):
        by_speaker.setdefault(u.speaker, []).append(i)

    def start_of(u: Utterance, frames_wanted: int) -> int:
        frames = u.num_frames_audio // hop
        return _randint(g, frames - frames_wanted + 1)

    src, ref, labs, spks, ids, ref_ids, lengths = [], [], [], [], [], [], []
    for _ in range(batch_size):
        i = _randint(g, len(utterances))
        u = utterances[i]
        a, lab, length = _crop(u, start_of(u, window), window, hop, with_labels)
        others = [j for j in by_speaker[u.speaker] if j != i]
        j = others[_randint(g, len(others))] if others else i
        r, _, _ = _crop(utterances[j], start_of(utterances[j], crop_frames), crop_frames, hop, False)
        lengths.append(length)
        src.append(a)
        ref.append(r)
        labs.append(lab)
        spks.append(u.speaker)
        ids.append(u.utterance_id)
        ref_ids.append(utterances[j].utterance_id)
    return Batch(source=torch.stack(src), reference=torch.stack(ref),
                 labels=torch.stack(labs) if with_labels else None,
                 lengths=torch.tensor(lengths, dtype=torch.int64), speakers=spks,
                 utterance_ids=ids, reference_ids=ref_ids, context_frames=context_frames)
