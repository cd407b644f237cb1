"""The Phase 2 remedy ladder: rank the arms by the protocol's criteria, then by conversion quality.

Pure functions of verdicts and metrics dicts. Each arm may have several seeds; an arm's
numbers are means over its seeds, and it *fixes the collapse* only when every seed passes
every :data:`COLLAPSE_CRITERIA` criterion and no seed's verdict is a failure.

The ranking is lexicographic over :data:`RANK_KEYS` (a table, not code): first the verdict
class, then the share of codebook criteria passed, then the share of all criteria passed, then
codebook health at the last checkpoint, stage 0's perplexity as a share of its own codebook
(log perplexity / log codebook size: 0 = one code, 1 = every code equally, so a quantizer with a
bigger codebook, FSQ's 1000-point grid against a 32-code codebook, does not win by size), and
after it the quality of the conversions (DNSMOS OVRL, the towards-target speaker margin, the
recognition error). A missing value ranks below any measured one.

A cross-check arm (``model.rvq.implementation`` other than native) is paired with the native
arm whose training config is the same apart from the implementation; they *agree* on the
ladder's question when both fix the collapse or neither does and, with two or more seeds each,
their stage-0 perplexity shares lie within the two seed spreads together (the A/B's rule). Their
verdict classes are shown, not compared: a training-curve criterion failed on one seed (quick
phase2_encodec seed 2, `1k.loss_stft_falling`) is seed noise, not the quantizer's.
"""

from __future__ import annotations

import copy
import math
import statistics
from typing import Callable, Mapping, Sequence

from streamvc_rvq import tags

from streamvc_rvq.quantization.build import LIBRARY

from streamvc_rvq.verdict.comparison import seed_noise_allowance
from streamvc_rvq.metrics_view import flatten
from streamvc_rvq.metrics_view import stage_value
from streamvc_rvq.verdict.decision import answers

CLASS_RANK = {"success": 2, "partial": 1, "failure": 0}
# The criteria about the codebooks themselves (verdict criterion ids): a remedy that passes all
# of these on every seed keeps its codes alive and spread, i.e. fixes the collapse. The usage of
# the active stages at 5k and 10k is one of them: on the quick ladder phase2_codebook_lr passed
# the others while stage 0 fell from 66 to 12 (44 of 1024 codes) and its later stages went unused.
COLLAPSE_CRITERIA = (
    "1k.perplexity_q0", "1k.usage_q0", "2k.perplexity_q0_stable",
    "5k.perplexity_active_stages", "10k.perplexity_active_stages",
    "5k.usage_active_stages", "10k.usage_active_stages", "last.top_code_share_q0",
)
# (summary key, +1 = higher is better, -1 = lower is better), most important first
RANK_KEYS: tuple[tuple[str, int], ...] = (
    ("class_rank", +1),
    ("collapse_passed_share", +1),
    ("criteria_passed_share", +1),
    ("perplexity_share_q0", +1),
    ("dnsmos_ovrl", +1),
    ("towards_target_margin", +1),
    ("cer", -1),
)
IMPLEMENTATION_KEY = "model.rvq.implementation"
# implementations of the native quantizer's maths by someone else: a cross-check each (fsq is another quantizer)
CROSS_CHECK_IMPLEMENTATIONS = (LIBRARY,)


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.fmean(vals) if vals else None


def _quality(cp: dict, *path: str):
    node = ((cp.get("outputs") or {}).get("quality") or {}).get("convert") or {}
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def perplexity_share(perplexity: float | None, codebook_size: int | None) -> float | None:
    """log(perplexity) / log(codebook size): codebook health comparable across codebook sizes."""
    if perplexity is None or not codebook_size or codebook_size < 2 or perplexity < 1:
        return None
    return math.log(perplexity) / math.log(codebook_size)


def _codebook_size(cp: dict, index: int) -> int | None:
    """A stage's codebook size from its statistics (codes used + dead codes)."""
    used, dead = stage_value(cp, index, "codes_used"), stage_value(cp, index, "dead_codes")
    return None if used is None or dead is None else int(used) + int(dead)


