"""PNG plots of one experiment and of the A/B comparison (matplotlib, Agg).

Plots are drawn on a bare ``matplotlib.figure.Figure`` rendered by the Agg canvas, so no
display, no pyplot global state and no backend switch is needed (works headless, in
parallel Snakemake jobs, on a cluster node). Each plot is rendered in memory and written
atomically: a full disk keeps the old plot.

* :func:`plot_codebook` — perplexity and usage per stage against the step: training-curve
  lines from the TensorBoard scalars (when given) and the checkpoints' validation values
  as markers; thresholds drawn (perplexity 5, ideal 10, usage 5 %).
* :func:`plot_pre_rvq_std` — pre-RVQ std ([0.9, 1.1] band) and frame scale ([0.5, 2] band).
* :func:`plot_losses` — loss_stft and loss_l1: training curve and validation points.
* :func:`plot_quality` — speaker similarity, DNSMOS OVRL and character error rate of the
  outputs per checkpoint, against the corpus's own reference levels.
* :func:`plot_fidelity` — one experiment at two protocol scales, in protocol time.
* :func:`plot_ab` — mean perplexity per arm (± std over seeds) for the A/B comparison.

The Markdown reports that link these plots are in :mod:`.report`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from streamvc_rvq import tags
from streamvc_rvq.atomic import atomic_write_bytes
from streamvc_rvq.verdict.confidence import scale_label
from streamvc_rvq.metrics_view import frame_scale, stage_value
from streamvc_rvq.verdict.thresholds import PROTOCOL

_STAGE_TAG = tags.STAGE_CURVE


# --------------------------------------------------------------------------- helpers


def _new_figure(rows: int, width: float = 8.0, height: float = 3.2) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height * rows), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, 1, i + 1) for i in range(rows)]
    return fig, axes


def _save(fig: Figure, out_png: str | os.PathLike) -> Path:
    out = Path(out_png)
    fig.tight_layout()
    buffer = io.BytesIO()  # rendered first, written atomically: a full disk keeps the old plot
    fig.savefig(buffer, format="png")
    atomic_write_bytes(out, buffer.getvalue())
    return out


def _stage_indices(checkpoints: Sequence[dict], scalars: Mapping | None) -> list[int]:
    idx = {int(s["index"]) for cp in checkpoints for s in cp.get("stages") or []}
    for tag in scalars or {}:
        m = _STAGE_TAG.match(tag)
        if m:
            idx.add(int(m.group(2)))
    return sorted(idx)


def _log_y(ax) -> None:
    """Log y axis with plain numbers (2, 5, 10, 20) instead of 2x10^0."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    lo, hi = ax.get_ylim()
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if lo <= t <= hi]
    if len(ticks) >= 2:
        ax.set_yticks(ticks)
        ax.set_ylim(lo, hi)


def _mark_checkpoints(ax, checkpoints: Sequence[dict]) -> None:
    for cp in checkpoints:
        ax.axvline(int(cp["step"]), color="0.85", lw=0.8, zorder=0)


def _series(scalars: Mapping | None, tag: str) -> tuple[list, list]:
    pts = sorted((scalars or {}).get(tag) or [])
    return [p[0] for p in pts], [p[1] for p in pts]


def _known(points: Iterable[tuple]) -> tuple[list, list]:
    """The ``(x, value)`` points whose value is known, as the two lists ``ax.plot`` takes."""
    pts = [(x, v) for x, v in points if v is not None]
    return [x for x, _ in pts], [v for _, v in pts]


def _quality(cp: dict, kind: str, *keys: str):
    d = ((cp.get("outputs") or {}).get("quality") or {}).get(kind)
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


# --------------------------------------------------------------------------- one experiment


