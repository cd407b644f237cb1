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
from tensor_state import assert_same_state
from streamvc_rvq.atomic import _host, remove_stale_temps, remove_temps_of
from streamvc_rvq.evaluation.curves import read_scalars
from streamvc_rvq.training.scalars_file import read_segment_scalars
from streamvc_rvq.training.checkpoint import load_checkpoint, save_checkpoint
from streamvc_rvq.training.snapshots import SnapshotPolicy, snapshot_path
from streamvc_rvq.training.trainer import TrainingError, train_to_step

STEPS = 8
EVERY_2 = SnapshotPolicy(every_steps=2)


def _same_training_state(a: dict, b: dict) -> None:
    for key in ("model", "optimizer", "scheduler", "rng", "step"):
        assert_same_state(a[key], b[key], key)


@pytest.fixture(scope="module")
def straight(micro_manifest, tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must equal."""
    cfg = micro_config("phase1", train={"steps": [STEPS]})
    out = tmp_path_factory.mktemp("straight") / f"step_{STEPS}.pt"
    return train_to_step(cfg, manifest=micro_manifest, step=STEPS, output=out, device="cpu")


def _train_command(cfg: dict, manifest: Path, output: Path, tensorboard: Path) -> list[str]:
    return [sys.executable, "-m", "streamvc_rvq", "train", "--config-json", json.dumps(cfg), "--manifest", str(manifest),
            "--step", str(STEPS), "--output", str(output), "--tensorboard", str(tensorboard), "--device", "cpu",
            "--scalars-output", str(output.with_suffix(".json")),
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
                            snapshots=EVERY_2, scalars_output=out.with_suffix(".json"))
    _same_training_state(load_checkpoint(straight), load_checkpoint(resumed))
    assert not snapshot_path(out).exists()  # cleaned once the target is written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_8.json", "step_8.pt", "tb"]
    loss = read_scalars(tb)["train/loss_total"]
    assert [s for s, _ in loss] == list(range(STEPS))  # each step once, across the kill
    # the declared scalars file (what evaluate and verdict read) holds the same points
    assert read_segment_scalars([out.with_suffix(".json")]) == read_scalars(tb)
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
    diverging = micro_config("phase1", train={"steps": [4], "log_every": 1, "lr": 1e30, "grad_clip": 1e30})
    with pytest.raises(TrainingError, match="non-finite"):
        train_to_step(diverging, manifest=micro_manifest, step=4, output=tmp_path / "step_4.pt", tensorboard_dir=tb,
                      device="cpu")
    assert read_scalars(tb) == before and [s for s, _ in before["train/loss_total"]] == [0, 1, 2, 3]


def test_temp_files_of_a_killed_write_are_removed_and_a_live_writers_kept(tmp_path):
    target = tmp_path / "step_8.pt"
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True).stdout)
    killed = tmp_path / f".step_8.pt.{_host()}-{dead_pid}.k1ll3d_x.tmp"
    live = tmp_path / f".step_8.pt.{_host()}-{os.getpid()}.l1ve_xyz.tmp"
    old_format = tmp_path / ".step_8.pt.ab12cd34.tmp"  # no writer recorded: stale once old
    young_other = tmp_path / ".step_16.pt.ab12cd34.tmp"
    other_host = tmp_path / ".step_8.pt.0123abcd-4242.n0de17xy.tmp"  # a requeued job's first node
    for path in (killed, live, old_format, young_other, other_host):
        path.write_bytes(b"partial")
    hours_ago = time.time() - 7200
    os.utime(old_format, (hours_ago, hours_ago))
    assert sorted(remove_stale_temps(tmp_path)) == sorted([killed, old_format])
    assert live.exists() and young_other.exists() and other_host.exists()
    # the job that owns the target clears its leftovers from any host, and only those
    assert sorted(remove_temps_of(target)) == sorted([live, other_host])
    assert young_other.exists()


def test_a_snapshot_of_other_data_or_another_device_is_not_resumed(straight, micro_manifest, tmp_path, capfd):
    from streamvc_rvq.training.snapshots import find_snapshot, origin

    cfg = micro_config("phase1", train={"steps": [STEPS]})
    out = tmp_path / f"step_{STEPS}.pt"
    other_manifest = tmp_path / "manifest.csv"
    other_manifest.write_text(micro_manifest.read_text() + "\n")  # the corpus re-prepared
    made = origin(None, STEPS, cfg, micro_manifest, "manifest", torch.device("cpu"))
    for changed in (origin(None, STEPS, cfg, other_manifest, "manifest", torch.device("cpu")),
                    origin(None, STEPS, cfg, micro_manifest, None, torch.device("cpu")),
                    origin(None, STEPS, cfg, micro_manifest, "manifest", "cuda")):
        save_checkpoint(snapshot_path(out), dict(load_checkpoint(straight), step=4, snapshot_origin=made))
        assert find_snapshot(out, made, 0, "cpu") is not None
        assert find_snapshot(out, changed, 0, "cpu") is None and not snapshot_path(out).exists()
    assert "made from another starting checkpoint" in capfd.readouterr().err


def test_stop_request_waits_for_the_step_once_and_not_twice():
    from streamvc_rvq.training.snapshots import StopRequest

    # as a process started in the foreground has it: a shell's background job (`pytest ... &`)
    # inherits SIGINT ignored, which StopRequest rightly leaves alone
    started_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _stop_twice(StopRequest)
    finally:
        signal.signal(signal.SIGINT, started_with)


def _stop_twice(StopRequest) -> None:
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal == signal.SIGINT  # noted, not raised: the step finishes and a snapshot is written
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second one stops at once
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopRequest() as stop:
            os.kill(os.getpid(), signal.SIGINT)  # ignored by whoever started us: stays ignored
            assert stop.signal is None
    finally:
        signal.signal(signal.SIGINT, previous)


def test_by_hand_the_config_files_snapshot_section_applies(tmp_path):
    from streamvc_rvq.cli import _snapshot_policy, build_parser
    from micro import CONFIG_FILES

    overlay = tmp_path / "snap.yaml"
    overlay.write_text("snapshots: {every_steps: 3, every_minutes: 0}\n")
    common = ["train", "--manifest", "m.csv", "--step", "4", "--output", "o.pt"]
    args = build_parser().parse_args([*common, "--config", *map(str, CONFIG_FILES), str(overlay)])
    assert _snapshot_policy(args) == SnapshotPolicy(3, 0.0)
    args = build_parser().parse_args([*common, "--config", *map(str, CONFIG_FILES), str(overlay),
                                      "--snapshot-every-minutes", "2"])
    assert _snapshot_policy(args) == SnapshotPolicy(3, 2.0)


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
