"""Snapshots inside a step target: a killed or pre-empted job loses minutes, not the segment.

While a job trains from ``start`` to its target it writes, every ``every_steps`` steps or
``every_minutes`` minutes (whichever comes first; 0 turns a trigger off), the full training
state to ``{target checkpoint}.snapshot`` (one file, replaced atomically), and at the next step
boundary after SIGTERM or SIGINT. A rerun of the same target resumes from it; since batches
and the learning rate are pure functions of the step and the snapshot carries every state and
RNG, the result is bit-identical to a straight run. The snapshot is used only when it was made
from the same starting checkpoint, config, data and device type (:func:`origin`), and is
removed once the target is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamvc_rvq.config import config_hash
from streamvc_rvq.training.checkpoint import CheckpointError, load_checkpoint

SUFFIX = ".snapshot"


@dataclass(frozen=True)
class SnapshotPolicy:
    """When to write a snapshot; both triggers 0 means never."""

    every_steps: int = 0
    every_minutes: float = 0.0

    def due(self, step: int, start: int, last_time: float, now: float) -> bool:
        """Whether a snapshot is due after ``step`` steps (``start``: the job's first step)."""
        if self.every_steps and (step - start) % self.every_steps == 0:
            return True
        return bool(self.every_minutes) and now - last_time >= 60.0 * self.every_minutes


def snapshot_path(output: Path) -> Path:
    return Path(f"{output}{SUFFIX}")


def file_sha256(path: Path | None) -> str | None:
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def origin(resume: Path | None, target: int, cfg: dict, manifest: Path, labels: str | Path | None,
           device) -> dict[str, Any]:
    """What a snapshot must have been made from to be used for this job: the starting
    checkpoint, the config, the data (the manifest, and the labels file or mode: a corpus
    re-prepared after a kill must not be trained on half old, half new) and the device type
    (its RNG and kernels)."""
    labels_file = labels if isinstance(labels, Path) else None
    return {"resume_sha256": file_sha256(resume), "target": target, "config_hash": config_hash(cfg),
            "manifest_sha256": file_sha256(Path(manifest)),
            "labels": file_sha256(labels_file) if labels_file else (None if labels is None else str(labels)),
            "device_type": str(getattr(device, "type", device))}


def find_snapshot(output: Path, expected: dict[str, Any], start: int, map_location) -> dict[str, Any] | None:
    """The usable snapshot of ``output``'s job, or None; an unusable one is removed, saying why."""
    path = snapshot_path(output)
    if not path.exists():
        return None
    try:
        snapshot = load_checkpoint(path, map_location=map_location)
        problem = None
        if snapshot.get("snapshot_origin") != expected:
            problem = "made from another starting checkpoint or config"
        elif not start < int(snapshot["step"]) < expected["target"]:
            problem = f"its step {snapshot['step']} is outside ({start}, {expected['target']})"
    except CheckpointError as err:
        snapshot, problem = None, str(err)
    if problem is None:
        return snapshot
    print(f"ignoring snapshot {path}: {problem}; removed", file=sys.stderr, flush=True)
    path.unlink()
    return None


def remove_snapshot(output: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        snapshot_path(output).unlink()


class StopRequest:
    """SIGTERM (SLURM pre-emption, ``scancel``, Snakemake stopping) or SIGINT noted, so the
    loop can write a snapshot at the next step boundary and exit instead of dying mid-step.

    A second signal does not wait: the previous handlers come back and the signal is
    delivered again (Ctrl-C twice stops at once). A signal the parent set to be ignored stays
    ignored."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for sig in (signal.SIGTERM, signal.SIGINT):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum, frame) -> None:
        if self.signal is None:
            self.signal = signum
            print(f"signal {signum}: saving a snapshot after this step, then stopping "
                  "(send it again to stop at once)", file=sys.stderr, flush=True)
            return
        self._restore()
        signal.raise_signal(signum)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        self._previous.clear()

    def __exit__(self, *exc) -> None:
        self._restore()