def plot_codebook(checkpoints: Sequence[dict], scalars: Mapping | None, out_png: str | os.PathLike) -> Path:
    """Perplexity (log scale) and usage of every stage against the step; returns the path."""
    fig, (ax_p, ax_u) = _new_figure(2)
    colors = [f"C{i % 10}" for i in range(64)]
    for i in _stage_indices(checkpoints, scalars):
        for ax, key, tag in ((ax_p, "perplexity", tags.stage("perplexity", i)),
                             (ax_u, "usage", tags.stage("usage", i))):
            xs, ys = _series(scalars, tag)
            if xs:
                ax.plot(xs, ys, color=colors[i], lw=1.0, alpha=0.7, label=f"q{i}")
            steps, values = _known((int(cp["step"]), stage_value(cp, i, key)) for cp in checkpoints)
            if steps:
                ax.plot(steps, values, "o", color=colors[i], markeredgecolor="k", label=None if xs else f"q{i}")
    ax_p.axhline(PROTOCOL.healthy_perplexity, color="red", ls="--", lw=1, label="threshold 5")
    ax_p.axhline(PROTOCOL.perplexity_ideal_1k, color="green", ls=":", lw=1, label="ideal 10")
    _log_y(ax_p)
    ax_p.set_ylabel("perplexity")
    ax_p.set_title("Codebook perplexity per stage (lines: training batches, dots: checkpoint validation)",
                   fontsize=10)
    ax_u.axhline(PROTOCOL.usage_min_1k, color="red", ls="--", lw=1, label="threshold 5 %")
    ax_u.set_ylabel("usage (fraction of codes)")
    ax_u.set_title("Codebook usage per stage (lines: training batches, dots: checkpoint validation)",
                   fontsize=10)
    for ax in (ax_p, ax_u):
        _mark_checkpoints(ax, checkpoints)
        ax.set_xlabel("step")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, out_png)


def plot_fidelity(small: Sequence[dict], large: Sequence[dict], fidelity: dict, out_png: str | os.PathLike) -> Path:
    """One experiment at two protocol scales in protocol time (step / last step): per-stage
    perplexity and usage, and the frame scale, at every checkpoint. Returns the path."""
    fig, (ax_p, ax_u, ax_f) = _new_figure(3, height=2.8)
    small_scale, large_scale = (scale_label(x) for x in fidelity["scales"])
    runs = ((small, "o--", small_scale), (large, "s-", large_scale))
    for cps, style, label in runs:
        last = max(int(cp["step"]) for cp in cps)
        for i in _stage_indices(cps, None):
            for ax, key in ((ax_p, "perplexity"), (ax_u, "usage")):
                times, values = _known((int(cp["step"]) / last, stage_value(cp, i, key)) for cp in cps)
                if times:
                    ax.plot(times, values, style, color=f"C{i % 10}", ms=4, label=f"q{i} {label}")
        times, values = _known((int(cp["step"]) / last, frame_scale(cp)) for cp in cps)
        if times:
            ax_f.plot(times, values, style, color="C3", label=f"frame scale {label}")
    ax_p.axhline(PROTOCOL.healthy_perplexity, color="red", ls=":", lw=1)
    _log_y(ax_p)
    ax_p.set_ylabel("perplexity")
    ax_u.set_ylabel("usage")
    lo, hi = PROTOCOL.frame_scale_band
    ax_f.axhspan(lo, hi, color="C2", alpha=0.07)
    ax_f.set_ylabel("frame scale")
    ax_p.set_title(f"Protocol scale {small_scale} (dashed) against {large_scale} (solid), in protocol time", fontsize=10)
    for ax in (ax_p, ax_u, ax_f):
        ax.set_xlabel("protocol time (step / last step)")
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=2)
    return _save(fig, out_png)


def plot_pre_rvq_std(checkpoints: Sequence[dict], scalars: Mapping | None, out_png: str | os.PathLike) -> Path:
    """Std of the RVQ input (band [0.9, 1.1]) and its per-frame scale (median ||z_t|| / sqrt(D),
    band [0.5, 2]) against the step: the std is 1 by construction after per-channel
    normalisation, the frame scale is what the codebook sees. Returns the path."""
    fig, (ax,) = _new_figure(1)
    lo, hi = PROTOCOL.pre_rvq_std_band
    ax.axhspan(lo, hi, color="green", alpha=0.15, label=f"std band [{lo}, {hi}]")
    flo, fhi = PROTOCOL.frame_scale_band
    ax.axhspan(flo, fhi, color="C2", alpha=0.07, label=f"frame-scale band [{flo:g}, {fhi:g}]")
    for tag, color, label, value in (
        (tags.PRE_RVQ_STD, "C0", "std", lambda cp: cp.get("pre_rvq_std")),
        (tags.train("pre_rvq_frame_scale"), "C3", "frame scale", lambda cp: (cp.get("pre_rvq_frame") or {}).get("frame_scale")),
    ):
        xs, ys = _series(scalars, tag)
        if xs:
            ax.plot(xs, ys, color=color, lw=1.0, label=f"{label} (train)")
        steps, values = _known((int(cp["step"]), value(cp)) for cp in checkpoints)
        if steps:
            ax.plot(steps, values, "o", color=color, markeredgecolor="k", label=f"{label} (checkpoint)")
    _mark_checkpoints(ax, checkpoints)
    ax.set_xlabel("step")
    ax.set_ylabel("pre-RVQ std / frame scale")
    ax.set_title("Pre-RVQ scale matching: per-channel std and per-frame scale")
    ax.legend(fontsize=8)
    return _save(fig, out_png)


