"""The Phase 1 verdict: the checkpoint table and the decision table of SPEC.md section 2.

:func:`decide` is a pure function of the per-checkpoint metrics dicts
(``results/{experiment}/metrics/step_{N}.json``) and of the configured steps. It states
every criterion (threshold, measured value, step, pass/fail), the class
(``success`` / ``partial`` / ``failure``), the matched row of the decision table and the
recommended next action.

Checkpoints ("roles")
---------------------
The protocol's checkpoints 1k, 2k, 5k, 10k are the first four configured ``train.steps``,
in order. When the config scales them (``train.scale``; the quick config's 0.05 runs
``steps: [50, 100, 250, 500]``) the criteria apply at the configured steps; each criterion
carries its actual ``step`` and its ``nominal_step`` (1000, 2000, 5000, 10000). The scale is
``train.scale``; for a config that cut its steps by hand it is inferred as
``progressive_steps / 2000`` when ``progressive_steps > 0`` (the progressive schedule is what
the protocol's steps are tied to), else ``steps[0] / 1000``. ``scaled`` is true when the scale
is not 1 or any configured role step differs from its nominal step; a configured step that is
not ``nominal x scale`` is reported in ``warnings``. Checkpoints beyond the fourth configured
step are listed in ``ignored_steps`` and take no part in the verdict. How far a scaled verdict
predicts the paper-size one, and how it varies over seeds, is measured by
:mod:`streamvc_rvq.evaluation.confidence` (``verdict.fidelity_times``, ``verdict.seeds``).

Checkpoint table (ids, metric, threshold — boundaries exactly as written)
-----------------------------------------------------------------------
===========================  =============================================================
``1k.perplexity_q0``          perplexity of stage 0 ``>= 5``
``1k.perplexity_q0_ideal``    ``> 10`` — informational: reported, never used for the class
``1k.usage_q0``               usage of stage 0 ``> 0.05`` (0.05 itself fails)
``1k.pre_rvq_std``            ``0.9 <= pre_rvq_std <= 1.1``
``1k.pre_rvq_frame_scale``    ``0.5 <= frame_scale <= 2`` (median per-frame norm of the RVQ
                              input over sqrt(D), ``pre_rvq_frame.frame_scale``): the vector
                              the codebook sees is within a factor 2 of an N(0, 1) code's
                              norm. ``pre_rvq_std`` is 1 by construction after per-channel
                              normalisation, so it cannot see a frame-scale mismatch (the
                              note's 0.31 and the reviewed artefact's 0.11 fail this); when
                              it passes while this fails, ``warnings`` says so.
``1k.loss_stft_falling``      training curve of ``train/loss_stft`` up to the step is
                              falling (``curves.curve_facts``: last-window mean < first-window
                              mean and last-window slope <= 0)
``1k.not_silent``             no silent inference output (every output std > 0.01, i.e.
                              ``outputs.num_silent == 0``)
``2k.perplexity_q0_stable``   perplexity_q0(2k) ``>= 0.9 x`` perplexity_q0(1k). The note's
                              "kept or rising" read with a 10 % tolerance (the project's
                              reading): a batch-to-batch wobble of less than 10 % is "kept".
``2k.loss_stft_undisturbed``  adding stage 1 does not disturb the metrics much: validation
                              loss_stft(2k) ``<= 1.1 x`` loss_stft(1k) ... (stage 1 becomes
                              active at the 2k step itself, so by the stage-age rule the 2k
                              checkpoint is judged with stage 0 and stage 1 first at 5k)
``2k.pre_rvq_std``            ... and ``0.9 <= pre_rvq_std <= 1.1`` still
``2k.pre_rvq_frame_scale``    ... and ``0.5 <= frame_scale <= 2`` still
``5k.perplexity_active_stages``   every active stage perplexity ``> 5``
``5k.loss_stft_improving``    validation loss_stft(5k) ``<`` loss_stft(2k)
``5k.loss_l1_improving``      validation loss_l1(5k) ``<`` loss_l1(2k)
``10k.perplexity_active_stages``  every active stage perplexity ``> 5``
``10k.loss_stft_improving``   loss_stft(10k) ``<`` loss_stft(5k)
``10k.loss_l1_improving``     loss_l1(10k) ``<`` loss_l1(5k)
``10k.audio_quality_improving``   "audio quality improving": DNSMOS OVRL of the conversions
                              (``outputs.quality.convert.dnsmos.ovrl``, a model-independent
                              naturalness estimate) at 10k ``>`` at 5k
``10k.not_silent``            no silent inference output
===========================  =============================================================

Decision-level criteria come from the decision table's "outputs diverse and not silent" and
from what a voice conversion must do, at the last available checkpoint unless said:

* ``all.not_silent``: no silent output at any available checkpoint,
* ``last.top_code_share_q0``: top-code share of stage 0 ``< 0.5`` (diverse codes; ``>= 0.5``
  is a single-code monopoly),
* ``last.outputs_diverse``: the mean speaker similarity between conversions to different
  target speakers (``outputs.quality.convert.output_similarity``) ``<`` the corpus's own
  same-speaker similarity (``reference.speaker.same_mean``): outputs for different targets are
  less alike than two recordings of one speaker. A decoder that says the same thing in the
  same voice whatever its input fails it;
* ``last.towards_target``: the conversions' mean speaker similarity to the target reference
  minus that to the source (``towards_target_margin``) ``> 0``: the voice moves towards the
  target. A model that copies its source fails it.

The quality criteria read ``outputs.quality`` (:mod:`streamvc_rvq.evaluation.quality`) and the
corpus's reference levels (:mod:`streamvc_rvq.evaluation.reference_levels`); a measure that
was not run (``evaluation.quality_measures``) leaves its criterion unevaluated.

"Active stages" are the stages with ``index < num_active_quantizers`` (all listed stages
when the metrics do not say) that have been trained: a stage whose ``trained_steps`` is 0
(it becomes active at the checkpoint's own step) is reported but never judged.

Decision table (evaluated in this order; the first matching row wins)
---------------------------------------------------------------------
1. failure — ``failure_flat_low``: perplexity_q0 ``< 2`` at every available checkpoint and
   flat (last ``<= 1.1 x`` first); ``failure_monopoly``: top_code_share_q0 ``>= 0.5`` at the
   last available checkpoint.
2. ``success``: no required criterion (every criterion above except the informational
   ``1k.perplexity_q0_ideal``) failed. This contains the decision table's row — 1k
   perplexity (its "> 5" is read as the checkpoint table's ``>= 5``, the same criterion),
   2k stage 0 stable, 5k every active stage healthy ("several stages healthy"), outputs
   not silent at any checkpoint and diverse — and, as the project's reading, also the rest
   of the checkpoint table: a run whose 1k usage or losses fail the protocol, or whose
   stages collapse at 10k, is not sent on to Phase 2.
3. partial — ``partial_low_perplexity``: perplexity_q0 improves (last > first over the
   available checkpoints, at least two) but stays ``< 5`` at every one of them;
   ``partial_stage_collapse``: at 5k or 10k some active stages are healthy (``> 5``) and
   some collapsed (``<= 5``); ``partial_other``: anything else that is not success — the
   next action names the failed criteria.

Missing checkpoints
-------------------
A role whose step is not configured (fewer than four steps) or whose metrics dict is not
given is listed in ``missing``; its criteria (and those comparing against it) appear with
``measured: None, passed: None``. The decision uses what exists: an unevaluated criterion
neither passes nor fails. A success that rests on unevaluated criteria is reported with
``complete: False`` and its next action says "provisional" and names them.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

ROLES: tuple[tuple[str, int], ...] = (("1k", 1000), ("2k", 2000), ("5k", 5000), ("10k", 10000))
NOMINAL_PROGRESSIVE_STEPS = 2000

PERPLEXITY_MIN_1K = 5.0  # 1k: perplexity_q0 >= 5
PERPLEXITY_IDEAL_1K = 10.0  # 1k: ideal perplexity_q0 > 10 (informational)
USAGE_MIN_1K = 0.05  # 1k: usage_q0 > 0.05
PRE_RVQ_STD_BAND = (0.9, 1.1)  # inclusive
FRAME_SCALE_BAND = (0.5, 2.0)  # inclusive: median ||z_t|| / sqrt(D) within a factor 2 of a code's norm
# The content encoder has learnt its frame labels when its validation accuracy is at least this
# many times chance (always guessing the most frequent label); below it, a warning: the RVQ
# statistics describe a barely trained encoder's features.
CONTENT_LEARNT_FACTOR = 1.5
STABLE_FRACTION = 0.9  # 2k: perplexity_q0(2k) >= 0.9 x perplexity_q0(1k)
DISTURB_FACTOR = 1.1  # 2k: loss_stft(2k) <= 1.1 x loss_stft(1k)
HEALTHY_PERPLEXITY = 5.0  # 5k/10k: every active stage > 5
SILENCE_STD = 0.01  # an output with std <= 0.01 is silent
COLLAPSED_PERPLEXITY = 2.0  # failure: perplexity_q0 < 2 ...
FLAT_FACTOR = 1.1  # ... and flat: last <= 1.1 x first
MONOPOLY_SHARE = 0.5  # failure: top_code_share_q0 >= 0.5
# The speaker criteria mean something only when the speaker measure separates the corpus's own
# speakers; below this AUC (reference levels), a warning says so.
SPEAKER_SEPARATION_MIN_AUC = 0.9

# {command}: how to build the remedy ladder of this run's config (config.ladder_target)
NEXT_FAILURE = (
    "run the Phase 2 remedy ladder: {command} (cosine + low-dimensional codes, EMA codebook, "
    "dead-code re-initialisation, EnCodec's recipe and a vector-quantize-pytorch cross-check, ranked)"
)
LADDER_COMMAND_DEFAULT = "snakemake --cores all results/compare/remedies.json"
NEXT_SUCCESS = "Phase 2: GAN on (phase2_gan), long training"
NEXT_LOW_PERPLEXITY = "raise commitment cost to 1.0 (phase1_beta1)"
NEXT_STAGE_COLLAPSE = "change the progressive interval (progressive_steps)"

CLASS_OF_BRANCH = {
    "failure_flat_low": "failure",
    "failure_monopoly": "failure",
    "success": "success",
    "partial_low_perplexity": "partial",
    "partial_stage_collapse": "partial",
    "partial_other": "partial",
}


# --------------------------------------------------------------------------- helpers


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _get(d: Any, *keys: Any) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def stage(cp: dict | None, index: int) -> dict | None:
    """The stage entry of ``cp`` with ``index``, or None."""
    for s in (cp or {}).get("stages") or []:
        if s.get("index") == index:
            return s
    return None


def stage_value(cp: dict | None, index: int, key: str) -> float | None:
    """``key`` (perplexity, usage, top_code_share, ...) of stage ``index`` of ``cp``."""
    return _num(_get(stage(cp, index), key))


def active_stages(cp: dict | None) -> list[dict]:
    """Trained stages with ``index < num_active_quantizers`` (all listed stages if it is
    absent); a stage with ``trained_steps == 0`` is never judged."""
    stages = sorted((cp or {}).get("stages") or [], key=lambda s: s.get("index", 0))
    stages = [s for s in stages if s.get("trained_steps", 1) != 0]
    n = _num((cp or {}).get("num_active_quantizers"))
    return stages if n is None else [s for s in stages if s.get("index", 0) < n]


def silence(cp: dict | None) -> tuple[int | None, int | None]:
    """(number of silent outputs, number of outputs); (None, n) when it cannot be told.

    ``outputs.num_silent`` is used when present (the extractor applied the configured
    silence threshold); otherwise outputs with ``std <= 0.01`` are counted. No outputs at
    all means silence cannot be judged.
    """
    out = _get(cp, "outputs")
    if not isinstance(out, dict):
        return None, None
    stds = out.get("std")
    n_out = out.get("num_outputs", len(stds) if isinstance(stds, list) else None)
    if not n_out:
        return None, n_out
    if out.get("num_silent") is not None:
        return int(out["num_silent"]), int(n_out)
    if isinstance(stds, list):
        return sum(1 for s in stds if not (_num(s) is not None and _num(s) > SILENCE_STD)), int(n_out)
    return None, int(n_out)


def content_warning(checkpoints: list[dict]) -> str | None:
    """A warning when the last checkpoint's content encoder is not above chance on its
    validation frame labels (``content_labels.valid``), else None."""
    labelled = [cp for cp in checkpoints if _get(cp, "content_labels", "valid", "accuracy") is not None]
    if not labelled:
        return None
    last = max(labelled, key=lambda cp: int(cp["step"]))
    accuracy, chance = last["content_labels"]["valid"]["accuracy"], last["content_labels"]["valid"]["chance"]
    if accuracy >= CONTENT_LEARNT_FACTOR * chance:
        return None
    return (f"step {last['step']}: the content encoder's validation label accuracy {_fmt(accuracy)} is below "
            f"{CONTENT_LEARNT_FACTOR:g} x chance ({_fmt(chance)}): it has not learnt its frame labels, so the RVQ "
            "quantizes the features of a barely trained encoder")


def conversion_quality(cp: dict | None, key: str, *more: str) -> float | None:
    """A number of ``outputs.quality.convert`` (e.g. ``"dnsmos", "ovrl"``) of ``cp``."""
    return _num(_get(cp, "outputs", "quality", "convert", key, *more))


def speaker_warning(reference: dict | None) -> str | None:
    """A warning when the speaker measure does not separate the corpus's speakers."""
    auc = _num(_get(reference, "speaker", "auc"))
    if auc is None or auc >= SPEAKER_SEPARATION_MIN_AUC:
        return None
    return (f"the speaker measure separates this corpus's speakers poorly (AUC {_fmt(auc)}, EER "
            f"{_fmt(_num(_get(reference, 'speaker', 'eer')))} < {SPEAKER_SEPARATION_MIN_AUC:g} AUC): the speaker "
            "criteria (outputs_diverse, towards_target) rest on a weak measure")


