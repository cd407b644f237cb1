"""Train / valid / held-out splits: a pure function of the utterances, the settings and the seed."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

TRAIN, VALID, HELDOUT = "train", "valid", "heldout"
SPLITS = (TRAIN, VALID, HELDOUT)


class SplitError(ValueError):
    """The utterances cannot be split as asked."""


def choose_held_out(speakers: Iterable[str], held_out_speakers: int, seed: int) -> list[str]:
    """``held_out_speakers`` speakers drawn with a seeded RNG, sorted; at least one speaker is
    always left for training."""
    pool = sorted(set(speakers))
    k = int(held_out_speakers)
    if k < 0:
        raise SplitError("held_out_speakers must be >= 0")
    if k >= len(pool):
        raise SplitError(f"{len(pool)} speakers cannot give {k} held-out speakers and keep at "
                         "least one for training")
    return sorted(random.Random(f"heldout:{seed}").sample(pool, k))


def assign_splits(utterances: Mapping[str, str] | Iterable[tuple[str, str]], held_out_speakers: int,
                  validation_fraction: float, seed: int) -> dict[str, str]:
    """``{utterance_id: split}`` for ``utterances`` given as ``{utterance_id: speaker}`` (or pairs).

    Held-out speakers (seeded choice) -> ``heldout``. For every other speaker,
    ``round(validation_fraction * n)`` of its ``n`` utterances, at least 1 (none when the
    speaker has a single utterance, which stays in ``train``), chosen with a seeded RNG,
    -> ``valid``; the rest -> ``train``. The order of the input does not matter.
    """
    pairs = utterances.items() if isinstance(utterances, Mapping) else utterances
    by_speaker: dict[str, list[str]] = {}
    seen: set[str] = set()
    for uid, spk in pairs:
        if uid in seen:
            raise SplitError(f"utterance id {uid!r} appears twice")
        seen.add(uid)
        by_speaker.setdefault(spk, []).append(uid)
    if not 0.0 <= float(validation_fraction) < 1.0:
        raise SplitError("validation_fraction must be in [0, 1)")
    held = set(choose_held_out(by_speaker, held_out_speakers, seed))
    out: dict[str, str] = {}
    for spk in sorted(by_speaker):
        uids = sorted(by_speaker[spk])
        if spk in held:
            for uid in uids:
                out[uid] = HELDOUT
            continue
        n = len(uids)
        n_valid = 0 if n < 2 else min(n - 1, max(1, int(validation_fraction * n + 0.5)))
        valid = set(random.Random(f"valid:{seed}:{spk}").sample(uids, n_valid))
        for uid in uids:
            out[uid] = VALID if uid in valid else TRAIN
    return out
