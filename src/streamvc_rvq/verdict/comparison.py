"""Comparisons between experiments (pure functions of metrics dicts and verdicts).

* :func:`compare_arms` — the A/B test (β = 0.5 against β = 1.0, or any arms, each with one
  or more seeds): per checkpoint step, mean and standard deviation over seeds of every
  stage's perplexity and usage and of the validation losses; each seed's verdict class;
  and which arm has the higher mean perplexity_q0 at that step.
* :func:`candidate_decision` — whether the A/B's second arm beats its first where the note
  compares them (perplexity_q0 at 1k and 2k), with the evidence; :func:`decision_advice`.
* :func:`control_comparison` — the fixed model against the pre-fix control (baseline): did
  the control reproduce the collapse, and by how much does the fix differ at each step.

Standard deviations are sample standard deviations (``ddof = 1``) over seeds; with a single
seed the std is ``None`` (one run says nothing about the spread).
"""

from __future__ import annotations

import math
import statistics
from typing import Mapping, Sequence

from streamvc_rvq.metrics_view import stage_value
from streamvc_rvq.verdict.thresholds import PROTOCOL

AB_FOCUS_NOMINAL_STEPS = (1000, 2000)  # the note: compare perplexity at 1k and 2k


def _stat(values: Sequence[float | None]) -> dict:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) >= 2 else None,
        "n": len(vals),
    }


def _stage_indices(cps: Sequence[dict]) -> list[int]:
    return sorted({int(s["index"]) for cp in cps for s in cp.get("stages") or []})


def compare_arms(
    arms: Mapping[str, Mapping[int, Sequence[dict]]],
    verdicts: Mapping[str, Mapping[int, dict]],
) -> dict:
    """Compare arms over seeds, step by step.

    ``arms[arm][seed]`` is the list of metrics dicts of that run; ``verdicts[arm][seed]``
    its verdict (:func:`verdict.decide`), may be absent for a seed.

    Returns::

        {"arms": [arm, ...],
         "per_arm": {arm: {"seeds": [...],
                           "verdicts": [{"seed", "class", "branch", "next_action"}]}},
         "steps": [{"step", "nominal_step", "focus",
                    "arms": {arm: {"n_seeds", "perplexity": [{"stage", "mean", "std", "n"}],
                                   "usage": [...], "top_code_share": [...],
                                   "loss_stft": {"mean", "std", "n"}, "loss_l1": {...},
                                   "verdicts": [{"seed", "class"}]}},
                    "better_arm", "difference", "perplexity_q0": {arm: mean}}]}

    ``better_arm`` is the arm with the highest mean perplexity_q0 at that step and
    ``difference`` its margin over the runner-up (``None`` when fewer than two arms have
    the step; ``better_arm`` is ``None`` on an exact tie, difference 0). ``nominal_step``
    comes from the verdicts' checkpoint roles when they give one; ``focus`` marks the
    nominal 1k and 2k steps where the note compares the arms.
    """
    names = list(arms)
    per_arm, nominal = _per_arm_verdicts(arms, verdicts)
    all_steps = sorted({int(cp["step"]) for arm in names for cps in arms[arm].values() for cp in cps})
    rows = []
    for step in all_steps:
        row_arms = {}
        for arm in names:
            runs = {seed: next((cp for cp in cps if int(cp["step"]) == step), None)
                    for seed, cps in arms[arm].items()}
            runs = {seed: cp for seed, cp in runs.items() if cp is not None}
            if runs:
                row_arms[arm] = _arm_at_step(runs, per_arm[arm]["verdicts"])
        q0 = {}
        for arm, a in row_arms.items():
            m = next((p["mean"] for p in a["perplexity"] if p["stage"] == 0), None)
            if m is not None and math.isfinite(m):
                q0[arm] = m
        better, diff = _leader(q0)
        nom = nominal.get(step)
        rows.append({
            "step": step,
            "nominal_step": nom,
            "focus": nom in AB_FOCUS_NOMINAL_STEPS if nom is not None else False,
            "arms": row_arms,
            "perplexity_q0": q0,
            "better_arm": better,
            "difference": diff,
        })
    return {"arms": names, "per_arm": per_arm, "steps": rows}


