"""Human-readable output: PNG plots (matplotlib, Agg) and Markdown reports.

Plots are drawn on a bare ``matplotlib.figure.Figure`` rendered by the Agg canvas, so no
display, no pyplot global state and no backend switch is needed (works headless, in
parallel Snakemake jobs, on a cluster node).

* :func:`plot_codebook` — perplexity and usage per stage against the step: training-curve
  lines from the TensorBoard scalars (when given) and the checkpoints' validation values
  as markers; thresholds drawn (perplexity 5, ideal 10, usage 5 %).
* :func:`plot_pre_rvq_std` — pre-RVQ std ([0.9, 1.1] band) and frame scale ([0.5, 2] band).
* :func:`plot_losses` — loss_stft and loss_l1: training curve and validation points.
* :func:`plot_quality` — speaker similarity, DNSMOS OVRL and character error rate of the
  outputs per checkpoint, against the corpus's own reference levels.
* :func:`plot_fidelity` — one experiment at two protocol scales, in protocol time.
* :func:`plot_ab` — mean perplexity per arm (± std over seeds) for the A/B comparison.
* :func:`write_verdict_report`, :func:`write_ab_report` — the Markdown reports.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from ..atomic import atomic_write_bytes
from .confidence import scale_label
from .verdict import (
    FRAME_SCALE_BAND,
    HEALTHY_PERPLEXITY,
    PERPLEXITY_IDEAL_1K,
    PRE_RVQ_STD_BAND,
    USAGE_MIN_1K,
    frame_scale,
    stage_value,
)

_STAGE_TAG = re.compile(r"^train/rvq_(perplexity|usage)_q(\d+)$")
PngList = Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike]


# --------------------------------------------------------------------------- plots


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


def plot_codebook(checkpoints: Sequence[dict], scalars: Mapping | None, out_png: str | os.PathLike) -> Path:
    """Perplexity (log scale) and usage of every stage against the step; returns the path."""
    fig, (ax_p, ax_u) = _new_figure(2)
    colors = [f"C{i % 10}" for i in range(64)]
    for i in _stage_indices(checkpoints, scalars):
        for ax, key, tag in ((ax_p, "perplexity", f"train/rvq_perplexity_q{i}"),
                             (ax_u, "usage", f"train/rvq_usage_q{i}")):
            xs, ys = _series(scalars, tag)
            if xs:
                ax.plot(xs, ys, color=colors[i], lw=1.0, alpha=0.7, label=f"q{i}")
            pts = [(int(cp["step"]), stage_value(cp, i, key)) for cp in checkpoints]
            pts = [(s, v) for s, v in pts if v is not None]
            if pts:
                ax.plot([s for s, _ in pts], [v for _, v in pts], "o", color=colors[i],
                        markeredgecolor="k", label=None if xs else f"q{i}")
    ax_p.axhline(HEALTHY_PERPLEXITY, color="red", ls="--", lw=1, label="threshold 5")
    ax_p.axhline(PERPLEXITY_IDEAL_1K, color="green", ls=":", lw=1, label="ideal 10")
    _log_y(ax_p)
    ax_p.set_ylabel("perplexity")
    ax_p.set_title("Codebook perplexity per stage (lines: training batches, dots: checkpoint validation)",
                   fontsize=10)
    ax_u.axhline(USAGE_MIN_1K, color="red", ls="--", lw=1, label="threshold 5 %")
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
                pts = [(int(cp["step"]) / last, stage_value(cp, i, key)) for cp in cps]
                pts = [(t, v) for t, v in pts if v is not None]
                if pts:
                    ax.plot([t for t, _ in pts], [v for _, v in pts], style, color=f"C{i % 10}", ms=4,
                            label=f"q{i} {label}")
        pts = [(int(cp["step"]) / last, frame_scale(cp)) for cp in cps]
        pts = [(t, v) for t, v in pts if v is not None]
        if pts:
            ax_f.plot([t for t, _ in pts], [v for _, v in pts], style, color="C3", label=f"frame scale {label}")
    ax_p.axhline(HEALTHY_PERPLEXITY, color="red", ls=":", lw=1)
    _log_y(ax_p)
    ax_p.set_ylabel("perplexity")
    ax_u.set_ylabel("usage")
    lo, hi = FRAME_SCALE_BAND
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
    lo, hi = PRE_RVQ_STD_BAND
    ax.axhspan(lo, hi, color="green", alpha=0.15, label=f"std band [{lo}, {hi}]")
    flo, fhi = FRAME_SCALE_BAND
    ax.axhspan(flo, fhi, color="C2", alpha=0.07, label=f"frame-scale band [{flo:g}, {fhi:g}]")
    for tag, color, label, value in (
        ("train/pre_rvq_std", "C0", "std", lambda cp: cp.get("pre_rvq_std")),
        ("train/pre_rvq_frame_scale", "C3", "frame scale", lambda cp: (cp.get("pre_rvq_frame") or {}).get("frame_scale")),
    ):
        xs, ys = _series(scalars, tag)
        if xs:
            ax.plot(xs, ys, color=color, lw=1.0, label=f"{label} (train)")
        pts = [(int(cp["step"]), value(cp)) for cp in checkpoints if value(cp) is not None]
        if pts:
            ax.plot([s for s, _ in pts], [v for _, v in pts], "o", color=color, markeredgecolor="k",
                    label=f"{label} (checkpoint)")
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
        xs, ys = _series(scalars, f"train/{name}")
        if xs:
            ax.plot(xs, ys, color="C0", lw=1.0, label="train")
        pts = [(int(cp["step"]), (cp.get("validation") or {}).get(name)) for cp in checkpoints]
        pts = [(s, v) for s, v in pts if v is not None]
        if pts:
            ax.plot([s for s, _ in pts], [v for _, v in pts], "o-", color="C3", markeredgecolor="k",
                    label="validation")
        _mark_checkpoints(ax, checkpoints)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.legend(fontsize=8)
    return _save(fig, out_png)


def _quality(cp: dict, kind: str, *keys: str):
    d = ((cp.get("outputs") or {}).get("quality") or {}).get(kind)
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def plot_quality(checkpoints: Sequence[dict], reference: dict | None, out_png: str | os.PathLike) -> Path:
    """Speaker similarity, DNSMOS OVRL and CER of the outputs per checkpoint, with the
    corpus's reference levels as dashed lines; returns the path."""
    fig, axes = _new_figure(3)
    cps = sorted(checkpoints, key=lambda c: int(c["step"]))
    steps = [int(c["step"]) for c in cps]
    reference = reference or {}

    def line(ax, values, label, style="o-", color=None):
        pts = [(s, v) for s, v in zip(steps, values) if v is not None]
        if pts:
            ax.plot([s for s, _ in pts], [v for _, v in pts], style, label=label, color=color, markeredgecolor="k")

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
    for ax in axes:
        _mark_checkpoints(ax, checkpoints)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(fig, out_png)


