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