def _leader(values: Mapping[str, float]) -> tuple[str | None, float | None]:
    """(the arm with the highest value, its margin over the runner-up): (None, None) with fewer
    than two arms, (None, 0) on an exact tie."""
    if len(values) < 2:
        return None, None
    ranked = sorted(values.items(), key=lambda kv: kv[1], reverse=True)
    diff = ranked[0][1] - ranked[1][1]
    return (ranked[0][0] if diff > 0 else None), diff


def seed_noise_allowance(stds: Sequence[float | None]) -> float | None:
    """How far two arms' means may differ by seed noise alone: their seed standard deviations
    together; None when an arm has one seed (no allowance can be given)."""
    return None if None in stds else float(sum(stds))


def candidate_decision(comparison: dict) -> dict | None:
    """Does the A/B's second arm (the candidate, e.g. β = 1.0) beat its first (the control)?

    The note compares perplexity_q0 at 1k and 2k: the candidate is supported only when its
    mean is higher at every such step both arms have, and, with two or more seeds per arm,
    higher by more than the two arms' seed standard deviations together (one seed gives no
    allowance, and the evidence says so). None when no focus step has both arms."""
    control, candidate = comparison["arms"][:2]
    rows = [r for r in comparison["steps"] if r["focus"] and {control, candidate} <= set(r["perplexity_q0"])]
    if not rows:
        return None
    parts, supports, seeded = [], True, True
    for r in rows:
        a, b = r["perplexity_q0"][control], r["perplexity_q0"][candidate]
        stds = [next((p["std"] for p in r["arms"][arm]["perplexity"] if p["stage"] == 0), None)
                for arm in (control, candidate)]
        allowance = seed_noise_allowance(stds)
        seeded = seeded and allowance is not None
        supports = supports and b - a > (allowance or 0.0)
        parts.append(f"perplexity_q0 at {r['nominal_step'] // 1000}k: {control} {a:.1f}, {candidate} {b:.1f}"
                     + (f" (seed sd allowance {allowance:.1f})" if allowance is not None else ""))
    higher = sum(1 for r in comparison["steps"] if r["better_arm"] == candidate)
    parts.append(f"{candidate} higher at {higher} of {len(comparison['steps'])} checkpoints")
    if not seeded:
        parts.append("one seed: no seed-noise allowance")
    return {"control": control, "candidate": candidate, "supports": supports, "evidence": "; ".join(parts)}


def decision_advice(decision: dict | None) -> str:
    """What to do with the A/B's result, in one line."""
    if decision is None:
        return "the arms share no 1k/2k checkpoint: nothing to decide; build both arms' protocol checkpoints"
    control, candidate = decision["control"], decision["candidate"]
    if decision["supports"]:
        return f"the A/B supports {candidate} over {control}: adopt it ({decision['evidence']})"
    return (f"the A/B contradicts {candidate}: keep {control} ({decision['evidence']}); "
            "for a declining stage 0 run the remedy ladder")


def _per_arm_verdicts(arms: Mapping[str, Mapping[int, Sequence[dict]]],
                      verdicts: Mapping[str, Mapping[int, dict]]) -> tuple[dict, dict[int, int]]:
    """Each arm's seeds and their verdicts, and the nominal step of each checkpoint step."""
    nominal: dict[int, int] = {}
    per_arm = {}
    for arm in arms:
        seeds = sorted(arms[arm])
        vlist = []
        for seed in seeds:
            v = (verdicts.get(arm) or {}).get(seed)
            if v is None:
                vlist.append({"seed": seed, "class": None, "branch": None, "next_action": None})
                continue
            vlist.append({"seed": seed, "class": v.get("class"), "branch": v.get("branch"),
                          "next_action": v.get("next_action")})
            for cp in v.get("checkpoints") or []:
                if cp.get("step") is not None:
                    nominal.setdefault(int(cp["step"]), int(cp["nominal_step"]))
        per_arm[arm] = {"seeds": seeds, "verdicts": vlist}
    return per_arm, nominal