def seed_summary(verdict: dict, checkpoints: Sequence[dict]) -> dict:
    """One run's numbers for the ranking: its class, criteria and last-checkpoint measures."""
    criteria = {c["id"]: c["passed"] for c in verdict.get("criteria") or [] if not c.get("informational")}
    evaluated = [p for p in criteria.values() if p is not None]
    collapse = [criteria.get(cid) for cid in COLLAPSE_CRITERIA]
    last = max(checkpoints, key=lambda cp: int(cp["step"])) if checkpoints else {}
    n_active = int(last.get("num_active_quantizers") or len(last.get("stages") or []))
    codebook, conversion = answers(verdict)
    return {
        "class": codebook,  # the ladder ranks by the codebook answer first: the remedy's own question
        "conversion": conversion,
        "overall_class": verdict.get("class"),
        "branch": verdict.get("branch"),
        "criteria_passed": sum(1 for p in evaluated if p),
        "criteria_evaluated": len(evaluated),
        "collapse_passed": sum(1 for p in collapse if p),
        "collapse_failed": [cid for cid, p in zip(COLLAPSE_CRITERIA, collapse) if p is False],
        "failed": [cid for cid, p in criteria.items() if p is False],
        "fixed": codebook != "failure" and all(p is True for p in collapse),
        "last_step": int(last["step"]) if last else None,
        "perplexity": [stage_value(last, i, "perplexity") for i in range(n_active)],
        "usage_q0": stage_value(last, 0, "usage"),
        "codes_used_q0": stage_value(last, 0, "codes_used"),
        "codebook_size_q0": _codebook_size(last, 0) if last else None,
        "perplexity_share_q0": perplexity_share(stage_value(last, 0, "perplexity"), _codebook_size(last, 0)) if last else None,
        "top_code_share_q0": stage_value(last, 0, "top_code_share"),
        "loss_stft": (last.get("validation") or {}).get("loss_stft"),
        "dnsmos_ovrl": _quality(last, "dnsmos", "ovrl"),
        "towards_target_margin": _quality(last, "towards_target_margin"),
        "output_similarity": _quality(last, "output_similarity"),
        "cer": _quality(last, "recognition", "output", "cer"),
        # shown, not ranked: the frame-rate tone (issue 38) and the identification beyond a pitch shift
        "frame_tone_excess_db": _quality(last, "frame_tone", "excess_db"),
        "beyond_pitch_margin": beyond_pitch_margin(last),
    }


def beyond_pitch_margin(cp: dict) -> float | None:
    """The model's identification rate minus the pitch-only control's on the same trials."""
    controls = _quality(cp, "reference_controls") or {}
    rates = [((controls.get(k) or {}).get("identification") or {}).get("rate") for k in ("model", "pitch_only")]
    return None if None in rates else rates[0] - rates[1]


def arm_summary(arm: str, seeds: Mapping[int, dict]) -> dict:
    """Means over an arm's seeds (``seeds[seed]`` = :func:`seed_summary`)."""
    runs = [seeds[s] for s in sorted(seeds)]
    n_collapse = len(COLLAPSE_CRITERIA)
    perplexities = [r["perplexity"] for r in runs]
    stages = max((len(p) for p in perplexities), default=0)
    summary = {
        "arm": arm,
        "seeds": sorted(seeds),
        "classes": [r["class"] for r in runs],
        "fixed": bool(runs) and all(r["fixed"] for r in runs),
        "class_rank": _mean([CLASS_RANK.get(r["class"]) for r in runs]),
        "collapse_passed_share": _mean([r["collapse_passed"] / n_collapse for r in runs]),
        "criteria_passed_share": _mean([r["criteria_passed"] / r["criteria_evaluated"]
                                        for r in runs if r["criteria_evaluated"]]),
        "criteria_passed": _mean([r["criteria_passed"] for r in runs]),
        "criteria_evaluated": _mean([r["criteria_evaluated"] for r in runs]),
        "failed": list(dict.fromkeys(cid for r in runs for cid in r["failed"])),  # protocol order
        "collapse_failed": [cid for cid in COLLAPSE_CRITERIA if any(cid in r["collapse_failed"] for r in runs)],
        "last_step": max((r["last_step"] for r in runs if r["last_step"] is not None), default=None),
        "perplexity": [_mean([p[i] if i < len(p) else None for p in perplexities]) for i in range(stages)],
    }
    for key in ("usage_q0", "codes_used_q0", "codebook_size_q0", "perplexity_share_q0", "top_code_share_q0",
                "loss_stft", "dnsmos_ovrl", "towards_target_margin", "output_similarity", "cer",
                "frame_tone_excess_db", "beyond_pitch_margin"):
        summary[key] = _mean([r[key] for r in runs])
    summary["perplexity_q0"] = summary["perplexity"][0] if summary["perplexity"] else None
    q0 = [p[0] for p in perplexities if p and p[0] is not None]
    summary["perplexity_q0_std"] = statistics.stdev(q0) if len(q0) >= 2 else None  # the seed spread
    shares = [r["perplexity_share_q0"] for r in runs if r["perplexity_share_q0"] is not None]
    summary["perplexity_share_q0_std"] = statistics.stdev(shares) if len(shares) >= 2 else None
    return summary


