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
:mod:`streamvc_rvq.verdict.confidence` (``verdict.fidelity_times``, ``verdict.seeds``).

Checkpoint table
----------------
One :class:`Criterion` per row in :data:`CRITERIA`, each comparing a metric with a field of the
:class:`~streamvc_rvq.verdict.thresholds.Thresholds` given to :func:`decide`; the table with the
protocol's values is docs/criteria.md, generated from the code (``python -m
streamvc_rvq.verdict.criteria_doc``). What the less obvious rows measure: ``pre_rvq_frame_scale``
is the median per-frame norm of the RVQ input over sqrt(D): ``pre_rvq_std`` is 1 by construction
after per-channel normalisation, so it cannot see a frame-scale mismatch (the note's 0.31 and the
reviewed artefact's 0.11 fail the band; when std passes while this fails, ``warnings`` says so).
``loss_stft_falling`` reads the training curve (``curves.curve_facts``: last-window mean below the
first and last-window slope <= 0). ``perplexity_q0_stable`` reads the note's "kept or rising" with a
tolerance. ``loss_stft_undisturbed`` compares the training curve's window means after and before
stage 1 starts (read from the 5k metrics, whose curve covers it). ``audio_quality_improving`` is
DNSMOS OVRL of the conversions, a model-independent naturalness estimate.

Usage is judged at every checkpoint (``2k.usage_q0``, ``{5k,10k}.usage_active_stages``: the
note's 5 % rule for every trained active stage), not only at 1k. The validation-loss trends
(``*_improving``) carry a noise allowance: each validation utterance's loss at both checkpoints
is paired, and a rise smaller than the half-width of the 95 % Student-t interval of the mean
relative change counts as kept (as 2k's stability reads "kept" with a tolerance); metrics
without per-utterance losses are compared strictly.

Two questions, two answers
--------------------------
Every criterion belongs to one ``question``.

* ``codebook`` — the design note's protocol: everything above plus ``all.not_silent`` and
  ``last.top_code_share_q0`` (< 0.5: the note glosses "diverse" as "not silent", and its
  failure row is the single-code monopoly). Its class, branch and next action come from the
  decision table below.
* ``conversion`` — does the model convert? ``last.towards_target``: the shuffled-target
  control of :mod:`streamvc_rvq.evaluation.conversion_controls` (each source is converted to
  several held-out targets; similarity to the intended target minus to the source's other
  targets), passed only when the lower end of its 95 % interval over sources is above 0 (a
  target-blind model's per-source difference is exactly 0; measured false-pass rate of a
  noisy blind stand-in 2.5 % over 200 seeds). ``last.outputs_diverse``: one source's outputs for
  different targets (the control a source-copying model fails), the upper end of their
  similarity's interval below the corpus's same-speaker similarity. ``last.target_identified``:
  Resemblyzer picks the intended target among the source's targets in >= 75 % of the
  conversions (a blind model scores exactly 1 / targets). ``last.pitch_follows_target``: the
  conversions' median log-F0 correlates with the targets' >= 0.8 over conversions and more
  than with the sources' (a pitch-flat model has no correlation and fails; a source copy fails
  the second part). ``last.content_kept``: the model's content head, run on the conversions,
  keeps >= half of its above-chance frame-label accuracy on their sources (a content measure
  that means something on eSpeak voices, where a recogniser scores even the sources at WER
  ~0.9). The answer is
  ``not_evaluable`` (with the reason and what to fix) unless its :data:`PRECONDITIONS` hold at the
  last checkpoint: the model's own speaker embedding separates held-out speakers (AUC >=
  ``Thresholds.model_speaker_min_auc``) and reconstructions resemble their own source above the
  corpus's different-speaker similarity. Then: success when every conversion criterion passes,
  failure when none does, else partial.

The top-level ``class`` is :func:`overall_class`: the worse of the two, where a not-evaluable
conversion leaves the codebook's class; the top-level ``next_action`` is the codebook's, followed
by the conversion's when that is not a success. ``branch`` is the codebook's branch. Old verdict
files (one answer) read through :func:`answers`. The preconditions are also checked at every
judged checkpoint and each failure is a warning naming it (a content encoder below
1.5 x chance, a speaker embedding below the AUC bound).

Codebook decision table (evaluated in this order; the first matching row wins)
-----------------------------------------------------------------------------
1. failure — ``failure_flat_low``: perplexity_q0 ``< 2`` at every available checkpoint and
   flat (last ``<= 1.1 x`` first); ``failure_monopoly``: top_code_share_q0 ``>= 0.5`` at the
   last available checkpoint. Next: the remedy ladder.
2. ``success``: no required codebook criterion failed. Next: Phase 2.
3. partial — ``partial_low_perplexity``: perplexity_q0 improves but stays ``< 5``; next:
   build the commitment-cost A/B (its ``advice`` says whether β = 1.0 raises perplexity_q0:
   :func:`comparison.candidate_decision`), and raise β only if it does. ``partial_stage0_decline``: stage 0 unstable from 1k to
   2k or its usage under 5 % (the note's route to the Phase 2 remedies); next: the remedy ladder
   with the numbers. ``partial_stage_collapse``: at 5k or 10k some active stages healthy and
   some collapsed; next: the progressive interval, naming the stages. ``partial_other``: one
   piece of advice per failed criterion (:data:`ADVICE`), never a bare list of ids.

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
table (id, metric, comparator, the name of its :class:`Thresholds` field, its measurement function);
the threshold text of the verdict is generated from the thresholds :func:`decide` is given. :data:`DECISION_TABLE`
holds the decision rows in order (branch, class, test, next action, the criteria the test
reads). :func:`decide` judges every criterion, then applies the rows top to bottom.
"""

from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Callable, NamedTuple, Sequence

from streamvc_rvq import tags
from streamvc_rvq.evaluation.conversion_controls import mean_interval
from streamvc_rvq.metrics_view import active_stages, conversion_quality, frame_scale, silence, stage, stage_value
from streamvc_rvq.metrics_view import get as _get
from streamvc_rvq.metrics_view import number as _num
from streamvc_rvq.verdict.roles import ROLE_ORDER, ROLES
from streamvc_rvq.verdict.thresholds import PROTOCOL, Thresholds

NOMINAL_PROGRESSIVE_STEPS = 2000


# {command}: how to build the remedy ladder of this run's config (config.ladder_target)
NEXT_FAILURE = (
    "run the Phase 2 remedy ladder: {command} (cosine + low-dimensional codes, EMA codebook, "
    "dead-code re-initialisation, EnCodec's recipe and a vector-quantize-pytorch cross-check, ranked)"
)
LADDER_COMMAND_DEFAULT = "snakemake --cores all results/compare/remedies.json"
NEXT_SUCCESS = "Phase 2: GAN on (phase2_gan), long training"
# the A/B of the config's ab section whose advice the low-perplexity branch defers to
COMMITMENT_COST_AB = "commitment_cost"
AB_COMMAND_DEFAULT = f"snakemake --cores all results/ab/{COMMITMENT_COST_AB}.json"
NEXT_DECLINE = ("stage 0 declines ({reason}), the note's route to the Phase 2 remedies: run the remedy ladder: "
                "{command}")
NEXT_STAGE_COLLAPSE = "change the progressive interval (model.rvq.progressive_steps): {reason}"

# --------------------------------------------------------------------------- helpers


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def speaker_warning(reference: dict | None, thresholds: Thresholds) -> str | None:
    """A warning when the speaker measure does not separate the corpus's speakers."""
    auc = _num(_get(reference, "speaker", "auc"))
    if auc is None or auc >= thresholds.speaker_separation_min_auc:
        return None
    return (f"the speaker measure separates this corpus's speakers poorly (AUC {_fmt(auc)}, EER "
            f"{_fmt(_num(_get(reference, 'speaker', 'eer')))} < {thresholds.speaker_separation_min_auc:g} AUC): the speaker "
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


def _in_band(x: float | None, band: tuple[float, float]) -> bool | None:
    if x is None or math.isnan(x):
        return None
    lo, hi = band
    return lo <= x <= hi


# --------------------------------------------------------------------------- scaling


def protocol_scale(steps: Sequence[int], progressive_steps: int, scale: float | None = None) -> dict:
    """The role steps of a config and how they relate to the nominal protocol.

    ``scale``: the config's ``train.scale`` (the steps were scaled from paper-size values by
    it); 1 or None infers it from the steps, for a config that cut its steps by hand (with 1,
    a warning says that such a run is not the protocol scaled).
    Returns ``{"scale", "scaled", "by_hand", "roles": [{"role", "nominal_step", "step"}], "warnings"}``
    (``step`` is None for a role beyond the configured steps; ``by_hand``: steps cut without
    train.scale).
    """
    steps = [int(s) for s in steps]
    warnings, by_hand = [], False
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
        by_hand = given is not None and scale != 1.0
        if by_hand:
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
    return {"scale": scale, "scaled": scaled, "by_hand": by_hand, "roles": roles, "warnings": warnings}


@dataclass(frozen=True)
class Run:
    """The metrics of one run placed on the protocol's roles: what every measurement reads."""

    cps: dict[str, dict | None]  # role -> metrics dict (None: missing)
    info: dict[str, tuple[int | None, int]]  # role -> (configured step, nominal step)
    present: list[str]  # roles with metrics, in protocol order
    reference: dict | None  # the corpus's reference levels
    thresholds: Thresholds  # the bounds the criteria compare with

    def absent(self, *roles: str) -> str:
        """``"checkpoint 5k, 10k missing"`` for those of ``roles`` without metrics, else ``""``."""
        gone = [r for r in roles if self.cps[r] is None]
        return f"checkpoint {', '.join(gone)} missing" if gone else ""


def place_checkpoints(checkpoints: list[dict], plan: dict, steps: Sequence[int], reference: dict | None,
                      thresholds: Thresholds = PROTOCOL) -> tuple[Run, list[dict], list[dict], list[int]]:
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
                        "num_active_quantizers": None if cp is None else cp.get("num_active_quantizers"),
                        # per active stage, over the whole validation pass (batch perplexity depends on the batch)
                        "perplexity": [stage_value(cp, s["index"], "perplexity") for s in active_stages(cp)],
                        "codes_used": [stage_value(cp, s["index"], "codes_used") for s in active_stages(cp)]})
    present = [r for r, _ in ROLES if cps[r] is not None]
    if not present:
        raise ValueError(
            f"no metrics for any protocol checkpoint (configured steps {list(steps)[:4]}, "
            f"given steps {sorted(by_step)})"
        )
    return Run(cps, info, present, reference, thresholds), summary, missing, ignored


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

    ``bound`` names the :class:`Thresholds` field holding the threshold: a number, a band
    (``op`` ``"in"``, inclusive) or, with ``against``, the factor of another measured quantity
    (``>= 0.9 x perplexity_q0(1k)``; no bound: the quantity itself). The field is read from the
    thresholds the verdict is made with, and the verdict's threshold text is generated from it.
    """

    id: str  # "<role>.<name>"; role: 1k, 2k, 5k, 10k, "all" (every checkpoint), "last" (the last one)
    metric: str
    op: str | None  # ">=", ">", "<=", "<", "==", "in"; None: the measurement judges itself
    bound: str | None  # name of the Thresholds field
    measure: Callable[[Run, Criterion], Measurement]
    against: str = ""  # relative threshold: what ``bound`` multiplies, e.g. "perplexity_q0(1k)"
    words: str = ""  # after the threshold; "{name:g}" is the Thresholds field name
    informational: bool = False  # reported, never used for the class
    question: str = "codebook"  # which answer it belongs to: "codebook" (the design note's) or "conversion"

    @property
    def role(self) -> str:
        return self.id.split(".")[0]

    def bound_value(self, thresholds: Thresholds) -> Any:
        return None if self.bound is None else getattr(thresholds, self.bound)

    def limit(self, thresholds: Thresholds, against: float | None = None) -> Any:
        """What the measured value is compared with: the bound, or bound x ``against``."""
        if not self.against:
            return self.bound_value(thresholds)
        if against is None:
            return None
        return against if self.bound is None else self.bound_value(thresholds) * against

    def threshold(self, thresholds: Thresholds, limit: Any = None) -> str:
        """The threshold as the verdict states it: ">= 5", "in [0.9, 1.1]", "< loss_l1(2k) = 0.05"."""
        bound = self.bound_value(thresholds)
        if self.op is None:
            head = ""
        elif self.op == "in":
            head = f"in [{bound[0]:g}, {bound[1]:g}]"
        elif self.against:
            head = f"{self.op} " + ("" if bound is None else f"{bound:g} x ") + self.against
        else:
            head = f"{self.op} {bound:g}"
        text = " ".join(part for part in (head, self.words.format_map(asdict(thresholds))) if part)
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
    limit = criterion.limit(run.thresholds, m.against)
    if m.passed is not _COMPARE:
        passed = m.passed
    else:
        passed = None if m.value is None or limit is None else _compare(criterion.op, m.value, limit)
    note = INFORMATIONAL_NOTE if criterion.informational else m.note
    entry = _crit(criterion.id, role, step, nominal, criterion.metric, criterion.threshold(run.thresholds, limit), m.value, passed,
                  note, criterion.informational)
    return {**entry, "question": criterion.question}


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
    n_sil, n_out = silence(run.cps[c.role], run.thresholds.silence_std)
    return Measurement(n_sil, run.absent(c.role) or (
        "no inference outputs in the metrics" if n_sil is None else f"{n_sil} of {n_out} outputs silent"))


def _stage0_kept(since: str, run: Run, c: Criterion) -> Measurement:
    gone = run.absent(since, c.role)
    tolerance = f"stage 0 kept or rising, read with a {(1 - c.bound_value(run.thresholds)) * 100:g} % tolerance"
    return Measurement(stage_value(run.cps[c.role], 0, "perplexity"), (gone + "; " if gone else "") + tolerance,
                       against=stage_value(run.cps[since], 0, "perplexity"))


def _stage1_undisturbed(run: Run, c: Criterion) -> Measurement:
    """Read from the training curve around the step stage 1 starts (``training_curve.stage1_start``
    of the first later checkpoint): the 2k checkpoint itself has stage 1 untrained and cannot
    see the disturbance."""
    later = [r for r in run.present if ROLE_ORDER[r] > ROLE_ORDER[c.role]]
    for role in later:
        around = _get(run.cps[role], "training_curve", "stage1_start")
        if isinstance(around, dict) and around.get("ratio") is not None:
            return Measurement(around["ratio"], f"train/loss_stft mean {_fmt(around['before_mean'])} over steps "
                               f"({around['step'] - around['width']}, {around['step']}] -> {_fmt(around['after_mean'])} "
                               f"over ({around['step']}, {around['step'] + around['width']}] "
                               f"({around['num_before']} and {around['num_after']} points; read from the {role} metrics)")
    return Measurement(None, "no later checkpoint with the training curve around stage 1's start"
                       + (f" ({run.absent(*ROLE_ORDER)})" if run.absent(*ROLE_ORDER) else ""))


def paired_change(before: Sequence[float] | None, after: Sequence[float] | None) -> dict | None:
    """Mean relative change of paired per-utterance losses (after / before - 1) and its 95 %
    Student-t interval over utterances: the noise of comparing two checkpoints on one finite
    validation set. None when the two lists do not pair up."""
    if not before or not after or len(before) != len(after):
        return None
    return mean_interval([a / b - 1.0 for a, b in zip(after, before) if b and b > 0])


def _loss_improving(loss: str, since: str, run: Run, c: Criterion) -> Measurement:
    """Lower than at ``since``, or within the noise allowance: a rise no larger than the half-width
    of the 95 % interval of the paired per-utterance change counts as kept (as 2k's stability
    reads "kept" with a tolerance). Older metrics without per-utterance losses: strictly lower."""
    before = _num(_get(run.cps[since], "validation", loss))
    now = _num(_get(run.cps[c.role], "validation", loss))
    gone = run.absent(since, c.role)
    change = paired_change(_get(run.cps[since], "validation", "per_utterance", loss),
                           _get(run.cps[c.role], "validation", "per_utterance", loss))
    if gone or change is None or now is None or before is None:
        return Measurement(now, gone or f"{loss}({since}) = {_fmt(before)}; no per-utterance losses: no noise allowance",
                           against=before)
    allowance = max(0.0, change["mean"] - change["low"])
    within = now < before or (now / before - 1.0) <= allowance
    return Measurement(now, f"{loss}({since}) = {_fmt(before)}; change {change['mean']:+.2%} (95 % interval "
                       f"{change['low']:+.2%} .. {change['high']:+.2%} over {change['num']} utterances); noise "
                       f"allowance +{allowance:.2%}: a smaller rise counts as kept", against=before, passed=within)


def _active_stage_values(key: str, run: Run, c: Criterion) -> Measurement:
    """``key`` (perplexity, usage) of every trained active stage; the failing stages named."""
    cp = run.cps[c.role]
    stages = active_stages(cp)
    values = [_num(s.get(key)) for s in stages]
    if cp is None or not stages or any(v is None for v in values):
        return Measurement(None, run.absent(c.role) or f"no {key} of the active stages in the metrics")
    bad = [f"q{s['index']} ({v:.4g})" for s, v in zip(stages, values) if not _compare(c.op, v, c.limit(run.thresholds))]
    return Measurement(values, f"{len(stages)} active stages" + (f"; below: {', '.join(bad)}" if bad else ""))


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
    counted = [(r, run.info[r][0], *silence(run.cps[r], run.thresholds.silence_std)) for r in run.present]
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


def _controls(run: Run) -> tuple[str, dict | None]:
    last = run.present[-1]
    return last, _get(run.cps[last], "outputs", "quality", "convert", "controls")


def _no_control(last: str, controls: dict | None) -> tuple[str, bool | None]:
    """Why a control is missing, and whether that fails the criterion (silent outputs do; a
    corpus with too few held-out speakers, or metrics from before the controls, do not)."""
    if controls is None:
        return f"at {last}: no target-blind control in the metrics (re-evaluate with this version)", None
    if 0 < (controls.get("targets_per_source") or 0) < 2:
        return f"at {last}: each source has one target (the corpus holds out 2 speakers): no control", None
    return f"at {last}: no source converted to two targets with a voice (no control)", False


def _outputs_diverse(run: Run, c: Criterion) -> Measurement:
    """Same source to different targets (the control a target-blind or source-copying model
    fails): the interval's upper end must be below the corpus's same-speaker similarity."""
    last, controls = _controls(run)
    same = _num(_get(run.reference, "speaker", "same_mean"))
    if not _speaker_ran(run.cps[last]):
        return Measurement(None, _NO_SPEAKER, against=same, passed=None, at=last)
    alike = _get(controls, "same_source_similarity")
    if alike is None:
        note, passed = _no_control(last, controls)
        return Measurement(None, note, against=same, passed=passed, at=last)
    if same is None:
        note = ("no reference levels given" if run.reference is None else
                "the corpus's reference levels have no same-speaker pair (no speaker with two utterances measured)")
        return Measurement(alike["mean"], note, against=same, at=last)
    passed = alike["high"] < same
    return Measurement(alike["mean"], f"at {last}: outputs of one source to different targets alike "
                       f"{_fmt(alike['mean'])} (95 % interval up to {_fmt(alike['high'])} over {alike['num']} sources; "
                       "its upper end is compared); corpus different-speaker similarity "
                       f"{_fmt(_num(_get(run.reference, 'speaker', 'different_mean')))}", against=same, passed=passed,
                       at=last)


def _control(run: Run, key: str) -> tuple[str, dict | None, Measurement | None]:
    """(last role, control ``key`` at the last checkpoint, or None and the measurement that says
    why it is missing)."""
    last, controls = _controls(run)
    if not _speaker_ran(run.cps[last]):
        return last, None, Measurement(None, _NO_SPEAKER, passed=None, at=last)
    value = _get(controls, key)
    if value is None:
        note, passed = _no_control(last, controls)
        return last, None, Measurement(None, note, passed=passed, at=last)
    return last, value, None


def _towards_target(run: Run, c: Criterion) -> Measurement:
    """Shuffled-target control: similarity to the intended target minus to the source's other
    targets; the interval's lower end must be above the margin (0)."""
    last, towards, missing = _control(run, "towards_target")
    if missing:
        return missing
    ident = _get(_controls(run)[1], "identification") or {}
    return Measurement(towards["mean"], f"at {last}: intended minus other targets {towards['mean']:+.4f}, 95 % interval "
                       f"{towards['low']:+.4f} .. {towards['high']:+.4f} over {towards['num']} sources (its lower end "
                       f"is compared); intended target picked {_fmt(ident.get('rate'))} (chance {_fmt(ident.get('chance'))})",
                       passed=towards["low"] > run.thresholds.towards_target_margin, at=last)


def _target_identified(run: Run, c: Criterion) -> Measurement:
    last, ident, missing = _control(run, "identification")
    if missing:
        return missing
    return Measurement(ident["rate"], f"at {last}: intended target picked in {ident['rate']:.0%} of "
                       f"{ident['num_outputs']} conversions (chance {ident['chance']:.0%})", at=last)


def _beyond_pitch(run: Run, c: Criterion) -> Measurement:
    """The model against the pitch-only floor on the same trials: every held-out source where the
    evaluation ran them (``reference_controls.model``), else the sample conversions (older metrics)."""
    last, ident, missing = _control(run, "identification")
    if missing:
        return missing
    controls = _get(run.cps[last], "outputs", "quality", "convert", "reference_controls") or {}
    ident = (controls.get("model") or {}).get("identification") or ident
    pitch = (controls.get("pitch_only") or {}).get("identification")
    if pitch is None or ident.get("low") is None:
        return Measurement(None, f"at {last}: no pitch-only control in the metrics (re-evaluate with this version, "
                           "the speaker measure on)", passed=None, at=last)
    margin = ident["rate"] - pitch["rate"]
    oracle = (controls.get("oracle") or {}).get("identification")
    ceiling = f"; another real utterance of the target {oracle['rate']:.0%}" if oracle else ""
    return Measurement(margin, (
        f"at {last}: intended target picked in {ident['rate']:.0%} of {ident['num_outputs']} conversions (95 % "
        f"{ident['low']:.0%}-{ident['high']:.0%}), in {pitch['rate']:.0%} of {pitch['num_outputs']} pitch-only "
        f"shifts of their sources{ceiling}"),
        passed=margin >= run.thresholds.identification_margin_over_pitch and ident["low"] > pitch["rate"], at=last)


def _pitch_follows_target(run: Run, c: Criterion) -> Measurement:
    last = run.present[-1]
    level = _get(run.cps[last], "outputs", "quality", "convert", "pitch_level")
    if level is None:
        return Measurement(None, f"at {last}: no pitch level of the conversions in the metrics (re-evaluate with "
                           "this version)", passed=None, at=last)
    target, source = level["correlation_with_target"], level["correlation_with_source"]
    note = (f"at {last}: median log-F0 of {level['num_conversions']} conversions, correlation with the target's "
            f"{_fmt(target)}, with the source's {_fmt(source)}; median error {_fmt(level['median_error_semitones'])} "
            "semitones")
    if target is None:
        return Measurement(None, note + " (no correlation: one pitch level for every target, or too few voiced)",
                           passed=False, at=last)
    return Measurement(target, note, passed=target >= run.thresholds.pitch_level_min_correlation and (source is None or target > source),
                       at=last)


def _frame_rate_tone(run: Run, c: Criterion) -> Measurement:
    last = run.present[-1]
    tone = _get(run.cps[last], "outputs", "quality", "convert", "frame_tone") or {}
    if tone.get("excess_db") is None:
        return Measurement(None, f"at {last}: no frame-rate tone of the conversions in the metrics (re-evaluate "
                           "with this version)", passed=None, at=last)
    return Measurement(tone["excess_db"], (
        f"at {last}: the lines at multiples of the frame rate stand {tone['output_db']:.1f} dB over the spectrum "
        f"between them in {tone['num_outputs']} conversions, {tone['source_db']:.1f} dB in their sources "
        "(the \"mosquito tone\" when high)"), at=last)


def _content_kept(run: Run, c: Criterion) -> Measurement:
    last = run.present[-1]
    labels = _get(run.cps[last], "outputs", "quality", "convert", "content_labels") or {}
    out, src = labels.get("output"), labels.get("source")
    if out is None or src is None:
        return Measurement(None, f"at {last}: no content-label accuracy of the conversions (no frame labels, or "
                           "metrics from before this measure)", passed=None, at=last)
    chance = src["chance"]
    note = (f"at {last}: content head on the conversions {out['accuracy']:.3f}, on their sources "
            f"{src['accuracy']:.3f}, chance {chance:.3f}")
    if src["accuracy"] <= chance:
        return Measurement(None, note + " (the content head is at chance on the sources: nothing to keep yet)",
                           passed=None, at=last)
    kept = (out["accuracy"] - chance) / (src["accuracy"] - chance)
    return Measurement(kept, note + f"; kept {kept:.2f} of the above-chance accuracy", at=last)


# The checkpoint table of the module docstring, in the verdict's order:
# Criterion(id, metric, comparator, Thresholds field, measurement, [against=, words=, informational=]).
def _still_healthy(role: str, previous: str) -> tuple[Criterion, ...]:
    """The design note's 5k and 10k rows alike: every active stage healthy and used, and both
    losses kept below the ``previous`` checkpoint's (within the noise allowance)."""
    return (
        Criterion(f"{role}.perplexity_active_stages", "perplexity_q{i}, every active stage", ">", "healthy_perplexity",
                  partial(_active_stage_values, "perplexity"), words="each"),
        Criterion(f"{role}.usage_active_stages", "usage_q{i}, every active stage", ">", "usage_min_1k",
                  partial(_active_stage_values, "usage"), words="each (the note's 5 % rule at every checkpoint)"),
        *(Criterion(f"{role}.{loss}_improving", f"validation.{loss}", "<", None, partial(_loss_improving, loss, previous),
                    against=f"{loss}({previous})") for loss in ("loss_stft", "loss_l1")),
    )


CRITERIA: tuple[Criterion, ...] = (
    Criterion("1k.perplexity_q0", "perplexity_q0", ">=", "perplexity_min_1k", partial(_stage0, "perplexity")),
    Criterion("1k.perplexity_q0_ideal", "perplexity_q0", ">", "perplexity_ideal_1k", partial(_stage0, "perplexity"),
              words="(ideal)", informational=True),
    Criterion("1k.usage_q0", "usage_q0", ">", "usage_min_1k", partial(_stage0, "usage")),
    Criterion("1k.pre_rvq_std", "pre_rvq_std", "in", "pre_rvq_std_band", partial(_number, "pre_rvq_std")),
    Criterion("1k.pre_rvq_frame_scale", "pre_rvq_frame.frame_scale", "in", "frame_scale_band", _frame_scale),
    Criterion("1k.loss_stft_falling", "train/loss_stft trend", None, None, _loss_stft_falling,
              words="falling: last-window mean < first-window mean and last-window slope <= 0"),
    Criterion("1k.not_silent", "outputs.num_silent", "==", "silent_outputs_max", _silent_outputs,
              words="(every output std > {silence_std:g})"),
    Criterion("2k.perplexity_q0_stable", "perplexity_q0", ">=", "stable_fraction", partial(_stage0_kept, "1k"),
              against="perplexity_q0(1k)"),
    Criterion("2k.loss_stft_undisturbed", "train/loss_stft after / before stage 1 starts", "<=", "disturb_factor",
              _stage1_undisturbed, words="(window means around the step stage 1 starts)"),
    Criterion("2k.usage_q0", "usage_q0", ">", "usage_min_1k", partial(_stage0, "usage"),
              words="(the note's 5 % rule, still)"),
    Criterion("2k.pre_rvq_std", "pre_rvq_std", "in", "pre_rvq_std_band", partial(_number, "pre_rvq_std")),
    Criterion("2k.pre_rvq_frame_scale", "pre_rvq_frame.frame_scale", "in", "frame_scale_band", _frame_scale),
    *_still_healthy("5k", "2k"),
    *_still_healthy("10k", "5k"),
    Criterion("10k.audio_quality_improving", "outputs.quality.convert.dnsmos.ovrl", ">", None,
              partial(_dnsmos_improving, "5k"), against="ovrl(5k)"),
    Criterion("last.frame_rate_tone", "outputs.quality.convert.frame_tone.excess_db", "<=", "frame_tone_max_excess_db",
              _frame_rate_tone, words="dB (conversions' frame-rate lines over their sources'; reported, not yet "
              "part of the class)", informational=True),
    Criterion("10k.not_silent", "outputs.num_silent", "==", "silent_outputs_max", _silent_outputs,
              words="(every output std > {silence_std:g})"),
    Criterion("all.not_silent", "outputs.num_silent, every checkpoint", "==", "silent_outputs_max", _silent_anywhere,
              words="at every available checkpoint"),
    Criterion("last.top_code_share_q0", "top_code_share_q0", "<", "monopoly_share", _last_top_code_share,
              words="(diverse; >= {monopoly_share:g} is a monopoly)"),
    Criterion("last.outputs_diverse", "outputs.quality.convert.controls.same_source_similarity", "<", None,
              _outputs_diverse, against="corpus same-speaker similarity",
              words="(one source to different targets; upper end of the 95 % interval)", question="conversion"),
    Criterion("last.towards_target", "outputs.quality.convert.controls.towards_target", ">", "towards_target_margin",
              _towards_target, words="(intended target minus the source's other targets; lower end of the 95 % interval)",
              question="conversion"),
    Criterion("last.target_identified", "outputs.quality.convert.controls.identification.rate", ">=",
              "target_identification_min", _target_identified,
              words="(Resemblyzer picks the intended target among the source's targets)", question="conversion"),
    Criterion("last.beyond_pitch", "identification rate - the pitch-only control's", ">=",
              "identification_margin_over_pitch", _beyond_pitch,
              words="(and the lower end of the rate's 95 % interval above the control's rate)", question="conversion"),
    Criterion("last.pitch_follows_target", "outputs.quality.convert.pitch_level.correlation_with_target", ">=",
              "pitch_level_min_correlation", _pitch_follows_target,
              words="(median log-F0 over conversions, and above the correlation with the source's)",
              question="conversion"),
    Criterion("last.content_kept", "outputs.quality.convert.content_labels", ">=", "content_kept_share", _content_kept,
              words="(content-head accuracy on the conversions above chance, as a share of that on the sources)",
              question="conversion"),
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
    thresholds: Thresholds  # the bounds the decision rows compare with


def gather_evidence(criteria: list[dict], run: Run) -> Evidence:
    """The codebook answer's evidence: only the codebook criteria decide its rows."""
    series = [(r, stage_value(run.cps[r], 0, "perplexity")) for r in run.present]
    required = [c for c in criteria if not c["informational"] and c["question"] == "codebook"]
    return Evidence(
        criteria={c["id"]: c for c in criteria},
        series=[(r, p) for r, p in series if p is not None],
        failed=[c["id"] for c in required if c["passed"] is False],
        unevaluated=[c["id"] for c in required if c["passed"] is None],
        evaluated=any(c["passed"] is not None for c in required),
        thresholds=run.thresholds,
    )


# ---- row tests: (evidence, the criteria the row uses) -> (matched: True/False/None, reason)


def _flat_low(ev: Evidence, used: list[dict]) -> tuple[bool | None, str]:
    if not ev.series:
        return None, "no perplexity_q0 available"
    first, last = ev.series[0][1], ev.series[-1][1]
    low = all(p < ev.thresholds.collapsed_perplexity for _, p in ev.series)
    flat = last <= ev.thresholds.flat_factor * first
    return low and flat, (
        "perplexity_q0 " + ", ".join(f"{_fmt(p)} ({r})" for r, p in ev.series)
        + f"; < {ev.thresholds.collapsed_perplexity:g} at every checkpoint: {low}"
        + f"; flat (last {_fmt(last)} <= {ev.thresholds.flat_factor:g} x first {_fmt(first)}): {flat}"
    )


def _monopoly(ev: Evidence, used: list[dict]) -> tuple[bool | None, str]:
    [share] = used
    if share["measured"] is None:
        return None, "no top-code share available"
    return (share["measured"] >= ev.thresholds.monopoly_share,
            f"top_code_share_q0 {_fmt(share['measured'])} at {share['role']} (>= {ev.thresholds.monopoly_share:g} is a monopoly)")


def _failed_reason(ev: Evidence) -> str:
    return f"failed: {', '.join(ev.failed)}" if ev.failed else "no criterion could be evaluated"


def _no_required_failed(ev: Evidence, used: list[dict]) -> tuple[bool | None, str]:
    success = not ev.failed and ev.evaluated
    return success, "every evaluated required criterion passed" if success else _failed_reason(ev)


def _low_perplexity(ev: Evidence, used: list[dict]) -> tuple[bool | None, str]:
    if len(ev.series) < 2:
        return None, "needs perplexity_q0 at two checkpoints or more"
    (r0, first), (r1, last) = ev.series[0], ev.series[-1]
    stays = all(p < ev.thresholds.perplexity_min_1k for _, p in ev.series)
    return last > first and stays, (f"perplexity_q0 {_fmt(first)} ({r0}) -> {_fmt(last)} ({r1}): "
                                    f"improves {last > first}, stays < {ev.thresholds.perplexity_min_1k:g} {stays}")


def _stage0_declines(ev: Evidence, used: list[dict]) -> tuple[bool | None, str]:
    """Stage 0 unstable from 1k to 2k, or its usage below the note's 5 % at any checkpoint."""
    judged = [c for c in used if c["passed"] is not None]
    if not judged:
        return None, "neither stage 0's stability nor its usage could be judged"
    bad = [c for c in judged if c["passed"] is False]
    return bool(bad), ("; ".join(f"{c['id']} {_fmt_measured(c['measured'])} ({c['threshold']})" for c in bad)
                       or "stage 0 kept its perplexity and usage")


def _fmt_measured(x: Any) -> str:
    return "[" + ", ".join(_fmt(_num(v)) for v in x) + "]" if isinstance(x, list) else _fmt(_num(x))


def _some_stages_collapsed(ev: Evidence, used: list[dict]) -> tuple[bool | None, str]:
    parts = []
    for c in used:
        if c["measured"] is not None:
            healthy = sum(1 for p in c["measured"] if p > ev.thresholds.healthy_perplexity)
            parts.append((c["role"], healthy, len(c["measured"]) - healthy))
    if not parts:
        return None, f"no {'/'.join(c['role'] for c in used)} checkpoint with active-stage perplexities"
    collapsed = [f"q{i} at {c['role']}" for c in used if c["measured"] is not None
                 for i, p in enumerate(c["measured"]) if not p > ev.thresholds.healthy_perplexity]
    return (any(h > 0 and g > 0 for _, h, g in parts),
            "; ".join(f"{r}: {h} healthy, {g} collapsed" for r, h, g in parts)
            + (f" (collapsed: {', '.join(collapsed)})" if collapsed else ""))


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


# The codebook answer's decision table, evaluated top to bottom; the first matching row wins.
# Next-action templates: {command} the remedy ladder, {provisional} unevaluated criteria,
# {reason} the row's own evidence, {beta} the commitment-cost advice, {advice} per failed criterion.
DECISION_TABLE: tuple[Row, ...] = (
    Row("failure_flat_low", "failure", _flat_low, NEXT_FAILURE),
    Row("failure_monopoly", "failure", _monopoly, NEXT_FAILURE, uses=("last.top_code_share_q0",)),
    Row("success", "success", _no_required_failed, NEXT_SUCCESS + "{provisional}"),
    Row("partial_low_perplexity", "partial", _low_perplexity, "{beta}"),
    Row("partial_stage0_decline", "partial", _stage0_declines, NEXT_DECLINE,
        uses=("2k.perplexity_q0_stable", "1k.usage_q0", "2k.usage_q0")),
    Row("partial_stage_collapse", "partial", _some_stages_collapsed, NEXT_STAGE_COLLAPSE,
        uses=("5k.perplexity_active_stages", "10k.perplexity_active_stages")),
    Row("partial_other", "partial", _anything_else, "{advice}", otherwise=True),
)

# partial_other: what to do about each failed criterion (by the name after its role), in the verdict's order.
ADVICE: dict[str, str] = {
    "perplexity_q0": "stage 0 is under-used at 1k: run the remedy ladder ({command})",
    "usage_q0": "stage 0 uses under 5 % of its codebook: run the remedy ladder ({command})",
    "pre_rvq_std": "the RVQ input is not normalised: check model.pre_rvq_norm (utterance or causal)",
    "pre_rvq_frame_scale": "the per-frame norm is off the codebook's scale: check model.pre_rvq_norm and the "
                           "pre_rvq_frame statistics in the report",
    "loss_stft_falling": "the spectral loss does not fall by 1k: check train.lr and the warm-up in the log",
    "not_silent": "outputs are silent: listen to the samples and check the decoder's loss terms",
    "loss_stft_undisturbed": "adding stage 1 disturbed the loss: lengthen the progressive interval "
                             "(model.rvq.progressive_steps)",
    "perplexity_q0_stable": "stage 0 declines from 1k to 2k: run the remedy ladder ({command})",
    "perplexity_active_stages": "every active stage collapsed: run the remedy ladder ({command})",
    "top_code_share_q0": "one code takes half of stage 0: run the remedy ladder ({command})",
    "usage_active_stages": "a later stage uses under 5 % of its codebook: run the remedy ladder ({command})",
    "loss_stft_improving": "the spectral loss rose beyond its noise allowance: train longer or check train.lr",
    "loss_l1_improving": "the waveform L1 rose beyond its noise allowance: train longer or check train.lr",
    "audio_quality_improving": "DNSMOS fell from 5k to 10k: listen to the samples (report/samples/, one page per checkpoint)",
}
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


def beta_advice(ab_command: str) -> str:
    """partial_low_perplexity's advice. A verdict cannot read the A/B (the A/B reads the
    verdicts), so it defers to the A/B's own ``advice``, which says supports or contradicts."""
    return (f"build the commitment-cost A/B ({ab_command}) and raise commitment cost to 1.0 "
            "(phase1_beta1) only if its advice says the A/B supports it (higher perplexity_q0 at 1k and 2k)")


def failed_advice(ev: Evidence, ladder_command: str) -> str:
    """One piece of advice per distinct remedy, each naming the failed criteria it answers."""
    if not ev.failed:
        return "metrics incomplete: no codebook criterion could be evaluated; rebuild the metrics"
    grouped: dict[str, list[str]] = {}
    for cid in ev.failed:
        text = ADVICE.get(cid.split(".", 1)[1], f"{cid} failed: see its note").format(command=ladder_command)
        grouped.setdefault(text, []).append(cid)
    return "; ".join(f"{text} [{', '.join(ids)}]" for text, ids in grouped.items())


def next_action(row: Row, ev: Evidence, ladder_command: str, reason: str = "",
                ab_command: str = AB_COMMAND_DEFAULT) -> str:
    return row.next_action.format(
        command=ladder_command,
        provisional=f" (provisional: not evaluated: {', '.join(ev.unevaluated)})" if ev.unevaluated else "",
        reason=reason,
        beta=beta_advice(ab_command),
        advice=failed_advice(ev, ladder_command),
    )


# --------------------------------------------------------------------------- the conversion answer

CLASS_ORDER = ("failure", "partial", "success")  # worse to better: the top-level class is the worse answer
NOT_EVALUABLE = "not_evaluable"


class Precondition(NamedTuple):
    """Something the conversion criteria need before they mean anything."""

    id: str
    op: str  # measured <op> limit (a key of _OPS)
    words: str  # the threshold as the verdict states it; "{name:g}" is the Thresholds field name
    read: Callable[[dict | None, dict | None, Thresholds], tuple[float | None, float | None]]  # (cp, reference, thresholds) -> (measured, limit)
    failure: str  # next action when it is not met; {measured}, {limit}, {step}


def _model_speaker_auc(cp: dict | None, reference: dict | None, thresholds: Thresholds) -> tuple[float | None, float | None]:
    return _num(_get(cp, "speaker_embedding", "auc")), thresholds.model_speaker_min_auc


def _reconstruction_resemblance(cp: dict | None, reference: dict | None, thresholds: Thresholds) -> tuple[float | None, float | None]:
    return (_num(_get(cp, "outputs", "quality", "reconstruct", "speaker_similarity_source")),
            _num(_get(reference, "speaker", "different_mean")))


PRECONDITIONS: tuple[Precondition, ...] = (
    Precondition("speaker_embedding_separates", ">=", ">= {model_speaker_min_auc:g} AUC (same vs different held-out speaker)",
                 _model_speaker_auc,
                 "fix the speaker path first: the model's own speaker embedding separates held-out speakers at AUC "
                 "{measured} at step {step} (< {limit:g}), so every output has one voice whatever the target"),
    Precondition("reconstructions_resemble_source", ">", "> the corpus's different-speaker similarity",
                 _reconstruction_resemblance,
                 "the decoder does not reproduce a voice: reconstructions resemble their own source at {measured} at "
                 "step {step}, not above the corpus's different-speaker level {limit:.4g}; train longer before judging "
                 "conversion"),
)
NEXT_CONVERSION = {
    "success": "the model converts: listen to report/samples/ (one page per checkpoint)",
    "partial": "the conversions follow the target only in part ({failed}): see the criteria's notes",
    "failure": "the decoder does not follow the target voice ({failed}) although its speaker embedding separates "
               "speakers: check the FiLM path and the pitch statistics",
}


def check_preconditions(run: Run) -> list[dict]:
    """Each precondition at the last available checkpoint: measured, limit, met (None: not measured)."""
    last = run.present[-1]
    cp, step = run.cps[last], run.info[last][0]
    checked = []
    for pre in PRECONDITIONS:
        measured, limit = pre.read(cp, run.reference, run.thresholds)
        met = None if measured is None or limit is None else _OPS[pre.op](measured, limit)
        checked.append({"id": pre.id, "role": last, "step": step, "threshold": pre.words.format_map(asdict(run.thresholds)), "measured": measured,
                        "limit": limit, "met": met,
                        "next_action": None if met else pre.failure.format(measured=_fmt(measured), limit=limit or 0,
                                                                           step=step)})
    return checked


def conversion_answer(criteria: list[dict], run: Run) -> dict:
    """The conversion question's class: ``not_evaluable`` (with the reason) unless every
    precondition holds; then success when every conversion criterion passes, failure when
    none does, else partial."""
    ids = [c["id"] for c in criteria if c["question"] == "conversion"]
    judged = [c for c in criteria if c["question"] == "conversion" and c["passed"] is not None]
    pre = check_preconditions(run)
    unmet = [p for p in pre if p["met"] is not True]
    failed = [c["id"] for c in judged if not c["passed"]]
    if unmet:
        reason = "; ".join(f"{p['id']}: " + ("not measured" if p["met"] is None else f"{_fmt(p['measured'])} not "
                                              f"{p['threshold']}") for p in unmet)
        action = next((p["next_action"] for p in unmet if p["met"] is False), None) or (
            "re-evaluate with the speaker measure on (evaluation.quality_measures) and this version's evaluate, "
            "which measures the model's speaker embedding")
        klass = NOT_EVALUABLE
    elif not judged:
        klass, reason, action = NOT_EVALUABLE, "no conversion criterion could be evaluated", "rebuild the metrics"
    else:
        klass = "success" if not failed else "failure" if len(failed) == len(judged) else "partial"
        reason = f"failed: {', '.join(failed)}" if failed else "every conversion criterion passed"
        action = NEXT_CONVERSION[klass].format(failed=", ".join(failed))
    return {"class": klass, "reason": reason, "next_action": action, "preconditions": pre, "criteria": ids,
            "failed_checks": failed}


def answers(verdict: dict) -> tuple[str | None, str | None]:
    """(codebook class, conversion class) of a verdict file; one written before the two answers
    existed gives its one class as the codebook's and None for the conversion."""
    if "codebook" in verdict:
        return verdict["codebook"].get("class"), (verdict.get("conversion") or {}).get("class")
    return verdict.get("class"), None


def overall_class(codebook: str, conversion: str) -> str:
    """The one rule for the top-level class: the worse of the two answers, where a conversion
    answer that is not evaluable leaves the codebook's class as it is (it is reported beside it)."""
    if conversion == NOT_EVALUABLE:
        return codebook
    return min(codebook, conversion, key=CLASS_ORDER.index)


def checkpoint_warnings(run: Run) -> list[str]:
    """The preconditions at every judged checkpoint, each naming it: a content encoder not above
    chance, a speaker embedding that does not separate speakers."""
    warnings = []
    for role in run.present:
        cp, step = run.cps[role], run.info[role][0]
        content = _get(cp, "content_labels", "valid")
        if isinstance(content, dict) and content.get("accuracy") is not None and content.get("chance"):
            if content["accuracy"] < run.thresholds.content_learnt_factor * content["chance"]:
                warnings.append(
                    f"{role} (step {step}): the content encoder's validation label accuracy {_fmt(content['accuracy'])} "
                    f"is below {run.thresholds.content_learnt_factor:g} x chance ({_fmt(content['chance'])}): it has not learnt its "
                    "frame labels, so this checkpoint's codebook criteria judge a barely trained encoder's features")
        auc = _num(_get(cp, "speaker_embedding", "auc"))
        if auc is not None and auc < run.thresholds.model_speaker_min_auc:
            warnings.append(f"{role} (step {step}): the model's speaker embedding separates held-out speakers at AUC "
                            f"{_fmt(auc)} (< {run.thresholds.model_speaker_min_auc:g}): conversions cannot follow the target")
    return warnings


def verdict_warnings(plan: dict, ev: Evidence, run: Run, reference: dict | None) -> list[str]:
    """The scale warnings, a frame scale off while pre_rvq_std passes, the content encoder, the speaker measure."""
    warnings = list(plan["warnings"])
    for role in ("1k", "2k"):
        std_c, scale_c = ev.criteria[f"{role}.pre_rvq_std"], ev.criteria[f"{role}.pre_rvq_frame_scale"]
        if std_c["passed"] and scale_c["passed"] is False:
            warnings.append(
                f"{role}: pre_rvq_std {_fmt(std_c['measured'])} passes but the frame scale "
                f"{_fmt(scale_c['measured'])} is outside [{run.thresholds.frame_scale_band[0]:g}, {run.thresholds.frame_scale_band[1]:g}]: "
                "the per-channel std is 1 by construction, the vectors the codebook sees are not at its scale"
            )
    tone = ev.criteria["last.frame_rate_tone"]
    if tone["passed"] is False:
        warnings.append(f"the conversions carry a tone at the frame rate ({_fmt(tone['measured'])} dB over their "
                        "sources' lines, the design note's \"mosquito tone\"): listen to the samples; the decoder "
                        "imprints its frame grid (issue 38)")
    return warnings + checkpoint_warnings(run) + [w for w in (speaker_warning(reference, run.thresholds),) if w]


# --------------------------------------------------------------------------- decide


def codebook_answer(criteria: list[dict], ev: Evidence, branches: list[dict], row: Row, reason: str,
                    action: str) -> dict:
    """The codebook question's answer: the matched decision row's class, branch and next action."""
    return {
        "class": row.verdict_class,
        "branch": row.branch,
        "next_action": action,
        "reason": reason,
        "complete": not ev.unevaluated,
        "failed_checks": ev.failed,
        "criteria": [c["id"] for c in criteria if c["question"] == "codebook"],
        "branches": branches,
    }


def decide(checkpoints: list[dict], *, steps: list[int], progressive_steps: int,
           reference: dict | None = None, ladder_command: str = LADDER_COMMAND_DEFAULT,
           scale: float | None = None, ab_command: str = AB_COMMAND_DEFAULT, thresholds: Thresholds = PROTOCOL) -> dict:
    """The verdict of one experiment (pure): the checkpoint table judged, then the decision table.

    ``checkpoints``: the metrics dicts that exist, in step order. ``steps``: the configured
    ``train.steps``; ``progressive_steps``: ``model.rvq.progressive_steps``; ``reference``:
    the corpus's reference levels (``reference_levels.json``; None: the criteria that need
    them are unevaluated); ``ladder_command``: the command a failure's ``next_action`` names.
    ``ab_command``: the command that builds the commitment-cost A/B, which the low-perplexity
    branch names.
    ``scale``: ``train.scale`` (None: inferred from the steps, see :func:`protocol_scale`).
    ``thresholds``: the bounds every criterion and decision row compares with (the protocol's by default).

    Returns ``{"experiment", "criteria", "class", "branch", "next_action", "reason",
    "complete", "scaled", "scale", "steps", "progressive_steps", "checkpoints", "missing",
    "ignored_steps", "warnings", "branches"}``. See the module docstring for every rule.
    Raises ValueError when no checkpoint of the protocol is given.
    """
    plan = protocol_scale(steps, progressive_steps, scale)
    run, summary, missing, ignored = place_checkpoints(checkpoints, plan, steps, reference, thresholds)
    criteria = [judge(criterion, run) for criterion in CRITERIA]
    evidence = gather_evidence(criteria, run)
    branches, row, reason = apply_decision_table(evidence)
    codebook = codebook_answer(criteria, evidence, branches, row, reason,
                               next_action(row, evidence, ladder_command, reason, ab_command))
    conversion = conversion_answer(criteria, run)
    top = overall_class(codebook["class"], conversion["class"])
    action = codebook["next_action"] + ("" if conversion["class"] == "success"
                                        else f"; conversion ({conversion['class']}): {conversion['next_action']}")
    return {
        "experiment": next((cp.get("experiment") for cp in checkpoints if cp.get("experiment")), None),
        "class": top,
        "class_rule": "the worse of the codebook and conversion answers; a not-evaluable conversion leaves the "
                      "codebook's class",
        "codebook": codebook,
        "conversion": conversion,
        "branch": row.branch,
        "next_action": action,
        "reason": reason,
        "complete": not evidence.unevaluated,
        "failed_checks": evidence.failed + [c for c in conversion["failed_checks"] if c not in evidence.failed],
        "criteria": criteria,
        "scaled": plan["scaled"],
        "scale": plan["scale"],
        "steps_cut_by_hand": plan["by_hand"],
        "steps": [int(s) for s in steps],
        "progressive_steps": int(progressive_steps),
        "checkpoints": summary,
        "missing": missing,
        "ignored_steps": ignored,
        "warnings": verdict_warnings(plan, evidence, run, reference),
        "branches": branches,
    }