def plot_losses(checkpoints: Sequence[dict], scalars: Mapping | None, out_png: str | os.PathLike) -> Path:
    """loss_stft and loss_l1: training curves and validation points; returns the path."""
    fig, axes = _new_figure(2)
    for ax, name in zip(axes, ("loss_stft", "loss_l1")):
        xs, ys = _series(scalars, tags.train(name))
        if xs:
            ax.plot(xs, ys, color="C0", lw=1.0, label="train")
        steps, values = _known((int(cp["step"]), (cp.get("validation") or {}).get(name)) for cp in checkpoints)
        if steps:
            ax.plot(steps, values, "o-", color="C3", markeredgecolor="k", label="validation")
        _mark_checkpoints(ax, checkpoints)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.legend(fontsize=8)
    return _save(fig, out_png)


def plot_quality(checkpoints: Sequence[dict], reference: dict | None, out_png: str | os.PathLike) -> Path:
    """Speaker similarity, DNSMOS OVRL and CER of the outputs per checkpoint, with the
    corpus's reference levels as dashed lines; returns the path."""
    fig, axes = _new_figure(3)
    cps = sorted(checkpoints, key=lambda c: int(c["step"]))
    steps = [int(c["step"]) for c in cps]
    reference = reference or {}

    def line(ax, values, label, style="o-", color=None):
        xs, ys = _known(zip(steps, values))
        if xs:
            ax.plot(xs, ys, style, label=label, color=color, markeredgecolor="k")

    def level(ax, value, label, color):
        if value is not None:
            ax.axhline(value, ls="--", color=color, lw=1.0, label=label)

    ax = axes[0]
    line(ax, [_quality(c, "convert", "speaker_similarity_target") for c in cps], "conversion → target", color="C2")
    line(ax, [_quality(c, "convert", "speaker_similarity_source") for c in cps], "conversion → source", color="C3")
    line(ax, [_quality(c, "convert", "output_similarity") for c in cps], "conversions to different targets", "s--", "C7")
    line(ax, [_quality(c, "reconstruct", "speaker_similarity_source") for c in cps], "reconstruction → input", color="C0")
    level(ax, (reference.get("speaker") or {}).get("same_mean"), "corpus: same speaker", "C2")
    level(ax, (reference.get("speaker") or {}).get("different_mean"), "corpus: different speakers", "C3")
    ax.set_title("speaker similarity (Resemblyzer cosine)")
    ax = axes[1]
    for kind, color in (("convert", "C2"), ("reconstruct", "C0")):
        line(ax, [_quality(c, kind, "dnsmos", "ovrl") for c in cps], f"{kind}", color=color)
    level(ax, (reference.get("dnsmos") or {}).get("ovrl"), "corpus audio", "k")
    ax.set_title("DNSMOS OVRL")
    ax = axes[2]
    for kind, color in (("convert", "C2"), ("reconstruct", "C0")):
        line(ax, [_quality(c, kind, "recognition", "output", "cer") for c in cps], f"{kind}", color=color)
    line(ax, [_quality(c, "convert", "recognition", "source", "cer") for c in cps], "their sources", "x:", "C3")
    level(ax, (reference.get("recognition") or {}).get("cer"), "corpus audio", "k")
    # characters, not words: with a rough recogniser the word rate sits near 1 even on corpus audio
    ax.set_title("character error rate (pocketsphinx, against the source text)")
    return _save_per_step(fig, axes, checkpoints, out_png)


def _save_per_step(fig, axes, checkpoints: Sequence[dict], out_png: str | os.PathLike) -> Path:
    """Checkpoint marks, a step axis and a legend where there are lines on each panel; saved."""
    for ax in axes:
        _mark_checkpoints(ax, checkpoints)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(fig, out_png)


