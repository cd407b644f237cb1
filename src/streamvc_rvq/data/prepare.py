"""Prepare a corpus folder: audio, labels, ``manifest.csv``, ``rejected.csv``, ``flagged.csv``,
``phonemes.json``.

``manifest.csv`` columns (exactly): ``utterance_id,path,speaker,duration,split,labels_path,text``;
paths relative to the corpus folder, ``labels_path`` empty when there are none, ``duration``
in seconds with 4 decimals, rows sorted by ``utterance_id``, ``split`` one of
``train|valid|heldout``. It is written last and atomically: a corpus folder with a manifest is
complete. Building twice gives byte-identical files.

``rejected.csv`` (``path,reason``) lists the files not used; ``flagged.csv``
(``path,utterance_id,reason``) the files used despite some clipping, under
``corpus.max_clipped_fraction`` (see :mod:`.folder_corpus`). Both are sorted by path, have
paths relative to the folder corpus's root, and are written for every corpus, empty ones
included (the built-in corpus has none), so that every corpus folder has the same files.
Every CSV is UTF-8 whatever the locale; a file name that is not valid UTF-8 is written with
backslash escapes.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from .builtin_corpus import build_builtin_corpus
from .folder_corpus import FolderError, build_folder_corpus
from .labels import VOCABULARY, write_vocabulary
from .splits import SplitError, assign_splits

MANIFEST_COLUMNS = ("utterance_id", "path", "speaker", "duration", "split", "labels_path", "text")
REJECTED_SHOWN = 200  # rejected files listed in the log when the corpus is too small
REJECTED_COLUMNS = ("path", "reason")
FLAGGED_COLUMNS = ("path", "utterance_id", "reason")


class CorpusError(RuntimeError):
    """The corpus cannot be prepared; the message is one readable line."""


def _csv_bytes(columns, rows) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([row[c] for c in columns])
    return buf.getvalue().encode("utf-8", errors="backslashreplace")  # undecodable file names


def _resolve(corpus_cfg: dict) -> dict:
    """The corpus section with schema defaults filled in (and validated)."""
    from ..config import ConfigError, validate

    try:
        return validate({"corpus": copy.deepcopy(dict(corpus_cfg or {}))})["corpus"]
    except ConfigError as exc:
        raise CorpusError(str(exc)) from exc


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def describe_splits(summary: dict) -> list[str]:
    """Lines a person reads after preparation: speakers and minutes per split, a warning
    when the held-out speakers take a large share of the audio, and a note when some files
    used have clipping (under the limit) for a person to check."""
    table = summary["split_table"]
    lines = ["split: " + " | ".join(f"{name} {_plural(t['speakers'], 'speaker')}, {_plural(t['utterances'], 'utterance')}, "
                                    f"{t['minutes']:.1f} min" for name, t in table.items())]
    total = sum(t["minutes"] for t in table.values())
    held = table["heldout"]
    if total > 0 and held["minutes"] / total > 0.25:
        lines.append(
            f"note: {held['speakers']} of {summary['num_speakers']} speakers ({100 * held['minutes'] / total:.0f}% of the audio) "
            "are held out for conversion tests only (corpus.held_out_speakers)"
        )
    flagged = int(summary.get("num_flagged", 0))
    if flagged > 0:
        lines.append(f"note: {_plural(flagged, 'file')} used despite some clipping (within "
                     "corpus.max_clipped_fraction); see flagged.csv")
    return lines


def prepare_corpus(corpus_cfg: dict, out_dir: Path, sample_rate: int = 16000, hop_length: int = 320,
                   workers: int | None = None, progress: bool = True) -> dict:
    """Build the corpus described by ``corpus_cfg`` (the config's ``corpus`` section) in ``out_dir``.

    Returns ``{"num_utterances", "num_speakers", "minutes", "num_rejected", "num_flagged",
    "seconds", ...}``. Raises :class:`CorpusError` (one line) when fewer than ``min_files``
    usable files or ``min_speakers`` speakers remain, after writing ``rejected.csv`` and
    ``flagged.csv``.
    """
    t0 = time.monotonic()
    cfg = _resolve(corpus_cfg)
    out_dir = Path(out_dir)
    _clear(out_dir)
    built, source, vocabulary = _build(cfg, out_dir, sample_rate, hop_length, workers, progress)
    utts = sorted(built["utterances"], key=lambda u: u["utterance_id"])
    rejected = sorted(built["rejected"], key=lambda r: r["path"])
    flagged = sorted(built.get("flagged", []), key=lambda r: r["path"])
    atomic_write_bytes(out_dir / "rejected.csv", _csv_bytes(REJECTED_COLUMNS, rejected))
    atomic_write_bytes(out_dir / "flagged.csv", _csv_bytes(FLAGGED_COLUMNS, flagged))
    write_vocabulary(out_dir / "phonemes.json", vocabulary or _label_vocabulary(out_dir, utts))
    if cfg["type"] == "builtin":
        atomic_write_bytes(out_dir / "speakers.json",
                           (json.dumps(built["speakers"], indent=1) + "\n").encode())
    splits = _splits(cfg, utts, rejected, source)
    rows = [{"utterance_id": u["utterance_id"], "path": u["path"], "speaker": u["speaker"],
             "duration": f"{u['num_samples'] / sample_rate:.4f}", "split": splits[u["utterance_id"]],
             "labels_path": u["labels_path"], "text": u["text"]} for u in utts]
    manifest = out_dir / "manifest.csv"
    atomic_write_bytes(manifest, _csv_bytes(MANIFEST_COLUMNS, rows))  # last: a corpus with a manifest is complete
    split_table = {
        s: {"utterances": sum(1 for r in rows if r["split"] == s),
            "speakers": len({r["speaker"] for r in rows if r["split"] == s}),
            "minutes": round(sum(float(r["duration"]) for r in rows if r["split"] == s) / 60.0, 3)}
        for s in ("train", "valid", "heldout")
    }
    return {
        "num_utterances": len(utts),
        "num_speakers": len({u["speaker"] for u in utts}),
        "minutes": round(sum(u["num_samples"] for u in utts) / sample_rate / 60.0, 3),
        "num_rejected": len(rejected),
        "num_flagged": len(flagged),
        "seconds": round(time.monotonic() - t0, 2),
        "splits": {s: t["utterances"] for s, t in split_table.items()},
        "split_table": split_table,
        "held_out_speakers": sorted({r["speaker"] for r in rows if r["split"] == "heldout"}),
        "manifest": str(manifest),
    }


def _clear(out_dir: Path) -> None:
    """No manifest (a half-built corpus must have none) and no audio or labels of an earlier build."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.csv").unlink(missing_ok=True)
    for sub in ("audio", "labels"):
        if (out_dir / sub).is_dir():
            shutil.rmtree(out_dir / sub)


