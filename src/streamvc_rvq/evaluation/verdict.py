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

In the code
-----------
Both tables are data. :data:`CRITERIA` holds one :class:`Criterion` per row of the checkpoint
table (id, metric, comparator, the name of its threshold constant, its measurement function);
the threshold text of the verdict is generated from the constant. :data:`DECISION_TABLE`
holds the decision rows in order (branch, class, test, next action, the criteria the test
reads). :func:`decide` judges every criterion, then applies the rows top to bottom.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, NamedTuple, Sequence

from streamvc_rvq import tags
from streamvc_rvq.config import schema_default

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
SILENCE_STD = schema_default("evaluation.silence_std")  # an output with std <= this (0.01) is silent
SILENT_OUTPUTS_MAX = 0  # not_silent: outputs.num_silent == 0
COLLAPSED_PERPLEXITY = 2.0  # failure: perplexity_q0 < 2 ...
FLAT_FACTOR = 1.1  # ... and flat: last <= 1.1 x first
MONOPOLY_SHARE = 0.5  # failure: top_code_share_q0 >= 0.5
TOWARDS_TARGET_MARGIN = 0.0  # towards_target: similarity to target - to source > 0
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


@dataclass(frozen=True)
class Run:
    """The metrics of one run placed on the protocol's roles: what every measurement reads."""

    cps: dict[str, dict | None]  # role -> metrics dict (None: missing)
    info: dict[str, tuple[int | None, int]]  # role -> (configured step, nominal step)
    present: list[str]  # roles with metrics, in protocol order
    reference: dict | None  # the corpus's reference levels

    def absent(self, *roles: str) -> str:
        """``"checkpoint 5k, 10k missing"`` for those of ``roles`` without metrics, else ``""``."""
        gone = [r for r in roles if self.cps[r] is None]
        return f"checkpoint {', '.join(gone)} missing" if gone else ""


def place_checkpoints(checkpoints: list[dict], plan: dict, steps: Sequence[int],
                      reference: dict | None) -> tuple[Run, list[dict], list[dict], list[int]]:
    """(run, checkpoint summary, missing roles, ignored steps) of the metrics dicts given.
    Raises ValueError for two dicts of one step, or none for any role."""
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
            reason = (f"not configured (train.steps has {len(steps)} entries)" if step is None
                      else f"no metrics for step {step}")
            missing.append({"role": role, "nominal_step": nominal, "step": step, "reason": reason})
        summary.append({"role": role, "nominal_step": nominal, "step": step, "present": cp is not None,
                        "num_active_quantizers": None if cp is None else cp.get("num_active_quantizers")})
    present = [r for r, _ in ROLES if cps[r] is not None]
    if not present:
        raise ValueError(
            f"no metrics for any protocol checkpoint (configured steps {list(steps)[:4]}, "
            f"given steps {sorted(by_step)})"
        )
    return Run(cps, info, present, reference), summary, missing, ignored


# --------------------------------------------------------------------------- the checkpoint table

_COMPARE = object()  # Measurement.passed: apply the criterion's comparator (the usual case)
INFORMATIONAL_NOTE = "informational: reported, not used for the class"
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq,
}


class Measurement(NamedTuple):
    """What a criterion's measurement function reads from a run."""

    value: Any  # reported as ``measured`` and read by the comparator (a list: every element must pass)
    note: str = ""
    against: float | None = None  # relative threshold: the measured quantity the bound multiplies
    passed: Any = _COMPARE  # set only by a measurement that judges itself (a trend, a missing voice)
    at: str | None = None  # a "last" criterion: the role it measured


