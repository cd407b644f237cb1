import math

import pytest
import torch

from streamvc_rvq.model.streamvc import StreamVC, resolve_model_config
from streamvc_rvq.training.checkpoint import (
    CheckpointError,
    check_model_config,
    load_checkpoint,
    save_checkpoint,
)
from streamvc_rvq.training.schedule import lr_factor
from streamvc_rvq.evaluation.curves import read_scalars
from streamvc_rvq.training.tensorboard_log import SegmentWriter, segment_files


def test_lr_warmup_then_cosine_to_zero():
    # step k takes the continuous schedule at k + 0.5 (mid-step)
    assert lr_factor(0, 10, 100) == pytest.approx(0.05)
    assert lr_factor(9, 10, 100) == pytest.approx(0.95)
    assert lr_factor(10, 10, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5 / 90)))
    assert lr_factor(55, 10, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 45.5 / 90)))
    assert lr_factor(99, 10, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 89.5 / 90)))
    assert lr_factor(100, 10, 100) == pytest.approx(0.0)
    assert lr_factor(0, 0, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5 / 100)))


def test_summed_warmup_is_the_schedules_integral():
    """Mid-step values make a phase's summed factor its integral: warm-up of W steps sums to W/2."""
    for warmup in (3, 25, 500):
        assert sum(lr_factor(k, warmup, 10 * warmup) for k in range(warmup)) == pytest.approx(warmup / 2)


def _payload(model_cfg):
    return {"model": {"w": torch.ones(3)}, "step": 5, "config": {"model": model_cfg}}


def test_checkpoint_roundtrip_is_atomic_and_weights_only(tmp_path):
    path = tmp_path / "ckpt" / "step_5.pt"
    save_checkpoint(path, _payload({"a": 1}))
    assert [p.name for p in path.parent.iterdir()] == ["step_5.pt"]  # no temporary left
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.ones(3)) and loaded["step"] == 5
    assert "version" in loaded and "model_config_hash" in loaded


def test_mismatched_model_config_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "step_5.pt"
    save_checkpoint(path, _payload({"rvq": {"codebook_size": 1024, "distance": "euclidean"}}))
    ckpt = load_checkpoint(path)
    check_model_config(ckpt, {"rvq": {"distance": "euclidean", "codebook_size": 1024}}, path)
    with pytest.raises(CheckpointError, match=r"rvq\.codebook_size \(1024 in checkpoint, 512 in config\)"):
        check_model_config(ckpt, {"rvq": {"codebook_size": 512, "distance": "euclidean"}}, path)


def test_a_checkpoint_from_before_a_model_key_existed_counts_at_its_default(tmp_path):
    """Checkpoints written before rvq.projection_dim and rvq.implementation existed were trained
    without a projection, natively: they resume and evaluate; another value is refused."""
    path = tmp_path / "step_5.pt"
    save_checkpoint(path, _payload({"rvq": {"codebook_size": 1024}}))
    ckpt = load_checkpoint(path)
    check_model_config(ckpt, {"rvq": {"codebook_size": 1024, "projection_dim": 0, "implementation": "native"}}, path)
    with pytest.raises(CheckpointError, match=r"rvq\.projection_dim \(0 in checkpoint, 8 in config\)"):
        check_model_config(ckpt, {"rvq": {"codebook_size": 1024, "projection_dim": 8}}, path)


