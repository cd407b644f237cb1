"""Conversion quality by measures independent of the model, per sample and summarised per
kind (``convert``, ``reconstruct``): speaker similarity (to the target reference and to the
source), DNSMOS, log-F0 correlation and voicing agreement with the source, the conversions'
pitch level against the target's, recognition error
against the source's text next to the same error on the source audio, the frame-rate tone of
the outputs next to their sources' (:mod:`streamvc_rvq.quality.frame_tone`), the harmonicity of
their band above 1 kHz next to their sources' (:mod:`streamvc_rvq.quality.band_harmonicity`), and for
reconstructions SI-SDR and mel-cepstral distortion against their input.

Which of the model-based measures run is ``evaluation.quality_measures`` (a subset of
:data:`MEASURES`): a corpus that is not English drops ``recognition``, and a corpus whose own
sources the recogniser cannot read (:func:`recognition_skip_reason`) skips it with a reason in the
metrics. Pitch, the frame-rate tone, the band harmonicity and the signal measures always run (they
need no model)."""

from __future__ import annotations

import itertools
import time
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch

from streamvc_rvq.quality import dnsmos, recognition, signal_metrics
from streamvc_rvq.quality.band_harmonicity import BAND_HZ, band_hnr_db
from streamvc_rvq.quality.frame_tone import frame_rate_tone_db
from streamvc_rvq.quality.pitch_metrics import median_f0, pitch_level_following, pitch_preservation
from streamvc_rvq.quality.speaker_similarity import cosine, speaker_embedding

MEASURES = ("speaker", "dnsmos", "recognition")
KINDS = ("convert", "reconstruct")
# Above this word error on the corpus's own source audio the recogniser cannot read the corpus
# (the built-in eSpeak corpus scores ~0.93): its error on the outputs would measure nothing.
RECOGNITION_MAX_SOURCE_WER = 0.5
RECOGNITION_PROBE_UTTERANCES = 4  # sources transcribed to decide it


def recognition_skip_reason(source_rates: dict) -> str | None:
    """Why recognition error means nothing here (the recogniser misreads the sources
    themselves), or None when it can be measured; ``source_rates``: :func:`recognition.pooled_rates`."""
    wer = source_rates.get("wer")
    if wer is None or wer <= RECOGNITION_MAX_SOURCE_WER:
        return None
    return (f"skipped: the recogniser's word error on {source_rates['num_utterances']} source utterances is "
            f"{wer:.2f} (> {RECOGNITION_MAX_SOURCE_WER}): it cannot read this corpus, so its error on the outputs "
            "would measure nothing")


def _mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


