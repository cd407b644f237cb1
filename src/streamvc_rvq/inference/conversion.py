"""Loading a trained model and converting audio with it, offline or in 20 ms chunks."""

from __future__ import annotations

from pathlib import Path

import torch

from streamvc_rvq.model.streamvc import StreamVC
from streamvc_rvq.training.checkpoint import check_model_config, load_checkpoint


def load_trained_model(
    checkpoint_path: Path, model_cfg: dict | None = None, device: str | torch.device = "cpu"
) -> tuple[StreamVC, dict, int]:
    """(model in eval mode, the checkpoint's resolved config, its global step).

    With ``model_cfg`` given, a checkpoint trained with another model config is refused
    (CheckpointError naming the differing keys).
    """
    checkpoint = load_checkpoint(checkpoint_path, map_location=device)
    if model_cfg is not None:
        check_model_config(checkpoint, model_cfg, checkpoint_path)
    cfg = checkpoint["config"]
    model = StreamVC(cfg["model"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), cfg, int(checkpoint["step"])


@torch.inference_mode()
def convert(model: StreamVC, source: torch.Tensor, reference: torch.Tensor, num_active: int, stream: bool = False) -> torch.Tensor:
    """Convert 1-D ``source`` to the voice of 1-D ``reference``; returns 1-D audio.

    ``stream=True`` feeds 20 ms chunks through the streaming path (causal configs only);
    its output equals the offline output (tested to 1e-4).
    """
    hop = model.hop_length
    frames = source.shape[-1] // hop
    source = source[: frames * hop]
    if not stream:
        return model(source.unsqueeze(0), reference.unsqueeze(0), num_active).audio[0]
    converter = model.stream(reference.unsqueeze(0), num_active)
    chunks = [converter.process(source[i * hop : (i + 1) * hop].unsqueeze(0)) for i in range(frames)]
    return torch.cat(chunks, dim=-1)[0]