def _crit(cid, role, step, nominal, metric, threshold, measured, passed, note="", informational=False):
    return {
        "id": cid,
        "role": role,
        "step": step,
        "nominal_step": nominal,
        "metric": metric,
        "threshold": threshold,
        "measured": measured,
        "passed": None if passed is None else bool(passed),
        "informational": informational,
        "note": note,
    }


def _in_band(x: float | None, band: tuple[float, float] = PRE_RVQ_STD_BAND) -> bool | None:
    if x is None or math.isnan(x):
        return None
    lo, hi = band
    return lo <= x <= hi


def frame_scale(cp: dict | None) -> float | None:
    """Median per-frame norm of the RVQ input over sqrt(D) (``pre_rvq_frame.frame_scale``)."""
    return _num(_get(cp, "pre_rvq_frame", "frame_scale"))


# --------------------------------------------------------------------------- scaling


def protocol_scale(steps: Sequence[int], progressive_steps: int, scale: float | None = None) -> dict:
    """The role steps of a config and how they relate to the nominal protocol.

    ``scale``: the config's ``train.scale`` (the steps were scaled from paper-size values by
    it); 1 or None infers it from the steps, for a config that cut its steps by hand (with 1,
    a warning says that such a run is not the protocol scaled).
    Returns ``{"scale", "scaled", "roles": [{"role", "nominal_step", "step"}], "warnings"}``
    (``step`` is None for a role beyond the configured steps).
    """
    steps = [int(s) for s in steps]
    warnings = []
    if scale is not None and scale != 1.0:
        scale = float(scale)
    else:
        given = scale
        if progressive_steps and progressive_steps > 0:
            scale = progressive_steps / NOMINAL_PROGRESSIVE_STEPS
        elif steps:
            scale = steps[0] / ROLES[0][1]
        else:
            scale = 1.0
        if given is not None and scale != 1.0:
            warnings.append(
                f"the steps are cut by hand (x {scale:g}, train.scale 1): the run kept the paper-size learning rate "
                "and EMA decay, so it is a shorter, less trained run, not the protocol scaled; write paper-size "
                "steps and set train.scale to scale them together"
            )
    roles = []
    for i, (role, nominal) in enumerate(ROLES):
        step = steps[i] if i < len(steps) else None
        roles.append({"role": role, "nominal_step": nominal, "step": step})
        if step is not None and not math.isclose(step, nominal * scale, rel_tol=1e-9, abs_tol=0.5):
            warnings.append(
                f"{role}: configured step {step} is not nominal {nominal} x scale {scale:g} "
                f"= {nominal * scale:g}; the criteria apply at step {step} anyway"
            )
    scaled = scale != 1.0 or any(r["step"] is not None and r["step"] != r["nominal_step"] for r in roles)
    return {"scale": scale, "scaled": scaled, "roles": roles, "warnings": warnings}