class QualityScorer:
    """Scores outputs against their source and target reference; embeddings and transcripts
    of corpus utterances are computed once and reused across samples."""

    def __init__(self, measures: Sequence[str], sample_rate: int, frame_rate: float | None = None) -> None:
        unknown = sorted(set(measures) - set(MEASURES))
        if unknown:
            raise ValueError(f"unknown quality measure(s) {unknown}: choose from {list(MEASURES)}")
        self.measures, self.sample_rate = tuple(measures), sample_rate
        self.frame_rate = frame_rate  # the model's (sample rate / hop): where its tone would sit; None: not measured
        self._tones: dict[str, float | None] = {}
        self._band_hnrs: dict[str, float | None] = {}
        self._embeddings: dict[str, np.ndarray | None] = {}
        self._transcripts: dict[str, dict] = {}
        self._levels: dict[str, float | None] = {}
        self.seconds = {measure: 0.0 for measure in ("pitch", *MEASURES, "signal", "tone", "harmonicity")}

    @contextmanager
    def timed(self, measure: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[measure] += time.perf_counter() - started

    def utterance_embedding(self, utt) -> np.ndarray | None:
        if utt.utterance_id not in self._embeddings:
            self._embeddings[utt.utterance_id] = speaker_embedding(utt.audio, self.sample_rate)
        return self._embeddings[utt.utterance_id]

    def utterance_level(self, utt) -> float | None:
        """The median F0 of a corpus utterance (Hz), once per utterance."""
        if utt.utterance_id not in self._levels:
            self._levels[utt.utterance_id] = median_f0(utt.audio, self.sample_rate)
        return self._levels[utt.utterance_id]

    def utterance_tone(self, utt) -> float | None:
        """The frame-rate tone of a corpus utterance (dB), once per utterance."""
        if utt.utterance_id not in self._tones:
            self._tones[utt.utterance_id] = frame_rate_tone_db(utt.audio, self.sample_rate, self.frame_rate)
        return self._tones[utt.utterance_id]

    def utterance_band_hnr(self, utt) -> float | None:
        """The harmonicity above 1 kHz of a corpus utterance (dB), once per utterance."""
        if utt.utterance_id not in self._band_hnrs:
            self._band_hnrs[utt.utterance_id] = band_hnr_db(utt.audio.numpy(), self.sample_rate)
        return self._band_hnrs[utt.utterance_id]

    def utterance_errors(self, utt) -> dict | None:
        if not utt.text:
            return None
        if utt.utterance_id not in self._transcripts:
            self._transcripts[utt.utterance_id] = recognition.error_counts(
                utt.text, recognition.transcribe(utt.audio, self.sample_rate))
        return self._transcripts[utt.utterance_id]

    def probe_recognition(self, sources: Sequence) -> str | None:
        """Transcribes the first few texted ``sources``; if the recogniser cannot read them,
        drops recognition from this scorer's measures and returns why (else None)."""
        if "recognition" not in self.measures:
            return None
        with self.timed("recognition"):
            texted = [u for u in sources if u.text][:RECOGNITION_PROBE_UTTERANCES]
            reason = recognition_skip_reason(recognition.pooled_rates(self.utterance_errors(u) for u in texted))
        if reason:
            self.measures = tuple(m for m in self.measures if m != "recognition")
        return reason

    def score(self, kind: str, source, reference, output: torch.Tensor) -> tuple[dict, np.ndarray | None]:
        """Measures of one output (a dict for the metrics file) and its speaker embedding."""
        finite = bool(torch.isfinite(output).all())
        output = torch.nan_to_num(output, nan=0.0, posinf=0.0, neginf=0.0)  # measured as the silence it is
        src = source.audio[: output.numel()]
        with self.timed("pitch"):
            entry = {"finite": finite, **pitch_preservation(src, output, self.sample_rate)}
            if kind == "convert":
                entry["median_f0"] = {"output": median_f0(output, self.sample_rate),
                                      "target": self.utterance_level(reference), "source": self.utterance_level(source)}
        if self.frame_rate:
            with self.timed("tone"):
                entry["frame_tone_db"] = frame_rate_tone_db(output, self.sample_rate, self.frame_rate)
                entry["source_frame_tone_db"] = self.utterance_tone(source)
        with self.timed("harmonicity"):  # on the source's voiced frames: the output is aligned with it
            entry["band_hnr_db"] = band_hnr_db(output.cpu().numpy(), self.sample_rate, voicing_reference=src.cpu().numpy())
            entry["source_band_hnr_db"] = self.utterance_band_hnr(source)
        embedding = None
        if "speaker" in self.measures:
            with self.timed("speaker"):
                embedding = speaker_embedding(output, self.sample_rate)
                entry["speaker_similarity_source"] = cosine(embedding, self.utterance_embedding(source))
                if kind == "convert":
                    entry["speaker_similarity_target"] = cosine(embedding, self.utterance_embedding(reference))
        if "recognition" in self.measures and source.text:
            with self.timed("recognition"):
                hypothesis = recognition.transcribe(output, self.sample_rate)
                entry["transcript"] = hypothesis
                entry["errors"] = recognition.error_counts(source.text, hypothesis)
                entry["source_errors"] = self.utterance_errors(source)
        if kind == "reconstruct":
            with self.timed("signal"):
                entry["si_sdr"] = signal_metrics.si_sdr(src, output)
                entry["mel_cepstral_distortion"] = signal_metrics.mel_cepstral_distortion(src, output, self.sample_rate)
        return entry, embedding

    def summarise(self, entries: list[dict], outputs: list[torch.Tensor], embeddings: list, targets: list[str]) -> dict:
        """Means over the outputs of one kind; DNSMOS over their concatenated segments."""
        summary: dict = {
            "num_outputs": len(entries),
            "log_f0_correlation": _mean([e["log_f0_correlation"] for e in entries]),
            "voicing_agreement": _mean([e["voicing_agreement"] for e in entries]),
        }
        if any("frame_tone_db" in e for e in entries):
            summary["frame_tone"] = frame_tone_summary(entries)
        if any("band_hnr_db" in e for e in entries):
            summary["band_harmonicity"] = band_harmonicity_summary(entries)
        if any("median_f0" in e for e in entries):
            summary["pitch_level"] = pitch_level_following([e["median_f0"] for e in entries if "median_f0" in e])
        if "speaker" in self.measures:
            summary["speaker_similarity_source"] = _mean([e["speaker_similarity_source"] for e in entries])
            if any("speaker_similarity_target" in e for e in entries):
                margins = [e["speaker_similarity_target"] - e["speaker_similarity_source"] for e in entries
                           if e.get("speaker_similarity_target") is not None and e["speaker_similarity_source"] is not None]
                summary["speaker_similarity_target"] = _mean([e.get("speaker_similarity_target") for e in entries])
                summary["towards_target_margin"] = _mean(margins)
                summary["towards_target_share"] = (sum(m > 0 for m in margins) / len(margins)) if margins else None
                summary["output_similarity"] = output_similarity(embeddings, targets)
        if "dnsmos" in self.measures:
            with self.timed("dnsmos"):
                summary["dnsmos"] = dnsmos.dnsmos_of_clips(outputs, self.sample_rate)
        if "recognition" in self.measures:
            summary["recognition"] = {
                "output": recognition.pooled_rates(e.get("errors") for e in entries),
                "source": recognition.pooled_rates(e.get("source_errors") for e in entries),
            }
        if entries and "si_sdr" in entries[0]:
            summary["si_sdr"] = _mean([e["si_sdr"] for e in entries])
            summary["mel_cepstral_distortion"] = _mean([e["mel_cepstral_distortion"] for e in entries])
        return summary


def _paired_medians(entries: Sequence[dict], output_key: str, source_key: str) -> tuple[float | None, float | None, int]:
    """Medians over outputs of ``output_key`` and of their sources' ``source_key`` (None where no
    value), and how many outputs had one."""
    outputs = [e[output_key] for e in entries if e.get(output_key) is not None]
    sources = [e[source_key] for e in entries if e.get(source_key) is not None]
    return (float(np.median(outputs)) if outputs else None, float(np.median(sources)) if sources else None,
            len(outputs))


def frame_tone_summary(entries: Sequence[dict]) -> dict:
    """Medians over outputs of their frame-rate tone and their sources' (real speech), and the
    excess: what the verdict compares with ``frame_tone_max_excess_db``."""
    output_db, source_db, count = _paired_medians(entries, "frame_tone_db", "source_frame_tone_db")
    return {"output_db": output_db, "source_db": source_db, "num_outputs": count,
            "excess_db": None if output_db is None or source_db is None else output_db - source_db}


def band_harmonicity_summary(entries: Sequence[dict]) -> dict:
    """Medians over outputs of the harmonics-to-noise ratio of their band above 1 kHz and their
    sources'; the deficit (sources minus outputs) reads how much of the voice's periodicity there the
    decoder did not draw (noise in that band: ~11 dB on the built-in corpus)."""
    output_db, source_db, count = _paired_medians(entries, "band_hnr_db", "source_band_hnr_db")
    return {"band_hz": list(BAND_HZ), "output_db": output_db, "source_db": source_db, "num_outputs": count,
            "deficit_db": None if output_db is None or source_db is None else source_db - output_db}


def output_similarity(embeddings: Sequence[np.ndarray | None], targets: Sequence[str]) -> float | None:
    """Mean speaker similarity between outputs converted to different target speakers: near 1
    when every output sounds alike whatever the target (a collapsed decoder)."""
    pairs = [cosine(a, b) for (a, ta), (b, tb) in itertools.combinations(zip(embeddings, targets), 2) if ta != tb]
    return _mean(pairs)


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def quality_line(quality: dict) -> str:
    """One log line of the conversions' measures and the time they took."""
    c = quality["convert"]
    parts = [f"conversions: log-F0 corr {_f(c['log_f0_correlation'])} voicing {_f(c['voicing_agreement'])}"]
    if "towards_target_margin" in c:
        parts.append(f"similarity to target {_f(c['speaker_similarity_target'])} to source {_f(c['speaker_similarity_source'])} "
                     f"outputs alike {_f(c['output_similarity'])}")
    if "pitch_level" in c:
        level = c["pitch_level"]
        parts.append(f"median F0 corr with target {_f(level['correlation_with_target'])} "
                     f"with source {_f(level['correlation_with_source'])}")
    if "frame_tone" in c:
        tone = c["frame_tone"]
        parts.append(f"frame-rate tone {_f(tone['output_db'], 1)} dB (sources {_f(tone['source_db'], 1)} dB)")
    if "band_harmonicity" in c:
        band = c["band_harmonicity"]
        parts.append(f"HNR above 1 kHz {_f(band['output_db'], 1)} dB (sources {_f(band['source_db'], 1)} dB)")
    if "dnsmos" in c:
        parts.append(f"DNSMOS OVRL {_f(c['dnsmos']['ovrl'], 2)} ({c['dnsmos']['num_segments']} segments)")
    if "recognition" in c:
        parts.append(f"WER {_f(c['recognition']['output']['wer'])} (source audio {_f(c['recognition']['source']['wer'])})")
    if "recognition_skipped" in quality:
        parts.append(f"recognition {quality['recognition_skipped']}")
    return "quality " + "; ".join(parts) + f"; measured in {quality['seconds']['total']:.1f} s"
