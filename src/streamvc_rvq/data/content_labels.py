"""Frame labels for the content encoder, for any corpus, offline: ``frame_labels.npz``.

The content encoder learns only from its label head's cross-entropy (``stop_gradient``), so
every corpus needs one label per 20 ms frame. A corpus that brings its own (the built-in
corpus's eSpeak phonemes, a folder corpus's ``<stem>.labels.npy``) uses them; any other gets
HuBERT's first-iteration targets: k-means (100 clusters) on 13 MFCCs with deltas and
delta-deltas, fitted on the training split, seeded and deterministic, then applied to
every utterance. Frame ``n``'s MFCC window is ``[n * hop, n * hop + 400)`` samples, so it
covers the same 20 ms the model's frame ``n`` ends on; its deltas reach about 80 ms ahead,
which the causal encoder must predict from the past, as it must HuBERT's targets.

``frame_labels.npz`` holds one int16 array per utterance (key ``utt/{utterance_id}``) and a
JSON ``info`` entry: ``method`` (files | mfcc_kmeans), ``num_classes``, and for k-means the
frames it was fitted on. Training and evaluation read labels only from this file.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write_bytes
from ..quantization.rvq import kmeans, nearest_codes
from .dataset import corpus_audio, read_manifest

METHODS = ("auto", "files", "mfcc_kmeans", "none")
N_MFCC = 13
WINDOW = 400  # 25 ms at 16 kHz, as HuBERT's MFCCs
_KEY = "utt/"


class LabelError(ValueError):
    """Labels cannot be made as asked; the message is one readable line."""


def resolve_method(method: str, missing: Sequence[str], total: int) -> str:
    """``files`` or ``mfcc_kmeans`` for ``auto`` given the ids of the ``missing`` of ``total``
    utterances without a label file; ``files`` is refused when some lack them."""
    if method == "auto":
        return "mfcc_kmeans" if missing else "files"
    if method == "files" and missing:
        raise LabelError(
            f"corpus.labels is files but {len(missing)} of {total} utterances have no label file "
            f"(first: {missing[0]}); use corpus.labels: auto or mfcc_kmeans"
        )
    if method not in ("files", "mfcc_kmeans"):
        raise LabelError(f"labels method {method!r} makes no label file (one of files, mfcc_kmeans, auto)")
    return method


class MFCCFeatures:
    """``audio [T] -> features [T // hop, 3 * 13]``: MFCCs, deltas, delta-deltas, one row per frame."""

    def __init__(self, sample_rate: int, hop_length: int):
        import torchaudio

        self.hop = hop_length
        self.mfcc = torchaudio.transforms.MFCC(
            sample_rate=sample_rate, n_mfcc=N_MFCC,
            melkwargs={"n_fft": WINDOW, "win_length": WINDOW, "hop_length": hop_length, "n_mels": 40, "center": False},
        )
        self.deltas = torchaudio.transforms.ComputeDeltas(win_length=5)

    @torch.no_grad()
    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        frames = audio.shape[-1] // self.hop
        if frames == 0:
            return torch.zeros(0, 3 * N_MFCC)
        x = torch.nn.functional.pad(audio[: frames * self.hop], (0, WINDOW - self.hop))
        c = self.mfcc(x)  # [13, frames]
        d = self.deltas(c)
        feats = torch.cat([c, d, self.deltas(d)], dim=0).t()
        return feats[:frames].contiguous()


def fit_mfcc_kmeans(features: Sequence[torch.Tensor], num_clusters: int, max_frames: int, iterations: int,
                    seed: int) -> dict[str, torch.Tensor]:
    """Per-dimension mean/std and k-means centroids from the training frames ``features``.

    A pure function of its inputs: the subsample and the seeds come from a generator seeded
    by ``seed`` (the global RNG is left as it was)."""
    x = torch.cat(list(features))
    if x.shape[0] < num_clusters:
        raise LabelError(f"{x.shape[0]} training frames cannot seed {num_clusters} k-means clusters")
    mean, std = x.mean(0), x.std(0).clamp_min(1e-5)
    x = (x - mean) / std
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if x.shape[0] > max_frames:
            x = x[torch.randperm(x.shape[0])[:max_frames]]
        centroids, counts = kmeans(x, num_clusters, iterations)
    return {"mean": mean, "std": std, "centroids": centroids, "counts": counts, "num_frames": torch.tensor(x.shape[0])}


def assign_labels(features: torch.Tensor, model: dict[str, torch.Tensor]) -> np.ndarray:
    if features.shape[0] == 0:
        return np.zeros(0, dtype=np.int16)
    x = (features - model["mean"]) / model["std"]
    return nearest_codes(x, model["centroids"], cosine=False).numpy().astype(np.int16)


def _rows(manifest: Path) -> list[dict]:
    return sorted(read_manifest(manifest), key=lambda r: r["utterance_id"])


def make_frame_labels(manifest: Path, method: str = "auto", *, num_clusters: int = 100, max_frames: int = 200000,
                      iterations: int = 50, seed: int = 0, sample_rate: int = 16000, hop_length: int = 320,
                      progress: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """``({utterance_id: int16 labels}, info)`` for every utterance of ``manifest``.

    One utterance's audio is in memory at a time (a VCTK-size corpus keeps only its MFCCs,
    39 floats per frame)."""
    t0 = time.monotonic()
    manifest = Path(manifest)
    rows = _rows(manifest)
    missing = [r["utterance_id"] for r in rows if not r.get("labels_path")]
    method = resolve_method(method, missing, len(rows))
    if method == "files":
        labels = {r["utterance_id"]: np.load(manifest.parent / r["labels_path"]).astype(np.int16) for r in rows}
        top = max((int(v.max()) for v in labels.values() if v.size), default=-1)
        info = {"method": "files", "num_classes": top + 1}
    else:
        extract = MFCCFeatures(sample_rate, hop_length)
        feats = {}
        for k, row in enumerate(rows, 1):
            feats[row["utterance_id"]] = extract(corpus_audio(manifest.parent / row["path"]))
            if progress and (k % 500 == 0 or k == len(rows)):
                print(f"MFCCs {k}/{len(rows)} utterances ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
        train = [feats[r["utterance_id"]] for r in rows if r["split"] == "train"]
        model = fit_mfcc_kmeans(train, num_clusters, max_frames, iterations, seed)
        labels = {uid: assign_labels(f, model) for uid, f in feats.items()}
        counts = np.bincount(np.concatenate([labels[r["utterance_id"]] for r in rows if r["split"] == "train"]),
                             minlength=num_clusters)
        info = {
            "method": "mfcc_kmeans", "num_classes": num_clusters, "fitted_frames": int(model["num_frames"]),
            "iterations": iterations, "seed": seed, "features": f"{N_MFCC} MFCC + deltas + delta-deltas",
            "empty_clusters": int((counts == 0).sum()),
            "majority_share_train": float(counts.max() / max(1, counts.sum())),
        }
    info["num_utterances"] = len(labels)
    info["seconds"] = round(time.monotonic() - t0, 2)
    return labels, info


def save_frame_labels(path: Path, labels: dict[str, np.ndarray], info: dict) -> None:
    buf = io.BytesIO()
    arrays = {_KEY + uid: np.ascontiguousarray(v, dtype=np.int16) for uid, v in sorted(labels.items())}
    np.savez(buf, info=np.array(json.dumps(info, sort_keys=True)), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_frame_labels(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """``({utterance_id: labels}, info)`` from a ``frame_labels.npz``."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"frame labels not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(str(data["info"]))
            labels = {key[len(_KEY):]: data[key] for key in data.files if key.startswith(_KEY)}
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file: one line
        raise LabelError(f"cannot read frame labels {path}: {type(err).__name__}: {err}") from None
    return labels, info
