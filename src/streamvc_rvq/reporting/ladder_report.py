"""The remedy ladder's plots and Markdown report.

Overlaid curves of every arm, one colour each, the reference arm (phase1) in black: per-stage
perplexity and usage at every checkpoint (means over seeds; thin lines: the first seed's
TensorBoard training curve of that stage, when given), and the conversion-quality measures
against the corpus's own levels.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import Mapping, Sequence

from streamvc_rvq import tags

from streamvc_rvq.reporting.plots import _log_y, _new_figure, _quality, _save, _series
from streamvc_rvq.reporting.report import PngList, _cell, _write_markdown, fmt_value
from streamvc_rvq.metrics_view import active_stages, stage_value
from streamvc_rvq.verdict.thresholds import PROTOCOL

# Checkpoints of one arm: {seed: [metrics dicts]}
ArmRuns = Mapping[int, Sequence[dict]]


def _style(arm: str, arms: Sequence[str], reference: str | None) -> dict:
    """Colour, marker and line of ``arm``'s curves, distinct for every arm: ten colours, then the
    same ten dashed with squares, then triangles (the full ladder has 13 arms and phase1)."""
    if arm == reference:
        return {"color": "k", "marker": "o", "linestyle": "-"}
    k = [a for a in arms if a != reference].index(arm)
    return {"color": f"C{k % 10}", "marker": "os^vD"[k // 10 % 5], "linestyle": ("-", "--", "-.", ":")[k // 10 % 4]}


def _mean_curve(runs: ArmRuns, value) -> list[tuple[int, float]]:
    """``(step, mean over seeds)`` of ``value(cp)`` at each step any seed has."""
    by_step: dict[int, list[float]] = {}
    for cps in runs.values():
        for cp in cps:
            v = value(cp)
            if v is not None and math.isfinite(float(v)):
                by_step.setdefault(int(cp["step"]), []).append(float(v))
    return [(step, statistics.fmean(vals)) for step, vals in sorted(by_step.items())]


def _num_stages(runs_by_arm: Mapping[str, ArmRuns]) -> int:
    return max((int(s["index"]) + 1 for runs in runs_by_arm.values() for cps in runs.values()
                for cp in cps for s in cp.get("stages") or []), default=0)


def plot_stage_metric(runs_by_arm: Mapping[str, ArmRuns], key: str, out_png: str | os.PathLike, *,
                      reference: str | None = None, scalars_by_arm: Mapping[str, Mapping] | None = None) -> Path:
    """``key`` (perplexity or usage) of every stage, one panel per stage, arms overlaid."""
    arms = list(runs_by_arm)
    stages = max(_num_stages(runs_by_arm), 1)
    fig, axes = _new_figure(stages, height=2.4)
    for i, ax in enumerate(axes):
        for arm in arms:
            style = _style(arm, arms, reference)
            xs, ys = _series((scalars_by_arm or {}).get(arm), tags.stage(key, i))
            if xs:
                ax.plot(xs, ys, color=style["color"], lw=0.6, alpha=0.35)
            pts = _mean_curve(runs_by_arm[arm], lambda cp: stage_value(cp, i, key)
                              if any(int(s["index"]) == i for s in active_stages(cp)) else None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], **style, lw=2.0 if arm == reference else 1.3,
                        markersize=4, label=arm if i == 0 else None)
        if key == "perplexity":
            ax.axhline(PROTOCOL.healthy_perplexity, color="red", ls="--", lw=1)
            if ax.lines:
                _log_y(ax)
        else:
            ax.axhline(PROTOCOL.usage_min_1k, color="red", ls="--", lw=1)
        ax.set_ylabel(f"{key} q{i}")
    lo = min(ax.get_xlim()[0] for ax in axes)
    hi = max(ax.get_xlim()[1] for ax in axes)
    for ax in axes:
        ax.set_xlim(lo, hi)  # one step axis for every stage: later stages start later
    axes[-1].set_xlabel("step")
    axes[0].set_title(f"{key} per stage (dots: checkpoints, mean over seeds; thin: training)", fontsize=9)
    if axes[0].get_legend_handles_labels()[0]:  # from the top panel down the right margin, clear of the title
        axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, out_png)


QUALITY_PANELS = (
    ("DNSMOS OVRL of the conversions", ("dnsmos", "ovrl"), ("dnsmos", "ovrl")),
    ("speaker margin towards the target", ("towards_target_margin",), None),
    ("character error rate of the conversions", ("recognition", "output", "cer"), ("recognition", "cer")),
    ("frame-rate tone of the conversions over their sources (dB)", ("frame_tone", "excess_db"), None),
)


def plot_quality(runs_by_arm: Mapping[str, ArmRuns], reference_levels: dict | None, out_png: str | os.PathLike,
                 *, reference: str | None = None) -> Path:
    """The conversion-quality measures per checkpoint, arms overlaid, corpus levels dashed."""
    arms = list(runs_by_arm)
    fig, axes = _new_figure(len(QUALITY_PANELS), height=2.6)
    for ax, (title, path, level_path) in zip(axes, QUALITY_PANELS):
        for arm in arms:
            pts = _mean_curve(runs_by_arm[arm], lambda cp: _quality(cp, "convert", *path))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], **_style(arm, arms, reference),
                        lw=2.0 if arm == reference else 1.3, markersize=4, label=arm)
        level = reference_levels or {}
        for k in level_path or ():
            level = level.get(k) if isinstance(level, dict) else None
        if level_path and isinstance(level, (int, float)):
            ax.axhline(level, color="0.4", ls="--", lw=1, label="corpus audio")
        if title.startswith("speaker"):
            ax.axhline(0.0, color="0.4", ls=":", lw=1)
        ax.set_title(title)
    axes[-1].set_xlabel("step")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, out_png)


RANKING_COLUMNS = (
    ("rank", "rank"), ("arm", "arm"), ("classes", "verdicts"), ("fixed", "fixed the collapse"),
    ("collapse_passed_share", "codebook criteria passed"), ("criteria_passed_share", "all criteria passed"),
    ("perplexity_share_q0", "perplexity share q0 (log ppl / log size)"),
    ("perplexity_q0", "perplexity q0"), ("perplexity", "perplexity per stage"), ("usage_q0", "usage q0"),
    ("codes_used_q0", "codes used q0 (whole pass)"), ("codebook_size_q0", "codebook size q0"),
    ("top_code_share_q0", "top-code share q0"), ("loss_stft", "loss_stft"), ("dnsmos_ovrl", "DNSMOS OVRL"),
    ("towards_target_margin", "towards target"), ("cer", "CER"),
    ("beyond_pitch_margin", "identified minus pitch-only (every source)"),
    ("frame_tone_excess_db", "frame-rate tone over sources (dB)"),
)


def ranking_table(ladder: dict) -> list[str]:
    header = [title for _, title in RANKING_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in ladder["ranking"]:
        cells = []
        for key, _ in RANKING_COLUMNS:
            value = s.get(key)
            if key == "arm":
                cells.append(f"`{value}`" + (" (reference)" if value == ladder.get("reference") else ""))
            elif key == "classes":
                cells.append("/".join(str(c) for c in value))
            elif key.endswith("_share") and key != "top_code_share_q0" and value is not None:
                cells.append(f"{value:.0%}")
            else:
                cells.append(fmt_value(value))
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def cross_check_lines(ladder: dict) -> list[str]:
    """Whether each cross-check arm answers the ladder's question as our quantizer does."""
    lines = []
    for check in ladder["cross_checks"]:
        if check["native_arm"] is None:
            lines += [f"Cross-check `{check['arm']}` ({check['implementation']}): no native arm with the same settings.", ""]
            continue
        word = "agrees with" if check["agree"] else "DISAGREES with"
        a, b = check["arm"], check["native_arm"]
        fixed = {True: "fixed the collapse", False: "did not fix the collapse"}
        lines += [f"Cross-check: `{a}` ({check['implementation']}) {word} `{b}`: "
                  f"`{a}` {fixed[check['fixed'][a]]} ({'/'.join(map(str, check['classes'][a]))}, perplexity q0 "
                  f"{fmt_value(check['perplexity_q0'][a])}), `{b}` {fixed[check['fixed'][b]]} "
                  f"({'/'.join(map(str, check['classes'][b]))}, perplexity q0 {fmt_value(check['perplexity_q0'][b])})"
                  + _share_clause(check) + ".", ""]
    return lines


