"""Human-readable output: the Markdown reports, each linking its PNG plots (drawn by :mod:`.plots`).

* :func:`write_verdict_report` — one experiment: the verdict, its criteria and decision
  table, every checkpoint's measures, conversion quality, seeds, fidelity and control.
* :func:`write_ab_report` — the A/B comparison: a table per checkpoint step.
* :func:`fmt_value` — a measured value as table text (the ladder report uses it too);
  :func:`quality_table` — the conversion-quality table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from streamvc_rvq.atomic import atomic_write_bytes
from streamvc_rvq.verdict.confidence import scale_label
from streamvc_rvq.metrics_view import get, stage_value

PngList = Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike]


# --------------------------------------------------------------------------- table text


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


def _table_row(cells: Sequence) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


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


def _rate(r: dict | None) -> str:
    return "—" if not r or r.get("wer") is None else f"{r['wer']:.3g} / {r['cer']:.3g}"


def _dnsmos(d: dict | None) -> str:
    return "—" if not d or d.get("ovrl") is None else f"{d['sig']:.2f} / {d['bak']:.2f} / {d['ovrl']:.2f}"


# --------------------------------------------------------------------------- plots and writing


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


def _write_markdown(lines: list[str], pngs: PngList | None, out: Path) -> Path:
    """Append the plot links (relative to ``out``) and write the report atomically."""
    plot_lines = _png_lines(pngs, out)
    if plot_lines:
        lines += ["## Plots", ""] + plot_lines
    atomic_write_bytes(out, "\n".join(lines).encode())
    return out


# --------------------------------------------------------------------------- verdict report: sections


def _verdict_heading(verdict: dict) -> list[str]:
    """The class, the next action and why; where the run came from; whether it is provisional."""
    name = verdict.get("experiment") or "experiment"
    lines = [
        f"# Verdict: {verdict['class'].upper()} — {name} (branch `{verdict['branch']}`)",
        "",
        f"**Next action:** {verdict['next_action']}",
        "",
        f"**Why:** {verdict.get('reason', '')}",
        "",
        *_answers_lines(verdict),
    ]
    origin = verdict.get("provenance") or {}
    if origin.get("preset") or origin.get("corpus"):
        hashes = ", ".join(origin.get("training_config_hashes") or []) or "—"
        lines += [f"Preset `{origin.get('preset')}`, corpus `{origin.get('corpus')}`; training config hash {hashes}.", ""]
    if not verdict.get("complete", True):
        lines += ["**Provisional:** some criteria could not be evaluated (see the table).", ""]
    return lines


def _answers_lines(verdict: dict) -> list[str]:
    """The two answers side by side: the design note's codebook question and the conversion question."""
    codebook, conversion = verdict.get("codebook"), verdict.get("conversion")
    if not codebook or not conversion:
        return []
    pre = "; ".join(f"{p['id']} {fmt_value(p['measured'])} ({'met' if p['met'] else 'not met' if p['met'] is False else 'not measured'})"
                    for p in conversion.get("preconditions") or [])
    return ["| question | class | next action | why |", "|---|---|---|---|",
            _table_row(("codebook (the design note's)", f"**{codebook['class']}** (`{codebook['branch']}`)",
                        codebook["next_action"], codebook.get("reason", ""))),
            _table_row(("conversion", f"**{conversion['class']}**", conversion["next_action"],
                        f"{conversion.get('reason', '')}; preconditions: {pre}")),
            "", f"Top-level class: {verdict.get('class_rule', '')}.", ""]


def _protocol_steps_lines(verdict: dict) -> list[str]:
    """The steps the protocol's checkpoints were read at; for a scaled run, its fidelity."""
    roles = [c for c in verdict.get("checkpoints") or [] if c.get("step") is not None]
    if not verdict.get("scaled"):
        return [f"Steps as in the protocol: {', '.join(str(c['step']) for c in roles)}.", ""]
    mapping = ", ".join(f"{c['role']} → step {c['step']}" for c in roles)
    fidelity = verdict.get("fidelity")
    how = (f"**cut by hand** (x {scale_label(verdict['scale'])} of the protocol's, train.scale 1: not the protocol "
           "scaled, see the warning)" if verdict.get("steps_cut_by_hand")
           else f"**scaled** (scale {scale_label(verdict['scale'])})")
    return [f"Steps are {how}: the protocol's checkpoints are read at {mapping}.", "",
            f"**Fidelity:** {fidelity['statement']} (`{fidelity.get('experiment')}`; see the section below)."
            if fidelity else "**Fidelity:** not measured for this run; set `verdict.fidelity_times` "
            "(config/confidence.yaml) to run it at a larger scale and state how the two agree.", ""]


