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

Speaker and utterance ids (which name the output folders and files) keep the letters, digits
and combining marks of any script, so ``李明/`` and ``王芳/`` stay two speakers. Names are
NFC-normalised first (macOS stores ``José`` decomposed; both spellings are one speaker), every
run of other characters (path separators, whitespace, control and format characters, shell
metacharacters) becomes one ``_``, leading ``.``/``_``/``-`` and trailing ``.``/``_`` are
stripped, and an id is at most 100 characters and 150 UTF-8 bytes (a longer one is cut and
given the hash of the whole name). An utterance's id is its file's stem, or, when another
file has the same stem, its whole path without the extension (``spk__sub__stem``). Two
different names never share an id, even on a case-insensitive file system: when sanitising
makes them collide, each gets ``_`` + 8 hex digits of the SHA-1 of its original name (a name
that was already safe keeps its id). Ids depend only on the set of files, so the same folder
gives the same ids on every run and with any number of workers.

Clipping (see :mod:`.audio` for how it is measured, on the samples as stored) is measured
over the kept (trimmed) part of each file. More than ``corpus.max_clipped_fraction`` of it
(default 1 %) clipped: the file is rejected (``clipped: 3.2% of samples at full scale (limit
1.0%, corpus.max_clipped_fraction)``), because the decoder learns to reproduce its input
and would learn the distortion too. Some clipping under the limit: the file is used (a few
flat tops are too little to learn, and dropping every such file can empty a loud
corpus) and listed in ``flagged`` with the same kind of reason, for a person to check.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import WriteError
from .audio import (AudioError, check_usable, clipped_frames, full_scale, normalise_level,
                    read_stored, save_labels, save_wav, to_mono, trim_bounds)
from .builtin_corpus import Progress, parallel_map

LABEL_SUFFIX = ".labels.npy"
MAX_ID_CHARS = 100
MAX_ID_BYTES = 150  # so "{id}.wav" and its atomic-write temporary name fit a 255-byte file name
DEFAULT_MAX_CLIPPED_FRACTION = 0.01  # schema default of corpus.max_clipped_fraction
_HASH_CHARS = 8
_LABEL_TOLERANCE_FRAMES = 2


class FolderError(ValueError):
    """The folder itself cannot be used (missing root, bad regex); one readable line."""


@dataclass(frozen=True)
class Candidate:
    rel: str  # path relative to root, '/' separators
    speaker: str | None
    utterance_id: str


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _keep(ch: str) -> bool:
    """Letters, digits and combining marks of any script, and ``_ . -``: nothing that a path,
    a shell or a terminal reads specially."""
    return ch in "_.-" or unicodedata.category(ch)[0] in "LNM"


def _digest(name: str) -> str:
    """SHA-1 hex of ``name``'s bytes (undecodable file-name bytes included)."""
    return hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()


def _fit(name: str, tag: str = "") -> str:
    """``name_tag`` within MAX_ID_CHARS characters and MAX_ID_BYTES bytes, cutting ``name``."""
    suffix = f"_{tag}" if tag else ""
    cut = name[:MAX_ID_CHARS - len(suffix)]
    while len((cut + suffix).encode()) > MAX_ID_BYTES:
        cut = cut[:-1]
    cut = cut.rstrip("._")
    return cut + suffix if cut else tag


def _safe(name: str) -> str:
    """``name`` as an id that is a safe file name (see the module docstring). Different names
    may give the same id here; :func:`_distinct` separates them."""
    nfc = _nfc(name)
    s = "".join("".join(g) if keep else "_" for keep, g in itertools.groupby(nfc, key=_keep))
    s = s.lstrip("._-").rstrip("._")
    if len(s) > MAX_ID_CHARS or len(s.encode()) > MAX_ID_BYTES:
        s = _fit(s, _digest(nfc)[:_HASH_CHARS])
    return s or "x"


def _fold(uid: str) -> str:
    """The form in which two ids clash on a case-insensitive file system (macOS, Windows)."""
    return _nfc(uid.casefold())


