"""The one reader of the pipeline's JSON result files (metrics/step_N.json, verdicts, reference
levels) and of a metrics dict's fields: the verdict, its reports and the comparisons read a
checkpoint's numbers here, so a renamed key changes one file. Missing values read as None."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from streamvc_rvq.config import model_with_defaults


def load(path: str | Path) -> dict:
    """One result file (a metrics file, a verdict, reference levels)."""
    return json.loads(Path(path).read_text())


def load_checkpoints(paths: Iterable[str | Path]) -> list[dict]:
    """Metrics files (``metrics/step_N.json``) in step order."""
    return sorted((load(p) for p in paths), key=lambda m: int(m["step"]))


def number(x: Any) -> float | None:
    """``x`` as a float; None for a missing, boolean or non-numeric value."""
    if x is None or isinstance(x, bool):
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def get(d: Any, *keys: Any) -> Any:
    """``d[k1][k2]...``, or None where a key is missing."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def stage(cp: dict | None, index: int) -> dict | None:
    """The stage entry of ``cp`` with ``index``, or None."""
    for s in (cp or {}).get("stages") or []:
        if s.get("index") == index:
            return s
    return None


def stage_value(cp: dict | None, index: int, key: str) -> float | None:
    """``key`` (perplexity, usage, top_code_share, ...) of stage ``index`` of ``cp``."""
    return number(get(stage(cp, index), key))


def active_stages(cp: dict | None) -> list[dict]:
    """Trained stages with ``index < num_active_quantizers`` (all listed stages if it is
    absent); a stage with ``trained_steps == 0`` is never judged."""
    stages = sorted((cp or {}).get("stages") or [], key=lambda s: s.get("index", 0))
    stages = [s for s in stages if s.get("trained_steps", 1) != 0]
    n = number((cp or {}).get("num_active_quantizers"))
    return stages if n is None else [s for s in stages if s.get("index", 0) < n]


def silence(cp: dict | None, silence_std: float) -> tuple[int | None, int | None]:
    """(number of silent outputs, number of outputs); (None, n) when it cannot be told.

    ``outputs.num_silent`` is used when present (the extractor applied the configured
    silence threshold); otherwise outputs with ``std <= silence_std`` are counted. No outputs at
    all means silence cannot be judged.
    """
    out = get(cp, "outputs")
    if not isinstance(out, dict):
        return None, None
    stds = out.get("std")
    n_out = out.get("num_outputs", len(stds) if isinstance(stds, list) else None)
    if not n_out:
        return None, n_out
    if out.get("num_silent") is not None:
        return int(out["num_silent"]), int(n_out)
    if isinstance(stds, list):
        return sum(1 for s in stds if not (number(s) is not None and number(s) > silence_std)), int(n_out)
    return None, int(n_out)


def conversion_quality(cp: dict | None, key: str, *more: str) -> float | None:
    """A number of ``outputs.quality.convert`` (e.g. ``"dnsmos", "ovrl"``) of ``cp``."""
    return number(get(cp, "outputs", "quality", "convert", key, *more))


def frame_scale(cp: dict | None) -> float | None:
    """Median per-frame norm of the RVQ input over sqrt(D) (``pre_rvq_frame.frame_scale``)."""
    return number(get(cp, "pre_rvq_frame", "frame_scale"))


def training_config(metrics: dict) -> dict:
    """The training config a metrics file carries, its model section completed with the schema's
    defaults (a checkpoint from before a key existed was trained at that key's default)."""
    cfg = dict(metrics.get("training_config") or {})
    if "model" in cfg:
        cfg["model"] = model_with_defaults(cfg["model"])
    return cfg


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested dict (lists kept as values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