@dataclass(frozen=True)
class Criterion:
    """One row of the checkpoint table: ``measured <op> threshold``.

    ``bound`` names the module constant holding the threshold: a number, a band (``op``
    ``"in"``, inclusive) or, with ``against``, the factor of another measured quantity
    (``>= 0.9 x perplexity_q0(1k)``; no bound: the quantity itself). The constant is read
    when a verdict is made and the verdict's threshold text is generated from it.
    """

    id: str  # "<role>.<name>"; role: 1k, 2k, 5k, 10k, "all" (every checkpoint), "last" (the last one)
    metric: str
    op: str | None  # ">=", ">", "<=", "<", "==", "in"; None: the measurement judges itself
    bound: str | None  # name of the threshold constant
    measure: Callable[[Run, Criterion], Measurement]
    against: str = ""  # relative threshold: what ``bound`` multiplies, e.g. "perplexity_q0(1k)"
    words: str = ""  # after the threshold; "{NAME:g}" is the module constant NAME
    informational: bool = False  # reported, never used for the class

    @property
    def role(self) -> str:
        return self.id.split(".")[0]

    @property
    def bound_value(self) -> Any:
        return None if self.bound is None else globals()[self.bound]

    def limit(self, against: float | None = None) -> Any:
        """What the measured value is compared with: the bound, or bound x ``against``."""
        if not self.against:
            return self.bound_value
        if against is None:
            return None
        return against if self.bound is None else self.bound_value * against

    def threshold(self, limit: Any = None) -> str:
        """The threshold as the verdict states it: ">= 5", "in [0.9, 1.1]", "< loss_l1(2k) = 0.05"."""
        bound = self.bound_value
        if self.op is None:
            head = ""
        elif self.op == "in":
            head = f"in [{bound[0]:g}, {bound[1]:g}]"
        elif self.against:
            head = f"{self.op} " + ("" if bound is None else f"{bound:g} x ") + self.against
        else:
            head = f"{self.op} {bound:g}"
        text = " ".join(part for part in (head, self.words.format_map(globals())) if part)
        return text + (f" = {limit:.4g}" if self.against and limit is not None else "")


def _compare(op: str, value: Any, limit: Any) -> bool | None:
    if op == "in":
        return _in_band(value, limit)
    if isinstance(value, list):
        return all(_OPS[op](v, limit) for v in value)
    return _OPS[op](value, limit)


def judge(criterion: Criterion, run: Run) -> dict:
    """The verdict's entry for one criterion: id, role, step, metric, threshold, measured, passed, note."""
    m = criterion.measure(run, criterion)
    role = m.at if criterion.role == "last" else criterion.role
    step, nominal = run.info.get(role, (None, None))
    limit = criterion.limit(m.against)
    if m.passed is not _COMPARE:
        passed = m.passed
    else:
        passed = None if m.value is None or limit is None else _compare(criterion.op, m.value, limit)
    note = INFORMATIONAL_NOTE if criterion.informational else m.note
    return _crit(criterion.id, role, step, nominal, criterion.metric, criterion.threshold(limit), m.value, passed,
                 note, criterion.informational)


# ---- measurements: (run, criterion) -> Measurement; leading arguments bound with functools.partial


def _stage0(key: str, run: Run, c: Criterion) -> Measurement:
    return Measurement(stage_value(run.cps[c.role], 0, key), run.absent(c.role))


def _number(key: str, run: Run, c: Criterion) -> Measurement:
    return Measurement(_num(_get(run.cps[c.role], key)), run.absent(c.role))


def _frame_scale(run: Run, c: Criterion) -> Measurement:
    value = frame_scale(run.cps[c.role])
    return Measurement(value, run.absent(c.role) or ("no frame-scale statistics in the metrics" if value is None else
                                                     "median ||z_t|| / sqrt(D) of the RVQ input over valid frames"))


def _loss_stft_falling(run: Run, c: Criterion) -> Measurement:
    facts = _get(run.cps[c.role], "training_curve", "tags", tags.LOSS_STFT)
    if not isinstance(facts, dict):
        return Measurement(None, run.absent(c.role) or "no training curve of train/loss_stft in the metrics")
    return Measurement({k: facts.get(k) for k in ("first", "last", "slope", "num_points")},
                       "training curve train/loss_stft up to this step", passed=facts.get("falling"))


def _silent_outputs(run: Run, c: Criterion) -> Measurement:
    n_sil, n_out = silence(run.cps[c.role])
    return Measurement(n_sil, run.absent(c.role) or (
        "no inference outputs in the metrics" if n_sil is None else f"{n_sil} of {n_out} outputs silent"))


def _stage0_kept(since: str, run: Run, c: Criterion) -> Measurement:
    gone = run.absent(since, c.role)
    tolerance = f"stage 0 kept or rising, read with a {(1 - c.bound_value) * 100:g} % tolerance"
    return Measurement(stage_value(run.cps[c.role], 0, "perplexity"), (gone + "; " if gone else "") + tolerance,
                       against=stage_value(run.cps[since], 0, "perplexity"))


def _loss_undisturbed(since: str, run: Run, c: Criterion) -> Measurement:
    return Measurement(
        _num(_get(run.cps[c.role], "validation", "loss_stft")),
        run.absent(since, c.role) or "adding stage 1 does not disturb the loss much (stage 1 starts at the 2k "
        "step itself, so the 2k checkpoint is judged with stage 0; stage 1 is first judged at 5k)",
        against=_num(_get(run.cps[since], "validation", "loss_stft")))


