"""Training-curve facts from TensorBoard scalars.

Two layers:

* :func:`read_scalars` reads every scalar of a TensorBoard log directory with TensorBoard's
  own event reader (``EventAccumulator``), keeping every point.
* :func:`streamvc_rvq.training.scalars_file.read_segment_scalars` reads the same points from
  the per-target files training writes (the workflow's declared inputs of evaluation).
* :func:`curve_facts` is a pure function of the ``{tag: [(step, value), ...]}`` dict that
  states what the protocol asks about the curves up to a checkpoint: is ``loss_stft``
  falling, where are the perplexities heading, what is the pre-RVQ std.

Definitions (the project's precise reading of "falling" / "rising")
-------------------------------------------------------------------
Only points with ``step <= up_to_step`` are used, in step order. Let ``n`` be their number
and ``w = max(1, min(window, n // 2))`` the effective window, so the first and the last
window never overlap.

* ``first``  = mean of the values of the first ``w`` points,
* ``last``   = mean of the values of the last ``w`` points,
* ``slope``  = ordinary least-squares slope (value per step) over the last ``max(w, 2)``
  points (``None`` when fewer than two points exist),
* ``falling`` (losses) = ``last < first`` **and** ``slope <= 0``: the loss is lower at the
  end than at the start *and* is not climbing at the end. ``None`` when ``n < 2`` (no trend
  can be measured); ``False`` whenever a non-finite value (NaN/inf, a diverged run) lies
  in the curve,
* ``rising`` (perplexities) = ``last > first``; ``None`` when ``n < 2``.

Non-finite values are kept out of the means and the slope and counted in ``num_nonfinite``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from streamvc_rvq import tags

Scalars = Mapping[str, Sequence[tuple[int, float]]]

LOSS_TAGS = (tags.LOSS_STFT, tags.LOSS_L1)
PRE_RVQ_STD_TAG = tags.PRE_RVQ_STD
ACTIVE_TAG = tags.NUM_ACTIVE
_STAGE_TAG = tags.STAGE_CURVE


def _event_files(logdir: Path) -> bool:
    return any(p.is_file() and "tfevents" in p.name for p in logdir.iterdir())


def read_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files in ``logdir``: ``{tag: [(step, value), ...]}``.

    ``logdir`` is a directory holding event files (all of them are read, as TensorBoard
    does for one run) or a single event file. Points come back sorted by step. When a step
    of a tag was written more than once (a checkpoint target rebuilt and its steps logged
    again), the point written LAST — by wall time, ties broken by reading order — is
    kept. TensorBoard's own "orphaned data" purge is switched off so that a rebuilt early
    segment does not discard the later steps written before it.

    Raises FileNotFoundError when ``logdir`` does not exist; an existing directory without
    event files gives ``{}``.
    """
    from tensorboard.backend.event_processing.event_accumulator import (
        SCALARS,
        EventAccumulator,
    )

    path = Path(logdir)
    if not path.exists():
        raise FileNotFoundError(f"TensorBoard log directory not found: {path}")
    if path.is_dir() and not _event_files(path):
        return {}
    acc = EventAccumulator(str(path), size_guidance={SCALARS: 0}, purge_orphaned_data=False)
    acc.Reload()
    out: dict[str, list[tuple[int, float]]] = {}
    for tag in acc.Tags().get("scalars", []):
        events = list(enumerate(acc.Scalars(tag)))
        # stable order: wall time, then reading order; later writes overwrite earlier ones
        events.sort(key=lambda ie: (ie[1].wall_time, ie[0]))
        by_step: dict[int, float] = {}
        for _, ev in events:
            by_step[int(ev.step)] = float(ev.value)
        out[tag] = sorted(by_step.items())
    return out


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _slope(points: Sequence[tuple[int, float]]) -> float | None:
    """Least-squares slope of value against step (value per step)."""
    if len(points) < 2:
        return None
    xs = [float(s) for s, _ in points]
    ys = [v for _, v in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def series_facts(points: Iterable[tuple[int, float]], up_to_step: int, window: int) -> dict:
    """Window statistics of one series (see the module docstring for the definitions).

    Returns ``{"num_points", "num_nonfinite", "first_step", "last_step", "window",
    "first", "last", "slope"}``; values are ``None`` where there are no points.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    pts = sorted((int(s), float(v)) for s, v in points if s <= up_to_step)
    finite = [(s, v) for s, v in pts if math.isfinite(v)]
    n = len(finite)
    w = max(1, min(window, n // 2))
    first = _mean([v for _, v in finite[:w]]) if n else None
    last = _mean([v for _, v in finite[-w:]]) if n else None
    return {
        "num_points": len(pts),
        "num_nonfinite": len(pts) - n,
        "first_step": finite[0][0] if n else None,
        "last_step": finite[-1][0] if n else None,
        "window": w if n else 0,
        "first": first,
        "last": last,
        "slope": _slope(finite[-max(w, 2):]) if n >= 2 else None,
    }


def curve_facts(scalars: Scalars, up_to_step: int, window: int = 10) -> dict:
    """Facts about the training curves up to ``up_to_step`` (pure; no I/O).

    Returns ``{"up_to_step", "window", "tags": {tag: facts}}`` with, per tag present:

    * ``train/loss_stft``, ``train/loss_l1``: :func:`series_facts` plus ``falling``,
    * ``train/rvq_perplexity_q{i}``: :func:`series_facts` plus ``rising``,
    * ``train/rvq_usage_q{i}``: :func:`series_facts` plus ``rising``,
    * ``train/pre_rvq_std``: :func:`series_facts` (its ``last`` is the last-window mean),
    * ``train/num_active_quantizers``: ``{"last_value"}`` (the value at the last step).

    Absent tags are absent from ``tags``. ``falling``/``rising`` are defined in the module
    docstring.
    """
    tags: dict[str, dict] = {}
    for tag, points in scalars.items():
        stage = _STAGE_TAG.match(tag)
        if tag in LOSS_TAGS:
            f = series_facts(points, up_to_step, window)
            if f["first"] is None or f["slope"] is None:
                f["falling"] = None
            else:
                f["falling"] = bool(
                    f["num_nonfinite"] == 0 and f["last"] < f["first"] and f["slope"] <= 0
                )
            tags[tag] = f
        elif stage:
            f = series_facts(points, up_to_step, window)
            f["rising"] = None if f["slope"] is None else bool(f["last"] > f["first"])
            tags[tag] = f
        elif tag == PRE_RVQ_STD_TAG:
            tags[tag] = series_facts(points, up_to_step, window)
        elif tag == ACTIVE_TAG:
            pts = sorted((s, v) for s, v in points if s <= up_to_step)
            tags[tag] = {"num_points": len(pts), "last_value": pts[-1][1] if pts else None}
    return {"up_to_step": int(up_to_step), "window": int(window), "tags": tags}


def around_step(points: Sequence[tuple[int, float]], step: int, width: int) -> dict | None:
    """Mean of the finite points in ``(step - width, step]`` and in ``(step, step + width]``
    and their ratio (after / before): how a curve moved when something started at ``step``
    (the progressive RVQ's second stage). None unless both sides have a point."""
    before = [v for s, v in points if step - width < s <= step and math.isfinite(v)]
    after = [v for s, v in points if step < s <= step + width and math.isfinite(v)]
    if not before or not after:
        return None
    b, a = sum(before) / len(before), sum(after) / len(after)
    return {"step": int(step), "width": int(width), "before_mean": b, "after_mean": a,
            "num_before": len(before), "num_after": len(after), "ratio": a / b if b else None}
