"""Controls that a target-blind model must fail, built from the conversions of one evaluation.

Each held-out source is converted to several held-out targets (``evaluate.conversion_pairs``),
and every output is compared with the reference of *every* target of its source. Two
controls follow, both pure functions of the similarities, summarised per source (the
outputs of one source are not independent) with a two-sided 95 % Student-t interval over
sources:

* **shuffled target** (``towards_target``): per output, its similarity to the intended
  target's reference minus its mean similarity to the source's other targets' references.
  A model that ignores the target gives every target of a source the same output, so the
  per-source mean of this difference is exactly 0; a model that copies its source does too.
  The criterion passes only when the interval's lower end is above 0.
* **same source, different targets** (``same_source_similarity``): the speaker similarity
  between two outputs of one source converted to different targets. Near 1 for a model that
  ignores the target or copies its source; a converting model brings it down to the corpus's
  different-speaker level. The criterion compares the interval's upper end with the
  corpus's same-speaker level.

``identification``: how often the intended target is the most similar of the source's
targets, against chance (1 / number of targets), with its Wilson 95 % interval, and the same per
intended target speaker (``by_target``): with a few held-out speakers one voice a model cannot
render can hold the rate down while the others convert (quick GAN + repeat at step 500: 20, 0, 16
and 21 of 21 for its four targets; the pitch-only shift 19, 13, 16 and 2).

``source_kept`` (where outputs carry ``to_source``, their similarity to another utterance of their
source's speaker): how often an output is more like its own source's speaker than like its intended
target. Identification among the targets cannot see it (the source is not a candidate): a model that
keeps the source's voice in some outputs and converts the rest reads as a weaker identification. A
copy of the source scores near 1, the target's real speech 0."""

from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats

from streamvc_rvq.quality.speaker_similarity import cosine

CONFIDENCE = 0.95  # two-sided: a blind model passes a lower-bound > 0 rule with probability <= 2.5 %


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> dict | None:
    """Mean and two-sided Student-t interval of ``values`` (one per source); None when empty.
    One value gives an unbounded interval: a single source proves nothing either way."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return None
    mean = float(x.mean())
    if x.size == 1:
        return {"mean": mean, "low": -math.inf, "high": math.inf, "num": 1, "confidence": confidence}
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return {"mean": mean, "low": mean - half, "high": mean + half, "num": int(x.size), "confidence": confidence}


def wilson_interval(hits: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided Wilson score interval of a rate ``hits / trials`` (sound near 0 and 1 and for a
    few dozen trials, where the normal interval is not)."""
    if trials <= 0:
        return 0.0, 1.0
    z = float(scipy_stats.norm.ppf(0.5 + confidence / 2))
    p = hits / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate(hits: int, trials: int) -> dict | None:
    return None if not trials else {"rate": hits / trials, "hits": hits, "num_outputs": trials,
                                    **dict(zip(("low", "high"), wilson_interval(hits, trials)))}


def target_controls(outputs: Sequence[Mapping]) -> dict:
    """The controls of the module docstring from ``outputs``: one mapping per conversion with
    ``source`` (utterance id), ``target`` (speaker), ``embedding`` (the output's, or None) and
    ``to_targets`` ({target speaker: similarity of the output to that target's reference}), and
    optionally ``to_source`` (see ``source_kept`` above)."""
    by_source: dict[str, list[Mapping]] = {}
    for o in outputs:
        if o.get("embedding") is not None and o.get("to_targets"):
            by_source.setdefault(o["source"], []).append(o)
    shuffled, alike, hits, trials, num_targets, kept = [], [], 0, 0, [], []
    by_target: dict[str, list[int]] = {}
    for source in sorted(by_source):
        group = [o for o in by_source[source] if len(o["to_targets"]) >= 2]
        if not group:
            continue
        differences = []
        for o in group:
            own = o["to_targets"][o["target"]]
            others = [s for t, s in o["to_targets"].items() if t != o["target"]]
            differences.append(own - float(np.mean(others)))
            hit = int(max(o["to_targets"], key=o["to_targets"].get) == o["target"])
            hits += hit
            by_target.setdefault(o["target"], []).append(hit)
            if o.get("to_source") is not None:
                kept.append(o["to_source"] > own)
            trials += 1
            num_targets.append(len(o["to_targets"]))
        shuffled.append(float(np.mean(differences)))
        pairs = [cosine(a["embedding"], b["embedding"]) for a, b in itertools.combinations(group, 2)
                 if a["target"] != b["target"]]
        if pairs:
            alike.append(float(np.mean(pairs)))
    return {
        "towards_target": mean_interval(shuffled),
        "same_source_similarity": mean_interval(alike),
        "identification": None if not trials else {
            **_rate(hits, trials), "chance": float(np.mean([1 / k for k in num_targets])),
            "by_target": {t: {"hits": sum(h), "num_outputs": len(h)} for t, h in sorted(by_target.items())}},
        "source_kept": _rate(sum(kept), len(kept)),
        "num_sources": len(shuffled),
        # fewer than 2: the corpus holds out too few speakers for any control (not the model's failure)
        "targets_per_source": max((len(o["to_targets"] or {}) for o in outputs), default=0),
    }