# --------------------------------------------------------------------------- decide


def decide(checkpoints: list[dict], *, steps: list[int], progressive_steps: int,
           reference: dict | None = None, ladder_command: str = LADDER_COMMAND_DEFAULT,
           scale: float | None = None) -> dict:
    """The verdict of one experiment (pure).

    ``checkpoints``: the metrics dicts that exist, in step order. ``steps``: the configured
    ``train.steps``; ``progressive_steps``: ``model.rvq.progressive_steps``; ``reference``:
    the corpus's reference levels (``reference_levels.json``; None: the criteria that need
    them are unevaluated); ``ladder_command``: the command a failure's ``next_action`` names.
    ``scale``: ``train.scale`` (None: inferred from the steps, see :func:`protocol_scale`).

    Returns ``{"experiment", "criteria", "class", "branch", "next_action", "reason",
    "complete", "scaled", "scale", "steps", "progressive_steps", "checkpoints", "missing",
    "ignored_steps", "warnings", "branches"}``. See the module docstring for every rule.
    Raises ValueError when no checkpoint of the protocol is given.
    """
    plan = protocol_scale(steps, progressive_steps, scale)
    by_step: dict[int, dict] = {}
    for cp in checkpoints:
        s = int(cp["step"])
        if s in by_step:
            raise ValueError(f"two metrics dicts for step {s}")
        by_step[s] = cp
    role_steps = {r["step"] for r in plan["roles"] if r["step"] is not None}
    ignored = sorted(s for s in by_step if s not in role_steps)

    cps: dict[str, dict | None] = {}
    info: dict[str, tuple[int | None, int]] = {}
    missing, summary = [], []
    for r in plan["roles"]:
        role, nominal, step = r["role"], r["nominal_step"], r["step"]
        cp = by_step.get(step) if step is not None else None
        cps[role], info[role] = cp, (step, nominal)
        if cp is None:
            reason = (
                f"not configured (train.steps has {len(steps)} entries)"
                if step is None
                else f"no metrics for step {step}"
            )
            missing.append({"role": role, "nominal_step": nominal, "step": step, "reason": reason})
        summary.append(
            {
                "role": role,
                "nominal_step": nominal,
                "step": step,
                "present": cp is not None,
                "num_active_quantizers": None if cp is None else cp.get("num_active_quantizers"),
            }
        )
    present = [r for r, _ in ROLES if cps[r] is not None]
    if not present:
        raise ValueError(
            f"no metrics for any protocol checkpoint (configured steps {list(steps)[:4]}, "
            f"given steps {sorted(by_step)})"
        )

    criteria: list[dict] = []

    def add(role, cid, metric, threshold, measured, passed, note="", informational=False):
        step, nominal = info[role] if role in info else (None, None)
        criteria.append(
            _crit(f"{role}.{cid}", role, step, nominal, metric, threshold, measured, passed, note, informational)
        )

    def absent_note(*roles):
        gone = [r for r in roles if cps[r] is None]
        return f"checkpoint {', '.join(gone)} missing" if gone else ""

    def frame_scale_criterion(role):
        value = frame_scale(cps[role])
        lo, hi = FRAME_SCALE_BAND
        add(role, "pre_rvq_frame_scale", "pre_rvq_frame.frame_scale", f"in [{lo:g}, {hi:g}]", value,
            _in_band(value, FRAME_SCALE_BAND),
            absent_note(role) or ("no frame-scale statistics in the metrics" if value is None
                                  else "median ||z_t|| / sqrt(D) of the RVQ input over valid frames"))

    # ---- 1k
    c1 = cps["1k"]
    p1 = stage_value(c1, 0, "perplexity")
    add("1k", "perplexity_q0", "perplexity_q0", ">= 5", p1,
        None if p1 is None else p1 >= PERPLEXITY_MIN_1K, absent_note("1k"))
    add("1k", "perplexity_q0_ideal", "perplexity_q0", "> 10 (ideal)", p1,
        None if p1 is None else p1 > PERPLEXITY_IDEAL_1K,
        "informational: reported, not used for the class", informational=True)
    u1 = stage_value(c1, 0, "usage")
    add("1k", "usage_q0", "usage_q0", "> 0.05", u1, None if u1 is None else u1 > USAGE_MIN_1K, absent_note("1k"))
    s1 = _num(_get(c1, "pre_rvq_std"))
    add("1k", "pre_rvq_std", "pre_rvq_std", "in [0.9, 1.1]", s1, _in_band(s1), absent_note("1k"))
    frame_scale_criterion("1k")
    facts = _get(c1, "training_curve", "tags", "train/loss_stft")
    if isinstance(facts, dict):
        measured = {k: facts.get(k) for k in ("first", "last", "slope", "num_points")}
        falling = facts.get("falling")
        note = "training curve train/loss_stft up to this step"
    else:
        measured, falling = None, None
        note = absent_note("1k") or "no training curve of train/loss_stft in the metrics"
    add("1k", "loss_stft_falling", "train/loss_stft trend",
        "falling: last-window mean < first-window mean and last-window slope <= 0",
        measured, falling, note)

    def not_silent(role):
        n_sil, n_out = silence(cps[role])
        note = absent_note(role) or (
            "no inference outputs in the metrics" if n_sil is None else f"{n_sil} of {n_out} outputs silent"
        )
        add(role, "not_silent", "outputs.num_silent", "== 0 (every output std > 0.01)",
            n_sil, None if n_sil is None else n_sil == 0, note)

    not_silent("1k")

    # ---- 2k
    c2 = cps["2k"]
    p2 = stage_value(c2, 0, "perplexity")
    bar = None if p1 is None else STABLE_FRACTION * p1
    add("2k", "perplexity_q0_stable", "perplexity_q0",
        ">= 0.9 x perplexity_q0(1k)" + ("" if bar is None else f" = {bar:.4g}"),
        p2, None if (p2 is None or bar is None) else p2 >= bar,
        (absent_note("1k", "2k") + "; " if absent_note("1k", "2k") else "")
        + "stage 0 kept or rising, read with a 10 % tolerance")
    l1 = _num(_get(c1, "validation", "loss_stft"))
    l2 = _num(_get(c2, "validation", "loss_stft"))
    bar = None if l1 is None else DISTURB_FACTOR * l1
    add("2k", "loss_stft_undisturbed", "validation.loss_stft",
        "<= 1.1 x loss_stft(1k)" + ("" if bar is None else f" = {bar:.4g}"),
        l2, None if (l2 is None or bar is None) else l2 <= bar,
        absent_note("1k", "2k") or "adding stage 1 does not disturb the loss much (stage 1 starts at the 2k "
        "step itself, so the 2k checkpoint is judged with stage 0; stage 1 is first judged at 5k)")
    s2 = _num(_get(c2, "pre_rvq_std"))
    add("2k", "pre_rvq_std", "pre_rvq_std", "in [0.9, 1.1]", s2, _in_band(s2), absent_note("2k"))
    frame_scale_criterion("2k")

    # ---- 5k, 10k
    for role, ref in (("5k", "2k"), ("10k", "5k")):
        cp, cr = cps[role], cps[ref]
        stages = active_stages(cp)
        ppl = [_num(s.get("perplexity")) for s in stages]
        if cp is None or not stages or any(p is None for p in ppl):
            measured, passed = None, None
            note = absent_note(role) or "no perplexity of the active stages in the metrics"
        else:
            measured = ppl
            passed = all(p > HEALTHY_PERPLEXITY for p in ppl)
            bad = [f"q{s['index']} ({p:.4g})" for s, p in zip(stages, ppl) if not p > HEALTHY_PERPLEXITY]
            note = f"{len(stages)} active stages" + (f"; collapsed: {', '.join(bad)}" if bad else "")
        add(role, "perplexity_active_stages", "perplexity_q{i}, every active stage", "> 5 each",
            measured, passed, note)
        for loss in ("loss_stft", "loss_l1"):
            now = _num(_get(cp, "validation", loss))
            before = _num(_get(cr, "validation", loss))
            note = absent_note(ref, role) or f"{loss}({ref}) = {_fmt(before)}"
            add(role, f"{loss}_improving", f"validation.{loss}",
                f"< {loss}({ref})" + ("" if before is None else f" = {before:.4g}"),
                now, None if (now is None or before is None) else now < before, note)
    now, before = conversion_quality(cps["10k"], "dnsmos", "ovrl"), conversion_quality(cps["5k"], "dnsmos", "ovrl")
    corpus_ovrl = _num(_get(reference, "dnsmos", "ovrl"))
    heard = conversion_quality(cps["10k"], "dnsmos", "seconds")
    if absent_note("5k", "10k"):
        note = absent_note("5k", "10k")
    elif now is None and heard is not None:
        note = (f"the conversions total {heard:.1f} s, less than one DNSMOS window: "
                "raise evaluation.num_conversions")
    elif now is None or before is None:
        note = "no DNSMOS of the conversions in the metrics (evaluation.quality_measures)"
    else:
        note = f"DNSMOS OVRL of the conversions, 5k {_fmt(before)}; corpus audio {_fmt(corpus_ovrl)}"
    add("10k", "audio_quality_improving", "outputs.quality.convert.dnsmos.ovrl",
        "> ovrl(5k)" + ("" if before is None else f" = {before:.4g}"),
        now, None if (now is None or before is None) else now > before, note)
    not_silent("10k")

    # ---- decision-level criteria
    per_step = []
    for r in present:
        n_sil, n_out = silence(cps[r])
        if n_sil is not None:
            per_step.append((r, info[r][0], n_sil, n_out))
    if per_step:
        total = sum(x[2] for x in per_step)
        note = "; ".join(f"{r} (step {s}): {n}/{o} silent" for r, s, n, o in per_step)
        criteria.append(_crit("all.not_silent", "all", None, None, "outputs.num_silent, every checkpoint",
                              "== 0 at every available checkpoint", total, total == 0, note))
    else:
        criteria.append(_crit("all.not_silent", "all", None, None, "outputs.num_silent, every checkpoint",
                              "== 0 at every available checkpoint", None, None,
                              "no inference outputs in any metrics"))

    with_share = [r for r in present if stage_value(cps[r], 0, "top_code_share") is not None]
    if with_share:
        last_role = with_share[-1]
        share = stage_value(cps[last_role], 0, "top_code_share")
        criteria.append(_crit("last.top_code_share_q0", last_role, info[last_role][0], info[last_role][1],
                              "top_code_share_q0", "< 0.5 (diverse; >= 0.5 is a monopoly)", share,
                              share < MONOPOLY_SHARE, f"at the last available checkpoint ({last_role})"))
    else:
        criteria.append(_crit("last.top_code_share_q0", None, None, None, "top_code_share_q0",
                              "< 0.5 (diverse; >= 0.5 is a monopoly)", None, None,
                              "no top-code share in any metrics"))

    # speaker criteria at the last available checkpoint (never an earlier one that happens to have them)
    last_role = present[-1]
    cp_last = cps[last_role]
    step_last, nominal_last = info[last_role]
    speaker_ran = "speaker" in (_get(cp_last, "outputs", "quality", "measures") or [])
    same_level = _num(_get(reference, "speaker", "same_mean"))
    alike = conversion_quality(cp_last, "output_similarity")
    if not speaker_ran:
        passed, note = None, "no speaker similarity of the conversions in the metrics (evaluation.quality_measures)"
    elif same_level is None:
        passed = None
        note = ("no reference levels given" if reference is None
                else "the corpus's reference levels have no same-speaker pair (no speaker with two utterances measured)")
    elif alike is None:
        passed, note = False, f"at {last_role}: fewer than two conversions to different targets carry a voice"
    else:
        passed = alike < same_level
        note = f"at {last_role}; corpus different-speaker similarity {_fmt(_num(_get(reference, 'speaker', 'different_mean')))}"
    criteria.append(_crit("last.outputs_diverse", last_role, step_last, nominal_last,
                          "outputs.quality.convert.output_similarity",
                          "< corpus same-speaker similarity" + ("" if same_level is None else f" = {same_level:.4g}"),
                          alike, passed, note))
    margin = conversion_quality(cp_last, "towards_target_margin")
    share = conversion_quality(cp_last, "towards_target_share")
    if not speaker_ran:
        passed, note = None, "no speaker similarity of the conversions in the metrics (evaluation.quality_measures)"
    elif margin is None:
        passed, note = False, f"at {last_role}: no conversion carries a voice (no speaker embedding)"
    else:
        passed = margin > 0
        note = (f"at {last_role}: similarity to target {_fmt(conversion_quality(cp_last, 'speaker_similarity_target'))}, "
                f"to source {_fmt(conversion_quality(cp_last, 'speaker_similarity_source'))}"
                + ("" if share is None else f"; {share:.0%} of conversions closer to the target"))
    criteria.append(_crit("last.towards_target", last_role, step_last, nominal_last,
                          "outputs.quality.convert.towards_target_margin",
                          "> 0 (similarity to target above similarity to source)", margin, passed, note))

    # ---- decision table
    series = [(r, stage_value(cps[r], 0, "perplexity")) for r in present]
    series = [(r, p) for r, p in series if p is not None]
    branches = []

    flat_low = None
    reason_flat = "no perplexity_q0 available"
    if series:
        first, last = series[0][1], series[-1][1]
        flat_low = all(p < COLLAPSED_PERPLEXITY for _, p in series) and last <= FLAT_FACTOR * first
        reason_flat = (
            "perplexity_q0 " + ", ".join(f"{_fmt(p)} ({r})" for r, p in series)
            + f"; < 2 at every checkpoint: {all(p < COLLAPSED_PERPLEXITY for _, p in series)}"
            + f"; flat (last {_fmt(last)} <= 1.1 x first {_fmt(first)}): {last <= FLAT_FACTOR * first}"
        )
    branches.append({"id": "failure_flat_low", "matched": flat_low, "reason": reason_flat})

    share_crit = next(c for c in criteria if c["id"] == "last.top_code_share_q0")
    monopoly = None if share_crit["measured"] is None else share_crit["measured"] >= MONOPOLY_SHARE
    branches.append({
        "id": "failure_monopoly",
        "matched": monopoly,
        "reason": f"top_code_share_q0 {_fmt(share_crit['measured'])} at {share_crit['role']} (>= 0.5 is a monopoly)"
        if share_crit["measured"] is not None else "no top-code share available",
    })

    required = [c for c in criteria if not c["informational"]]
    failed = [c["id"] for c in required if c["passed"] is False]
    unevaluated = [c["id"] for c in required if c["passed"] is None]
    success = not failed and any(c["passed"] is not None for c in required)
    branches.append({
        "id": "success",
        "matched": success,
        "reason": ("every evaluated required criterion passed" if success
                   else f"failed: {', '.join(failed)}" if failed else "no criterion could be evaluated"),
    })

    low = None
    reason_low = "needs perplexity_q0 at two checkpoints or more"
    if len(series) >= 2:
        first, last = series[0][1], series[-1][1]
        low = last > first and all(p < PERPLEXITY_MIN_1K for _, p in series)
        reason_low = (f"perplexity_q0 {_fmt(first)} ({series[0][0]}) -> {_fmt(last)} ({series[-1][0]}): "
                      f"improves {last > first}, stays < 5 {all(p < PERPLEXITY_MIN_1K for _, p in series)}")
    branches.append({"id": "partial_low_perplexity", "matched": low, "reason": reason_low})

    collapse, reason_collapse = None, "no 5k/10k checkpoint with active-stage perplexities"
    parts = []
    for role in ("5k", "10k"):
        c = next(c for c in criteria if c["id"] == f"{role}.perplexity_active_stages")
        if c["measured"] is not None:
            healthy = sum(1 for p in c["measured"] if p > HEALTHY_PERPLEXITY)
            gone = len(c["measured"]) - healthy
            parts.append((role, healthy, gone))
    if parts:
        collapse = any(h > 0 and g > 0 for _, h, g in parts)
        reason_collapse = "; ".join(f"{r}: {h} healthy, {g} collapsed" for r, h, g in parts)
    branches.append({"id": "partial_stage_collapse", "matched": collapse, "reason": reason_collapse})

    warnings = list(plan["warnings"])
    for role in ("1k", "2k"):
        std_c = next(c for c in criteria if c["id"] == f"{role}.pre_rvq_std")
        scale_c = next(c for c in criteria if c["id"] == f"{role}.pre_rvq_frame_scale")
        if std_c["passed"] and scale_c["passed"] is False:
            warnings.append(
                f"{role}: pre_rvq_std {_fmt(std_c['measured'])} passes but the frame scale "
                f"{_fmt(scale_c['measured'])} is outside [{FRAME_SCALE_BAND[0]:g}, {FRAME_SCALE_BAND[1]:g}]: "
                "the per-channel std is 1 by construction, the vectors the codebook sees are not at its scale"
            )

    for extra in (content_warning(checkpoints), speaker_warning(reference)):
        if extra:
            warnings.append(extra)

    complete = not unevaluated
    if flat_low:
        branch, reason = "failure_flat_low", reason_flat
    elif monopoly:
        branch, reason = "failure_monopoly", branches[1]["reason"]
    elif success:
        branch, reason = "success", branches[2]["reason"]
    elif low:
        branch, reason = "partial_low_perplexity", reason_low
    elif collapse:
        branch, reason = "partial_stage_collapse", reason_collapse
    else:
        branch = "partial_other"
        reason = f"failed: {', '.join(failed)}" if failed else "no criterion could be evaluated"
    branches.append({"id": "partial_other", "matched": branch == "partial_other", "reason": reason
                     if branch == "partial_other" else "an earlier row matched"})

    if branch.startswith("failure"):
        next_action = NEXT_FAILURE.format(command=ladder_command)
    elif branch == "success":
        next_action = NEXT_SUCCESS
        if not complete:
            next_action += f" (provisional: not evaluated: {', '.join(unevaluated)})"
    elif branch == "partial_low_perplexity":
        next_action = NEXT_LOW_PERPLEXITY
    elif branch == "partial_stage_collapse":
        next_action = NEXT_STAGE_COLLAPSE
    else:
        next_action = "inspect: " + (", ".join(failed) if failed else "metrics incomplete, no criterion evaluated")

    return {
        "experiment": next((cp.get("experiment") for cp in checkpoints if cp.get("experiment")), None),
        "class": CLASS_OF_BRANCH[branch],
        "branch": branch,
        "next_action": next_action,
        "reason": reason,
        "complete": complete,
        "failed_checks": failed,
        "criteria": criteria,
        "scaled": plan["scaled"],
        "scale": plan["scale"],
        "steps": [int(s) for s in steps],
        "progressive_steps": int(progressive_steps),
        "checkpoints": summary,
        "missing": missing,
        "ignored_steps": ignored,
        "warnings": warnings,
        "branches": branches,
    }
