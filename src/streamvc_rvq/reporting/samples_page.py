"""One self-contained HTML page per experiment where every sample conversion and
reconstruction can be played at every checkpoint, next to its source and target reference and
its measures. Snakemake's report shows HTML inline but offers a wav only as a download, so the
audio is embedded (FLAC data URIs, about half the size of wav)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from streamvc_rvq.atomic import atomic_write_bytes
from streamvc_rvq.data.dataset import read_manifest


def audio_tag(audio: np.ndarray, sample_rate: int) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(np.nan_to_num(audio), -1, 1), sample_rate, format="FLAC")
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<audio controls preload="none" src="data:audio/flac;base64,{data}"></audio>'


def _file_tag(path: Path) -> str:
    if not path.exists():
        return "<em>missing</em>"
    audio, rate = sf.read(path, dtype="float32")
    return audio_tag(audio, rate)


def _measures(sample: dict) -> str:
    parts = []
    if sample.get("speaker_similarity_target") is not None:
        parts.append(f"sim→target {sample['speaker_similarity_target']:.2f}")
    if sample.get("speaker_similarity_source") is not None:
        parts.append(f"sim→source {sample['speaker_similarity_source']:.2f}")
    if sample.get("log_f0_correlation") is not None:
        parts.append(f"F0 corr {sample['log_f0_correlation']:.2f}")
    errors = sample.get("errors")
    if errors and errors["words"]:
        parts.append(f"WER {errors['word_errors'] / errors['words']:.2f}")
    if sample.get("mel_cepstral_distortion") is not None:
        parts.append(f"MCD {sample['mel_cepstral_distortion']:.1f} dB")
    text = html.escape(" · ".join(parts))
    if sample.get("transcript") is not None:
        text += f'<br><small>heard: “{html.escape(sample["transcript"])}”</small>'
    return text


def write_samples_page(checkpoints: Sequence[dict], samples_dirs: Sequence[Path], manifest: Path, out: Path,
                       title: str) -> Path:
    """``checkpoints`` (metrics dicts) and their ``samples_dirs`` in the same order."""
    base = Path(manifest).parent
    rows = {r["utterance_id"]: r for r in read_manifest(Path(manifest))}
    order = sorted(zip(checkpoints, samples_dirs), key=lambda pair: int(pair[0]["step"]))
    names: list[str] = []
    for cp, _ in order:
        for sample in (cp.get("outputs") or {}).get("samples", []):
            if sample["name"] not in names:
                names.append(sample["name"])
    head = "".join(f"<th>step {cp['step']}</th>" for cp, _ in order)
    body = []
    for name in names:
        sample0 = next(s for cp, _ in order for s in (cp.get("outputs") or {}).get("samples", []) if s["name"] == name)
        source = rows.get(sample0.get("source", ""))
        cells = [f"<td><b>{html.escape(name)}</b>"]
        if source:
            cells.append(f"<br>source {html.escape(source['speaker'])}: {_file_tag(base / source['path'])}"
                         f"<br><small>“{html.escape(source.get('text', ''))}”</small>")
        target = sample0.get("target_reference") if sample0["kind"] == "convert" else None
        if target in rows:
            cells.append(f"<br>target reference {html.escape(rows[target]['speaker'])}: {_file_tag(base / rows[target]['path'])}")
        cells.append("</td>")
        for cp, directory in order:
            sample = next((s for s in (cp.get("outputs") or {}).get("samples", []) if s["name"] == name), None)
            cells.append("<td>" + (f"{_file_tag(Path(directory) / f'{name}.wav')}<br>{_measures(sample)}" if sample
                                   else "—") + "</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif}} td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}
table{{border-collapse:collapse}} audio{{width:220px}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Every conversion (held-out source to held-out target) and reconstruction, at every checkpoint, with its measures
(speaker similarity of the output to the target reference and to the source, log-F0 correlation with the source,
word error rate of the recogniser's transcript against the source text).</p>
<table><tr><th>sample</th>{head}</tr>
{''.join(body)}
</table></body></html>
"""
    atomic_write_bytes(Path(out), page.encode())
    return Path(out)