PHASE2_EXPERIMENT = "phase2"  # the experiment phase2.yaml defines and points the verdict at


def share_margin(first: Mapping, second: Mapping) -> tuple[float | None, float | None]:
    """(first's stage-0 perplexity share minus second's, the two arms' seed spreads together):
    the margin and the noise allowance that the ranking's certainty and the cross-check both read."""
    key = "perplexity_share_q0"
    margin = None if first.get(key) is None or second.get(key) is None else first[key] - second[key]
    return margin, seed_noise_allowance([first.get(f"{key}_std"), second.get(f"{key}_std")])


def ranking_certainty(ranking: Sequence[dict]) -> dict:
    """How sure the first place is: the first two arms' stage-0 perplexity share (the ranking's
    codebook key) at the last checkpoint, and their seed spreads. With two or more seeds each, a
    margin within the two spreads together (the A/B's rule) is a tie; with one seed there is no
    noise allowance."""
    if len(ranking) < 2:
        return {"top": ranking[0]["arm"] if ranking else None, "runner_up": None, "tie": None,
                "text": "one arm: nothing to rank against"}
    first, second = ranking[0], ranking[1]
    margin, spread = share_margin(first, second)
    out = {"top": first["arm"], "runner_up": second["arm"], "margin_perplexity_share_q0": margin,
           "seed_spread": spread, "seeds": [len(first["seeds"]), len(second["seeds"])]}
    same_class = first.get("class_rank") == second.get("class_rank")
    if out["seed_spread"] is None or margin is None:
        out["tie"] = None
        out["text"] = (f"{first['arm']} ranks first, {second['arm']} second, on one seed each: no seed-noise "
                       "allowance (ladder.seeds: [0, 1, 2] gives one)")
    else:
        out["tie"] = same_class and abs(margin) <= out["seed_spread"]
        out["text"] = (f"{first['arm']} ranks first, {second['arm']} second: stage-0 perplexity share {_num(margin)} "
                       f"apart, seed spread {_num(out['seed_spread'])}: "
                       + ("a tie (the margin is within the seed spread)" if out["tie"] else "a clear first"))
    return out


def phase2_overlay(ladder: dict, configs: Mapping[str, dict], generator: Mapping) -> dict | None:
    """The config overlay for Phase 2 (``--configfile``): the first-ranked arm's quantizer (its
    ``model.rvq`` keys that differ from the reference arm's) in ``generator`` (an experiment's
    config change: the GAN losses, the decoder), as the experiment :data:`PHASE2_EXPERIMENT`,
    and the verdict pointed at it. None without a ranking."""
    if not ladder["ranking"]:
        return None
    winner, reference = ladder["ranking"][0]["arm"], ladder["reference"]
    rvq = rvq_change(configs.get(winner), configs.get(reference))
    experiment = copy.deepcopy(dict(generator))
    if rvq:
        experiment["model"] = {**experiment.get("model", {}), "rvq": {**experiment.get("model", {}).get("rvq", {}), **rvq}}
    return {"experiments": {PHASE2_EXPERIMENT: experiment}, "verdict": {"experiment": PHASE2_EXPERIMENT}}


def rvq_change(config: Mapping | None, reference: Mapping | None) -> dict:
    """The ``model.rvq`` keys of ``config`` that differ from ``reference``'s (the arm's trick)."""
    mine = flatten(((config or {}).get("model") or {}).get("rvq") or {})
    base = flatten(((reference or {}).get("model") or {}).get("rvq") or {})
    return {key: value for key, value in mine.items() if base.get(key) != value}


