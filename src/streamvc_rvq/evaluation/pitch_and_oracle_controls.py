"""The floor and the ceiling of the conversion answer's speaker measures (issue 38), scored the
way the conversions are (:func:`conversion_controls.target_controls`):

* **pitch only**: each conversion's source moved to its target's median F0 with its formants kept
  (:mod:`streamvc_rvq.quality.pitch_shift`). What a pitch shifter reaches without any model: a
  conversion must beat it to have moved the voice beyond pitch (on the quick preset a speaker
  model picked the intended target for 61 % of such shifts, chance 33 %).
* **oracle**: another real utterance of the target speaker in place of the conversion: the most
  a conversion could reach on this corpus with this speaker model (100 % on the quick preset).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from streamvc_rvq.evaluation.conversion_controls import target_controls
from streamvc_rvq.quality.pitch_metrics import median_f0, pitch_level_following
from streamvc_rvq.quality.pitch_shift import pitch_only_control
from streamvc_rvq.quality.speaker_similarity import cosine, speaker_embedding


def pitch_and_oracle_controls(scorer, pairs: Sequence[tuple], heldout: Sequence, targets_of: Mapping[str, Mapping],
                              sample_rate: int, hop: int) -> dict:
    """``{"pitch_only": controls, "oracle": controls}`` for the conversions ``pairs`` ((source,
    target reference) utterances); ``targets_of[source id]``: {target speaker: its reference};
    ``scorer``: the evaluation's :class:`~streamvc_rvq.quality.scorer.QualityScorer` (its cached
    embeddings and pitch levels)."""
    by_speaker: dict[str, list] = {}
    for utt in heldout:
        by_speaker.setdefault(utt.speaker, []).append(utt)
    pitch, oracle, levels = [], [], []
    for source, reference in pairs:
        references = targets_of[source.utterance_id]

        def trial(embedding) -> dict:
            return {"source": source.utterance_id, "target": reference.speaker, "embedding": embedding,
                    "to_targets": {spk: cosine(embedding, scorer.utterance_embedding(r)) for spk, r in references.items()}}

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
    return {"pitch_only": {**target_controls(pitch), "pitch_level": pitch_level_following(levels)},
            "oracle": target_controls(oracle)}