def _loss_improving(loss: str, since: str, run: Run, c: Criterion) -> Measurement:
    before = _num(_get(run.cps[since], "validation", loss))
    return Measurement(_num(_get(run.cps[c.role], "validation", loss)),
                       run.absent(since, c.role) or f"{loss}({since}) = {_fmt(before)}", against=before)


def _active_stage_perplexities(run: Run, c: Criterion) -> Measurement:
    cp = run.cps[c.role]
    stages = active_stages(cp)
    ppl = [_num(s.get("perplexity")) for s in stages]
    if cp is None or not stages or any(p is None for p in ppl):
        return Measurement(None, run.absent(c.role) or "no perplexity of the active stages in the metrics")
    bad = [f"q{s['index']} ({p:.4g})" for s, p in zip(stages, ppl) if not _compare(c.op, p, c.limit())]
    return Measurement(ppl, f"{len(stages)} active stages" + (f"; collapsed: {', '.join(bad)}" if bad else ""))


def _dnsmos_improving(since: str, run: Run, c: Criterion) -> Measurement:
    cp = run.cps[c.role]
    now, before = conversion_quality(cp, "dnsmos", "ovrl"), conversion_quality(run.cps[since], "dnsmos", "ovrl")
    heard = conversion_quality(cp, "dnsmos", "seconds")
    if run.absent(since, c.role):
        note = run.absent(since, c.role)
    elif now is None and heard is not None:
        note = f"the conversions total {heard:.1f} s, less than one DNSMOS window: raise evaluation.num_conversions"
    elif now is None or before is None:
        note = "no DNSMOS of the conversions in the metrics (evaluation.quality_measures)"
    else:
        corpus = _fmt(_num(_get(run.reference, "dnsmos", "ovrl")))
        note = f"DNSMOS OVRL of the conversions, {since} {_fmt(before)}; corpus audio {corpus}"
    return Measurement(now, note, against=before)


def _silent_anywhere(run: Run, c: Criterion) -> Measurement:
    counted = [(r, run.info[r][0], *silence(run.cps[r])) for r in run.present]
    counted = [x for x in counted if x[2] is not None]
    if not counted:
        return Measurement(None, "no inference outputs in any metrics")
    return Measurement(sum(x[2] for x in counted),
                       "; ".join(f"{r} (step {s}): {n}/{o} silent" for r, s, n, o in counted))


def _last_top_code_share(run: Run, c: Criterion) -> Measurement:
    with_share = [r for r in run.present if stage_value(run.cps[r], 0, "top_code_share") is not None]
    if not with_share:
        return Measurement(None, "no top-code share in any metrics", at=None)
    last = with_share[-1]
    return Measurement(stage_value(run.cps[last], 0, "top_code_share"), f"at the last available checkpoint ({last})",
                       at=last)


_NO_SPEAKER = "no speaker similarity of the conversions in the metrics (evaluation.quality_measures)"


def _speaker_ran(cp: dict | None) -> bool:
    return "speaker" in (_get(cp, "outputs", "quality", "measures") or [])


def _outputs_diverse(run: Run, c: Criterion) -> Measurement:
    """At the last available checkpoint (never an earlier one that happens to have it)."""
    last = run.present[-1]
    cp, same = run.cps[last], _num(_get(run.reference, "speaker", "same_mean"))
    alike = conversion_quality(cp, "output_similarity")
    if not _speaker_ran(cp):
        return Measurement(alike, _NO_SPEAKER, against=same, passed=None, at=last)
    if same is None:
        note = ("no reference levels given" if run.reference is None else
                "the corpus's reference levels have no same-speaker pair (no speaker with two utterances measured)")
        return Measurement(alike, note, against=same, at=last)
    if alike is None:
        return Measurement(alike, f"at {last}: fewer than two conversions to different targets carry a voice",
                           against=same, passed=False, at=last)
    different = _fmt(_num(_get(run.reference, "speaker", "different_mean")))
    return Measurement(alike, f"at {last}; corpus different-speaker similarity {different}", against=same, at=last)


