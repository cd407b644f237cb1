"""Atomic file writes: write to a temporary file beside the target, then rename.

A killed job or a failed write never leaves a half-written checkpoint, wav or JSON under the
target's name, and an existing file is only replaced once the new one is complete.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; rename it to ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: write them as strings so strict readers still parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path: str | Path, data: Any) -> None:
    """Pretty, strict JSON (non-finite floats as strings), written atomically."""
    atomic_write_bytes(path, (json.dumps(_finite(data), indent=2, sort_keys=True, allow_nan=False) + "\n").encode())