def _distinct(proposed: dict[str, str]) -> dict[str, str]:
    """``{original: id}`` from ``{original: proposed id}`` with no two ids equal (ignoring case).

    Originals whose proposed ids collide get ``_`` + the first 8 hex digits of their SHA-1
    (16, then 40, on the off chance that this collides too), except one whose original *is*
    its id: an already safe name keeps it. A function of the set of originals only."""
    groups: dict[str, list[str]] = defaultdict(list)
    for original, uid in proposed.items():
        groups[_fold(uid)].append(original)
    out: dict[str, str] = {}
    pending: list[str] = []
    for key, originals in groups.items():
        exact = [o for o in originals if _nfc(o) == proposed[o]]
        keeper = originals[0] if len(originals) == 1 else (exact[0] if len(exact) == 1 else None)
        if keeper is not None:
            out[keeper] = proposed[keeper]
        pending += [o for o in originals if o != keeper]
    taken = {_fold(uid) for uid in out.values()}
    for original in sorted(pending):
        digest = _digest(original)
        for n in (_HASH_CHARS, 16, 40):
            uid = _fit(proposed[original], digest[:n])
            if _fold(uid) not in taken:
                break
        else:  # a 40-digit SHA-1 clash with another name's id: unreachable in practice
            k = 2
            while _fold(uid := _fit(proposed[original], f"{digest}_{k}")) in taken:
                k += 1
        taken.add(_fold(uid))
        out[original] = uid
    return out


def _stem(rel: str) -> str:
    """``rel`` less its folders and its extension."""
    name = rel.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def utterance_ids(rels: list[str]) -> dict[str, str]:
    """``{rel: utterance id}``: the stem, or the path without its extension when another file
    has the same stem (``spk/a.wav`` -> ``spk__a``), made distinct by :func:`_distinct`."""
    stems = {rel: _safe(_stem(rel)) for rel in rels}
    counts = Counter(_fold(s) for s in stems.values())
    proposed = {}
    for rel in rels:
        if counts[_fold(stems[rel])] == 1:
            proposed[rel] = stems[rel]
        else:  # the stem alone is ambiguous: use the whole path, still without the extension
            folder = rel[: len(rel) - len(rel.rsplit("/", 1)[-1])]
            proposed[rel] = _safe((folder + _stem(rel)).replace("/", "__"))
    return _distinct(proposed)


def speaker_ids(names: set[str]) -> dict[str, str]:
    """``{name: speaker id}`` for speaker names (already NFC), distinct as :func:`_distinct` makes them."""
    return _distinct({name: _safe(name) for name in names})


def find_candidates(root: Path, extensions: list[str], speaker_regex: str) -> list[Candidate]:
    """The audio candidates under ``root``, sorted by relative path. ``speaker_regex`` is
    matched against the NFC form of each relative path."""
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

    names: dict[str, str | None] = {}
    for rel in rels:
        m = pattern.search(_nfc(rel))
        names[rel] = _nfc(m.group(1)) if m and m.group(1) else None
    speakers = speaker_ids({n for n in names.values() if n is not None})
    uids = utterance_ids(rels)
    return [Candidate(rel=rel, speaker=None if names[rel] is None else speakers[names[rel]],
                      utterance_id=uids[rel]) for rel in rels]


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


def _percent(fraction: float) -> str:
    """``3.2%``; two significant digits under 0.1 % so that a little clipping is not ``0.0%``."""
    p = 100.0 * fraction
    return f"{p:.1f}%" if p >= 0.1 or p == 0 else f"{p:.2g}%"


def clipping_verdict(fraction: float, limit: float) -> tuple[bool, str | None]:
    """``(rejected, reason)`` for a file with ``fraction`` of its kept samples clipped: rejected
    above ``limit`` (the decoder would learn the distortion), flagged with a reason when some
    clipping stays under it, ``(False, None)`` when there is none."""
    if fraction <= 0.0:
        return False, None
    head = f"clipped: {_percent(fraction)} of samples at full scale"
    if fraction > limit:
        return True, f"{head} (limit {_percent(limit)}, corpus.max_clipped_fraction)"
    return False, f"{head} (within the {_percent(limit)} limit, corpus.max_clipped_fraction)"