def _towards_target(run: Run, c: Criterion) -> Measurement:
    last = run.present[-1]
    cp = run.cps[last]
    margin, share = conversion_quality(cp, "towards_target_margin"), conversion_quality(cp, "towards_target_share")
    if not _speaker_ran(cp):
        return Measurement(margin, _NO_SPEAKER, passed=None, at=last)
    if margin is None:
        return Measurement(margin, f"at {last}: no conversion carries a voice (no speaker embedding)", passed=False,
                           at=last)
    target = _fmt(conversion_quality(cp, "speaker_similarity_target"))
    source = _fmt(conversion_quality(cp, "speaker_similarity_source"))
    return Measurement(margin, f"at {last}: similarity to target {target}, to source {source}"
                       + ("" if share is None else f"; {share:.0%} of conversions closer to the target"), at=last)


# The checkpoint table of the module docstring, in the verdict's order:
# Criterion(id, metric, comparator, threshold constant, measurement, [against=, words=, informational=]).
def _still_healthy(role: str, previous: str) -> tuple[Criterion, ...]:
    """The design note's 5k and 10k rows alike: every active stage healthy, and both losses
    below the ``previous`` checkpoint's."""
    return (
        Criterion(f"{role}.perplexity_active_stages", "perplexity_q{i}, every active stage", ">", "HEALTHY_PERPLEXITY",
                  _active_stage_perplexities, words="each"),
        *(Criterion(f"{role}.{loss}_improving", f"validation.{loss}", "<", None, partial(_loss_improving, loss, previous),
                    against=f"{loss}({previous})") for loss in ("loss_stft", "loss_l1")),
    )


CRITERIA: tuple[Criterion, ...] = (
    Criterion("1k.perplexity_q0", "perplexity_q0", ">=", "PERPLEXITY_MIN_1K", partial(_stage0, "perplexity")),
    Criterion("1k.perplexity_q0_ideal", "perplexity_q0", ">", "PERPLEXITY_IDEAL_1K", partial(_stage0, "perplexity"),
              words="(ideal)", informational=True),
    Criterion("1k.usage_q0", "usage_q0", ">", "USAGE_MIN_1K", partial(_stage0, "usage")),
    Criterion("1k.pre_rvq_std", "pre_rvq_std", "in", "PRE_RVQ_STD_BAND", partial(_number, "pre_rvq_std")),
    Criterion("1k.pre_rvq_frame_scale", "pre_rvq_frame.frame_scale", "in", "FRAME_SCALE_BAND", _frame_scale),
    Criterion("1k.loss_stft_falling", "train/loss_stft trend", None, None, _loss_stft_falling,
              words="falling: last-window mean < first-window mean and last-window slope <= 0"),
    Criterion("1k.not_silent", "outputs.num_silent", "==", "SILENT_OUTPUTS_MAX", _silent_outputs,
              words="(every output std > {SILENCE_STD:g})"),
    Criterion("2k.perplexity_q0_stable", "perplexity_q0", ">=", "STABLE_FRACTION", partial(_stage0_kept, "1k"),
              against="perplexity_q0(1k)"),
    Criterion("2k.loss_stft_undisturbed", "validation.loss_stft", "<=", "DISTURB_FACTOR",
              partial(_loss_undisturbed, "1k"), against="loss_stft(1k)"),
    Criterion("2k.pre_rvq_std", "pre_rvq_std", "in", "PRE_RVQ_STD_BAND", partial(_number, "pre_rvq_std")),
    Criterion("2k.pre_rvq_frame_scale", "pre_rvq_frame.frame_scale", "in", "FRAME_SCALE_BAND", _frame_scale),
    *_still_healthy("5k", "2k"),
    *_still_healthy("10k", "5k"),
    Criterion("10k.audio_quality_improving", "outputs.quality.convert.dnsmos.ovrl", ">", None,
              partial(_dnsmos_improving, "5k"), against="ovrl(5k)"),
    Criterion("10k.not_silent", "outputs.num_silent", "==", "SILENT_OUTPUTS_MAX", _silent_outputs,
              words="(every output std > {SILENCE_STD:g})"),
    Criterion("all.not_silent", "outputs.num_silent, every checkpoint", "==", "SILENT_OUTPUTS_MAX", _silent_anywhere,
              words="at every available checkpoint"),
    Criterion("last.top_code_share_q0", "top_code_share_q0", "<", "MONOPOLY_SHARE", _last_top_code_share,
              words="(diverse; >= {MONOPOLY_SHARE:g} is a monopoly)"),
    Criterion("last.outputs_diverse", "outputs.quality.convert.output_similarity", "<", None, _outputs_diverse,
              against="corpus same-speaker similarity"),
    Criterion("last.towards_target", "outputs.quality.convert.towards_target_margin", ">", "TOWARDS_TARGET_MARGIN",
              _towards_target, words="(similarity to target above similarity to source)"),
)


