import os

import pytest
import torch

from streamvc_rvq.device import select_device


@pytest.mark.parametrize(
    "mps, cuda, expected",
    [(True, True, "mps"), (False, True, "cuda"), (False, False, "cpu"), (True, False, "mps")],
)
def test_auto_prefers_mps_then_cuda_then_cpu(mps, cuda, expected):
    dev = select_device("auto", mps_available=lambda: mps, cuda_available=lambda: cuda)
    assert dev.type == expected


def test_explicit_device_overrides_auto():
    dev = select_device("cpu", mps_available=lambda: True, cuda_available=lambda: True)
    assert dev == torch.device("cpu")


@pytest.mark.parametrize("name", ["mps", "cuda", "cuda:1"])
def test_missing_device_is_an_error(name):
    with pytest.raises(RuntimeError, match="requested"):
        select_device(name, mps_available=lambda: False, cuda_available=lambda: False)


def test_unknown_device_name():
    with pytest.raises(ValueError, match="unknown device"):
        select_device("tpu", mps_available=lambda: False, cuda_available=lambda: False)


def test_train_deterministic_switches_torch_to_deterministic_kernels(micro_manifest, tmp_path, monkeypatch):
    """The lever reaches torch: without it a CUDA resume cannot equal a straight run."""
    import torch

    from micro import micro_config
    from streamvc_rvq.training.trainer import train_to_step

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = True
        cfg = micro_config("phase1", train={"steps": [1], "deterministic": True})
        train_to_step(cfg, manifest=micro_manifest, step=1, output=tmp_path / "b.pt", device="cpu")
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        cfg = micro_config("phase1", train={"steps": [1], "deterministic": False})
        train_to_step(cfg, manifest=micro_manifest, step=1, output=tmp_path / "a.pt", device="cpu")
        assert not torch.are_deterministic_algorithms_enabled()  # a later job in the process is not left switched
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]
