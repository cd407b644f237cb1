"""One continuous TensorBoard run per experiment, written in segments by chained step targets.

Each training job writes the steps of its target, ``[start, end)``, into
``live/seg{start}-{end}/`` under the experiment's log folder (TensorBoard shows it as the run
``live/...`` while the job trains). Only when the job has finished are its event files moved
up beside the others, and then the segments they replace (those starting at or after
``start``: a rebuilt target, whose later targets are rebuilt too) are removed. A job that
fails or is killed therefore never costs the curves of the good run before it.

A segment is written in parts, one per stretch between snapshots (``.part{first step}``): a
job resumed from its snapshot at step k drops the parts from k on (steps it will log again)
and keeps the earlier ones, so the finished segment has each step once.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from streamvc_rvq.atomic import WriteError, write_failure

_SEGMENT = re.compile(r"\.seg(\d{8})-(\d{8})(?:\.part(\d{8}))?$")
LIVE = "live"


def segment_files(logdir: Path) -> list[tuple[int, int, Path]]:
    """``(start, end, path)`` of the finished segments' event files in ``logdir``."""
    out = []
    for path in Path(logdir).glob("events.out.tfevents.*"):
        match = _SEGMENT.search(path.name)
        if match:
            out.append((int(match[1]), int(match[2]), path))
    return sorted(out)


def _part_start(path: Path) -> int | None:
    match = _SEGMENT.search(path.name)
    return int(match[3]) if match and match[3] is not None else None


def _quiet_writer_threads(previous):
    """A ``threading.excepthook`` that drops the event writer thread's OSError (a full disk):
    the main thread re-raises it as one line; any other thread's error is reported as before."""
    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
            return
        previous(args)
    return hook


class SegmentWriter:
    """``add_scalar``/``add_audio`` for steps ``[start, end)``, resumed at ``resume_from``;
    :meth:`publish` makes the segment part of the run, :meth:`close` alone leaves it live.
    A failed event-file write raises :class:`WriteError` naming the file."""

    def __init__(self, logdir: Path, start: int, end: int, resume_from: int | None = None):
        self.logdir, self.start, self.end = Path(logdir), start, end
        self.live = self.logdir / LIVE / f"seg{start:08d}-{end:08d}"
        resume_from = start if resume_from is None else resume_from
        if self.live.is_dir():  # an earlier try of this target: keep what precedes the resume step
            for path in self.live.glob("events.out.tfevents.*"):
                part = _part_start(path)
                if part is None or part >= resume_from:
                    path.unlink()
        self.live.mkdir(parents=True, exist_ok=True)
        self._writer: SummaryWriter | None = None
        self._hook = threading.excepthook
        threading.excepthook = _quiet_writer_threads(self._hook)
        self.new_part(resume_from)

    @contextlib.contextmanager
    def _writing(self):
        try:
            yield
        except Exception as err:
            reason = write_failure(err, self.live / "events")
            if reason is None:
                raise
            raise WriteError(f"cannot write {self._file_name()}: {reason}") from None

    def _file_name(self) -> str:
        try:
            return self._writer._get_file_writer().event_writer._file_name
        except Exception:  # noqa: BLE001 - private API: the folder is still a useful answer
            return str(self.live)

    def new_part(self, step: int) -> None:
        """Close the current part; later points go to a part that starts at ``step``."""
        self.close()
        with self._writing():
            self._writer = SummaryWriter(
                log_dir=str(self.live), filename_suffix=f".seg{self.start:08d}-{self.end:08d}.part{step:08d}"
            )

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        with self._writing():
            self._writer.add_scalar(tag, value, step)

    def add_audio(self, tag: str, audio, step: int, sample_rate: int) -> None:
        with self._writing():
            self._writer.add_audio(tag, audio, step, sample_rate=sample_rate)

    def close(self) -> None:
        """Flush and close the current part (a write failure is raised here at the latest)."""
        if self._writer is not None:
            with self._writing():
                try:
                    self._writer.close()
                finally:
                    self._writer = None

    def abandon(self) -> None:
        """Close after a failure elsewhere, without raising over it; the segment stays live."""
        with contextlib.suppress(Exception):
            self.close()
        threading.excepthook = self._hook

    def publish(self) -> None:
        """Move the finished segment into the run, then remove the segments it replaces."""
        self.close()
        threading.excepthook = self._hook
        moved = set()
        for path in sorted(self.live.glob("events.out.tfevents.*")):
            target = self.logdir / path.name
            os.replace(path, target)
            moved.add(target)
        for seg_start, _, path in segment_files(self.logdir):
            if seg_start >= self.start and path not in moved:
                path.unlink()
        shutil.rmtree(self.live, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.logdir / LIVE).rmdir()  # only when no other segment is live
