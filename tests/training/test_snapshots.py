"""Snapshots inside a step target: a killed job resumes bit-identically; TensorBoard history
survives a failed run; temp files of killed writes are removed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from micro import micro_config
from streamvc_rvq.atomic import remove_stale_temps
from streamvc_rvq.evaluation.curves import read_scalars
from streamvc_rvq.training.checkpoint import load_checkpoint, save_checkpoint
from streamvc_rvq.training.snapshots import SnapshotPolicy, snapshot_path
from streamvc_rvq.training.trainer import TrainingError, train_to_step

STEPS = 8
EVERY_2 = SnapshotPolicy(every_steps=2)


def _same_training_state(a: dict, b: dict) -> None:
    for key in ("model", "optimizer", "scheduler", "rng"):
        _equal(a[key], b[key], key)
    assert a["step"] == b["step"]


def _equal(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"tensor differs at {where}"
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def straight(micro_manifest, tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must equal."""
    cfg = micro_config("phase1", train={"steps": [STEPS]})
    out = tmp_path_factory.mktemp("straight") / f"step_{STEPS}.pt"
    return train_to_step(cfg, manifest=micro_manifest, step=STEPS, output=out, device="cpu")


def _train_command(cfg: dict, manifest: Path, output: Path, tensorboard: Path) -> list[str]:
    return [sys.executable, "-m", "streamvc_rvq", "train", "--config-json", json.dumps(cfg), "--manifest", str(manifest),
            "--step", str(STEPS), "--output", str(output), "--tensorboard", str(tensorboard), "--device", "cpu",
            "--threads", "1", "--snapshot-every-steps", "2", "--snapshot-every-minutes", "0"]