def _arm_at_step(runs: Mapping[int, dict], verdicts: Sequence[dict]) -> dict:
    """One arm's seeds at one step: mean and std of every stage statistic and loss."""
    cps = list(runs.values())
    idx = _stage_indices(cps)
    return {
        "n_seeds": len(runs),
        "seeds": sorted(runs),
        **{key: [{"stage": i, **_stat([stage_value(cp, i, key) for cp in cps])} for i in idx]
           for key in ("perplexity", "usage", "top_code_share")},
        "loss_stft": _stat([(cp.get("validation") or {}).get("loss_stft") for cp in cps]),
        "loss_l1": _stat([(cp.get("validation") or {}).get("loss_l1") for cp in cps]),
        "verdicts": [{"seed": v["seed"], "class": v["class"]} for v in verdicts if v["seed"] in runs],
    }


def _flat_metrics(cp: dict) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for s in sorted(cp.get("stages") or [], key=lambda s: s["index"]):
        i = int(s["index"])
        for key in ("perplexity", "usage", "top_code_share"):
            out[f"{key}_q{i}"] = stage_value(cp, i, key)
    out["pre_rvq_std"] = cp.get("pre_rvq_std")
    frame = cp.get("pre_rvq_frame") or {}
    out["frame_scale"] = frame.get("frame_scale")
    out["effective_rank"] = frame.get("effective_rank")
    val = cp.get("validation") or {}
    out["loss_stft"] = val.get("loss_stft")
    out["loss_l1"] = val.get("loss_l1")
    return {k: (None if v is None else float(v)) for k, v in out.items()}


def control_comparison(fixed: Sequence[dict], control: Sequence[dict]) -> dict:
    """The fixed model against the pre-fix control.

    ``collapse_reproduced`` is true when, at the control's last checkpoint, its
    perplexity_q0 is ``< 2`` or its top_code_share_q0 is ``>= 0.5`` (the collapse the note
    describes: perplexity ~1, one code taking every search); ``None`` when neither value is
    there. ``steps`` lists, for every step both runs have, the metrics of each
    (``perplexity_q{i}``, ``usage_q{i}``, ``top_code_share_q{i}`` for the stages both report,
    ``pre_rvq_std``, ``frame_scale``, ``effective_rank``, ``loss_stft``, ``loss_l1``) and
    ``deltas`` = fixed − control.
    Raises ValueError when either list is empty.
    """
    if not fixed or not control:
        raise ValueError("control_comparison needs metrics of both the fixed run and the control")
    fixed = sorted(fixed, key=lambda cp: int(cp["step"]))
    control = sorted(control, key=lambda cp: int(cp["step"]))
    c_last, f_last = control[-1], fixed[-1]
    c_ppl = stage_value(c_last, 0, "perplexity")
    c_share = stage_value(c_last, 0, "top_code_share")
    if c_ppl is None and c_share is None:
        reproduced = None
    else:
        reproduced = bool((c_ppl is not None and c_ppl < PROTOCOL.collapsed_perplexity)
                          or (c_share is not None and c_share >= PROTOCOL.monopoly_share))

    f_by_step = {int(cp["step"]): cp for cp in fixed}
    rows = []
    for c in control:
        step = int(c["step"])
        if step not in f_by_step:
            continue
        fm, cm = _flat_metrics(f_by_step[step]), _flat_metrics(c)
        keys = [k for k in fm if k in cm]
        deltas = {k: (None if fm[k] is None or cm[k] is None else fm[k] - cm[k]) for k in keys}
        rows.append({"step": step, "fixed": {k: fm[k] for k in keys}, "control": {k: cm[k] for k in keys},
                     "deltas": deltas})
    return {
        "fixed_experiment": f_last.get("experiment"),
        "control_experiment": c_last.get("experiment"),
        "collapse_reproduced": reproduced,
        "control_last_step": int(c_last["step"]),
        "control_perplexity_q0": c_ppl,
        "control_top_code_share_q0": c_share,
        "fixed_last_step": int(f_last["step"]),
        "fixed_perplexity_q0": stage_value(f_last, 0, "perplexity"),
        "fixed_top_code_share_q0": stage_value(f_last, 0, "top_code_share"),
        "common_steps": [r["step"] for r in rows],
        "steps": rows,
    }
