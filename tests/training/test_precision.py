"""Mixed precision reaches the forward pass, spares the quantizer and the losses, and keeps
a chain of step targets equal to one straight run."""

from __future__ import annotations

import pytest
import torch

from micro import micro_config
from streamvc_rvq.model.streamvc import StreamVC
from streamvc_rvq.training.checkpoint import load_checkpoint
from streamvc_rvq.training.precision import Precision, autocast_dtype
from streamvc_rvq.training.trainer import train_to_step


@pytest.mark.parametrize("device,dtype", [("cpu", torch.bfloat16), ("cuda", torch.bfloat16), ("mps", torch.float16)])
def test_mixed_picks_the_devices_fast_type(device, dtype):
    assert autocast_dtype("mixed", torch.device(device)) is dtype
    assert autocast_dtype("fp32", torch.device(device)) is None
    # only float16 needs loss scaling (bfloat16 has float32's range)
    assert Precision("mixed", torch.device(device)).scaling is (dtype is torch.float16)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="train.precision must be one of fp32, mixed"):
        autocast_dtype("fp16", torch.device("cpu"))


def test_autocast_reaches_the_encoders_not_the_quantizer_or_the_decoder():
    cfg = micro_config()
    torch.manual_seed(0)
    model = StreamVC(cfg["model"]).train()
    source, reference = torch.randn(2, 6400) * 0.1, torch.randn(2, 6400) * 0.1
    with Precision("mixed", torch.device("cpu")).autocast():
        out = model(source, reference, 2)
    assert out.content_logits.dtype == torch.bfloat16  # the lever acts: the content encoder ran in bfloat16
    assert out.rvq_input.dtype == torch.float32 and out.rvq.quantized.dtype == torch.float32
    assert out.audio.dtype == torch.float32  # the decoder's backward loses gradient in bfloat16
    with Precision("fp32", torch.device("cpu")).autocast():
        assert model(source, reference, 2).audio.dtype == torch.float32
    with torch.no_grad(), Precision("mixed", torch.device("cpu")).autocast():  # inference: no backward to protect
        out = model.eval()(source, reference, 2)
    assert out.audio.dtype == torch.bfloat16 and out.rvq.quantized.dtype == torch.float32


def _train(cfg, manifest, tmp, steps):
    previous = None
    for step in steps:
        out = tmp / f"step_{step}.pt"
        train_to_step(cfg, manifest=manifest, step=step, output=out, resume=previous, device="cpu")
        previous = out
    return load_checkpoint(previous)


def test_mixed_training_resumes_exactly_and_moves_the_weights_differently(micro_manifest, tmp_path):
    mixed = micro_config(train={"steps": [3, 6], "precision": "mixed"})
    straight = _train(mixed, micro_manifest, tmp_path / "straight", [6])
    chained = _train(mixed, micro_manifest, tmp_path / "chained", [3, 6])
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, chained["model"][name]), name
    full = _train(micro_config(train={"steps": [6]}), micro_manifest, tmp_path / "fp32", [6])
    differ = [n for n, t in full["model"].items() if t.is_floating_point() and not torch.equal(t, straight["model"][n])]
    assert differ  # bfloat16 arithmetic changed the run
    for name, tensor in full["model"].items():  # ... but all weights stay finite and float32
        assert straight["model"][name].dtype == tensor.dtype
        assert torch.isfinite(straight["model"][name].float()).all(), name
