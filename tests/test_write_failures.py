"""Failures to write: one ``error:`` line naming the path and the cause, exit 2, nothing
half-written, nothing good removed; written files keep the user's umask."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from micro import micro_config
from streamvc_rvq.atomic import WriteError, atomic_write_bytes, write_failure
from streamvc_rvq.training.checkpoint import load_checkpoint, save_checkpoint
from streamvc_rvq.training.trainer import train_to_step


@contextlib.contextmanager
def _mounted_tmpfs(where: Path, size: str, read_only: bool = False):
    """A real small (or read-only) file system, where this user may mount one; else None."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    except OSError:
        done = None
    if done is None or done.returncode != 0:
        yield None
        return
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture(scope="module")
def first_checkpoint(micro_manifest, tmp_path_factory) -> Path:
    cfg = micro_config("phase1", train={"steps": [2, 4]})
    out = tmp_path_factory.mktemp("good") / "step_2.pt"
    return train_to_step(cfg, manifest=micro_manifest, step=2, output=out, device="cpu")


def _cli(args: list[str], file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:  # EFBIG instead of a full disk, where no file system can be mounted
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run([sys.executable, "-m", "streamvc_rvq", *args], capture_output=True, text=True,
                          preexec_fn=limit if file_size_limit else None)


def _one_error_line(done: subprocess.CompletedProcess, path: Path, causes: tuple[str, ...]) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and any(c in errors[0] for c in causes), errors
    return errors[0]


def test_training_onto_a_full_disk_is_one_line_exit_2_and_keeps_the_previous_checkpoint(
        first_checkpoint, micro_manifest, tmp_path):
    cfg = micro_config("phase1", train={"steps": [2, 4]})
    before = first_checkpoint.read_bytes()
    with _mounted_tmpfs(tmp_path / "small", "64k") as small:
        folder = small or tmp_path / "limited"
        output = folder / "step_4.pt"
        done = _cli(["train", "--config-json", json.dumps(cfg), "--manifest", str(micro_manifest), "--step", "4",
                     "--resume", str(first_checkpoint), "--output", str(output), "--device", "cpu", "--threads", "1",
                     "--snapshot-every-minutes", "0"],
                    file_size_limit=None if small else 64 << 10)
        _one_error_line(done, output, (os.strerror(errno.ENOSPC), os.strerror(errno.EFBIG)))
        assert list(folder.iterdir()) == []  # no partial file under any name
    assert first_checkpoint.read_bytes() == before


def test_inference_into_a_read_only_folder_is_one_line_exit_2(first_checkpoint, micro_manifest, tmp_path):
    wav = next(micro_manifest.parent.glob("audio/*/*.wav"))
    with _mounted_tmpfs(tmp_path / "ro", "1m", read_only=True) as read_only:
        by_permission = read_only is None
        if by_permission:
            if os.geteuid() == 0:
                pytest.skip("root ignores permissions and cannot mount a read-only file system here")
            read_only = tmp_path / "ro"
            read_only.chmod(0o555)
        output = read_only / "converted.wav"
        done = _cli(["infer", "--checkpoint", str(first_checkpoint), "--source", str(wav), "--target-ref", str(wav),
                     "--output", str(output)])
        if by_permission:
            read_only.chmod(0o755)
        _one_error_line(done, output, (os.strerror(errno.EROFS), os.strerror(errno.EACCES)))


def test_a_write_failure_without_an_errno_is_put_down_to_the_full_disk(tmp_path):
    """libsndfile and torch's zip writer lose the errno: the folder is examined instead."""
    with _mounted_tmpfs(tmp_path / "full", "1m") as full:
        if full is None:
            pytest.skip("cannot mount a small file system here")
        with contextlib.suppress(OSError):
            (full / "filler").write_bytes(b"\0" * (2 << 20))
        assert write_failure(RuntimeError("unexpected pos 576 vs 534"), full / "x.pt") == os.strerror(errno.ENOSPC)
        with pytest.raises(WriteError, match=r"cannot write .*x\.json: No space left on device"):
            atomic_write_bytes(full / "x.json", b"{}" * (1 << 20))
        assert sorted(p.name for p in full.iterdir()) == ["filler"]
    # a failure on a healthy disk is a bug and keeps its traceback
    assert write_failure(RuntimeError("a bug"), tmp_path / "x.pt") is None


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_checkpoints_and_json_keep_the_umask(first_checkpoint, tmp_path, umask):
    previous = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "step_2.pt", load_checkpoint(first_checkpoint))
        atomic_write_bytes(tmp_path / "metrics.json", b"{}")
    finally:
        os.umask(previous)
    for name in ("step_2.pt", "metrics.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_an_unreadable_input_is_one_line_exit_2(tmp_path):
    manifest = tmp_path / "missing" / "manifest.csv"
    done = _cli(["labels", "--manifest", str(manifest), "--output", str(tmp_path / "labels.npz")])
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] and str(manifest) in done.stderr


@pytest.mark.parametrize("corpus_type", ["builtin", "folder"])
def test_preparing_a_corpus_onto_a_full_disk_stops_with_one_line(micro_manifest, tmp_path, corpus_type):
    """Worker processes write the wavs: the disk's failure is not put down to the input files."""
    corpus = micro_config()["corpus"]
    if corpus_type == "folder":
        corpus = {"name": "own", "type": "folder", "folder": {"root": str(micro_manifest.parent / "audio")},
                  "min_files": 2, "min_speakers": 2, "held_out_speakers": 1}
    with _mounted_tmpfs(tmp_path / "small", "64k") as small:
        folder = (small or tmp_path / "limited") / "corpus"
        done = _cli(["prepare-data", "--corpus-json", json.dumps(corpus), "--output-dir", str(folder), "--threads", "2"],
                    file_size_limit=None if small else 8 << 10)
        line = _one_error_line(done, folder, (os.strerror(errno.ENOSPC), os.strerror(errno.EFBIG)))
        assert "usable file" not in line and not (folder / "manifest.csv").exists()


def test_a_quota_refusal_inside_torch_save_is_one_line_with_its_cause(first_checkpoint, tmp_path, monkeypatch):
    """torch's zip writer turns the OSError of a write into a RuntimeError; the cause is found
    on the exception's chain (Disk quota exceeded, the usual failure on a cluster)."""
    import builtins

    from streamvc_rvq.training import checkpoint

    class QuotaFile:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 4096:
                raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(checkpoint, "open", lambda *a, **k: QuotaFile(builtins.open(*a, **k)), raising=False)
    target = tmp_path / "step_2.pt"
    with pytest.raises(WriteError, match=rf"^cannot write {target}: {os.strerror(errno.EDQUOT)}$"):
        save_checkpoint(target, load_checkpoint(first_checkpoint))
    assert list(tmp_path.iterdir()) == []


def test_a_tensorboard_write_failure_is_one_line_naming_the_event_file_and_leaves_no_checkpoint(
        micro_manifest, tmp_path):
    cfg = micro_config("phase1", train={"steps": [30], "log_every": 1})
    output = tmp_path / "step_30.pt"
    done = _cli(["train", "--config-json", json.dumps(cfg), "--manifest", str(micro_manifest), "--step", "30",
                 "--output", str(output), "--tensorboard", str(tmp_path / "tb"), "--device", "cpu", "--threads", "1",
                 "--snapshot-every-minutes", "0"], file_size_limit=16 << 10)  # event files outgrow it first
    line = _one_error_line(done, tmp_path / "tb" / "live", (os.strerror(errno.EFBIG),))
    assert "events.out.tfevents" in line and "Exception in thread" not in done.stderr
    assert not output.exists()
