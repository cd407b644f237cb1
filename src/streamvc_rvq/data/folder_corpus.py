"""A user corpus: a folder of audio files grouped by speaker (VCTK, LibriTTS, any layout).

Every file under ``root`` whose extension is one of ``extensions`` (case-insensitive) is a
candidate. Its speaker is the first group of ``speaker_regex`` matched against its path
relative to ``root`` (with ``/`` separators). Usable files are read at any sample rate,
channel count and bit depth, mixed down to mono, resampled to 16 kHz, trimmed of leading
and trailing silence, level-normalised and saved as ``audio/{speaker}/{utt_id}.wav``. A
``<stem>.labels.npy`` next to a file (one integer label per 20 ms frame of the original
file) is cut to the trimmed part and saved as ``labels/{speaker}/{utt_id}.npy``; a
``<stem>.normalized.txt`` / ``<stem>.txt`` next to it gives the text.

Every candidate not used is returned as rejected with a one-line reason; one bad file never
stops the others.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import (AudioError, check_usable, load_audio, normalise_level, save_labels, save_wav,
                    trim_bounds)
from .builtin_corpus import Progress, parallel_map

LABEL_SUFFIX = ".labels.npy"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_LABEL_TOLERANCE_FRAMES = 2


class FolderError(ValueError):
    """The folder itself cannot be used (missing root, bad regex); one readable line."""


@dataclass(frozen=True)
class Candidate:
    rel: str  # path relative to root, '/' separators
    speaker: str | None
    utterance_id: str


def _safe(name: str) -> str:
    s = _SAFE.sub("_", name).strip("._")
    return s or "x"


def find_candidates(root: Path, extensions: list[str], speaker_regex: str) -> list[Candidate]:
    """The audio candidates under ``root``, sorted by relative path."""
    exts = {e.lower().lstrip(".") for e in extensions}
    try:
        pattern = re.compile(speaker_regex)
    except re.error as exc:
        raise FolderError(f"corpus.folder.speaker_regex {speaker_regex!r} is not a valid "
                          f"regular expression: {exc}") from exc
    if pattern.groups < 1:
        raise FolderError(f"corpus.folder.speaker_regex {speaker_regex!r} has no group; "
                          "its first group must capture the speaker")
    rels: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in filenames:
            if name.lower().endswith(LABEL_SUFFIX):
                continue
            ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            if ext in exts:
                rels.append(Path(dirpath, name).relative_to(root).as_posix())
    rels.sort()

    def stem_of(rel: str) -> str:
        name = rel.rsplit("/", 1)[-1]
        return name.rsplit(".", 1)[0] if "." in name else name

    stems: dict[str, int] = {}
    for rel in rels:
        s = _safe(stem_of(rel))
        stems[s] = stems.get(s, 0) + 1
    out: list[Candidate] = []
    used: set[str] = set()
    for rel in rels:
        m = pattern.search(rel)
        speaker = _safe(m.group(1)) if m and m.group(1) else None
        uid = _safe(stem_of(rel))
        if stems[uid] > 1:  # the stem alone is ambiguous: use the whole path
            uid = _safe(rel.replace("/", "__"))
        base, n = uid, 1
        while uid in used:
            n += 1
            uid = f"{base}_{n}"
        used.add(uid)
        out.append(Candidate(rel=rel, speaker=speaker, utterance_id=uid))
    return out


def _wav_truncation(path: Path) -> str | None:
    """A reason if a RIFF/WAVE file is shorter than its header says, else None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            declared = int.from_bytes(head[4:8], "little") + 8
            if declared in (8, 0xFFFFFFFF + 8) or declared <= size:
                return None  # unknown length (streamed) or complete
            # Walk the chunks up to 'data' and compare its declared size with what is there.
            pos = 12
            while True:
                f.seek(pos)
                hdr = f.read(8)
                if len(hdr) < 8:
                    return None
                cid, clen = hdr[:4], int.from_bytes(hdr[4:8], "little")
                if cid == b"data":
                    have = size - (pos + 8)
                    if clen > have:
                        return (f"truncated: the header declares {clen} bytes of audio, "
                                f"the file holds {max(have, 0)}")
                    return None
                pos += 8 + clen + (clen & 1)
    except OSError:
        return None


def _read_text(path: Path) -> str:
    stem = path.name.rsplit(".", 1)[0]
    for suffix in (".normalized.txt", ".txt", ".original.txt"):
        p = path.with_name(stem + suffix)
        if p.is_file():
            try:
                return " ".join(p.read_text(encoding="utf-8", errors="replace").split())
            except OSError:
                return ""
    return ""