def plot_conversion(checkpoints: Sequence[dict], out_png: str | os.PathLike) -> Path:
    """Does it convert, per checkpoint: the model's own speaker-embedding AUC, the share of
    conversions whose intended target Resemblyzer picks (with chance), the median-F0
    correlation with the targets' (and the sources', the control), and the content head's
    accuracy on the conversions and on their sources, with the verdict's bounds dashed."""
    fig, axes = _new_figure(3)
    cps = sorted(checkpoints, key=lambda c: int(c["step"]))
    steps = [int(c["step"]) for c in cps]

    def line(ax, values, label, style="o-", color=None):
        xs, ys = _known(zip(steps, values))
        if xs:
            ax.plot(xs, ys, style, label=label, color=color, markeredgecolor="k")

    ax = axes[0]
    line(ax, [(c.get("speaker_embedding") or {}).get("auc") for c in cps], "model speaker embedding AUC", color="C0")
    line(ax, [_quality(c, "convert", "controls", "identification", "rate") for c in cps], "target identified", color="C2")
    line(ax, [_quality(c, "convert", "controls", "identification", "chance") for c in cps], "chance", ":", "k")
    ax.axhline(PROTOCOL.target_identification_min, ls="--", color="C2", lw=1.0, label="identification bound")
    ax.axhline(PROTOCOL.model_speaker_min_auc, ls="--", color="C0", lw=1.0, label="AUC precondition")
    ax.set_ylim(0, 1.05)
    ax.set_title("speaker: the model's own embedding and the conversions' target")
    ax = axes[1]
    line(ax, [_quality(c, "convert", "pitch_level", "correlation_with_target") for c in cps], "with the target's", color="C2")
    line(ax, [_quality(c, "convert", "pitch_level", "correlation_with_source") for c in cps], "with the source's",
         "s--", "C3")
    ax.axhline(PROTOCOL.pitch_level_min_correlation, ls="--", color="C2", lw=1.0, label="bound")
    ax.set_ylim(-1.05, 1.05)
    ax.set_title("pitch level: correlation of the conversions' median log-F0")
    ax = axes[2]
    line(ax, [_quality(c, "convert", "content_labels", "output", "accuracy") for c in cps], "on the conversions",
         color="C2")
    line(ax, [_quality(c, "convert", "content_labels", "source", "accuracy") for c in cps], "on their sources",
         color="C0")
    line(ax, [_quality(c, "convert", "content_labels", "source", "chance") for c in cps], "chance", ":", "k")
    ax.set_title("content: the model's content head, frame-label accuracy")
    return _save_per_step(fig, axes, checkpoints, out_png)


# --------------------------------------------------------------------------- A/B comparison


def _arm_perplexity(comparison: dict, arm: str, stage: int) -> list[tuple]:
    """``(step, mean, std)`` of one arm's perplexity at ``stage``, at every step it was measured."""
    pts = []
    for row in comparison["steps"]:
        a = row["arms"].get(arm)
        p = next((p for p in a["perplexity"] if p["stage"] == stage), None) if a else None
        if p and p["mean"] is not None:
            pts.append((row["step"], p["mean"], p["std"] or 0.0))
    return pts


def plot_ab(comparison: dict, out_png: str | os.PathLike) -> Path:
    """Perplexity of each arm against the step: mean over seeds (± std) per stage, q0 bold.
    Returns the path."""
    fig, (ax,) = _new_figure(1, height=4.0)
    for k, arm in enumerate(comparison["arms"]):
        color = f"C{k % 10}"
        stages = sorted({p["stage"] for row in comparison["steps"] if arm in row["arms"]
                         for p in row["arms"][arm]["perplexity"]})
        for i in stages:
            pts = _arm_perplexity(comparison, arm, i)
            if not pts:
                continue
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                        color=color, marker="o" if i == 0 else ".", lw=2.0 if i == 0 else 0.8,
                        ls="-" if i == 0 else "--", alpha=1.0 if i == 0 else 0.6, capsize=3,
                        label=f"{arm} q{i}" if i <= 1 else None)
    ax.axhline(PROTOCOL.healthy_perplexity, color="red", ls="--", lw=1, label="threshold 5")
    _log_y(ax)
    ax.set_xlabel("step")
    ax.set_ylabel("perplexity (mean over seeds)")
    ax.set_title("A/B: codebook perplexity per arm (q0 bold, later stages dashed)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, out_png)