# --------------------------------------------------------------------------- the decision table


@dataclass(frozen=True)
class Evidence:
    """What the decision rows read: the judged criteria and stage 0's perplexity series."""

    criteria: dict[str, dict]  # id -> the verdict's criterion entry
    series: list[tuple[str, float]]  # (role, perplexity_q0) at every available checkpoint that has it
    failed: list[str]  # ids of the required criteria that failed
    unevaluated: list[str]  # ids of the required criteria that could not be evaluated
    evaluated: bool  # some required criterion was evaluated


def gather_evidence(criteria: list[dict], run: Run) -> Evidence:
    series = [(r, stage_value(run.cps[r], 0, "perplexity")) for r in run.present]
    required = [c for c in criteria if not c["informational"]]
    return Evidence(
        criteria={c["id"]: c for c in criteria},
        series=[(r, p) for r, p in series if p is not None],
        failed=[c["id"] for c in required if c["passed"] is False],
        unevaluated=[c["id"] for c in required if c["passed"] is None],
        evaluated=any(c["passed"] is not None for c in required),
    )


# ---- row tests: (evidence, the criteria the row uses) -> (matched: True/False/None, reason)


def _flat_low(ev: Evidence, used: list[dict]) -> tuple[bool | None, str]:
    if not ev.series:
        return None, "no perplexity_q0 available"
    first, last = ev.series[0][1], ev.series[-1][1]
    low = all(p < COLLAPSED_PERPLEXITY for _, p in ev.series)
    flat = last <= FLAT_FACTOR * first
    return low and flat, (
        "perplexity_q0 " + ", ".join(f"{_fmt(p)} ({r})" for r, p in ev.series)
        + f"; < {COLLAPSED_PERPLEXITY:g} at every checkpoint: {low}"
        + f"; flat (last {_fmt(last)} <= {FLAT_FACTOR:g} x first {_fmt(first)}): {flat}"
    )


def _monopoly(ev: Evidence, used: list[dict]) -> tuple[bool | None, str]:
    [share] = used
    if share["measured"] is None:
        return None, "no top-code share available"
    return (share["measured"] >= MONOPOLY_SHARE,
            f"top_code_share_q0 {_fmt(share['measured'])} at {share['role']} (>= {MONOPOLY_SHARE:g} is a monopoly)")


def _failed_reason(ev: Evidence) -> str:
    return f"failed: {', '.join(ev.failed)}" if ev.failed else "no criterion could be evaluated"


def _no_required_failed(ev: Evidence, used: list[dict]) -> tuple[bool | None, str]:
    success = not ev.failed and ev.evaluated
    return success, "every evaluated required criterion passed" if success else _failed_reason(ev)


def _low_perplexity(ev: Evidence, used: list[dict]) -> tuple[bool | None, str]:
    if len(ev.series) < 2:
        return None, "needs perplexity_q0 at two checkpoints or more"
    (r0, first), (r1, last) = ev.series[0], ev.series[-1]
    stays = all(p < PERPLEXITY_MIN_1K for _, p in ev.series)
    return last > first and stays, (f"perplexity_q0 {_fmt(first)} ({r0}) -> {_fmt(last)} ({r1}): "
                                    f"improves {last > first}, stays < {PERPLEXITY_MIN_1K:g} {stays}")


def _some_stages_collapsed(ev: Evidence, used: list[dict]) -> tuple[bool | None, str]:
    parts = []
    for c in used:
        if c["measured"] is not None:
            healthy = sum(1 for p in c["measured"] if p > HEALTHY_PERPLEXITY)
            parts.append((c["role"], healthy, len(c["measured"]) - healthy))
    if not parts:
        return None, f"no {'/'.join(c['role'] for c in used)} checkpoint with active-stage perplexities"
    return (any(h > 0 and g > 0 for _, h, g in parts),
            "; ".join(f"{r}: {h} healthy, {g} collapsed" for r, h, g in parts))


def _anything_else(ev: Evidence, used: list[dict]) -> tuple[bool | None, str]:
    return True, _failed_reason(ev)


@dataclass(frozen=True)
class Row:
    """One row of the decision table: its class and next action apply when ``test`` matches
    and no earlier row did."""

    branch: str
    verdict_class: str  # "success", "partial", "failure"
    test: Callable[[Evidence, list[dict]], tuple[bool | None, str]]
    next_action: str  # template: {command} the remedy ladder, {provisional} unevaluated, {failed} criteria
    uses: tuple[str, ...] = ()  # ids of the criteria ``test`` reads
    otherwise: bool = False  # the catch-all: reported as matched only when no earlier row matched