def _stored_span(start: int, end: int, rate: int, stored_rate: int, stored_len: int) -> tuple[int, int]:
    """The samples ``[start, end)`` at ``rate`` as a span of the file as stored, at ``stored_rate``."""
    a = start * stored_rate // rate
    b = -(-end * stored_rate // rate)
    return min(a, stored_len), min(b, stored_len)


class _Ingest:
    """Picklable ``Candidate -> (candidate, result | reason)``."""

    def __init__(self, root: Path, out_dir: Path, sample_rate: int, hop_length: int,
                 min_seconds: float,
                 max_clipped_fraction: float = DEFAULT_MAX_CLIPPED_FRACTION) -> None:
        self.root = root
        self.out_dir = out_dir
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.min_seconds = min_seconds
        self.max_clipped_fraction = max_clipped_fraction

    def __call__(self, cand: Candidate):
        try:
            return cand, self._ingest(cand)
        except AudioError as exc:
            return cand, exc.reason
        except WriteError:  # the output disk's failure, not this file's: stop with one line
            raise
        except Exception as exc:  # never let one file stop the corpus
            return cand, "unreadable: " + " ".join(f"{type(exc).__name__}: {exc}".split())

    def _ingest(self, cand: Candidate):
        if cand.speaker is None:
            return "no speaker in path"
        path = self.root / cand.rel
        truncated = _wav_truncation(path)
        if truncated:
            return truncated
        data, stored_rate, subtype = read_stored(path)
        clipped = clipped_frames(data, full_scale(subtype))  # before resampling smears flat tops
        sr, hop = self.sample_rate, self.hop_length
        x = to_mono(data, stored_rate, sr)
        del data
        check_usable(x, sr)  # silent
        orig_frames = len(x) // hop
        start, end = trim_bounds(x, -40.0, hop)
        y = x[start:end]
        check_usable(y, sr, self.min_seconds)  # too short once trimmed
        a, b = _stored_span(start, end, sr, stored_rate, len(clipped))
        fraction = float(clipped[a:b].mean()) if b > a else 0.0
        rejected, clip_reason = clipping_verdict(fraction, self.max_clipped_fraction)
        if rejected:
            return clip_reason
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
                "labels_path": lab_rel, "num_samples": int(len(y)), "text": _read_text(path),
                "flag": clip_reason or ""}


def build_folder_corpus(cfg: dict, out_dir: Path, sample_rate: int = 16000, hop_length: int = 320,
                        workers: int | None = None, progress: bool = True) -> dict:
    """Ingest ``cfg['folder']['root']`` into ``out_dir``. Returns ``{"utterances": [...],
    "rejected": [{"path", "reason"}], "flagged": [{"path", "utterance_id", "reason"}],
    "root": str, "candidates": int}``; paths are relative to root. Flagged files are used
    (they are among the utterances too) but have some clipping under the limit.
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
    max_clipped = float(cfg.get("max_clipped_fraction", DEFAULT_MAX_CLIPPED_FRACTION))
    if workers is None:
        workers = min(2, os.cpu_count() or 1)

    cands = find_candidates(root, extensions, regex)
    fn = _Ingest(root, Path(out_dir), sample_rate, hop_length, min_seconds, max_clipped)
    prog = Progress("reading") if progress else None
    utterances, rejected, flagged = [], [], []
    for k, (cand, result) in enumerate(parallel_map(fn, cands, workers), 1):
        if isinstance(result, dict):
            flag = result.pop("flag", "")
            if flag:
                flagged.append({"path": cand.rel, "utterance_id": result["utterance_id"],
                                "reason": flag})
            utterances.append(result)
        else:
            rejected.append({"path": cand.rel, "reason": result})
        if prog is not None:
            prog.update(k, len(cands), cand.rel)
    if prog is not None and cands:
        prog.update(len(cands), len(cands), f"{len(utterances)} used, {len(rejected)} rejected",
                    force=True)
    return {"utterances": utterances, "rejected": rejected, "flagged": flagged,
            "root": str(root), "candidates": len(cands)}
