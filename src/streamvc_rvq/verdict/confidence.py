"""How sure a verdict is: agreement over seeds, and agreement between two protocol scales.

Both are pure functions of verdicts (:func:`streamvc_rvq.verdict.decision.decide`) and
metrics dicts, so they can be tested on made-up inputs that must fail them.

* :func:`seed_agreement` — the class per seed, each criterion's pass/fail per seed and the
  spread (min, max, mean, sample std) of its measured value; ``stable`` is false when the
  seeds' classes differ. A list value (every active stage's perplexity) is summarised by its
  minimum, the weakest stage, which is what its criterion turns on.
* :func:`scale_fidelity` — the same experiment at two protocol scales, compared in protocol
  time (each protocol checkpoint role 1k/2k/5k/10k is the same fraction of both runs): the
  class, every criterion's pass/fail, and the factor between the two scales' per-stage
  perplexity and usage and frame scale. A factor is ``max(a/b, b/a)`` (1 = identical).
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence

from streamvc_rvq.metrics_view import active_stages, frame_scale, stage_value
from streamvc_rvq.verdict.decision import ROLES


def _number(value) -> float | None:
    """A criterion's measured value as one number: lists by their minimum; else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        return float(min(value))
    return None


def _spread(values: Sequence[float]) -> dict:
    return {"min": min(values), "max": max(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def seed_agreement(verdicts: Sequence[dict]) -> dict:
    """Agreement of the verdicts of one experiment over seeds (each verdict has ``seed``)."""
    if not verdicts:
        raise ValueError("no verdicts to compare over seeds")
    verdicts = sorted(verdicts, key=lambda v: v["seed"])
    seeds = [int(v["seed"]) for v in verdicts]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"two verdicts for one seed: {seeds}")
    classes = {str(s): v["class"] for s, v in zip(seeds, verdicts)}
    criteria = []
    for c in verdicts[0]["criteria"]:
        per_seed = [next((x for x in v["criteria"] if x["id"] == c["id"]), None) for v in verdicts]
        passed = {str(s): (x or {}).get("passed") for s, x in zip(seeds, per_seed)}
        values = {str(s): _number((x or {}).get("measured")) for s, x in zip(seeds, per_seed)}
        evaluated = [p for p in passed.values() if p is not None]
        numbers = [v for v in values.values() if v is not None]
        criteria.append({
            "id": c["id"], "informational": c["informational"], "passed": passed, "measured": values,
            "agree": len(set(evaluated)) <= 1, "spread": _spread(numbers) if numbers else None,
        })
    stable = len(set(classes.values())) == 1
    disagreeing = [c["id"] for c in criteria if not c["agree"] and not c["informational"]]
    if stable:
        statement = f"stable over {len(seeds)} seeds ({', '.join(map(str, seeds))}): {verdicts[0]['class']} at every seed"
    else:
        statement = ("UNSTABLE over seeds: " + ", ".join(f"seed {s} {k}" for s, k in classes.items())
                     + ": act only on what the seeds agree on")
    if disagreeing:
        statement += f"; criteria that differ between seeds: {', '.join(disagreeing)}"
    return {"seeds": seeds, "class_by_seed": classes, "branch_by_seed": {str(s): v["branch"] for s, v in zip(seeds, verdicts)},
            "stable": stable, "disagreeing_criteria": disagreeing, "criteria": criteria, "statement": statement}


def _factor(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a <= 0 or b <= 0:
        return None
    return max(a / b, b / a)


def _worst(factors: Sequence[float | None]) -> float | None:
    known = [f for f in factors if f is not None]
    return max(known) if known else None


def scale_label(scale: float) -> str:
    """``1/20`` for 0.05, ``1/5`` for 0.2, ``paper size`` for 1, else the number."""
    if math.isclose(scale, 1.0):
        return "paper size"
    inverse = 1.0 / scale
    return f"1/{round(inverse)}" if math.isclose(inverse, round(inverse), rel_tol=1e-6) else f"{scale:g}"


def _by_step(checkpoints: Sequence[dict]) -> dict[int, dict]:
    return {int(cp["step"]): cp for cp in checkpoints}


def scale_fidelity(small: dict, small_checkpoints: Sequence[dict], large: dict, large_checkpoints: Sequence[dict]) -> dict:
    """How the verdict ``small`` (with its metrics) agrees with ``large``, the same experiment
    at a larger protocol scale, role by role."""
    small_cps, large_cps = _by_step(small_checkpoints), _by_step(large_checkpoints)
    small_steps = {c["role"]: c["step"] for c in small["checkpoints"]}
    large_steps = {c["role"]: c["step"] for c in large["checkpoints"]}
    roles = []
    for role, _ in ROLES:
        a, b = small_cps.get(small_steps.get(role)), large_cps.get(large_steps.get(role))
        if a is None or b is None:
            continue
        indices = sorted({s["index"] for s in active_stages(a)} & {s["index"] for s in active_stages(b)})
        stages = []
        for i in indices:
            entry = {"index": i}
            for key in ("perplexity", "usage"):
                entry[key] = [stage_value(a, i, key), stage_value(b, i, key)]
                entry[f"{key}_factor"] = _factor(*entry[key])
            stages.append(entry)
        scales = [frame_scale(a), frame_scale(b)]
        roles.append({"role": role, "steps": [small_steps[role], large_steps[role]], "stages": stages,
                      "frame_scale": scales, "frame_scale_factor": _factor(*scales)})
    q0 = [s for r in roles for s in r["stages"] if s["index"] == 0]
    large_by_id = {c["id"]: c for c in large["criteria"]}
    compared, differ = 0, []
    for c in small["criteria"]:
        other = large_by_id.get(c["id"])
        if c["informational"] or other is None or c["passed"] is None or other["passed"] is None:
            continue
        compared += 1
        if c["passed"] != other["passed"]:
            differ.append(c["id"])
    summary = {
        "same_class": small["class"] == large["class"],
        "classes": [small["class"], large["class"]],
        "perplexity_q0_factor": _worst([s["perplexity_factor"] for s in q0]),
        "usage_q0_factor": _worst([s["usage_factor"] for s in q0]),
        "perplexity_factor_all_stages": _worst([s["perplexity_factor"] for r in roles for s in r["stages"]]),
        "frame_scale_factor": _worst([r["frame_scale_factor"] for r in roles]),
        "criteria_compared": compared,
        "criteria_agreeing": compared - len(differ),
        "criteria_differing": differ,
    }
    return {"scales": [small["scale"], large["scale"]], "roles": roles, "summary": summary,
            "statement": fidelity_statement(small["scale"], large["scale"], summary, [r["role"] for r in roles])}


def _within(name: str, factor: float | None) -> str:
    return f"{name} n/a" if factor is None else f"{name} within x{factor:.2f}"


def fidelity_statement(small_scale: float, large_scale: float, summary: dict, roles: Sequence[str]) -> str:
    """One sentence: "scaled 1/20; at 1/10 the same class (partial), perplexity_q0 within x1.31, ..."."""
    small_class, large_class = summary["classes"]
    if summary["same_class"]:
        verdict = f"the same class ({small_class})"
    else:
        verdict = f"a DIFFERENT class ({large_class}, here {small_class})"
    parts = [_within("perplexity_q0", summary["perplexity_q0_factor"]),
             _within("every active stage's perplexity", summary["perplexity_factor_all_stages"]),
             _within("usage_q0", summary["usage_q0_factor"]),
             _within("frame scale", summary["frame_scale_factor"])]
    agree = f"{summary['criteria_agreeing']} of {summary['criteria_compared']} criteria agree"
    if summary["criteria_differing"]:
        agree += f" (differ: {', '.join(summary['criteria_differing'])})"
    return (f"scaled {scale_label(small_scale)}; at {scale_label(large_scale)} {verdict}, "
            f"{', '.join(parts)} at {'/'.join(roles) or 'no common checkpoint'}; {agree}")