def test_a_checkpoint_from_before_the_speaker_path_change_loads_as_the_model_it_was(tmp_path):
    """Its resolved config lacks speaker_encoder.front_end/pooling and pitch.target/
    excitation_harmonics: they read as the waveform encoder with attention pooling and no
    pitch level, its parameters renamed, so it loads and evaluates; today's config is refused."""
    tiny = {"content_encoder": {"channels": 4, "dim": 8, "num_labels": 5}, "speaker_encoder": {"channels": 4, "dim": 8},
            "decoder": {"channels": 4}, "rvq": {"num_quantizers": 3, "codebook_size": 16, "codebook_dim": 8}}
    legacy = resolve_model_config({**tiny, "speaker_encoder": {"channels": 4, "dim": 8, "front_end": "waveform",
                                                               "pooling": "attention"},
                                   "pitch": {"target": "none", "excitation_harmonics": 0}})
    model = StreamVC(legacy)
    state = {}
    for name, tensor in model.state_dict().items():  # the names it had before
        state[name.replace("speaker_encoder.front_end.", "speaker_encoder.").replace("speaker_encoder.pooling.",
                                                                                     "speaker_encoder.")] = tensor
    for section, key in (("speaker_encoder", "front_end"), ("speaker_encoder", "pooling"), ("pitch", "target"),
                         ("pitch", "excitation_harmonics")):
        del legacy[section][key]
    path = tmp_path / "step_5.pt"
    save_checkpoint(path, {"model": state, "step": 5, "config": {"model": legacy}})
    ckpt = load_checkpoint(path)
    assert ckpt["config"]["model"]["speaker_encoder"]["front_end"] == "waveform"
    assert ckpt["config"]["model"]["pitch"]["excitation_harmonics"] == 0
    StreamVC(ckpt["config"]["model"]).load_state_dict(ckpt["model"])  # every parameter found
    with pytest.raises(CheckpointError, match=r"speaker_encoder\.front_end \('waveform' in checkpoint, 'log_mel' in config\)"):
        check_model_config(ckpt, tiny, path)


def test_truncated_checkpoint_is_one_clear_error(tmp_path):
    path = tmp_path / "step_5.pt"
    save_checkpoint(path, _payload({"a": 1}))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="is not a checkpoint of this project and was not loaded: not a PyTorch zip archive"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_text_file_or_foreign_torch_file_as_checkpoint_is_one_line(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("epoch 101: loss 0.3\n")
    with pytest.raises(CheckpointError, match=r"notes\.pt is not a checkpoint") as err:
        load_checkpoint(text)
    assert "\n" not in str(err.value)
    foreign = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="not a checkpoint of this project and was not loaded: a PyTorch file without model, config, step"):
        load_checkpoint(foreign)


def _segment(logdir, start, end, publish=True):
    writer = SegmentWriter(logdir, start, end)
    writer.add_scalar("x", float(end), start)
    writer.publish() if publish else writer.close()


def test_segments_at_or_after_a_rebuilt_start_are_removed_once_the_rebuild_is_published(tmp_path):
    for start, end in [(0, 10), (10, 20), (20, 30)]:
        _segment(tmp_path, start, end)
    assert [(s, e) for s, e, _ in segment_files(tmp_path)] == [(0, 10), (10, 20), (20, 30)]
    _segment(tmp_path, 10, 20, publish=False)  # a rebuild of the middle target that fails
    assert [(s, e) for s, e, _ in segment_files(tmp_path)] == [(0, 10), (10, 20), (20, 30)]
    assert read_scalars(tmp_path)["x"] == [(0, 10.0), (10, 20.0), (20, 30.0)]
    _segment(tmp_path, 10, 20)  # the rebuild that succeeds replaces it and the segment after it
    assert [(s, e) for s, e, _ in segment_files(tmp_path)] == [(0, 10), (10, 20)]
    assert not (tmp_path / "live").exists()


def test_a_resumed_segment_keeps_the_parts_before_its_snapshot_and_drops_the_rest(tmp_path):
    writer = SegmentWriter(tmp_path, 0, 10)
    for step in range(7):  # killed after step 6; its snapshot was at step 4
        if step == 4:
            writer.new_part(4)
        writer.add_scalar("x", float(step), step)
    writer.close()
    writer = SegmentWriter(tmp_path, 0, 10, resume_from=4)
    for step in range(4, 10):
        writer.add_scalar("x", float(step), step)
    writer.publish()
    assert read_scalars(tmp_path)["x"] == [(s, float(s)) for s in range(10)]
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = [e.step for _, _, p in segment_files(tmp_path) for e in EventFileLoader(str(p)).Load() if e.summary.value]
    assert sorted(steps) == list(range(10))  # each step once


class _Hostile:
    """A pickle that would run a command when loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_malicious_pickle_is_refused_unrun_in_one_line(tmp_path, zip_format):
    marker, path = tmp_path / "ran", tmp_path / "step_5.pt"
    torch.save({"model": _Hostile(marker), "config": {}, "step": 5}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and "weights_only" not in message
    assert message.startswith(f"{path} is not a checkpoint of this project and was not loaded")
    assert not marker.exists()
