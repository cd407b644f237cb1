"""Atomic file writes: write to a temporary file beside the target, then rename.

A killed job or a failed write never leaves a half-written checkpoint, wav or JSON under the
target's name, and an existing file is only replaced once the new one is complete. A write
that fails (disk full, read-only file system, no permission) raises :class:`WriteError`, one
line naming the path and the cause, after removing its temporary file. Written files get the
mode the user's umask gives (``mkstemp`` alone makes them 0600, unreadable to a group on a
shared cluster). Temporary files left by a killed writer are removed by the next write of the
same file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import resource
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

# A temporary file untouched this long belongs to no live writer (every writer here fills
# its file in one go, seconds at most).
STALE_AFTER_SECONDS = 3600.0
# Free space under which a write failure without an errno is put down to a full disk.
_NEARLY_FULL_BYTES = 16 << 20


class WriteError(OSError):
    """A file could not be written; the message names the path and the cause."""


def _host() -> str:
    """Short, file-name-safe and distinct for distinct host names (a hash, not a prefix)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _temp_prefix(path: Path) -> str:
    """``.NAME.HOST-PID.``: lets a later writer tell a dead writer's file from a live one's."""
    return f".{path.name}.{_host()}-{os.getpid()}."


def _temp_pattern(name: str) -> re.Pattern:
    return re.compile(rf"^\.(?P<name>{name})\.(?:(?P<host>[0-9a-f]{{8}})-(?P<pid>\d+)\.)?[A-Za-z0-9_]+\.tmp$")


_ANY_TEMP = _temp_pattern(".+?")
_scanned: set[Path] = set()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove(folder: Path, keep) -> list[Path]:
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
            continue
        match = _ANY_TEMP.match(entry.name)
        try:
            if match and not keep(match, entry):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporary files in ``folder`` whose writer is gone: a dead process on this
    host, or a file untouched for :data:`STALE_AFTER_SECONDS`."""
    now, host = time.time(), _host()

    def live(match: re.Match, entry: os.DirEntry) -> bool:
        if match["host"] == host and not _pid_alive(int(match["pid"])):
            return False
        return now - entry.stat().st_mtime <= STALE_AFTER_SECONDS

    return _remove(Path(folder), live)


def remove_temps_of(path: str | Path) -> list[Path]:
    """Remove every temporary file of ``path`` whatever wrote it, on any host: for a job that
    owns ``path`` (Snakemake's lock keeps other jobs off a target), so that the temp file of
    a pre-empted job that was requeued on another node does not stay behind."""
    path = Path(path)
    own = _temp_pattern(re.escape(path.name))
    return _remove(path.parent, lambda match, entry: not own.match(entry.name))


def _clean_once(folder: Path) -> None:
    """:func:`remove_stale_temps` once per folder and process: a folder of 10,000 files is
    scanned once, not at every write."""
    if folder not in _scanned:
        _scanned.add(folder)
        remove_stale_temps(folder)


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` would give a new file: 0666 less the umask."""
    return 0o666 & ~_umask()


def write_failure(err: BaseException, path: Path) -> str | None:
    """The cause of a failed write of ``path`` in words, or None when it was not the file
    system's doing (a bug, which should stay a traceback).

    The errno is looked for along the exception's chain (torch's zip writer turns the
    OSError of a write into a RuntimeError); libraries that write through their own C code
    (libsndfile) lose it altogether, so then the folder is checked for being read-only or full."""
    cause: BaseException | None = err
    for _ in range(8):  # torch's zip writer re-raises the OSError of a write as a RuntimeError
        if cause is None:
            break
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    folder = path.parent
    with contextlib.suppress(OSError):
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return os.strerror(errno.EROFS)
        if not os.access(folder, os.W_OK):
            return os.strerror(errno.EACCES)
        if shutil.disk_usage(folder).free < _NEARLY_FULL_BYTES:
            return os.strerror(errno.ENOSPC)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        return f"{os.strerror(errno.EFBIG)} (this process may write files of at most {limit} bytes: ulimit -f)"
    return None


def _error(path: Path, err: BaseException) -> BaseException:
    reason = write_failure(err, path)
    if reason is None:
        return err
    error = WriteError(f"cannot write {path}: {reason}")
    error.path, error.reason = path, reason
    return error


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; rename it to ``path`` on success.

    Write through Python file objects where a library allows it (``torch.save(obj, f)``,
    not ``torch.save(obj, name)``): their failures carry the errno."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _clean_once(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise _error(path, err) from None
    try:
        yield Path(tmp)
        with contextlib.suppress(OSError):  # a file system without modes (vfat) keeps its own
            os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except Exception as err:
        mapped = _error(path, err)
        if mapped is err:
            raise
        raise mapped from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


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