# The decision table of the module docstring, evaluated top to bottom; the first matching row wins.
DECISION_TABLE: tuple[Row, ...] = (
    Row("failure_flat_low", "failure", _flat_low, NEXT_FAILURE),
    Row("failure_monopoly", "failure", _monopoly, NEXT_FAILURE, uses=("last.top_code_share_q0",)),
    Row("success", "success", _no_required_failed, NEXT_SUCCESS + "{provisional}"),
    Row("partial_low_perplexity", "partial", _low_perplexity, NEXT_LOW_PERPLEXITY),
    Row("partial_stage_collapse", "partial", _some_stages_collapsed, NEXT_STAGE_COLLAPSE,
        uses=("5k.perplexity_active_stages", "10k.perplexity_active_stages")),
    Row("partial_other", "partial", _anything_else, "inspect: {failed}", otherwise=True),
)
CLASS_OF_BRANCH = {row.branch: row.verdict_class for row in DECISION_TABLE}


def apply_decision_table(ev: Evidence) -> tuple[list[dict], Row, str]:
    """(every row with matched and reason, the row that decides, its reason)."""
    branches, chosen = [], None
    for row in DECISION_TABLE:
        matched, reason = row.test(ev, [ev.criteria[cid] for cid in row.uses])
        if row.otherwise and chosen is not None:
            matched, reason = False, "an earlier row matched"
        if matched and chosen is None:
            chosen = row, reason
        branches.append({"id": row.branch, "matched": matched, "reason": reason})
    return branches, *chosen


def next_action(row: Row, ev: Evidence, ladder_command: str) -> str:
    return row.next_action.format(
        command=ladder_command,
        provisional=f" (provisional: not evaluated: {', '.join(ev.unevaluated)})" if ev.unevaluated else "",
        failed=", ".join(ev.failed) if ev.failed else "metrics incomplete, no criterion evaluated",
    )


def verdict_warnings(plan: dict, ev: Evidence, checkpoints: list[dict], reference: dict | None) -> list[str]:
    """The scale warnings, a frame scale off while pre_rvq_std passes, the content encoder, the speaker measure."""
    warnings = list(plan["warnings"])
    for role in ("1k", "2k"):
        std_c, scale_c = ev.criteria[f"{role}.pre_rvq_std"], ev.criteria[f"{role}.pre_rvq_frame_scale"]
        if std_c["passed"] and scale_c["passed"] is False:
            warnings.append(
                f"{role}: pre_rvq_std {_fmt(std_c['measured'])} passes but the frame scale "
                f"{_fmt(scale_c['measured'])} is outside [{FRAME_SCALE_BAND[0]:g}, {FRAME_SCALE_BAND[1]:g}]: "
                "the per-channel std is 1 by construction, the vectors the codebook sees are not at its scale"
            )
    return warnings + [w for w in (content_warning(checkpoints), speaker_warning(reference)) if w]


# --------------------------------------------------------------------------- decide


def decide(checkpoints: list[dict], *, steps: list[int], progressive_steps: int,
           reference: dict | None = None, ladder_command: str = LADDER_COMMAND_DEFAULT,
           scale: float | None = None) -> dict:
    """The verdict of one experiment (pure): the checkpoint table judged, then the decision table.

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
    run, summary, missing, ignored = place_checkpoints(checkpoints, plan, steps, reference)
    criteria = [judge(criterion, run) for criterion in CRITERIA]
    evidence = gather_evidence(criteria, run)
    branches, row, reason = apply_decision_table(evidence)
    return {
        "experiment": next((cp.get("experiment") for cp in checkpoints if cp.get("experiment")), None),
        "class": row.verdict_class,
        "branch": row.branch,
        "next_action": next_action(row, evidence, ladder_command),
        "reason": reason,
        "complete": not evidence.unevaluated,
        "failed_checks": evidence.failed,
        "criteria": criteria,
        "scaled": plan["scaled"],
        "scale": plan["scale"],
        "steps": [int(s) for s in steps],
        "progressive_steps": int(progressive_steps),
        "checkpoints": summary,
        "missing": missing,
        "ignored_steps": ignored,
        "warnings": verdict_warnings(plan, evidence, checkpoints, reference),
        "branches": branches,
    }