def _build(cfg: dict, out_dir: Path, sample_rate: int, hop_length: int, workers: int | None,
           progress: bool) -> tuple[dict, str, list[str] | None]:
    """(what the corpus builder returned, the source in words, the label vocabulary or None)."""
    try:
        if cfg["type"] == "builtin":
            built = build_builtin_corpus(cfg, out_dir, sample_rate, hop_length, workers, progress)
            return built, "the built-in corpus", list(VOCABULARY)
        built = build_folder_corpus(cfg, out_dir, sample_rate, hop_length, workers, progress)
        return built, built["root"], None
    except FolderError as exc:
        raise CorpusError(str(exc)) from exc


def _label_vocabulary(out_dir: Path, utts: list[dict]) -> list[str]:
    """A user corpus's label ids, as given by its label files."""
    top = -1
    for u in utts:
        if u["labels_path"]:
            lab = np.load(out_dir / u["labels_path"])
            if lab.size:
                top = max(top, int(lab.max()))
    return [str(i) for i in range(top + 1)]


def _splits(cfg: dict, utts: list[dict], rejected: list[dict], source: str) -> dict[str, str]:
    """Each utterance's split; a corpus too small for the config is one clear error."""
    n_files, n_spk = len(utts), len({u["speaker"] for u in utts})
    need_files, need_spk = int(cfg["min_files"]), int(cfg["min_speakers"])
    held = int(cfg["held_out_speakers"])
    if n_files < need_files or n_spk < need_spk:
        # the workflow deletes a failed job's outputs (rejected.csv with them): the evidence goes
        # to stderr, which is the job's log, and the log survives
        for row in rejected[:REJECTED_SHOWN]:
            print(f"rejected: {row['path']}: {row['reason']}", file=sys.stderr)
        if len(rejected) > REJECTED_SHOWN:
            print(f"rejected: ... and {len(rejected) - REJECTED_SHOWN} more", file=sys.stderr)
        extra = (f"; the {_plural(len(rejected), 'file')} not used and why are listed above it in this log "
                 "(`rejected:` lines)" if rejected else "")
        raise CorpusError(f"only {_plural(n_files, 'usable file')} from "
                          f"{_plural(n_spk, 'speaker')} in {source} (need >= {need_files} files "
                          f"and >= {need_spk} speakers: corpus.min_files, corpus.min_speakers){extra}")
    if n_spk <= held:
        raise CorpusError(f"{_plural(n_spk, 'speaker')} in {source} cannot give "
                          f"held_out_speakers={held} and keep one for training "
                          f"(need >= {held + 1} speakers)")
    try:
        return assign_splits({u["utterance_id"]: u["speaker"] for u in utts}, held,
                             float(cfg["validation_fraction"]), int(cfg["seed"]))
    except SplitError as exc:
        raise CorpusError(str(exc)) from exc