def plot_ab(comparison: dict, out_png: str | os.PathLike,
            scalars_by_arm: Mapping[str, Mapping] | None = None) -> Path:
    """Perplexity of each arm against the step: mean over seeds (± std) per stage, q0 bold.

    ``scalars_by_arm`` (optional): ``{arm: read_scalars(...)}`` of one run per arm, drawn as
    thin training curves of ``train/rvq_perplexity_q0``. Returns the path.
    """
    fig, (ax,) = _new_figure(1, height=4.0)
    for k, arm in enumerate(comparison["arms"]):
        color = f"C{k % 10}"
        xs, ys = _series((scalars_by_arm or {}).get(arm), "train/rvq_perplexity_q0")
        if xs:
            ax.plot(xs, ys, color=color, lw=0.8, alpha=0.4, label=f"{arm} q0 train")
        stages = sorted({p["stage"] for row in comparison["steps"] if arm in row["arms"]
                         for p in row["arms"][arm]["perplexity"]})
        for i in stages:
            pts = []
            for row in comparison["steps"]:
                a = row["arms"].get(arm)
                p = next((p for p in a["perplexity"] if p["stage"] == i), None) if a else None
                if p and p["mean"] is not None:
                    pts.append((row["step"], p["mean"], p["std"] or 0.0))
            if not pts:
                continue
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                        color=color, marker="o" if i == 0 else ".", lw=2.0 if i == 0 else 0.8,
                        ls="-" if i == 0 else "--", alpha=1.0 if i == 0 else 0.6, capsize=3,
                        label=f"{arm} q{i}" if i <= 1 else None)
    ax.axhline(HEALTHY_PERPLEXITY, color="red", ls="--", lw=1, label="threshold 5")
    _log_y(ax)
    ax.set_xlabel("step")
    ax.set_ylabel("perplexity (mean over seeds)")
    ax.set_title("A/B: codebook perplexity per arm (q0 bold, later stages dashed)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, out_png)


# --------------------------------------------------------------------------- markdown


def fmt_value(x) -> str:
    """A measured value as table text."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int,)):
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(fmt_value(v) for v in x) + "]"
    if isinstance(x, dict):
        if {"first", "last"} <= set(x):
            s = f"first {fmt_value(x['first'])} → last {fmt_value(x['last'])}"
            if x.get("slope") is not None:
                s += f", slope {x['slope']:.3g}/step"
            return s
        return ", ".join(f"{k} {fmt_value(v)}" for k, v in x.items())
    return str(x)


def _cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _pass_text(c: dict) -> str:
    if c["passed"] is None:
        text = "not evaluated"
    else:
        text = "pass" if c["passed"] else "FAIL"
    return f"{text} (info)" if c.get("informational") else text


def _step_text(step, nominal) -> str:
    if step is None and nominal is None:
        return "all"
    if nominal is None:
        return str(step)
    role = f"{nominal // 1000}k"
    return f"{step if step is not None else '—'} ({role})"


def _png_items(pngs: PngList | None) -> list[tuple[str, Path]]:
    if not pngs:
        return []
    if isinstance(pngs, Mapping):
        return [(str(k), Path(v)) for k, v in pngs.items()]
    return [(Path(p).stem.replace("_", " "), Path(p)) for p in pngs]


def _png_lines(pngs: PngList | None, out_md: Path) -> list[str]:
    lines = []
    for caption, path in _png_items(pngs):
        rel = os.path.relpath(Path(path).resolve(), out_md.parent.resolve())
        lines += [f"![{caption}]({Path(rel).as_posix()})", ""]
    return lines


def _control_lines(control: dict) -> list[str]:
    rep = control.get("collapse_reproduced")
    word = {True: "yes", False: "no", None: "unknown"}[rep]
    c_name = control.get("control_experiment") or "control"
    f_name = control.get("fixed_experiment") or "fixed"
    lines = [
        "## Control comparison",
        "",
        f"Baseline reproduced the collapse: **{word}** — perplexity_q0 "
        f"{fmt_value(control.get('control_perplexity_q0'))} (`{c_name}`, step {control.get('control_last_step')}) "
        f"vs {fmt_value(control.get('fixed_perplexity_q0'))} (`{f_name}`, step {control.get('fixed_last_step')}); "
        f"top-code share {fmt_value(control.get('control_top_code_share_q0'))} "
        f"vs {fmt_value(control.get('fixed_top_code_share_q0'))}. "
        "(Collapse = control perplexity_q0 < 2 or top-code share ≥ 0.5 at its last checkpoint.)",
        "",
    ]
    keys = ["perplexity_q0", "usage_q0", "top_code_share_q0", "pre_rvq_std", "frame_scale", "effective_rank",
            "loss_stft", "loss_l1"]
    if control.get("steps"):
        lines += ["| step | metric | fixed | control | fixed − control |", "|---|---|---|---|---|"]
        for row in control["steps"]:
            for k in keys:
                if k in row["deltas"]:
                    lines.append(f"| {row['step']} | {k} | {fmt_value(row['fixed'][k])} | "
                                 f"{fmt_value(row['control'][k])} | {fmt_value(row['deltas'][k])} |")
        lines.append("")
    else:
        lines += ["The two runs share no checkpoint step.", ""]
    return lines


def _checkpoint_table(checkpoints: Sequence[dict]) -> list[str]:
    lines = ["| step | active stages | perplexity per stage | usage per stage | top-code share q0 | "
             "pre-RVQ std | frame scale | effective rank | content-label accuracy (val / chance) | "
             "val loss_stft | val loss_l1 | silent outputs |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cp in sorted(checkpoints, key=lambda c: int(c["step"])):
        stages = sorted(cp.get("stages") or [], key=lambda s: s["index"])
        out = cp.get("outputs") or {}
        val = cp.get("validation") or {}
        frame = cp.get("pre_rvq_frame") or {}
        content = (cp.get("content_labels") or {}).get("valid")
        labels = f"{fmt_value(content['accuracy'])} / {fmt_value(content['chance'])}" if content else "—"
        silent = (f"{out.get('num_silent')}/{out.get('num_outputs')}"
                  if out.get("num_silent") is not None else "—")
        lines.append(
            f"| {cp['step']} | {fmt_value(cp.get('num_active_quantizers'))} | "
            f"{fmt_value([s.get('perplexity') for s in stages])} | {fmt_value([s.get('usage') for s in stages])} | "
            f"{fmt_value(stage_value(cp, 0, 'top_code_share'))} | {fmt_value(cp.get('pre_rvq_std'))} | "
            f"{fmt_value(frame.get('frame_scale'))} | {fmt_value(frame.get('effective_rank'))} | {labels} | "
            f"{fmt_value(val.get('loss_stft'))} | {fmt_value(val.get('loss_l1'))} | {silent} |"
        )
    return lines + [""]


def _rate(r: dict | None) -> str:
    return "—" if not r or r.get("wer") is None else f"{r['wer']:.3g} / {r['cer']:.3g}"


def _dnsmos(d: dict | None) -> str:
    return "—" if not d or d.get("ovrl") is None else f"{d['sig']:.2f} / {d['bak']:.2f} / {d['ovrl']:.2f}"


def quality_table(checkpoints: Sequence[dict], reference: dict | None) -> list[str]:
    """Per checkpoint and kind of output, the quality measures; the corpus's levels first."""
    lines = ["| step | outputs | similarity to target / to source | outputs alike (other targets) | "
             "DNSMOS SIG / BAK / OVRL | WER / CER (source audio) | log-F0 corr | voicing agreement | "
             "SI-SDR dB | MCD dB | measured in |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    if reference:
        speaker = reference.get("speaker") or {}
        same = speaker.get("same_mean")
        lines.append(
            f"| corpus | {reference.get('num_utterances')} utterances of {reference.get('num_speakers')} speakers | "
            f"same speaker {fmt_value(same)} / different {fmt_value(speaker.get('different_mean'))} "
            f"(EER {fmt_value(speaker.get('eer'))}, AUC {fmt_value(speaker.get('auc'))}) | — | "
            f"{_dnsmos(reference.get('dnsmos'))} | {_rate(reference.get('recognition'))} | 1 | 1 | — | 0 | — |")
    for cp in sorted(checkpoints, key=lambda c: int(c["step"])):
        quality = (cp.get("outputs") or {}).get("quality")
        if not quality:
            continue
        for kind in ("convert", "reconstruct"):
            if not quality.get(kind):
                continue
            q = quality[kind]
            target = q.get("speaker_similarity_target")
            similarity = (f"{fmt_value(target)} / {fmt_value(q.get('speaker_similarity_source'))}"
                          if kind == "convert" else f"— / {fmt_value(q.get('speaker_similarity_source'))}")
            recognition = q.get("recognition") or {}
            rates = (f"{_rate(recognition.get('output'))} ({_rate(recognition.get('source'))})"
                     if recognition else "—")
            seconds = (quality.get("seconds") or {}).get("total")
            lines.append(
                f"| {cp['step']} | {kind} ({fmt_value(q.get('num_outputs'))}) | {similarity} | {fmt_value(q.get('output_similarity'))} | "
                f"{_dnsmos(q.get('dnsmos'))} | {rates} | {fmt_value(q.get('log_f0_correlation'))} | "
                f"{fmt_value(q.get('voicing_agreement'))} | {fmt_value(q.get('si_sdr'))} | "
                f"{fmt_value(q.get('mel_cepstral_distortion'))} | "
                f"{'—' if kind == 'reconstruct' or seconds is None else f'{seconds:.0f} s'} |")
    return lines + [""]


def _write_markdown(lines: list[str], pngs: PngList | None, out: Path) -> Path:
    """Append the plot links (relative to ``out``) and write the report atomically."""
    plot_lines = _png_lines(pngs, out)
    if plot_lines:
        lines += ["## Plots", ""] + plot_lines
    atomic_write_bytes(out, "\n".join(lines).encode())
    return out


def write_verdict_report(verdict: dict, checkpoints: Sequence[dict], control: dict | None,
                         pngs: PngList | None, out_md: str | os.PathLike, samples_page: str | os.PathLike | None = None,
                         control_checkpoints: Sequence[dict] | None = None) -> Path:
    """The Markdown verdict report; its first line states the class. Returns the path."""
    out = Path(out_md)
    name = verdict.get("experiment") or "experiment"
    lines = [
        f"# Verdict: {verdict['class'].upper()} — {name} (branch `{verdict['branch']}`)",
        "",
        f"**Next action:** {verdict['next_action']}",
        "",
        f"**Why:** {verdict.get('reason', '')}",
        "",
    ]
    origin = verdict.get("provenance") or {}
    if origin.get("preset") or origin.get("corpus"):
        hashes = ", ".join(origin.get("training_config_hashes") or []) or "—"
        lines += [f"Preset `{origin.get('preset')}`, corpus `{origin.get('corpus')}`; training config hash {hashes}.", ""]
    if not verdict.get("complete", True):
        lines += ["**Provisional:** some criteria could not be evaluated (see the table).", ""]
    roles = [c for c in verdict.get("checkpoints") or [] if c.get("step") is not None]
    if verdict.get("scaled"):
        mapping = ", ".join(f"{c['role']} → step {c['step']}" for c in roles)
        lines += [f"Steps are **scaled** (scale {scale_label(verdict['scale'])}): the protocol's checkpoints "
                  f"are read at {mapping}.", ""]
        fidelity = verdict.get("fidelity")
        lines += [f"**Fidelity:** {fidelity['statement']} (`{fidelity.get('experiment')}`; see the section below)."
                  if fidelity else "**Fidelity:** not measured for this run; set `verdict.fidelity_times` "
                  "(config/confidence.yaml) to run it at a larger scale and state how the two agree.", ""]
    else:
        lines += [f"Steps as in the protocol: {', '.join(str(c['step']) for c in roles)}.", ""]
    for w in verdict.get("warnings") or []:
        lines += [f"> warning: {w}", ""]
    if verdict.get("missing"):
        lines += ["Missing checkpoints: " + "; ".join(
            f"{m['role']} ({m['reason']})" for m in verdict["missing"]) + ".", ""]
    if verdict.get("ignored_steps"):
        lines += [f"Checkpoints beyond the protocol (not judged): {verdict['ignored_steps']}.", ""]

    seeds = verdict.get("seeds")
    lines += [f"**Seeds:** {seeds['statement']}." if seeds else
              f"**Seeds:** one (seed {verdict.get('seed')}); set `verdict.seeds` to see how the verdict varies.", ""]

    lines += ["## Criteria", "",
              "| id | step (nominal) | metric | threshold | measured | result | note |",
              "|---|---|---|---|---|---|---|"]
    for c in verdict["criteria"]:
        lines.append("| " + " | ".join(_cell(x) for x in (
            f"`{c['id']}`", _step_text(c["step"], c["nominal_step"]), c["metric"], c["threshold"],
            fmt_value(c["measured"]), _pass_text(c), c.get("note", ""))) + " |")
    lines.append("")

    if verdict.get("branches"):
        lines += ["## Decision table", "", "| row | matched | reason |", "|---|---|---|"]
        for b in verdict["branches"]:
            m = {True: "**yes**", False: "no", None: "n/a"}[b["matched"]]
            lines.append(f"| `{b['id']}` | {m} | {_cell(b['reason'])} |")
        lines.append("")

    lines += ["## Checkpoints", ""] + _checkpoint_table(checkpoints)
    reference = verdict.get("reference_levels")
    if any((cp.get("outputs") or {}).get("quality") for cp in checkpoints):
        lines += ["## Conversion quality", "",
                  "Measured on each checkpoint's held-out conversions and validation reconstructions by models "
                  "independent of ours (Resemblyzer, DNSMOS, pocketsphinx), next to the same measures on the "
                  "corpus's own audio."
                  + (f" Listen: [{Path(samples_page).name}]({Path(samples_page).name})." if samples_page else ""),
                  ""] + quality_table(checkpoints, reference)
        if control_checkpoints:
            name = (control or {}).get("experiment") or "control"
            lines += [f"Control `{name}`:", ""] + quality_table(control_checkpoints, None)
    if seeds:
        lines += _seed_lines(seeds)
    if verdict.get("fidelity"):
        lines += _fidelity_lines(verdict["fidelity"])
    if control is not None:
        lines += _control_lines(control)
    else:
        lines += ["## Control comparison", "", "No control run was compared.", ""]
    return _write_markdown(lines, pngs, out)


def _seed_lines(seeds: dict) -> list[str]:
    """Class per seed, and each criterion's result per seed and the spread of its value."""
    lines = ["## Seeds", "", seeds["statement"] + ".", "",
             "| | " + " | ".join(f"seed {s}" for s in seeds["seeds"]) + " |",
             "|---|" + "---|" * len(seeds["seeds"]),
             "| class | " + " | ".join(seeds["class_by_seed"][str(s)] for s in seeds["seeds"]) + " |", "",
             "| criterion | " + " | ".join(f"seed {s}" for s in seeds["seeds"]) + " | min | max | mean | std |",
             "|---|" + "---|" * (len(seeds["seeds"]) + 4)]
    mark = {True: "pass", False: "**fail**", None: "—"}
    for c in seeds["criteria"]:
        cells = [f"{fmt_value(c['measured'][str(s)])} {mark[c['passed'][str(s)]]}" for s in seeds["seeds"]]
        spread = c["spread"] or {}
        cells += [fmt_value(spread.get(k)) for k in ("min", "max", "mean", "std")]
        name = f"`{c['id']}`" + ("" if c["agree"] else " (differs)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + ["", "A list value (every active stage's perplexity) is summarised by its minimum.", ""]


def _fidelity_lines(fidelity: dict) -> list[str]:
    """The two protocol scales, role by role."""
    small, large = (scale_label(x) for x in fidelity["scales"])
    lines = ["## Fidelity of the scaled protocol", "", fidelity["statement"] + ".", "",
             f"| role | steps ({small} / {large}) | stage | perplexity {small} | perplexity {large} | factor | "
             f"usage {small} | usage {large} | frame scale {small} / {large} |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in fidelity["roles"]:
        for s in r["stages"]:
            lines.append(f"| {r['role']} | {r['steps'][0]} / {r['steps'][1]} | q{s['index']} | "
                         f"{fmt_value(s['perplexity'][0])} | {fmt_value(s['perplexity'][1])} | "
                         f"{fmt_value(s['perplexity_factor'])} | {fmt_value(s['usage'][0])} | {fmt_value(s['usage'][1])} | "
                         f"{fmt_value(r['frame_scale'][0])} / {fmt_value(r['frame_scale'][1])} |")
    return lines + [""]


def write_ab_report(comparison: dict, out_md: str | os.PathLike, pngs: PngList | None = None) -> Path:
    """The Markdown A/B report: a table per checkpoint step and the plots. Returns the path."""
    out = Path(out_md)
    arms = comparison["arms"]
    lines = [f"# A/B comparison: {' vs '.join(arms)}", ""]
    verdict_bits = []
    for arm in arms:
        vs = comparison["per_arm"][arm]["verdicts"]
        verdict_bits.append(f"`{arm}`: " + ", ".join(f"seed {v['seed']} → {v['class'] or '—'}" for v in vs))
    lines += ["Verdicts: " + "; ".join(verdict_bits) + ".", ""]
    focus = [r for r in comparison["steps"] if r.get("focus")]
    if focus:
        lines += ["The note compares the arms' perplexity at 1k and 2k: " + "; ".join(
            f"step {r['step']} ({r['nominal_step'] // 1000}k): "
            + (f"`{r['better_arm']}` higher by {fmt_value(r['difference'])}" if r["better_arm"]
               else "tie" if r["difference"] is not None else "not comparable")
            for r in focus) + ".", ""]
    for row in comparison["steps"]:
        nominal = f" (nominal {row['nominal_step'] // 1000}k)" if row.get("nominal_step") else ""
        lines += [f"## Step {row['step']}{nominal}", ""]
        stages = sorted({p["stage"] for a in row["arms"].values() for p in a["perplexity"]})
        header = ["arm", "seeds"] + [f"perplexity q{i}" for i in stages] + [f"usage q{i}" for i in stages] + \
                 ["loss_stft", "loss_l1", "verdicts"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for arm in arms:
            a = row["arms"].get(arm)
            if a is None:
                continue

            def ms(stat):
                if stat is None or stat["mean"] is None:
                    return "—"
                return fmt_value(stat["mean"]) + ("" if stat["std"] is None else f" ± {fmt_value(stat['std'])}")

            ppl = {p["stage"]: p for p in a["perplexity"]}
            use = {p["stage"]: p for p in a["usage"]}
            cells = [f"`{arm}`", str(a["n_seeds"])] + [ms(ppl.get(i)) for i in stages] + \
                    [ms(use.get(i)) for i in stages] + [ms(a["loss_stft"]), ms(a["loss_l1"]),
                                                         ", ".join(str(v["class"]) for v in a["verdicts"]) or "—"]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        if row["better_arm"]:
            lines += ["", f"Higher perplexity_q0: `{row['better_arm']}` by {fmt_value(row['difference'])}."]
        elif row["difference"] is not None:
            lines += ["", "perplexity_q0: tie."]
        lines.append("")
    return _write_markdown(lines, pngs, out)
