"""The protocol's bounds as one frozen value, passed to :func:`streamvc_rvq.verdict.decision.decide`.

:data:`PROTOCOL` is the design note's (SPEC.md section 2); a test or a study passes its own with
``dataclasses.replace(PROTOCOL, ...)``. Each criterion names the field it compares with, and the
verdict's threshold text is generated from the value it was given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamvc_rvq.config import schema_default


@dataclass(frozen=True)
class Thresholds:
    perplexity_min_1k: float = 5.0  # 1k: perplexity_q0 >= 5
    perplexity_ideal_1k: float = 10.0  # 1k: ideal perplexity_q0 > 10 (informational)
    usage_min_1k: float = 0.05  # 1k: usage_q0 > 0.05 (and every trained active stage later)
    pre_rvq_std_band: tuple[float, float] = (0.9, 1.1)  # inclusive
    frame_scale_band: tuple[float, float] = (0.5, 2.0)  # inclusive: median ||z_t|| / sqrt(D) within 2x of a code's norm
    # The content encoder has learnt its frame labels when its validation accuracy is at least this
    # many times chance (always guessing the most frequent label); below it, a warning: the RVQ
    # statistics describe a barely trained encoder's features.
    content_learnt_factor: float = 1.5
    stable_fraction: float = 0.9  # 2k: perplexity_q0(2k) >= 0.9 x perplexity_q0(1k)
    disturb_factor: float = 1.1  # 2k: loss_stft after stage 1 starts <= 1.1 x before
    healthy_perplexity: float = 5.0  # 5k/10k: every active stage > 5
    # an output with std <= this (evaluation.silence_std, 0.01) is silent
    silence_std: float = field(default_factory=lambda: schema_default("evaluation.silence_std"))
    silent_outputs_max: int = 0  # not_silent: outputs.num_silent == 0
    collapsed_perplexity: float = 2.0  # failure: perplexity_q0 < 2 ...
    flat_factor: float = 1.1  # ... and flat: last <= 1.1 x first
    monopoly_share: float = 0.5  # failure: top_code_share_q0 >= 0.5
    towards_target_margin: float = 0.0  # towards_target: the interval's lower end above this
    # target_identified: Resemblyzer picks the intended target among a source's targets this often
    # (chance 1/3 with 3 targets; a target-blind model scores exactly 1/3: every target gets one output)
    target_identification_min: float = 0.75
    # beyond_pitch: the conversions' identification rate above the pitch-only control's (the source
    # moved to the target's median F0, formants kept) by at least this, and the lower end of its
    # Wilson 95 % interval above the control's rate (a pitch shift alone reached 61 % on quick)
    identification_margin_over_pitch: float = 0.15
    # pitch_follows_target: the conversions' median log-F0 correlates with the target's at least
    # this much (over conversions), and more than with the source's (a source copy fails that)
    pitch_level_min_correlation: float = 0.8
    # content_kept: the content head on the conversions scores at least this share of its accuracy
    # on the sources above chance (an output that lost the words scores chance)
    content_kept_share: float = 0.5
    # The speaker criteria mean something only when the speaker measure separates the corpus's own
    # speakers; below this AUC (reference levels), a warning says so.
    speaker_separation_min_auc: float = 0.9
    # The conversion answer's precondition: the model's own speaker embedding tells held-out speakers
    # apart at least this well (AUC; 0.5 is chance; the constant embedding of the review measured 0.52-0.58).
    model_speaker_min_auc: float = 0.75
    # frame_rate_tone (informational): the conversions' lines at multiples of the frame rate stand
    # at most this much higher over the spectrum between them than in their sources (real speech):
    # a 50 Hz comb 10 dB under the speech adds ~8 dB, one 20 dB under ~4 dB (quality/frame_tone.py)
    frame_tone_max_excess_db: float = 3.0


PROTOCOL = Thresholds()