def builds_on(arm: str, configs: Mapping[str, Mapping], reference: str) -> list[str]:
    """The arms ``arm`` adds one trick to: those whose change to the reference's quantizer is a
    largest strict part of ``arm``'s (phase2_rotation_dead_code builds on phase2_rotation,
    phase2_encodec on phase2_ema and phase2_dead_code), else the reference itself. A cross-check
    arm (another implementation of an arm's maths) builds on nothing: it should *agree*."""
    if arm == reference:
        return []
    change = rvq_change(configs[arm], configs[reference])
    if change.get("implementation", "native") in CROSS_CHECK_IMPLEMENTATIONS:
        return []
    parts = {}
    for other in configs:
        if other in (arm, reference):
            continue
        theirs = rvq_change(configs[other], configs[reference])
        if theirs and len(theirs) < len(change) and all(change.get(k, object()) == v for k, v in theirs.items()):
            parts[other] = set(theirs)
    largest = [a for a, keys in parts.items() if not any(keys < other for b, other in parts.items() if b != a)]
    return largest or [reference]


# Whether an arm's trick acted in a run, read from its training scalars (issue 37: on micro before it
# was scaled, phase2_dead_code redrew no code and equalled phase1 to the last digit). Per trick:
# (model.rvq key, the values that turn it on, the per-stage scalar that shows it, how the logged
# points are summed up, the least value that counts as acting, what the value is).
TRICK_EVIDENCE: tuple[tuple[str, Callable[[object], bool], str, str, float, str], ...] = (
    ("dead_code_threshold", lambda v: float(v) > 0, "redrawn", "sum", 1e-12,
     "codes redrawn, as codebook shares summed over the logged steps and stages"),
    ("straight_through", lambda v: str(v).startswith("rotation"), "rotation_angle", "last", 1.0,
     "mean angle in degrees from the input to its code at the last logged step (under 1 degree the "
     "rotation is the straight-through estimator to within 2 %)"),
    ("codebook_update", lambda v: v == "simvq", "map_shift", "last", 1e-6,
     "RMS move of SimVQ's map from the identity at the last logged step"),
    ("affine_codebook", bool, "map_shift", "last", 1e-6,
     "RMS move of the affine scale from 1 and shift from 0 at the last logged step"),
)


def _stage_points(scalars: Mapping[str, Sequence], kind: str) -> list[Sequence]:
    points, index = [], 0
    while tags.stage(kind, index) in scalars:
        points.append(scalars[tags.stage(kind, index)])
        index += 1
    return points


def trick_evidence(change: Mapping[str, object], scalars: Mapping[str, Sequence] | None) -> list[dict]:
    """For each trick of :data:`TRICK_EVIDENCE` an arm turns on (``change``: its ``model.rvq``
    keys that differ from the reference's), whether it acted in the run whose training
    ``scalars`` are given (``acted`` None when the run logged nothing to tell)."""
    out = []
    for key, on, kind, summary, least, meaning in TRICK_EVIDENCE:
        if key not in change or not on(change[key]):
            continue
        stages = [[float(v) for _, v in pts if math.isfinite(float(v))] for pts in _stage_points(scalars or {}, kind)]
        stages = [vals for vals in stages if vals]
        if not stages:
            value = None
        elif summary == "sum":
            value = sum(sum(vals) for vals in stages)
        else:
            value = max(vals[-1] for vals in stages)
        out.append({"trick": f"{key}: {change[key]}", "scalar": kind, "value": value, "meaning": meaning,
                    "acted": None if value is None else value >= least})
    return out


def rank_key(summary: dict) -> tuple:
    """Sort key (ascending = best first) from :data:`RANK_KEYS`; missing values rank last."""
    key = []
    for name, direction in RANK_KEYS:
        value = summary.get(name)
        key.append((1, 0.0) if value is None else (0, -direction * float(value)))
    return tuple(key)


