"""One continuous TensorBoard run per experiment, written in segments by chained step targets.

Each training job writes its own event file, tagged with the step range it covers
(``.seg{start}-{end}``). Before a job writes, it deletes the event files of every segment
that starts at or after its own start: those points are stale (a rebuilt target, or a
killed job), and the targets after it are rebuilt too, because they depend on it. So
TensorBoard shows one curve per tag with no duplicated or stale points.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

_SEGMENT = re.compile(r"\.seg(\d{8})-(\d{8})$")


def segment_files(logdir: Path) -> list[tuple[int, int, Path]]:
    out = []
    for path in Path(logdir).glob("events.out.tfevents.*"):
        match = _SEGMENT.search(path.name)
        if match:
            out.append((int(match[1]), int(match[2]), path))
    return sorted(out)


def open_segment(logdir: Path, start: int, end: int) -> SummaryWriter:
    """A writer for steps [start, end) after removing stale segments (start >= ``start``)."""
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    for seg_start, _, path in segment_files(logdir):
        if seg_start >= start:
            path.unlink()
    return SummaryWriter(log_dir=str(logdir), filename_suffix=f".seg{start:08d}-{end:08d}")
