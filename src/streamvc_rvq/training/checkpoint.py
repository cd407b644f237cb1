"""Checkpoints: everything needed to continue training bit-for-bit, written atomically.

A checkpoint holds the model, optimiser, scheduler, discriminator (when the GAN is on), the
RNG states, the global step, the resolved config with the hash of its model section, and
the package version. It is written to a temporary file in the same directory and renamed,
so a killed job never leaves a half-written ``step_N.pt``. Loading uses
``torch.load(weights_only=True)``: only tensors and plain containers are stored.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from streamvc_rvq import __version__
from streamvc_rvq.atomic import atomic_path
from streamvc_rvq.config import config_hash, model_with_defaults


REQUIRED_KEYS = ("model", "config", "step")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used with the requested config."""


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus version and model-config hash) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(payload, version=__version__, model_config_hash=config_hash(payload["config"]["model"]),
                   config_hash=config_hash(payload["config"]))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: a full disk keeps its errno
        torch.save(payload, f)


def _refused(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a checkpoint of this project and was not loaded: {why}")


# Model keys that changed the model when they were added, with the value that reproduces a
# checkpoint written before they existed (not today's default): (section, key, legacy value).
LEGACY_MODEL_KEYS = (
    ("speaker_encoder", "front_end", "waveform"),
    ("speaker_encoder", "pooling", "attention"),
    ("pitch", "target", "none"),
    ("pitch", "excitation_harmonics", 0),
    ("rvq", "straight_through", "identity"),
    ("rvq", "codebook_lr_scale", 1.0),
    ("rvq", "fsq_levels", [8, 5, 5, 5]),
    ("rvq", "affine_codebook", False),
)
# parameter names of the speaker encoder before it had a front end and a pooling module
LEGACY_PARAMETER_PREFIXES = (
    ("speaker_encoder.encoder.", "speaker_encoder.front_end.encoder."),
    ("speaker_encoder.score.", "speaker_encoder.pooling.score."),
    ("speaker_encoder.value.", "speaker_encoder.pooling.value."),
)


def upgrade_legacy(payload: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint from before a model key existed (the speaker path, the pitch level, the
    remedy ladder's quantizer switches), read as the model it is: a key its (resolved) config section lacks at its legacy value, its speaker-encoder
    parameters renamed. A section it lacks altogether counts at today's defaults."""
    model = payload["config"].get("model", {})
    legacy = False
    for section, key, value in LEGACY_MODEL_KEYS:
        part = model.get(section)
        if isinstance(part, dict) and key not in part:
            part[key] = value
            legacy = True
    if legacy:
        renamed = {}
        for name, tensor in payload["model"].items():
            for old, new in LEGACY_PARAMETER_PREFIXES:
                if name.startswith(old):
                    name = new + name[len(old):]
                    break
            renamed[name] = tensor
        payload["model"] = renamed
    return payload


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's payload; anything else is refused in one line, unread beyond what
    ``torch.load(weights_only=True)`` needs to see that it holds more than tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise _refused(path, "not a PyTorch zip archive (truncated, or another kind of file)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise
    except Exception as err:
        if not isinstance(err, pickle.UnpicklingError) and "weights_only" not in str(err):
            # a truncated or foreign file: say so in one line
            raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {' '.join(str(err).split())[:200]}") from None
        # torch's own message advises weights_only=False: the wrong advice for a file that
        # holds Python objects a checkpoint of ours never contains
        raise _refused(path, "it holds Python objects, not just tensors and plain containers") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise _refused(path, f"a PyTorch file without {', '.join(missing)}")
    return upgrade_legacy(payload)


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix[:-1]} ({a!r} in checkpoint, {b!r} in config)"]


def check_model_config(checkpoint: dict[str, Any], model_cfg: dict, source: Path | str) -> None:
    """Refuse a checkpoint whose model section differs from ``model_cfg``, naming the keys
    (keys the checkpoint predates count at their defaults)."""
    if checkpoint.get("model_config_hash") == config_hash(model_cfg):
        return
    stored, wanted = model_with_defaults(checkpoint["config"]["model"]), model_with_defaults(model_cfg)
    differences = _diff(stored, wanted)
    if not differences:
        return
    raise CheckpointError(
        f"checkpoint {source} was trained with a different model config: " + "; ".join(differences[:6])
    )