def _notice_lines(verdict: dict) -> list[str]:
    """Warnings, missing checkpoints and checkpoints beyond the protocol."""
    lines = []
    for w in verdict.get("warnings") or []:
        lines += [f"> warning: {w}", ""]
    if verdict.get("missing"):
        lines += ["Missing checkpoints: " + "; ".join(
            f"{m['role']} ({m['reason']})" for m in verdict["missing"]) + ".", ""]
    if verdict.get("ignored_steps"):
        lines += [f"Checkpoints beyond the protocol (not judged): {verdict['ignored_steps']}.", ""]
    return lines


def _seeds_statement(verdict: dict) -> list[str]:
    seeds = verdict.get("seeds")
    return [f"**Seeds:** {seeds['statement']}." if seeds else
            f"**Seeds:** one (seed {verdict.get('seed')}); set `verdict.seeds` to see how the verdict varies.", ""]


def _criteria_lines(criteria: Sequence[dict]) -> list[str]:
    lines = ["## Criteria", "",
             "| id | step (nominal) | metric | threshold | measured | result | note |",
             "|---|---|---|---|---|---|---|"]
    for c in criteria:
        lines.append(_table_row((
            f"`{c['id']}`" + (" (conversion)" if c.get("question") == "conversion" else ""), _step_text(c["step"], c["nominal_step"]), c["metric"], c["threshold"],
            fmt_value(c["measured"]), _pass_text(c), c.get("note", ""))))
    return lines + [""]


def _decision_lines(branches: Sequence[dict] | None) -> list[str]:
    if not branches:
        return []
    lines = ["## Decision table", "", "| row | matched | reason |", "|---|---|---|"]
    for b in branches:
        m = {True: "**yes**", False: "no", None: "n/a"}[b["matched"]]
        lines.append(f"| `{b['id']}` | {m} | {_cell(b['reason'])} |")
    return lines + [""]


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


def _corpus_quality_row(reference: dict) -> str:
    speaker = reference.get("speaker") or {}
    return (
        f"| corpus | {reference.get('num_utterances')} utterances of {reference.get('num_speakers')} speakers | "
        f"same speaker {fmt_value(speaker.get('same_mean'))} / different {fmt_value(speaker.get('different_mean'))} "
        f"(EER {fmt_value(speaker.get('eer'))}, AUC {fmt_value(speaker.get('auc'))}) | — | "
        f"{_dnsmos(reference.get('dnsmos'))} | "
        f"{'skipped: unreadable' if reference.get('recognition_skipped') else _rate(reference.get('recognition'))} | "
        "1 | 1 | — | 0 | — |")


def _output_quality_row(step, kind: str, q: dict, seconds) -> str:
    """One kind of output (``convert`` or ``reconstruct``) at one checkpoint."""
    target = q.get("speaker_similarity_target")
    similarity = (f"{fmt_value(target)} / {fmt_value(q.get('speaker_similarity_source'))}"
                  if kind == "convert" else f"— / {fmt_value(q.get('speaker_similarity_source'))}")
    recognition = q.get("recognition") or {}
    rates = (f"{_rate(recognition.get('output'))} ({_rate(recognition.get('source'))})"
             if recognition else "—")
    return (
        f"| {step} | {kind} ({fmt_value(q.get('num_outputs'))}) | {similarity} | {fmt_value(q.get('output_similarity'))} | "
        f"{_dnsmos(q.get('dnsmos'))} | {rates} | {fmt_value(q.get('log_f0_correlation'))} | "
        f"{fmt_value(q.get('voicing_agreement'))} | {fmt_value(q.get('si_sdr'))} | "
        f"{fmt_value(q.get('mel_cepstral_distortion'))} | "
        f"{'—' if kind == 'reconstruct' or seconds is None else f'{seconds:.0f} s'} |")


