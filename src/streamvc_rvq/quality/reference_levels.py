"""What the quality measures read on the corpus itself, so a checkpoint's numbers mean
something: does the speaker measure separate the corpus's speakers (same- vs
different-speaker similarity, EER, AUC), and what DNSMOS and recognition error does real
corpus audio get? Measured once per corpus on the held-out and validation speakers (the
speakers conversions and reconstructions come from), in the same way as the outputs."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

from streamvc_rvq.data.dataset import Utterance, load_utterances
from streamvc_rvq.quality import dnsmos, recognition
from streamvc_rvq.quality.scorer import MEASURES, RECOGNITION_PROBE_UTTERANCES, recognition_skip_reason
from streamvc_rvq.quality.speaker_similarity import speaker_embedding, verification_of

SPLITS = ("heldout", "valid")


def spread_over_speakers(utterances: Sequence[Utterance], count: int) -> list[Utterance]:
    """At most ``count`` utterances taken round-robin over the speakers (sorted) that have at
    least two, so same-speaker pairs exist however many speakers the corpus has (validation
    speakers often have one utterance each); all speakers when none has two."""
    by_speaker: dict[str, list[Utterance]] = {}
    for utt in sorted(utterances, key=lambda u: u.utterance_id):
        by_speaker.setdefault(utt.speaker, []).append(utt)
    queues = [by_speaker[s] for s in sorted(by_speaker) if len(by_speaker[s]) >= 2] or list(by_speaker.values())
    picked: list[Utterance] = []
    for rank in range(max((len(q) for q in queues), default=0)):
        for queue in queues:
            if rank < len(queue) and len(picked) < count:
                picked.append(queue[rank])
    return picked


def speaker_levels(utterances: Sequence[Utterance], sample_rate: int) -> dict:
    """Same- and different-speaker similarity over every pair, and :func:`verification`."""
    return verification_of([(u.speaker, speaker_embedding(u.audio, sample_rate)) for u in utterances])


def recognition_levels(texted: Sequence[Utterance], sample_rate: int) -> dict:
    """``{"recognition": pooled rates}`` over ``texted`` utterances; when the first few already show
    that the recogniser cannot read the corpus (the evaluation's own rule), no level but
    ``recognition_skipped`` and the few's rates (``recognition_probe``): the evaluations skip the measure
    there, so the rest would buy nothing, and a level over four utterances would read as the corpus's."""
    def errors(utts):
        return [recognition.error_counts(u.text, recognition.transcribe(u.audio, sample_rate)) for u in utts]

    probed = errors(texted[:RECOGNITION_PROBE_UTTERANCES])
    rates = recognition.pooled_rates(probed)
    reason = recognition_skip_reason(rates)
    if reason:
        return {"recognition_skipped": reason, "recognition_probe": rates}
    return {"recognition": recognition.pooled_rates(probed + errors(texted[RECOGNITION_PROBE_UTTERANCES:]))}


def reference_levels(manifest: Path, *, measures: Sequence[str], max_utterances: int, sample_rate: int) -> dict:
    """Reference levels of the corpus behind ``manifest`` (see the module docstring)."""
    unknown = sorted(set(measures) - set(MEASURES))
    if unknown:
        raise ValueError(f"unknown quality measure(s) {unknown}: choose from {list(MEASURES)}")
    utterances = spread_over_speakers(load_utterances(manifest, list(SPLITS), labels=None), max_utterances)
    levels: dict = {"measures": list(measures), "splits": list(SPLITS), "num_utterances": len(utterances),
                    "num_speakers": len({u.speaker for u in utterances}), "seconds": {}}
    for measure in measures:
        started = time.perf_counter()
        if measure == "speaker":
            levels["speaker"] = speaker_levels(utterances, sample_rate)
        elif measure == "dnsmos":
            levels["dnsmos"] = dnsmos.dnsmos_of_clips([u.audio for u in utterances], sample_rate)
        else:
            levels.update(recognition_levels([u for u in utterances if u.text], sample_rate))
        levels["seconds"][measure] = time.perf_counter() - started
        print(f"reference levels: {measure} measured in {levels['seconds'][measure]:.1f} s", file=sys.stderr, flush=True)
    return levels


def summary_line(levels: dict) -> str:
    """One line of the reference levels for logs and the report."""
    parts = [f"{levels['num_utterances']} utterances of {levels['num_speakers']} speakers"]
    speaker = levels.get("speaker")
    if speaker and speaker["auc"] is not None:
        parts.append(f"speaker similarity same {speaker['same_mean']:.3f} / different {speaker['different_mean']:.3f} "
                     f"(EER {speaker['eer']:.3f}, AUC {speaker['auc']:.3f})")
    if levels.get("dnsmos") and levels["dnsmos"]["ovrl"] is not None:
        d = levels["dnsmos"]
        parts.append(f"DNSMOS SIG {d['sig']:.2f} BAK {d['bak']:.2f} OVRL {d['ovrl']:.2f}")
    if levels.get("recognition") and levels["recognition"]["wer"] is not None:
        r = levels["recognition"]
        parts.append(f"WER {r['wer']:.3f} CER {r['cer']:.3f}")
    if levels.get("recognition_skipped"):
        r = levels["recognition_probe"]
        parts.append(f"recognition skipped (WER {r['wer']:.3f} on {r['num_utterances']} utterances: the recogniser "
                     "cannot read the corpus)")
    return "; ".join(parts)
