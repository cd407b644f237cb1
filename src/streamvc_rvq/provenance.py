"""Provenance: what produced a checkpoint or a metrics file, recorded inside it.

Two runs that disagree can then be told apart by their files alone: the package versions
(a torch upgrade changes kernels), the device, the git commit of the code (and whether it
had uncommitted changes) and the hash of the config that drove the run.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from streamvc_rvq.config import config_hash

# The distributions whose versions can change a result or its measurement.
PACKAGES = (
    "streamvc-rvq", "torch", "torchaudio", "numpy", "snakemake", "tensorboard", "soundfile", "librosa",
    "resemblyzer", "speechmos", "onnxruntime", "pocketsphinx", "vector-quantize-pytorch",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, None when it is not installed; torch's with
    its build tag (``2.14.1+cu130``), and the CUDA it was built for."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["torch"] = str(torch.__version__)  # a TorchVersion would not load with weights_only
    out["torch.version.cuda"] = torch.version.cuda
    return out


@functools.lru_cache(maxsize=1)
def git_state(where: str = str(Path(__file__).resolve().parent)) -> dict[str, object]:
    """The commit of the checkout the code runs from, and whether tracked files differ from
    it; ``commit`` is None outside a git checkout (an installed wheel) or without git."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", where, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = None if commit is None else bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": commit, "dirty": dirty}


def describe_device(device: torch.device | str) -> str:
    """``cuda:0 (NVIDIA H200)``, ``mps (arm64)``, ``cpu (x86_64)``."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.machine()})"


def provenance(cfg: dict, device: torch.device | str) -> dict[str, object]:
    """The record stored in every checkpoint and metrics file."""
    git = git_state()
    return {
        "config_hash": config_hash(cfg),
        "device": describe_device(device),
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
    }