def _run_until(cmd: list[str], marker: str) -> subprocess.Popen:
    """Start ``cmd`` and return once its stderr shows ``marker``."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith(marker):
            return proc
    proc.wait()
    raise AssertionError(f"the job ended (rc {proc.returncode}) before printing {marker!r}")


def test_a_job_killed_between_snapshots_resumes_and_equals_the_straight_run(straight, micro_manifest, tmp_path):
    cfg = micro_config("phase1", train={"steps": [STEPS], "log_every": 1})
    out, tb = tmp_path / f"step_{STEPS}.pt", tmp_path / "tb"
    proc = _run_until(_train_command(cfg, micro_manifest, out, tb), "snapshot at step 4")
    proc.send_signal(signal.SIGKILL)  # between the snapshots at 4 and 6 (or mid-write of 6)
    proc.wait()
    assert not out.exists() and snapshot_path(out).exists()
    killed_at = load_checkpoint(snapshot_path(out))["step"]
    assert killed_at in (4, 6)

    resumed = train_to_step(cfg, manifest=micro_manifest, step=STEPS, output=out, tensorboard_dir=tb, device="cpu",
                            snapshots=EVERY_2)
    _same_training_state(load_checkpoint(straight), load_checkpoint(resumed))
    assert not snapshot_path(out).exists()  # cleaned once the target is written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_8.pt", "tb"]
    loss = read_scalars(tb)["train/loss_total"]
    assert [s for s, _ in loss] == list(range(STEPS))  # each step once, across the kill
    assert not (tb / "live").exists()


def test_sigterm_writes_a_snapshot_and_says_so_in_one_line(straight, micro_manifest, tmp_path):
    """What SLURM pre-emption and `scancel` send: the job saves its state at the next step."""
    cfg = micro_config("phase1", train={"steps": [STEPS]})
    out = tmp_path / f"step_{STEPS}.pt"
    cmd = _train_command(cfg, micro_manifest, out, tmp_path / "tb")
    cmd[cmd.index("--snapshot-every-steps") + 1] = "0"  # only the signal makes one
    proc = _run_until(cmd, "step ")
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    proc.wait()
    assert proc.returncode == 2
    errors = [line for line in rest.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "stopped by signal 15" in errors[0] and "Traceback" not in rest
    assert snapshot_path(out).exists() and not out.exists()
    resumed = train_to_step(cfg, manifest=micro_manifest, step=STEPS, output=out, device="cpu")
    _same_training_state(load_checkpoint(straight), load_checkpoint(resumed))


def test_a_snapshot_from_another_config_or_start_is_not_used(straight, micro_manifest, tmp_path, capfd):
    cfg = micro_config("phase1", train={"steps": [STEPS]})
    out = tmp_path / f"step_{STEPS}.pt"
    foreign = load_checkpoint(straight)  # a plausible state from another run
    save_checkpoint(snapshot_path(out), dict(foreign, step=4, snapshot_origin={"resume_sha256": None, "target": STEPS,
                                                                               "config_hash": "another config"}))
    resumed = train_to_step(cfg, manifest=micro_manifest, step=STEPS, output=out, device="cpu")
    assert "ignoring snapshot" in capfd.readouterr().err
    _same_training_state(load_checkpoint(straight), load_checkpoint(resumed))


def test_a_failed_run_leaves_the_previous_tensorboard_scalars_readable(micro_manifest, tmp_path):
    cfg = micro_config("phase1", train={"steps": [4], "log_every": 1})
    tb = tmp_path / "tb"
    train_to_step(cfg, manifest=micro_manifest, step=4, output=tmp_path / "step_4.pt", tensorboard_dir=tb, device="cpu")
    before = read_scalars(tb)
    diverging = micro_config("phase1", train={"steps": [4], "log_every": 1, "lr": 1e38, "grad_clip": 1e38})
    with pytest.raises(TrainingError, match="non-finite"):
        train_to_step(diverging, manifest=micro_manifest, step=4, output=tmp_path / "step_4.pt", tensorboard_dir=tb,
                      device="cpu")
    assert read_scalars(tb) == before and [s for s, _ in before["train/loss_total"]] == [0, 1, 2, 3]


def test_temp_files_of_a_killed_write_are_removed_and_a_live_writers_kept(tmp_path):
    target = tmp_path / "step_8.pt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    import socket
    import re

    host = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:32]
    killed = tmp_path / f".step_8.pt.{host}-{dead_pid}.k1ll3d_x.tmp"
    live = tmp_path / f".step_8.pt.{host}-{os.getpid()}.l1ve_xyz.tmp"
    old_format = tmp_path / ".step_8.pt.ab12cd34.tmp"  # no writer recorded: stale once old
    other = tmp_path / ".step_16.pt.ab12cd34.tmp"
    for path in (killed, live, old_format, other):
        path.write_bytes(b"partial")
    hours_ago = time.time() - 7200
    os.utime(old_format, (hours_ago, hours_ago))
    os.utime(other, (hours_ago, hours_ago))
    removed = remove_stale_temps(target)
    assert sorted(removed) == sorted([killed, old_format])
    assert live.exists() and other.exists()


def test_checkpoints_record_packages_device_commit_and_config_hash(straight):
    from streamvc_rvq.config import config_hash

    record = load_checkpoint(straight)["provenance"]
    assert record["packages"]["torch"] == torch.__version__ and record["packages"]["streamvc-rvq"]
    assert record["device"].startswith("cpu (")
    assert record["config_hash"] == config_hash(micro_config("phase1", train={"steps": [STEPS]}))
    head = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI clones one)
        assert record["git_commit"] == head.stdout.strip() and isinstance(record["git_dirty"], bool)


def test_git_state_tells_a_modified_checkout(tmp_path):
    from streamvc_rvq.provenance import git_state

    state = git_state.__wrapped__  # uncached
    assert state(str(tmp_path)) == {"commit": None, "dirty": None}  # not a checkout
    run = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "f.py").write_text("a = 1\n")
    run("add", "f.py")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    clean = state(str(tmp_path))
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "f.py").write_text("a = 2\n")
    assert state(str(tmp_path)) == {"commit": clean["commit"], "dirty": True}
