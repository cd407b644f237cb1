"""The conversion answer's identification on every held-out source, with its floor and ceiling
scored on the same trials (issue 38), the way the conversions are
(:func:`conversion_controls.target_controls`):

* **model**: up to 40 held-out utterances, round-robin over the speakers, each converted to the
  next three held-out speakers (120 trials over eight voices on the quick preset instead of the
  sample conversions' 24, so the interval is narrow enough to tell the model from the floor).
* **pitch only**: each conversion's source moved to its target's median F0 with its formants kept
  (:mod:`streamvc_rvq.quality.pitch_shift`). What a pitch shifter reaches without any model: a
  conversion must beat it to have moved the voice beyond pitch (on the quick preset a speaker
  model picked the intended target for 61 % of such shifts, chance 33 %).
* **oracle**: another real utterance of the target speaker in place of the conversion: the most
  a conversion could reach on this corpus with this speaker model (100 % on the quick preset).
* **timbre only**: the model's conversion with the target's speaker vector but the source's own
  pitch level: what the model moves beyond pitch, on its own. A decoder that ignores the speaker
  vector gives a source's targets one output, identified exactly at chance (quick phase1 seed 0
  at step 500: 50 % of 84, pitch level alone 44 %, both 79 %).

Each also reports ``source_kept`` (:func:`conversion_controls.target_controls`): how often the output is
more like another utterance of its source's speaker than like its target's reference. The pitch-only
control keeps its formants, so it sets that rate's ceiling among converters; the oracle its floor.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from streamvc_rvq.evaluation.conversion_controls import target_controls
from streamvc_rvq.quality.pitch_metrics import median_f0, pitch_level_following
from streamvc_rvq.quality.pitch_shift import pitch_only_control
from streamvc_rvq.quality.speaker_similarity import cosine, speaker_embedding


def targets_by_source(pairs: Sequence[tuple]) -> dict[str, dict]:
    """``{source id: {target speaker: its reference}}`` of (source, reference) ``pairs``."""
    targets: dict[str, dict] = {}
    for source, reference in pairs:
        targets.setdefault(source.utterance_id, {})[reference.speaker] = reference
    return targets


def pitch_and_oracle_controls(scorer, pairs: Sequence[tuple], heldout: Sequence, sample_rate: int, hop: int,
                              convert: Callable[[object, object], torch.Tensor] | None = None,
                              known: Mapping[tuple[str, str], np.ndarray] | None = None,
                              convert_timbre: Callable[[object, object], torch.Tensor] | None = None) -> dict:
    """``{"num_pairs", "model", "timbre_only", "pitch_only", "oracle"}`` over the conversions ``pairs``
    ((source, target reference) utterances), each ``{"identification": ...}``; ``model`` only with
    ``convert`` (source utterance, reference utterance -> output audio), whose Resemblyzer embeddings
    ``known[(source id, target speaker)]`` are reused instead of converting again; ``timbre_only``
    only with ``convert_timbre`` (the same, keeping the source's pitch level). ``scorer``: the
    evaluation's :class:`~streamvc_rvq.quality.scorer.QualityScorer` (its cached embeddings and pitch levels)."""
    by_speaker: dict[str, list] = {}
    for utt in heldout:
        by_speaker.setdefault(utt.speaker, []).append(utt)
    targets_of = targets_by_source(pairs)
    model, timbre, pitch, oracle, levels = [], [], [], [], []
    for source, reference in pairs:
        references = targets_of[source.utterance_id]

        own_voice = next((u for u in by_speaker.get(source.speaker, []) if u.utterance_id != source.utterance_id), None)

        def trial(embedding) -> dict:
            return {"source": source.utterance_id, "target": reference.speaker, "embedding": embedding,
                    "to_targets": {spk: cosine(embedding, scorer.utterance_embedding(r)) for spk, r in references.items()},
                    "to_source": None if own_voice is None else cosine(embedding, scorer.utterance_embedding(own_voice))}

        if convert is not None:
            embedding = (known or {}).get((source.utterance_id, reference.speaker))
            if embedding is None:
                embedding = speaker_embedding(convert(source, reference), sample_rate)
            model.append(trial(embedding))
        if convert_timbre is not None:
            timbre.append(trial(speaker_embedding(convert_timbre(source, reference), sample_rate)))
        shifted = pitch_only_control(source.audio, scorer.utterance_level(reference), scorer.utterance_level(source),
                                     sample_rate, hop)
        if shifted is not None:
            pitch.append(trial(speaker_embedding(shifted, sample_rate)))
            levels.append({"output": median_f0(shifted, sample_rate, hop), "target": scorer.utterance_level(reference),
                           "source": scorer.utterance_level(source)})
        real = next((u for u in by_speaker.get(reference.speaker, []) if u.utterance_id != reference.utterance_id), None)
        if real is not None:
            oracle.append(trial(scorer.utterance_embedding(real)))
    # how well the shifter reached its targets' pitch: a shift that misses is a weaker control
    controls = {"num_pairs": len(pairs),
                "pitch_only": {**target_controls(pitch), "pitch_level": pitch_level_following(levels)},
                "oracle": target_controls(oracle)}
    if convert is not None:
        controls["model"] = target_controls(model)
    if convert_timbre is not None:
        controls["timbre_only"] = target_controls(timbre)
    return controls