class _Ingest:
    """Picklable ``Candidate -> (candidate, result | reason)``."""

    def __init__(self, root: Path, out_dir: Path, sample_rate: int, hop_length: int,
                 min_seconds: float) -> None:
        self.root = root
        self.out_dir = out_dir
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.min_seconds = min_seconds

    def __call__(self, cand: Candidate):
        try:
            return cand, self._ingest(cand)
        except AudioError as exc:
            return cand, exc.reason
        except Exception as exc:  # never let one file stop the corpus
            return cand, "unreadable: " + " ".join(f"{type(exc).__name__}: {exc}".split())

    def _ingest(self, cand: Candidate):
        if cand.speaker is None:
            return "no speaker in path"
        path = self.root / cand.rel
        truncated = _wav_truncation(path)
        if truncated:
            return truncated
        x = load_audio(path, self.sample_rate)
        sr, hop = self.sample_rate, self.hop_length
        check_usable(x, sr)  # silent
        orig_frames = len(x) // hop
        start, end = trim_bounds(x, -40.0, hop)
        y = x[start:end]
        check_usable(y, sr, self.min_seconds)  # too short once trimmed
        y = normalise_level(y)
        labels = None
        lab_path = path.with_name(path.name.rsplit(".", 1)[0] + LABEL_SUFFIX)
        if lab_path.is_file():
            try:
                raw = np.load(lab_path, allow_pickle=False)
            except Exception as exc:  # noqa: BLE001
                return f"unreadable labels {lab_path.name}: " + " ".join(str(exc).split())
            raw = np.asarray(raw).reshape(-1)
            if raw.dtype.kind not in "iu" or (raw.size and (raw.min() < 0 or raw.max() > 32767)):
                return f"bad labels {lab_path.name}: need integers in 0..32767"
            if abs(len(raw) - orig_frames) > _LABEL_TOLERANCE_FRAMES:
                return (f"bad labels {lab_path.name}: {len(raw)} frames for "
                        f"{orig_frames} frames of audio")
            full = np.zeros(orig_frames + 1, dtype=np.int16)
            n = min(len(raw), len(full))
            full[:n] = raw[:n]
            f0 = start // hop
            labels = full[f0:f0 + len(y) // hop]
        spk = cand.speaker
        wav_rel = f"audio/{spk}/{cand.utterance_id}.wav"
        save_wav(self.out_dir / wav_rel, y, sr)
        lab_rel = ""
        if labels is not None:
            lab_rel = f"labels/{spk}/{cand.utterance_id}.npy"
            save_labels(self.out_dir / lab_rel, labels)
        return {"utterance_id": cand.utterance_id, "speaker": spk, "path": wav_rel,
                "labels_path": lab_rel, "num_samples": int(len(y)), "text": _read_text(path)}


def build_folder_corpus(cfg: dict, out_dir: Path, sample_rate: int = 16000, hop_length: int = 320,
                        workers: int | None = None, progress: bool = True) -> dict:
    """Ingest ``cfg['folder']['root']`` into ``out_dir``. Returns ``{"utterances": [...],
    "rejected": [{"path", "reason"}], "root": str}``; rejected paths are relative to root.
    """
    folder = cfg.get("folder", {}) or {}
    root_s = folder.get("root")
    if not root_s:
        raise FolderError("corpus.folder.root is not set (corpus.type is folder)")
    root = Path(root_s).expanduser().resolve()
    if not root.is_dir():
        raise FolderError(f"corpus.folder.root {root} is not a directory")
    out_res = Path(out_dir).resolve()
    if out_res == root or root in out_res.parents or out_res in root.parents:
        raise FolderError(f"the corpus output folder {out_res} and corpus.folder.root {root} "
                          "must not contain one another")
    extensions = list(folder.get("extensions", ["wav", "flac"]))
    regex = folder.get("speaker_regex", "^([^/]+)/")
    min_seconds = float(cfg.get("min_seconds", 0.5))
    if workers is None:
        workers = min(2, os.cpu_count() or 1)

    cands = find_candidates(root, extensions, regex)
    fn = _Ingest(root, Path(out_dir), sample_rate, hop_length, min_seconds)
    prog = Progress("reading") if progress else None
    utterances, rejected = [], []
    for k, (cand, result) in enumerate(parallel_map(fn, cands, workers), 1):
        if isinstance(result, dict):
            utterances.append(result)
        else:
            rejected.append({"path": cand.rel, "reason": result})
        if prog is not None:
            prog.update(k, len(cands), cand.rel)
    if prog is not None and cands:
        prog.update(len(cands), len(cands), f"{len(utterances)} used, {len(rejected)} rejected",
                    force=True)
    return {"utterances": utterances, "rejected": rejected, "root": str(root),
            "candidates": len(cands)}
