"""Training to chained step targets: exact resume, progressive schedule, TensorBoard, guards."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from micro import micro_config
from tensor_state import assert_same_state
from streamvc_rvq.evaluation.curves import read_scalars
from streamvc_rvq.quantization.build import library_available
from streamvc_rvq.training.checkpoint import load_checkpoint
from streamvc_rvq.training.trainer import TrainingError, train_to_step

REQUIRED_TAGS = ["train/pre_rvq_std", "train/loss_stft", "train/loss_l1", "train/num_active_quantizers"]


def _chain(cfg, manifest, tmp: Path, steps: list[int], tensorboard: Path | None = None) -> Path:
    previous = None
    for step in steps:
        out = tmp / f"step_{step}.pt"
        train_to_step(cfg, manifest=manifest, step=step, output=out, resume=previous, tensorboard_dir=tensorboard, device="cpu")
        previous = out
    return previous


@pytest.mark.parametrize("experiment", [
    "phase1", "phase2_encodec", "phase2_cosine_lowdim",
    pytest.param("phase2_encodec_library", marks=pytest.mark.skipif(not library_available(), reason="optional library")),
])
def test_chained_targets_equal_one_straight_run(experiment, micro_manifest, tmp_path):
    cfg = micro_config(experiment, train={"steps": [3, 6]})
    straight = _chain(cfg, micro_manifest, tmp_path / "straight", [6])
    chained = _chain(cfg, micro_manifest, tmp_path / "chained", [3, 6], tensorboard=tmp_path / "tb")
    a, b = load_checkpoint(straight), load_checkpoint(chained)
    assert_same_state(a["model"], b["model"], "model")
    assert_same_state(a["optimizer"], b["optimizer"], "optimizer")
    assert_same_state(a["scheduler"], b["scheduler"], "scheduler")
    assert a["step"] == b["step"] == 6
    if experiment in ("phase2_encodec", "phase2_encodec_library"):
        # the EMA codebook really moved, and only through EMA (it is a buffer, not a parameter)
        start = load_checkpoint(tmp_path / "chained" / "step_3.pt")
        codebooks = [k for k in a["model"] if k.endswith(("codebook", "_codebook.embed"))]
        assert codebooks and any(not torch.equal(a["model"][k], start["model"][k]) for k in codebooks)


def _events(logdir: Path) -> Counter:
    seen: Counter = Counter()
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                seen[(value.tag, event.step)] += 1
    return seen


def test_tensorboard_tags_progressive_schedule_and_no_duplicates_after_rebuild(micro_manifest, tmp_path):
    cfg = micro_config("phase1", train={"steps": [5, 10], "log_every": 1})  # progressive_steps 4
    tb = tmp_path / "tb"
    _chain(cfg, micro_manifest, tmp_path, [5, 10], tensorboard=tb)
    # rebuild the first target, then the one after it (as Snakemake does when forced)
    train_to_step(cfg, manifest=micro_manifest, step=5, output=tmp_path / "step_5.pt", tensorboard_dir=tb, device="cpu")
    train_to_step(cfg, manifest=micro_manifest, step=10, output=tmp_path / "step_10.pt", resume=tmp_path / "step_5.pt", tensorboard_dir=tb, device="cpu")
    counts = _events(tb)
    duplicates = [key for key, n in counts.items() if n > 1]
    assert not duplicates, duplicates[:5]
    scalars = read_scalars(tb)
    for tag in REQUIRED_TAGS + ["train/rvq_perplexity_q0", "train/rvq_usage_q0", "train/loss_total", "train/lr", "train/grad_norm"]:
        assert [s for s, _ in scalars[tag]] == list(range(10)), tag
    active = dict(scalars["train/num_active_quantizers"])
    assert [active[s] for s in (0, 3, 4, 7, 8, 9)] == [1, 1, 2, 2, 3, 3]
    # stage q1 is logged exactly from the step it becomes active
    assert [s for s, _ in scalars["train/rvq_perplexity_q1"]] == list(range(4, 10))
    assert [s for s, _ in scalars["train/rvq_usage_q2"]] == [8, 9]


def test_non_finite_loss_stops_with_step_and_term_and_writes_nothing(micro_manifest, tmp_path):
    cfg = micro_config("phase1", train={"steps": [3], "loss_weights": {"stft": 1e38}})
    out = tmp_path / "step_3.pt"
    with pytest.raises(TrainingError, match=r"non-finite loss at step 0: stft"):
        train_to_step(cfg, manifest=micro_manifest, step=3, output=out, device="cpu")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_resume_with_a_different_model_config_is_refused(micro_manifest, tmp_path):
    cfg = micro_config("phase1", train={"steps": [2, 4]})
    first = _chain(cfg, micro_manifest, tmp_path, [2])
    other = micro_config("phase1", train={"steps": [2, 4]}, model={"rvq": {"codebook_size": 16}})
    with pytest.raises(TrainingError, match=r"different model config: rvq\.codebook_size \(32 in checkpoint, 16 in config\)"):
        train_to_step(other, manifest=micro_manifest, step=4, output=tmp_path / "step_4.pt", resume=first, device="cpu")
    assert not (tmp_path / "step_4.pt").exists()


def test_gan_experiment_trains_and_checkpoints_its_discriminator(micro_manifest, tmp_path):
    cfg = micro_config("phase2_gan", train={"steps": [2]})
    out = train_to_step(cfg, manifest=micro_manifest, step=2, output=tmp_path / "step_2.pt", device="cpu")
    ckpt = load_checkpoint(out)
    assert ckpt["discriminator"] and ckpt["disc_optimizer"]["state"]


@pytest.mark.parametrize("size, first, widest", [({}, 4, 8), ({"filters": 32, "max_filters": 64}, 32, 64)])
def test_the_discriminator_is_built_at_the_configured_size(size, first, widest):
    """micro's scaled discriminator (4 -> 8 filters) and EnCodec's (32 -> 64), from train.discriminator."""
    from streamvc_rvq.training.trainer import build_state

    state = build_state(micro_config("phase2_gan", train={"discriminator": size} if size else {}), torch.device("cpu"))
    scale = state.discriminator.discriminators[0]
    widths = [conv.out_channels for conv in scale.convs]
    assert (widths[0], max(widths)) == (first, widest) and len(state.discriminator.discriminators) == 3


def test_killed_job_leaves_no_checkpoint_and_rerun_continues_from_the_last_complete_one(micro_manifest, tmp_path):
    import json
    import signal
    import subprocess
    import sys
    import time

    cfg = micro_config("phase1", train={"steps": [2, 60]})
    first = train_to_step(cfg, manifest=micro_manifest, step=2, output=tmp_path / "step_2.pt", device="cpu")
    target = tmp_path / "step_60.pt"
    cmd = [sys.executable, "-m", "streamvc_rvq", "train", "--config-json", json.dumps(cfg), "--manifest", str(micro_manifest),
           "--step", "60", "--resume", str(first), "--output", str(target), "--device", "cpu", "--threads", "1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # wait until it is really training
        if line.startswith("step "):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_2.pt"]  # nothing half-written
    again = train_to_step(cfg, manifest=micro_manifest, step=60, output=target, resume=first, device="cpu")
    assert load_checkpoint(again)["step"] == 60