def cross_checks(summaries: Mapping[str, dict], configs: Mapping[str, dict]) -> list[dict]:
    """Pair each cross-check arm (:data:`CROSS_CHECK_IMPLEMENTATIONS`) with the native arm of the
    same training config otherwise."""
    flat = {arm: flatten(cfg or {}) for arm, cfg in configs.items()}

    def without_impl(arm: str) -> dict:
        return {k: v for k, v in flat[arm].items() if k not in (IMPLEMENTATION_KEY, "train.seed")}

    checks = []
    for arm, cfg in flat.items():
        impl = cfg.get(IMPLEMENTATION_KEY, "native")
        if impl not in CROSS_CHECK_IMPLEMENTATIONS or arm not in summaries:
            continue
        twin = next((other for other in flat if other != arm and other in summaries
                     and flat[other].get(IMPLEMENTATION_KEY, "native") == "native"
                     and without_impl(other) == without_impl(arm)), None)
        check = {"arm": arm, "implementation": impl, "native_arm": twin, "agree": None}
        if twin is not None:
            a, b = summaries[arm], summaries[twin]
            margin, spread = share_margin(a, b)
            check.update({
                "agree": a["fixed"] == b["fixed"] and (spread is None or margin is None or abs(margin) <= spread),
                "margin_perplexity_share_q0": margin, "seed_spread": spread,
                "fixed": {arm: a["fixed"], twin: b["fixed"]},
                "classes": {arm: a["classes"], twin: b["classes"]},
                "perplexity_q0": {arm: a["perplexity_q0"], twin: b["perplexity_q0"]},
            })
        checks.append(check)
    return checks


def _num(x) -> str:
    return "—" if x is None else f"{x:.3g}"


def statement(ranking: Sequence[dict], reference: str | None) -> str:
    """One paragraph: which remedy fixed the collapse (or that none did), and the best arm."""
    if not ranking:
        return "No arm was ranked."
    fixed = [s["arm"] for s in ranking if s["fixed"]]
    best = ranking[0]
    remedies = [a for a in fixed if a != reference]
    if remedies:
        text = (f"Fixed the collapse (every seed passes every codebook criterion): {', '.join(remedies)}. "
                f"Best overall: {best['arm']} ({'/'.join(map(str, best['classes']))}, "
                f"perplexity_q0 {_num(best['perplexity_q0'])} at step {best['last_step']}, "
                f"DNSMOS OVRL {_num(best['dnsmos_ovrl'])}).")
    else:
        text = (f"No remedy fixed the collapse: every arm fails a codebook criterion on some seed. "
                f"Closest: {best['arm']} (fails {', '.join(best['collapse_failed']) or 'none of them'}; "
                f"perplexity_q0 {_num(best['perplexity_q0'])} at step {best['last_step']}).")
    if reference is not None and reference in fixed:
        text += f" The reference arm {reference} already passes them without a remedy."
    return text


def rank_ladder(
    runs: Mapping[str, Mapping[int, tuple[dict, Sequence[dict]]]],
    configs: Mapping[str, dict] | None = None,
    *, reference: str | None = None, skipped: Mapping[str, str] | None = None,
    scalars: Mapping[str, Mapping[str, Sequence]] | None = None,
) -> dict:
    """The ladder's result.

    ``runs[arm][seed] = (verdict, metrics dicts)``; ``configs[arm]``: its training config (for
    the cross-check pairing and whether its trick acted); ``reference``: the arm the remedies are
    measured against (phase1); ``skipped``: arms left out, with the reason; ``scalars[arm]``: the
    training scalars of one of its runs (:func:`trick_evidence`).
    """
    configs = configs or {}
    summaries = {arm: arm_summary(arm, {seed: seed_summary(v, cps) for seed, (v, cps) in seeds.items()})
                 for arm, seeds in runs.items() if seeds}
    for arm, summary in summaries.items():
        if arm != reference and arm in configs and reference in configs:
            summary["tricks"] = trick_evidence(rvq_change(configs[arm], configs[reference]), (scalars or {}).get(arm))
    ranking = sorted(summaries.values(), key=rank_key)
    for i, s in enumerate(ranking, 1):
        s["rank"] = i
    return {
        "reference": reference,
        "arms": list(runs),
        "skipped": dict(skipped or {}),
        "rank_keys": [{"key": k, "better": "higher" if d > 0 else "lower"} for k, d in RANK_KEYS],
        "collapse_criteria": list(COLLAPSE_CRITERIA),
        "ranking": ranking,
        "fixed": [s["arm"] for s in ranking if s["fixed"]],
        "cross_checks": cross_checks(summaries, configs),
        "idle_tricks": [{"arm": s["arm"], **t} for s in ranking for t in s.get("tricks", []) if t["acted"] is False],
        "statement": statement(ranking, reference),
        "certainty": ranking_certainty(ranking),
    }