def quality_table(checkpoints: Sequence[dict], reference: dict | None) -> list[str]:
    """Per checkpoint and kind of output, the quality measures; the corpus's levels first."""
    lines = ["| step | outputs | similarity to target / to source | outputs alike (other targets) | "
             "DNSMOS SIG / BAK / OVRL | WER / CER (source audio) | log-F0 corr | voicing agreement | "
             "SI-SDR dB | MCD dB | measured in |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    if reference:
        lines.append(_corpus_quality_row(reference))
    for cp in sorted(checkpoints, key=lambda c: int(c["step"])):
        quality = (cp.get("outputs") or {}).get("quality")
        if not quality:
            continue
        seconds = (quality.get("seconds") or {}).get("total")
        for kind in ("convert", "reconstruct"):
            if quality.get(kind):
                lines.append(_output_quality_row(cp["step"], kind, quality[kind], seconds))
    skipped = next((q["recognition_skipped"] for cp in checkpoints
                    if (q := (cp.get("outputs") or {}).get("quality") or {}).get("recognition_skipped")), None)
    if skipped:
        lines += ["", f"Recognition error: {skipped}."]
    return lines + [""]


def conversion_table(checkpoints: Sequence[dict], reference: dict | None) -> list[str]:
    """Per checkpoint, does the model convert: its own speaker embedding on held-out speakers,
    the target identified among a source's targets, the pitch level followed, the content kept,
    and reconstructions' similarity to their source next to the corpus's levels, the frame-rate tone and
    the harmonicity above 1 kHz against the sources', and how much of the speaker one frame of the
    decoder's content input carries (a linear probe; log-mel the ceiling)."""
    speaker = (reference or {}).get("speaker") or {}
    lines = ["| step | model speaker AUC / EER | target identified (chance) | every held-out source: conversions / "
             "their timbre alone (source's pitch level) / a pitch-only shift / real target speech identified; nearer the "
             "source's speaker than the target: conversions / pitch-only shift | by the model's own encoder | "
             "median F0 corr with target / source | content head on conversions / sources (chance) | "
             "reconstruction similarity to source | frame-rate tone, conversions / sources (dB) | "
             "HNR above 1 kHz, conversions / sources (dB) | speaker read from one frame: decoder input / log-mel (chance) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for cp in sorted(checkpoints, key=lambda c: int(c["step"])):
        quality = (cp.get("outputs") or {}).get("quality") or {}
        convert, own = quality.get("convert") or {}, cp.get("speaker_embedding") or {}
        ident = (convert.get("controls") or {}).get("identification")
        by_model = convert.get("identified_by_model")
        level = convert.get("pitch_level") or {}
        labels = convert.get("content_labels") or {}
        out, src = labels.get("output"), labels.get("source")
        content = (f"{fmt_value(out['accuracy'])} / {fmt_value(src['accuracy'])} ({fmt_value(src['chance'])})"
                   if out and src else "—")
        identified = (f"{ident['rate']:.0%} of {ident['num_outputs']} ({ident['chance']:.0%})" if ident else "—") + (
            f", 95 % {ident['low']:.0%}-{ident['high']:.0%}" if ident and ident.get("low") is not None else "")
        controls = convert.get("reference_controls") or {}
        wide, timbre, pitch, oracle = ((controls.get(k) or {}).get("identification")
                                       for k in ("model", "timbre_only", "pitch_only", "oracle"))
        floor = " / ".join(format(c["rate"], ".0%") if c else "—" for c in (wide, timbre, pitch, oracle)) + (
            f" of {wide['num_outputs']}, 95 % {wide['low']:.0%}-{wide['high']:.0%}" if wide else "")
        kept = [get(controls, k, "source_kept") for k in ("model", "pitch_only")]
        if any(kept):
            floor += "; source kept " + " / ".join(format(k["rate"], ".0%") if k else "—" for k in kept)
        tone, band = convert.get("frame_tone") or {}, convert.get("band_harmonicity") or {}
        probe = cp.get("content_speaker")
        leak = (f"{fmt_value(probe['decoder_input'])} / {fmt_value(probe['log_mel'])} ({fmt_value(probe['chance'])})"
                if probe else "—")
        lines.append(
            f"| {cp['step']} | {fmt_value(own.get('auc'))} / {fmt_value(own.get('eer'))} | {identified} | {floor} | "
            f"{format(by_model['rate'], '.0%') if by_model else '—'} | "
            f"{fmt_value(level.get('correlation_with_target'))} / {fmt_value(level.get('correlation_with_source'))}"
            f" | {content} | {fmt_value((quality.get('reconstruct') or {}).get('speaker_similarity_source'))} | "
            f"{fmt_value(tone.get('output_db'))} / {fmt_value(tone.get('source_db'))} | "
            f"{fmt_value(band.get('output_db'))} / {fmt_value(band.get('source_db'))} | {leak} |")
    lines.append(f"| corpus | Resemblyzer AUC {fmt_value(speaker.get('auc'))} | — | — | — | — | — | same speaker "
                 f"{fmt_value(speaker.get('same_mean'))} / different {fmt_value(speaker.get('different_mean'))} | — | — | — |")
    return lines + [""] + _by_target_line(checkpoints)


def _by_target_line(checkpoints: Sequence[dict]) -> list[str]:
    """The last checkpoint's identification per target speaker, the model's next to the pitch-only shift's."""
    for cp in sorted(checkpoints, key=lambda c: -int(c["step"])):
        controls = get(cp, "outputs", "quality", "convert", "reference_controls")
        model = get(controls, "model", "identification", "by_target")
        if model:
            pitch = get(controls, "pitch_only", "identification", "by_target") or {}
            parts = [f"{t} {c['hits']}/{c['num_outputs']}" + (f" ({pitch[t]['hits']}/{pitch[t]['num_outputs']})" if t in pitch else "")
                     for t, c in model.items()]
            return [f"Identified per target speaker at step {cp['step']}, conversions (pitch-only shift): "
                    + " · ".join(parts) + ".", ""]
    return []


def _listen_links(samples_pages: Sequence[Path], base: Path) -> str:
    """Links to the samples pages, relative to the report (in Snakemake's report: 2. Samples)."""
    parts: dict[str, list[tuple[str, str]]] = {}  # "step 50" -> (part, url) of its page and the parts split off it
    for p in samples_pages:
        step, _, part = Path(p).stem.partition(".")  # step_50.2.html: part 2 of step 50's page
        parts.setdefault(step.replace("_", " "), []).append((part or "1", Path(os.path.relpath(p, base)).as_posix()))
    links = [f"[{step}]({pages[0][1]})" if len(pages) == 1 else
             f"{step} ({', '.join(f'[{part}]({url})' for part, url in pages)})" for step, pages in parts.items()]
    return (" Listen, one page per checkpoint, split in parts where long (in the HTML report: 2. Samples): "
            + " · ".join(links) + ".") if links else ""


def _quality_section(checkpoints: Sequence[dict], reference: dict | None, listen: str,
                     control: dict | None, control_checkpoints: Sequence[dict] | None) -> list[str]:
    """Conversion quality next to the corpus's levels (and the control's, when given)."""
    lines = ["## Conversion quality", "",
             "Measured on each checkpoint's held-out conversions and validation reconstructions by models "
             "independent of ours (Resemblyzer, DNSMOS, pocketsphinx), next to the same measures on the "
             "corpus's own audio." + listen, ""] + quality_table(checkpoints, reference)
    lines += ["Does it convert? The model's own speaker embedding on held-out speakers (AUC 0.5: a constant), "
              "how often Resemblyzer picks the intended target among a source's targets (the floor: the source "
              "only moved to the target's pitch, formants kept; the ceiling: another real utterance of the target; "
              "and how often the "
              "model's own encoder does: far above Resemblyzer, the decoder pleases its own judge only), how far the "
              "conversions' median F0 follows the target's (and, as the control, the source's), the model's "
              "content head on the conversions against the same head on their sources, and how far lines at "
              "multiples of the frame rate stand over the spectrum between them (the \"mosquito tone\"):", ""]
    lines += conversion_table(checkpoints, reference)
    if control_checkpoints:
        name = (control or {}).get("experiment") or "control"
        lines += [f"Control `{name}`:", ""] + quality_table(control_checkpoints, None)
    return lines


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


CONTROL_KEYS = ("perplexity_q0", "usage_q0", "top_code_share_q0", "pre_rvq_std", "frame_scale", "effective_rank",
                "loss_stft", "loss_l1")


def _control_lines(control: dict | None) -> list[str]:
    """Whether the control run reproduced the collapse, and fixed − control at every shared step."""
    if control is None:
        return ["## Control comparison", "", "No control run was compared.", ""]
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
    if not control.get("steps"):
        return lines + ["The two runs share no checkpoint step.", ""]
    lines += ["| step | metric | fixed | control | fixed − control |", "|---|---|---|---|---|"]
    for row in control["steps"]:
        for k in CONTROL_KEYS:
            if k in row["deltas"]:
                lines.append(f"| {row['step']} | {k} | {fmt_value(row['fixed'][k])} | "
                             f"{fmt_value(row['control'][k])} | {fmt_value(row['deltas'][k])} |")
    return lines + [""]


# --------------------------------------------------------------------------- verdict report


def write_verdict_report(verdict: dict, checkpoints: Sequence[dict], control: dict | None,
                         pngs: PngList | None, out_md: str | os.PathLike, samples_pages: Sequence[Path] = (),
                         control_checkpoints: Sequence[dict] | None = None) -> Path:
    """The Markdown verdict report; its first line states the class; ``samples_pages``: the
    pages where the samples play, linked from it. Returns the path."""
    lines = (_verdict_heading(verdict) + _protocol_steps_lines(verdict) + _notice_lines(verdict)
             + _seeds_statement(verdict) + _criteria_lines(verdict["criteria"])
             + _decision_lines(verdict.get("branches")) + ["## Checkpoints", ""] + _checkpoint_table(checkpoints))
    if any((cp.get("outputs") or {}).get("quality") for cp in checkpoints):
        lines += _quality_section(checkpoints, verdict.get("reference_levels"),
                                  _listen_links(samples_pages, Path(out_md).parent), control, control_checkpoints)
    if verdict.get("seeds"):
        lines += _seed_lines(verdict["seeds"])
    if verdict.get("fidelity"):
        lines += _fidelity_lines(verdict["fidelity"])
    lines += _control_lines(control)
    return _write_markdown(lines, pngs, Path(out_md))


# --------------------------------------------------------------------------- A/B report


def _mean_std(stat: dict | None) -> str:
    if stat is None or stat["mean"] is None:
        return "—"
    return fmt_value(stat["mean"]) + ("" if stat["std"] is None else f" ± {fmt_value(stat['std'])}")


def _ab_summary_lines(comparison: dict) -> list[str]:
    """Every run's verdict per arm, and the note's question: which arm's perplexity is higher at 1k and 2k."""
    verdict_bits = []
    for arm in comparison["arms"]:
        vs = comparison["per_arm"][arm]["verdicts"]
        verdict_bits.append(f"`{arm}`: " + ", ".join(f"seed {v['seed']} → {v['class'] or '—'}" for v in vs))
    lines = ["Verdicts: " + "; ".join(verdict_bits) + ".", ""]
    focus = [r for r in comparison["steps"] if r.get("focus")]
    if focus:
        lines += ["The note compares the arms' perplexity at 1k and 2k: " + "; ".join(
            f"step {r['step']} ({r['nominal_step'] // 1000}k): "
            + (f"`{r['better_arm']}` higher by {fmt_value(r['difference'])}" if r["better_arm"]
               else "tie" if r["difference"] is not None else "not comparable")
            for r in focus) + ".", ""]
    if comparison.get("advice"):
        lines += [f"**Advice:** {comparison['advice']}.", ""]
    return lines


def _ab_step_lines(row: dict, arms: Sequence[str]) -> list[str]:
    """One checkpoint step: a row per arm (mean ± std over seeds) and the arm with higher perplexity_q0."""
    nominal = f" (nominal {row['nominal_step'] // 1000}k)" if row.get("nominal_step") else ""
    lines = [f"## Step {row['step']}{nominal}", ""]
    stages = sorted({p["stage"] for a in row["arms"].values() for p in a["perplexity"]})
    header = ["arm", "seeds"] + [f"perplexity q{i}" for i in stages] + [f"usage q{i}" for i in stages] + \
             ["loss_stft", "loss_l1", "verdicts"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in arms:
        a = row["arms"].get(arm)
        if a is None:
            continue
        ppl = {p["stage"]: p for p in a["perplexity"]}
        use = {p["stage"]: p for p in a["usage"]}
        lines.append(_table_row(
            [f"`{arm}`", str(a["n_seeds"])] + [_mean_std(ppl.get(i)) for i in stages]
            + [_mean_std(use.get(i)) for i in stages]
            + [_mean_std(a["loss_stft"]), _mean_std(a["loss_l1"]),
               ", ".join(str(v["class"]) for v in a["verdicts"]) or "—"]))
    if row["better_arm"]:
        lines += ["", f"Higher perplexity_q0: `{row['better_arm']}` by {fmt_value(row['difference'])}."]
    elif row["difference"] is not None:
        lines += ["", "perplexity_q0: tie."]
    return lines + [""]


def write_ab_report(comparison: dict, out_md: str | os.PathLike, pngs: PngList | None = None) -> Path:
    """The Markdown A/B report: a table per checkpoint step and the plots. Returns the path."""
    arms = comparison["arms"]
    lines = [f"# A/B comparison: {' vs '.join(arms)}", ""] + _ab_summary_lines(comparison)
    for row in comparison["steps"]:
        lines += _ab_step_lines(row, arms)
    return _write_markdown(lines, pngs, Path(out_md))