def _share_clause(check: dict) -> str:
    """The stage-0 perplexity shares' margin against the seed spread, where the seeds give one."""
    if check.get("seed_spread") is None or check.get("margin_perplexity_share_q0") is None:
        return "; one seed each: no seed-noise allowance for the stage-0 perplexity share"
    within = abs(check["margin_perplexity_share_q0"]) <= check["seed_spread"]
    return (f"; stage-0 perplexity share {fmt_value(check['margin_perplexity_share_q0'])} apart, "
            f"{'within' if within else 'beyond'} the seed spread {fmt_value(check['seed_spread'])}")


def trick_lines(ladder: dict) -> list[str]:
    """Whether each arm's trick acted in its run: an arm whose trick never acted measured nothing."""
    rows = [(s["arm"], t) for s in ladder["ranking"] for t in s.get("tricks", [])]
    if not rows:
        return []
    lines = ["## Did each arm's trick act?", "",
             "| arm | trick | acted | value | what the value is |", "|---|---|---|---|---|"]
    word = {True: "yes", False: "**NO**", None: "not logged"}
    lines += [f"| `{arm}` | `{t['trick']}` | {word[t['acted']]} | {fmt_value(t['value'])} | {t['meaning']} |"
              for arm, t in rows]
    idle = ladder.get("idle_tricks") or []
    if idle:
        lines += ["", "Tricks that did not act (these arms measured their base arm again): "
                  + "; ".join(f"`{t['arm']}` (`{t['trick']}`)" for t in idle) + "."]
    return lines + [""]


def write_ladder_report(ladder: dict, out_md: str | os.PathLike, pngs: PngList | None = None,
                        experiments_table: str | os.PathLike | None = None) -> Path:
    out = Path(out_md)
    lines = ["# Phase 2 remedy ladder", "", ladder["statement"], "", "## Ranking", ""]
    order = ", then ".join(f"{k['key']} ({k['better']} is better)" for k in ladder["rank_keys"])
    lines += [f"Ranked by {order}. Means over seeds; the last checkpoint's measures.", ""]
    lines += ranking_table(ladder) + [""]
    lines += ["Codebook criteria: " + ", ".join(f"`{c}`" for c in ladder["collapse_criteria"]) + ".", ""]
    failing = [(s["arm"], s["failed"]) for s in ladder["ranking"] if s["failed"]]
    if failing:
        lines += ["Failed criteria: " + "; ".join(f"`{arm}`: {', '.join(f)}" for arm, f in failing) + ".", ""]
    lines += cross_check_lines(ladder)
    lines += trick_lines(ladder)
    for arm, reason in ladder["skipped"].items():
        lines += [f"Left out: `{arm}`: {reason}.", ""]
    if experiments_table:
        rel = os.path.relpath(Path(experiments_table).resolve(), out.parent.resolve())
        lines += [f"Every experiment built so far, side by side: [{Path(rel).name}]({Path(rel).as_posix()}).", ""]
    return _write_markdown(lines, pngs, out)
