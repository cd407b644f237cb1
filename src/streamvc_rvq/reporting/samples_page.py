"""Self-contained HTML pages where every sample conversion and reconstruction of one checkpoint
plays next to its source and target reference and its measures. Snakemake's report shows HTML
inline but offers a wav only as a download, so the audio is embedded as data URIs: Ogg Opus at
about 70 kbit/s (a third to a half of FLAC; the WAVs next to the metrics stay lossless), FLAC at
sample rates Opus lacks. The report opens each page from a ``data:`` address, and Chromium shows
nothing past 2 MB of address, so a checkpoint's page is split into parts that each stay under
``verdict_page.PAGE_BUDGET_BYTES`` (base64 adds a third when the report embeds the page)."""

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
from streamvc_rvq.reporting.verdict_page import PAGE_BUDGET_BYTES

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
OPUS_LEVEL = 0.75  # libsndfile's compression level: about 70 kbit/s for 16 kHz speech


def audio_tag(audio: np.ndarray, sample_rate: int) -> str:
    """A player with the audio inline; its duration shows before it is played."""
    buffer = io.BytesIO()
    audio = np.clip(np.nan_to_num(audio), -1, 1)
    if sample_rate in OPUS_RATES:
        sf.write(buffer, audio, sample_rate, format="OGG", subtype="OPUS", compression_level=OPUS_LEVEL)
        mime = "audio/ogg"
    else:
        sf.write(buffer, audio, sample_rate, format="FLAC")
        mime = "audio/flac"
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<audio controls preload="metadata" src="data:{mime};base64,{data}"></audio>'


def _file_tag(path: Path, corpus_tags: dict[Path, str] | None = None) -> str:
    """``path``'s player; with ``corpus_tags`` (a corpus file's tag by path) encoded once per file: a source
    or target reference appears on every checkpoint's page, and encoding is most of a verdict's time."""
    if corpus_tags is not None and path in corpus_tags:
        return corpus_tags[path]
    if not path.exists():
        return "<em>missing</em>"
    audio, rate = sf.read(path, dtype="float32")
    tag = audio_tag(audio, rate)
    if corpus_tags is not None:
        corpus_tags[path] = tag
    return tag


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


def _row(sample: dict, directory: Path, rows: dict, base: Path, corpus_tags: dict[Path, str]) -> str:
    name = sample["name"]
    cells = [f"<td><b>{html.escape(name)}</b><br>{_measures(sample)}</td>",
             f"<td>{_file_tag(directory / f'{name}.wav')}</td>"]
    source = rows.get(sample.get("source", ""))
    cells.append(f"<td>{html.escape(source['speaker'])}: {_file_tag(base / source['path'], corpus_tags)}"
                 f"<br><small>“{html.escape(source.get('text', ''))}”</small></td>" if source else "<td>—</td>")
    target = sample.get("target_reference") if sample["kind"] == "convert" else None
    cells.append(f"<td>{html.escape(rows[target]['speaker'])}: {_file_tag(base / rows[target]['path'], corpus_tags)}</td>"
                 if target in rows else "<td>—</td>")
    return "<tr>" + "".join(cells) + "</tr>"


def _page(title: str, rows: Sequence[str]) -> str:
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif}} td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}
table{{border-collapse:collapse}} audio{{width:220px}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Every conversion (held-out source to held-out target) and reconstruction of this checkpoint, with its measures
(speaker similarity of the output to the target reference and to the source, log-F0 correlation with the source,
word error rate of the recogniser's transcript against the source text), its source and its target reference.</p>
<table><tr><th>sample</th><th>output</th><th>source</th><th>target reference</th></tr>
{''.join(rows)}
</table></body></html>
"""


def page_name(step: int, part: int) -> str:
    """``step_{step}.html``, then ``step_{step}.{part}.html`` for the parts a budget split off."""
    return f"step_{step}.html" if part == 1 else f"step_{step}.{part}.html"


def write_samples_pages(checkpoints: Sequence[dict], samples_dirs: Sequence[Path], manifest: Path, out_dir: Path,
                        title: str, budget: int = PAGE_BUDGET_BYTES) -> list[Path]:
    """One page per checkpoint (``checkpoints``, metrics dicts, and their ``samples_dirs`` in the
    same order), split into parts of at most ``budget`` bytes; a single row over the budget gets a
    part of its own. Returns the pages in step order."""
    base = Path(manifest).parent
    rows = {r["utterance_id"]: r for r in read_manifest(Path(manifest))}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, corpus_tags = [], {}
    for cp, directory in sorted(zip(checkpoints, samples_dirs), key=lambda pair: int(pair[0]["step"])):
        samples = (cp.get("outputs") or {}).get("samples", [])
        parts: list[list[str]] = [[]]
        size = len(_page(title, []).encode())
        for sample in samples:
            row = _row(sample, Path(directory), rows, base, corpus_tags)
            if parts[-1] and size + len(row.encode()) > budget:
                parts.append([])
                size = len(_page(title, []).encode())
            parts[-1].append(row)
            size += len(row.encode())
        for number, part in enumerate(parts, start=1):
            suffix = f", part {number} of {len(parts)}" if len(parts) > 1 else ""
            path = out_dir / page_name(int(cp["step"]), number)
            atomic_write_bytes(path, _page(f"{title}: step {cp['step']}{suffix}", part).encode())
            written.append(path)
    return written
