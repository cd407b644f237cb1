"""The verdict: every class, every branch, every boundary of SPEC.md section 2."""

import json
from dataclasses import replace

import pytest
import torch

from streamvc_rvq.verdict.decision import (
    LADDER_COMMAND_DEFAULT,
    NEXT_FAILURE,
    NEXT_STAGE_COLLAPSE,
    NEXT_SUCCESS,
    decide,
)
from streamvc_rvq.verdict.thresholds import PROTOCOL
from streamvc_rvq.quantization import stats

STEPS = [1000, 2000, 5000, 10000]

EXPECTED_IDS = [
    "1k.perplexity_q0",
    "1k.perplexity_q0_ideal",
    "1k.usage_q0",
    "1k.pre_rvq_std",
    "1k.pre_rvq_frame_scale",
    "1k.loss_stft_falling",
    "1k.not_silent",
    "2k.perplexity_q0_stable",
    "2k.loss_stft_undisturbed",
    "2k.usage_q0",
    "2k.pre_rvq_std",
    "2k.pre_rvq_frame_scale",
    "5k.perplexity_active_stages",
    "5k.usage_active_stages",
    "5k.loss_stft_improving",
    "5k.loss_l1_improving",
    "10k.perplexity_active_stages",
    "10k.usage_active_stages",
    "10k.loss_stft_improving",
    "10k.loss_l1_improving",
    "10k.audio_quality_improving",
    "last.frame_rate_tone",
    "10k.not_silent",
    "all.not_silent",
    "last.top_code_share_q0",
    "last.outputs_diverse",
    "last.towards_target",
    "last.target_identified",
    "last.beyond_pitch",
    "last.pitch_follows_target",
    "last.content_kept",
]

REFERENCE = {"speaker": {"same_mean": 0.9, "different_mean": 0.65, "auc": 0.99, "eer": 0.05},
             "dnsmos": {"sig": 3.0, "bak": 3.6, "ovrl": 2.6}}


def run(cps, steps=STEPS, progressive=2000, reference=REFERENCE, thresholds=PROTOCOL):
    return decide(cps, steps=list(steps), progressive_steps=progressive, reference=reference, thresholds=thresholds)


def crit(verdict, cid):
    return next(c for c in verdict["criteria"] if c["id"] == cid)


# ------------------------------------------------------------------ stats on hand-made histograms


def test_stats_on_small_histograms():
    c = torch.tensor([2.0, 2.0, 0.0, 0.0])
    assert stats.perplexity(c) == pytest.approx(2.0, rel=1e-6)
    assert stats.usage(c) == 0.5
    assert stats.top_code_share(c) == 0.5
    uniform = torch.ones(8)
    assert stats.perplexity(uniform) == pytest.approx(8.0, rel=1e-6)
    one = torch.tensor([0.0, 7.0, 0.0, 0.0])
    assert stats.perplexity(one) == pytest.approx(1.0)
    assert stats.top_code_share(one) == 1.0
    assert stats.usage(one) == 0.25
    assert stats.codes_used(c) == 2 and stats.codes_used(one) == 1 and stats.codes_used(torch.zeros(4)) == 0


# ------------------------------------------------------------------ classes and branches


def test_success_all_criteria_pass(healthy_run):
    v = run(healthy_run())
    assert (v["class"], v["branch"]) == ("success", "success")
    assert v["next_action"] == NEXT_SUCCESS
    assert v["complete"] is True and v["missing"] == [] and v["scaled"] is False and v["scale"] == 1.0
    assert [c["id"] for c in v["criteria"]] == EXPECTED_IDS
    for c in v["criteria"]:
        assert c["passed"] is True, c
    json.dumps(v, allow_nan=False)  # the verdict file is plain JSON


def test_success_from_code_histograms(make_cp, hist):
    """The same decision when the stage numbers come from stats.py on histograms."""
    h = hist.healthy(200)
    cps = [
        make_cp(1000, counts=[h], stft=3.0, l1=0.06),
        make_cp(2000, counts=[h, hist.healthy(50)], stft=2.9, l1=0.05),
        make_cp(5000, counts=[h, h, hist.healthy(60)], stft=2.5, l1=0.04, ovrl=2.4),
        make_cp(10000, counts=[h] * 6, stft=2.2, l1=0.03, ovrl=2.6),
    ]
    v = run(cps)
    assert v["class"] == "success"
    assert crit(v, "1k.perplexity_q0")["measured"] == pytest.approx(200.0, rel=1e-4)
    assert crit(v, "1k.usage_q0")["measured"] == pytest.approx(200 / 1024)
    # the whole-pass code count, per active stage, next to perplexity in the checkpoint summary
    by_role = {c["nominal_step"]: c for c in v["checkpoints"]}
    assert by_role[2000]["codes_used"] == [200, 50] and by_role[10000]["codes_used"] == [200] * 6
    assert by_role[2000]["perplexity"] == [pytest.approx(200.0, rel=1e-4), pytest.approx(50.0, rel=1e-4)]


def test_ideal_perplexity_is_informational(healthy_run):
    cps = healthy_run()
    cps[0]["stages"][0]["perplexity"] = 7.0
    cps[1]["stages"][0]["perplexity"] = 8.0
    v = run(cps)
    ideal = crit(v, "1k.perplexity_q0_ideal")
    assert ideal["passed"] is False and ideal["informational"] is True
    assert v["class"] == "success"


def test_partial_low_perplexity(make_cp):
    cps = [
        make_cp(1000, [3.0], share=[0.2], stft=3.0, l1=0.06),
        make_cp(2000, [3.5, 3.0], share=[0.2, 0.2], stft=2.9, l1=0.05),
        make_cp(5000, [4.0, 3.0, 3.0], share=[0.2] * 3, stft=2.5, l1=0.04),
        make_cp(10000, [4.5] * 6, share=[0.2] * 6, stft=2.2, l1=0.03),
    ]
    v = run(cps)
    assert (v["class"], v["branch"]) == ("partial", "partial_low_perplexity")
    assert v["codebook"]["next_action"].startswith("build the commitment-cost A/B (")
    assert "raise commitment cost to 1.0" in v["next_action"]
    assert crit(v, "1k.perplexity_q0")["passed"] is False


def test_rising_below_two_is_not_flat_failure(make_cp):
    """perplexity_q0 < 2 everywhere but rising by more than 10 %: improving, not flat."""
    cps = [make_cp(s, [p], share=[0.3]) for s, p in zip(STEPS, [1.1, 1.2, 1.4, 1.5])]
    v = run(cps)
    assert v["branch"] == "partial_low_perplexity"


def test_partial_stage_collapse(healthy_run):
    cps = healthy_run()
    cps[2]["stages"][2]["perplexity"] = 1.3  # 5k: q2 collapsed, q0 and q1 healthy
    v = run(cps)
    assert (v["class"], v["branch"]) == ("partial", "partial_stage_collapse")
    assert v["codebook"]["next_action"].startswith(NEXT_STAGE_COLLAPSE.split("{")[0])
    assert "collapsed: q2 at 5k" in v["next_action"]  # the stage and checkpoint are named
    c = crit(v, "5k.perplexity_active_stages")
    assert c["passed"] is False and c["measured"] == [20.0, 12.0, 1.3] and "q2" in c["note"]


def test_every_stage_collapsed_is_not_some_stages(make_cp):
    """'Only some stages collapse' needs a healthy stage beside a collapsed one."""
    cps = [make_cp(1000, [6.0], share=[0.3], stft=3.0, l1=0.06),
           make_cp(2000, [6.0, 4.0], share=[0.3, 0.3], stft=2.9, l1=0.05),
           make_cp(5000, [4.0] * 3, share=[0.3] * 3, stft=2.5, l1=0.04),
           make_cp(10000, [4.0] * 6, share=[0.3] * 6, stft=2.2, l1=0.03)]
    v = run(cps)
    assert v["branch"] == "partial_other"
    assert v["next_action"] == (f"every active stage collapsed: run the remedy ladder ({LADDER_COMMAND_DEFAULT}) "
                                "[5k.perplexity_active_stages, 10k.perplexity_active_stages]")


def test_stage_collapse_at_10k_only(healthy_run):
    cps = healthy_run()
    cps[3]["stages"][5]["perplexity"] = 4.0
    v = run(cps)
    assert v["branch"] == "partial_stage_collapse"
    assert crit(v, "5k.perplexity_active_stages")["passed"] is True


def test_failure_flat_low_from_collapsed_histograms(make_cp, hist):
    cps = [make_cp(s, counts=[hist.collapsed()]) for s in STEPS]
    v = run(cps)
    assert (v["class"], v["branch"]) == ("failure", "failure_flat_low")
    assert v["next_action"] == NEXT_FAILURE.format(command=LADDER_COMMAND_DEFAULT)
    assert "snakemake --cores all results/compare/remedies.json" in v["next_action"]


def test_failure_flat_low_without_monopoly(make_cp):
    cps = [make_cp(s, [p], share=[0.3]) for s, p in zip(STEPS, [1.0, 0.95, 1.05, 1.1])]
    v = run(cps)  # last 1.1 <= 1.1 x first 1.0: flat (boundary included)
    assert v["branch"] == "failure_flat_low"
    cps[-1]["stages"][0]["perplexity"] = 1.1001
    assert run(cps)["branch"] == "partial_low_perplexity"


def test_failure_monopoly(healthy_run):
    cps = healthy_run()
    cps[-1]["stages"][0]["top_code_share"] = 0.6
    v = run(cps)
    assert (v["class"], v["branch"]) == ("failure", "failure_monopoly")
    assert v["next_action"] == NEXT_FAILURE.format(command=LADDER_COMMAND_DEFAULT)
    assert crit(v, "last.top_code_share_q0")["passed"] is False


def test_monopoly_boundary_exactly_half(healthy_run, hist):
    cps = healthy_run()
    cps[-1]["stages"][0] = hist.stage(0, [2, 2, 0, 0])  # share exactly 0.5
    cps[-1]["stages"][0]["perplexity"] = 30.0
    v = run(cps)
    assert crit(v, "last.top_code_share_q0")["measured"] == 0.5
    assert crit(v, "last.top_code_share_q0")["passed"] is False
    assert v["branch"] == "failure_monopoly"
    cps[-1]["stages"][0]["top_code_share"] = 0.4999
    assert run(cps)["branch"] == "success"


def test_monopoly_only_judged_at_last_checkpoint(healthy_run):
    cps = healthy_run()
    cps[0]["stages"][0]["top_code_share"] = 0.9  # early monopoly, resolved later
    v = run(cps)
    assert v["branch"] == "success"


def test_partial_other_names_failed_criteria(healthy_run):
    cps = healthy_run()
    cps[0]["pre_rvq_std"] = 1.2
    cps[1]["pre_rvq_std"] = 1.3
    cps[1]["outputs"]["num_silent"] = 1
    v = run(cps)
    assert (v["class"], v["branch"]) == ("partial", "partial_other")
    # one piece of advice per remedy, naming every criterion it answers
    assert v["next_action"] == ("the RVQ input is not normalised: check model.pre_rvq_norm (utterance or causal) "
                                "[1k.pre_rvq_std, 2k.pre_rvq_std]; outputs are silent: listen to the samples "
                                "and check the decoder's loss terms [all.not_silent]")


def test_falling_usage_goes_to_the_ladder_at_any_checkpoint(healthy_run):
    cps = healthy_run()
    cps[1]["stages"][0]["usage"] = 0.05  # 2k: exactly 5 % fails (> 0.05 required), though 1k passed
    v = run(cps)
    assert crit(v, "2k.usage_q0")["passed"] is False and crit(v, "1k.usage_q0")["passed"] is True
    assert v["branch"] == "partial_stage0_decline" and LADDER_COMMAND_DEFAULT in v["next_action"]
    cps = healthy_run()
    cps[3]["stages"][0]["usage"] = 0.025  # the review's 10k usage of stage 0
    v = run(cps)
    c = crit(v, "10k.usage_active_stages")
    assert c["passed"] is False and "q0 (0.025)" in c["note"]
    assert LADDER_COMMAND_DEFAULT in v["codebook"]["next_action"]


def test_loss_not_falling_blocks_success(healthy_run, make_cp):
    cps = healthy_run()
    cps[0]["training_curve"]["tags"]["train/loss_stft"]["falling"] = False
    v = run(cps)
    assert v["branch"] == "partial_other" and "1k.loss_stft_falling" in v["next_action"]


def test_failure_row_precedes_success_and_partial(make_cp):
    """Flat < 2 perplexity wins over everything else even when other checks pass."""
    cps = [make_cp(s, [1.2] + [20.0] * (k), share=[0.3] + [0.05] * k) for k, s in enumerate(STEPS)]
    v = run(cps)
    assert v["branch"] == "failure_flat_low"


# ------------------------------------------------------------------ boundaries


@pytest.mark.parametrize("p1, passed", [(5.0, True), (4.999, False), (5.0001, True)])
def test_perplexity_1k_boundary(healthy_run, p1, passed):
    cps = healthy_run()
    cps[0]["stages"][0]["perplexity"] = p1
    cps[1]["stages"][0]["perplexity"] = 14.0
    v = run(cps)
    assert crit(v, "1k.perplexity_q0")["passed"] is passed
    assert v["branch"] == ("success" if passed else "partial_other")
    if not passed:
        assert v["next_action"] == (f"stage 0 is under-used at 1k: run the remedy ladder ({LADDER_COMMAND_DEFAULT}) "
                                    "[1k.perplexity_q0]")


@pytest.mark.parametrize("u, passed", [(0.05, False), (0.0501, True), (0.0499, False)])
def test_usage_1k_boundary(healthy_run, u, passed):
    cps = healthy_run()
    cps[0]["stages"][0]["usage"] = u
    assert crit(run(cps), "1k.usage_q0")["passed"] is passed


@pytest.mark.parametrize("std, passed", [(0.9, True), (1.1, True), (1.0, True), (0.8999, False), (1.1001, False)])
def test_pre_rvq_std_band(healthy_run, std, passed):
    cps = healthy_run()
    cps[0]["pre_rvq_std"] = std
    cps[1]["pre_rvq_std"] = std
    v = run(cps)
    assert crit(v, "1k.pre_rvq_std")["passed"] is passed
    assert crit(v, "2k.pre_rvq_std")["passed"] is passed
    assert (v["class"] == "success") is passed


@pytest.mark.parametrize("p2, passed", [(9.0, True), (8.999, False), (30.0, True)])
def test_stage0_stable_at_2k(healthy_run, p2, passed):
    cps = healthy_run()
    cps[0]["stages"][0]["perplexity"] = 10.0
    cps[1]["stages"][0]["perplexity"] = p2  # bar = 0.9 x 10 = 9
    assert crit(run(cps), "2k.perplexity_q0_stable")["passed"] is passed


@pytest.mark.parametrize("ratio, passed", [(1.1, True), (1.1001, False), (0.8, True)])
def test_loss_undisturbed_at_2k_is_read_from_the_curve_around_stage_1s_start(healthy_run, ratio, passed):
    cps = healthy_run()
    cps[1]["validation"]["loss_stft"] = 99.0  # the 2k checkpoint's own validation loss plays no part
    around = cps[2]["training_curve"]["stage1_start"]
    around.update(after_mean=3.0 * ratio, ratio=ratio)
    c = crit(run(cps), "2k.loss_stft_undisturbed")
    assert (c["passed"], c["step"]) == (passed, 2000) and "read from the 5k metrics" in c["note"]


def test_loss_undisturbed_without_a_later_curve_is_unevaluated(healthy_run):
    cps = healthy_run()
    for cp in cps:
        cp["training_curve"].pop("stage1_start", None)
    assert crit(run(cps), "2k.loss_stft_undisturbed")["passed"] is None


def test_healthy_means_strictly_above_five(healthy_run):
    cps = healthy_run()
    cps[2]["stages"][2]["perplexity"] = 5.0
    v = run(cps)
    assert crit(v, "5k.perplexity_active_stages")["passed"] is False
    assert v["branch"] == "partial_stage_collapse"
    cps[2]["stages"][2]["perplexity"] = 5.0001
    assert crit(run(cps), "5k.perplexity_active_stages")["passed"] is True


def test_losses_must_strictly_improve(healthy_run):
    cps = healthy_run()
    cps[2]["validation"]["loss_l1"] = cps[1]["validation"]["loss_l1"]  # equal is not improving
    v = run(cps)
    assert crit(v, "5k.loss_l1_improving")["passed"] is False
    assert crit(v, "5k.loss_stft_improving")["passed"] is True
    assert v["next_action"].startswith("the waveform L1 rose beyond its noise allowance") and v["next_action"].endswith(
        "[5k.loss_l1_improving]")


def test_only_active_stages_are_judged(healthy_run):
    cps = healthy_run()
    # an inactive stage listed in the metrics (index 3 at 5k with 3 active) is ignored
    cps[2]["stages"].append({"index": 3, "perplexity": 1.0, "usage": 0.001, "top_code_share": 1.0})
    cps[2]["num_active_quantizers"] = 3
    assert crit(run(cps), "5k.perplexity_active_stages")["measured"] == [20.0, 12.0, 8.0]


def test_silent_from_std_list_when_count_absent(healthy_run):
    cps = healthy_run()
    cps[0]["outputs"] = {"std": [0.1, 0.01, 0.2], "num_outputs": 3}  # 0.01 is silent (> 0.01 needed)
    v = run(cps)
    assert crit(v, "1k.not_silent")["measured"] == 1
    assert crit(v, "1k.not_silent")["passed"] is False
    assert crit(v, "all.not_silent")["passed"] is False


# ------------------------------------------------------------------ scaling and missing checkpoints


def test_scaled_steps(healthy_run):
    steps = [50, 100, 250, 500]
    v = run(healthy_run(steps), steps=steps, progressive=100)
    assert v["scaled"] is True and v["scale"] == pytest.approx(0.05)
    assert v["class"] == "success" and v["warnings"] == []
    by_id = {c["id"]: c for c in v["criteria"]}
    assert (by_id["1k.perplexity_q0"]["step"], by_id["1k.perplexity_q0"]["nominal_step"]) == (50, 1000)
    assert (by_id["2k.perplexity_q0_stable"]["step"], by_id["2k.perplexity_q0_stable"]["nominal_step"]) == (100, 2000)
    assert (by_id["5k.loss_l1_improving"]["step"], by_id["5k.loss_l1_improving"]["nominal_step"]) == (250, 5000)
    assert (by_id["10k.not_silent"]["step"], by_id["10k.not_silent"]["nominal_step"]) == (500, 10000)


def test_unscaled_default_and_baseline_scale(healthy_run):
    v = run(healthy_run())
    assert v["scaled"] is False and v["scale"] == 1.0
    steps = [50, 100, 250, 500]
    v0 = run(healthy_run(steps), steps=steps, progressive=0)  # baseline: no progressive schedule
    assert v0["scaled"] is True and v0["scale"] == pytest.approx(0.05)


def test_inconsistent_scaled_steps_warn(healthy_run):
    steps = [50, 120, 250, 500]
    v = run(healthy_run(steps), steps=steps, progressive=100)
    assert len(v["warnings"]) == 1 and "2k" in v["warnings"][0]


def test_missing_metrics_file(healthy_run):
    cps = healthy_run()
    del cps[2]  # step 5000 metrics absent
    v = run(cps)
    assert [m["role"] for m in v["missing"]] == ["5k"]
    assert v["missing"][0]["step"] == 5000
    for cid in ("5k.perplexity_active_stages", "5k.loss_stft_improving", "5k.loss_l1_improving"):
        assert crit(v, cid)["measured"] is None and crit(v, cid)["passed"] is None
    for cid in ("10k.loss_stft_improving", "10k.loss_l1_improving"):  # compared against the missing 5k
        assert crit(v, cid)["measured"] is not None and crit(v, cid)["passed"] is None
    assert crit(v, "10k.perplexity_active_stages")["passed"] is True
    assert v["class"] == "success" and v["complete"] is False
    assert "provisional" in v["next_action"] and "5k.perplexity_active_stages" in v["next_action"]


def test_fewer_than_four_steps_configured(healthy_run):
    cps = healthy_run()[:2]
    v = run(cps, steps=[1000, 2000])
    assert [(m["role"], m["step"]) for m in v["missing"]] == [("5k", None), ("10k", None)]
    assert "not configured" in v["missing"][0]["reason"]
    assert [c["id"] for c in v["criteria"]] == EXPECTED_IDS
    assert crit(v, "10k.not_silent")["passed"] is None and crit(v, "10k.not_silent")["step"] is None
    assert v["class"] == "success" and v["complete"] is False


def test_missing_does_not_hide_a_failure(healthy_run):
    cps = healthy_run()[:2]
    cps[1]["stages"][0]["perplexity"] = 3.0  # stage 0 dropped from 12 to 3
    v = run(cps, steps=[1000, 2000])
    assert v["branch"] == "partial_stage0_decline"
    assert v["next_action"].startswith("stage 0 declines (2k.perplexity_q0_stable 3 (>= 0.9 x perplexity_q0(1k) = 10.8))")
    assert v["next_action"].endswith(f"run the remedy ladder: {LADDER_COMMAND_DEFAULT}")


def test_missing_training_curve_is_unevaluated(healthy_run):
    cps = healthy_run()
    del cps[0]["training_curve"]
    c = crit(run(cps), "1k.loss_stft_falling")
    assert c["passed"] is None and "no training curve" in c["note"]


def test_extra_steps_are_ignored(healthy_run, make_cp, hist):
    cps = healthy_run() + [make_cp(20000, counts=[hist.collapsed()])]
    v = run(cps, steps=STEPS + [20000])
    assert v["ignored_steps"] == [20000] and v["class"] == "success"


def test_no_protocol_checkpoint_is_an_error():
    with pytest.raises(ValueError, match="no metrics"):
        decide([], steps=STEPS, progressive_steps=2000)


@pytest.mark.parametrize("scale, passed", [(0.5, True), (2.0, True), (1.0, True), (0.49, False), (0.11, False), (2.01, False)])
def test_frame_scale_band(healthy_run, scale, passed):
    cps = healthy_run()
    cps[0]["pre_rvq_frame"]["frame_scale"] = scale
    cps[1]["pre_rvq_frame"]["frame_scale"] = scale
    v = run(cps)
    assert crit(v, "1k.pre_rvq_frame_scale")["passed"] is passed
    assert crit(v, "2k.pre_rvq_frame_scale")["passed"] is passed
    assert (v["class"] == "success") is passed


def test_shrunk_frames_fail_the_verdict_while_pre_rvq_std_passes_and_the_warning_says_so(healthy_run):
    from streamvc_rvq.quantization.frame_stats import frame_scale_stats

    z = 0.11 * torch.randn(4, 32, 100)  # the reviewed artefact's scale; per-channel std of a
    measured = frame_scale_stats(z, torch.ones(4, 100, dtype=torch.bool))  # normalised input is 1
    cps = healthy_run()
    for cp in cps[:2]:
        cp["pre_rvq_frame"] = measured
    v = run(cps)
    assert crit(v, "1k.pre_rvq_std")["passed"] is True
    assert crit(v, "1k.pre_rvq_frame_scale")["passed"] is False
    assert v["class"] != "success"
    assert any("pre_rvq_std" in w and "frame scale" in w for w in v["warnings"])


def test_a_stage_with_no_trained_step_is_reported_but_not_judged(healthy_run):
    cps = healthy_run()
    last = cps[-1]
    last["stages"].append({"index": len(last["stages"]), "perplexity": 1.0, "usage": 0.001,
                           "top_code_share": 0.99, "dead_codes": 1000, "trained_steps": 0})
    last["num_active_quantizers"] = len(last["stages"])
    v = run(cps)
    c = crit(v, "10k.perplexity_active_stages")
    assert c["passed"] is True and 1.0 not in c["measured"]
    assert v["class"] == "success"


def test_preconditions_are_warnings_naming_every_checkpoint_where_they_fail(healthy_run):
    """The review's run: one label for every frame at 1k and 2k, learnt by 10k; the warning
    names 1k and 2k (it used to look only at the last checkpoint and said nothing)."""
    cps = healthy_run()
    assert not any("content encoder" in w for w in run(cps)["warnings"])  # no label metrics: nothing said
    for cp, accuracy in zip(cps, (0.063, 0.063, 0.2, 0.35)):
        cp["content_labels"] = {"valid": {"accuracy": accuracy, "chance": 0.113}}
    v = run(cps)
    content = [w for w in v["warnings"] if "content encoder" in w]
    assert [w.split(" ")[0] for w in content] == ["1k", "2k"] and "0.063" in content[0]
    assert v["class"] == "success"  # a warning, not a criterion
    for cp, auc in zip(cps, (0.52, 0.6, 0.8, 0.95)):
        cp["speaker_embedding"]["auc"] = auc
    speaker = [w for w in run(cps)["warnings"] if "speaker embedding" in w]
    assert [w.split(" ")[0] for w in speaker] == ["1k", "2k"] and "0.52" in speaker[0]


# ------------------------------------------------------------------ the two answers


def _with(cp, **convert):
    cp["outputs"]["quality"]["convert"].update(convert)
    return cp


def _controls(cp, **controls):
    cp["outputs"]["quality"]["convert"]["controls"].update(controls)
    return cp


def test_healthy_run_answers_both_questions(healthy_run):
    v = run(healthy_run())
    assert (v["codebook"]["class"], v["conversion"]["class"], v["class"]) == ("success", "success", "success")
    assert {c["question"] for c in v["criteria"]} == {"codebook", "conversion"}
    assert v["conversion"]["criteria"] == ["last.outputs_diverse", "last.towards_target", "last.target_identified",
                                            "last.beyond_pitch", "last.pitch_follows_target", "last.content_kept"]
    assert set(v["codebook"]["criteria"]) | set(v["conversion"]["criteria"]) == {c["id"] for c in v["criteria"]}
    assert [p["met"] for p in v["conversion"]["preconditions"]] == [True, True]


def test_a_constant_speaker_embedding_makes_conversion_not_evaluable_not_a_failed_codebook(healthy_run):
    """The review's quick phase1: speaker AUC 0.56 and conversions that follow no target."""
    cps = healthy_run()
    cps[3]["speaker_embedding"]["auc"] = 0.56
    _controls(cps[3], towards_target={"mean": -0.01, "low": -0.08, "high": 0.06, "num": 8})
    v = run(cps)
    assert v["conversion"]["class"] == "not_evaluable"
    assert "speaker_embedding_separates" in v["conversion"]["reason"]
    assert "fix the speaker path first" in v["conversion"]["next_action"] and "0.56" in v["conversion"]["next_action"]
    assert v["codebook"]["class"] == "success" and v["class"] == "success"  # the rule: not evaluable leaves it
    assert crit(v, "last.towards_target")["passed"] is False  # still stated
    assert "conversion (not_evaluable): fix the speaker path first" in v["next_action"]


def test_reconstructions_unlike_their_source_make_conversion_not_evaluable(healthy_run):
    cps = healthy_run()
    cps[3]["outputs"]["quality"]["reconstruct"]["speaker_similarity_source"] = 0.45  # below different-speaker 0.65
    v = run(cps)
    assert v["conversion"]["class"] == "not_evaluable" and "reconstructions_resemble_source" in v["conversion"]["reason"]
    cps[3]["outputs"]["quality"]["reconstruct"]["speaker_similarity_source"] = 0.65  # equal is not above
    assert run(cps)["conversion"]["class"] == "not_evaluable"


def test_old_metrics_without_the_model_speaker_measure_are_not_evaluable_and_say_why(healthy_run):
    cps = healthy_run()
    for cp in cps:
        del cp["speaker_embedding"]
    v = run(cps)
    assert v["conversion"]["class"] == "not_evaluable" and "not measured" in v["conversion"]["reason"]


def blind(cp):
    """A target-blind model that lost the content too: every conversion criterion's failing input."""
    _controls(cp, towards_target={"mean": 0.0, "low": -0.03, "high": 0.03, "num": 8},
              same_source_similarity={"mean": 0.98, "low": 0.97, "high": 0.99, "num": 8},
              identification={"rate": 1 / 3, "chance": 1 / 3, "num_outputs": 24})
    convert = cp["outputs"]["quality"]["convert"]
    convert["pitch_level"].update(correlation_with_target=None, correlation_with_source=None)
    convert["content_labels"]["output"]["accuracy"] = 0.1
    return cp


def test_top_class_is_the_worse_of_two_evaluated_answers(healthy_run):
    cps = healthy_run()
    blind(cps[3])
    v = run(cps)
    assert (v["codebook"]["class"], v["conversion"]["class"], v["class"]) == ("success", "failure", "failure")
    assert v["conversion"]["failed_checks"] == ["last.outputs_diverse", "last.towards_target", "last.target_identified",
                                                "last.pitch_follows_target", "last.content_kept"]
    _controls(cps[3], same_source_similarity={"mean": 0.6, "low": 0.55, "high": 0.65, "num": 8})
    assert (run(cps)["conversion"]["class"], run(cps)["class"]) == ("partial", "partial")
    from streamvc_rvq.verdict.decision import overall_class
    assert overall_class("failure", "success") == "failure"
    assert overall_class("partial", "not_evaluable") == "partial"


def test_towards_target_needs_the_intervals_lower_end_above_zero(healthy_run):
    cps = healthy_run()
    _controls(cps[3], towards_target={"mean": 0.0012, "low": -0.07, "high": 0.072, "num": 8})  # the step-50 "pass"
    c = crit(run(cps), "last.towards_target")
    assert (c["measured"], c["passed"], c["step"]) == (0.0012, False, 10000)
    _controls(cps[3], towards_target={"mean": 0.03, "low": 0.0001, "high": 0.06, "num": 8})
    assert crit(run(cps), "last.towards_target")["passed"] is True


def test_diversity_compares_the_intervals_upper_end_with_the_same_speaker_level(healthy_run):
    cps = healthy_run()
    _controls(cps[3], same_source_similarity={"mean": 0.85, "low": 0.8, "high": 0.9, "num": 8})  # upper end = 0.9
    c = crit(run(cps), "last.outputs_diverse")
    assert (c["measured"], c["passed"]) == (0.85, False)
    _controls(cps[3], same_source_similarity={"mean": 0.85, "low": 0.8, "high": 0.8999, "num": 8})
    assert crit(run(cps), "last.outputs_diverse")["passed"] is True


def test_conversion_criteria_unevaluated_without_measures_or_reference(healthy_run, make_cp):
    v = run(healthy_run(), reference=None)
    assert crit(v, "last.outputs_diverse")["passed"] is None
    assert crit(v, "last.towards_target")["passed"] is True  # needs no reference
    assert v["conversion"]["class"] == "not_evaluable"  # the reconstruction precondition needs the reference
    cps = healthy_run()
    for cp in cps:
        del cp["outputs"]["quality"]
    v = run(cps)
    for cid in ("10k.audio_quality_improving", "last.outputs_diverse", "last.towards_target"):
        assert crit(v, cid)["passed"] is None, cid
    assert v["codebook"]["complete"] is False and "provisional" in v["codebook"]["next_action"]


def test_audio_quality_must_improve_from_5k_to_10k(healthy_run):
    cps = healthy_run()
    cps[3]["outputs"]["quality"]["convert"]["dnsmos"]["ovrl"] = 2.4  # equal to 5k: not improving
    v = run(cps)
    c = crit(v, "10k.audio_quality_improving")
    assert (c["measured"], c["passed"]) == (2.4, False)
    assert v["codebook"]["class"] == "partial" and "10k.audio_quality_improving" in v["failed_checks"]
    assert crit(run(healthy_run()), "10k.audio_quality_improving")["passed"] is True


@pytest.mark.parametrize("model_rate, low, pitch_rate, passed", [
    (0.9, 0.73, 0.5, True),     # 40 points over the pitch shift, the interval clear of it
    (0.8, 0.60, 0.61, False),   # the quick preset's figures: 80 % against a pitch shift's 61 %: inside
    (0.9, 0.55, 0.6, False),    # margin enough but the interval reaches the control (few trials)
])
def test_conversions_must_beat_a_pitch_only_shift_of_their_sources(healthy_run, model_rate, low, pitch_rate, passed):
    cps = healthy_run()
    convert = cps[-1]["outputs"]["quality"]["convert"]
    convert["controls"]["identification"].update(rate=model_rate, low=low)
    convert["reference_controls"]["pitch_only"]["identification"]["rate"] = pitch_rate
    v = run(cps)
    c = crit(v, "last.beyond_pitch")
    assert c["passed"] is passed and c["measured"] == pytest.approx(model_rate - pitch_rate)
    assert ("last.beyond_pitch" in v["conversion"]["failed_checks"]) is (not passed)


def test_beyond_pitch_reads_the_model_on_the_controls_own_trials_when_evaluated(healthy_run):
    """With every held-out source run (reference_controls.model), the criterion compares it, not the
    24 sample conversions, with the pitch-only floor: here the samples pass and the wide trials fail."""
    cps = healthy_run()
    convert = cps[-1]["outputs"]["quality"]["convert"]
    assert crit(run(cps), "last.beyond_pitch")["passed"] is True  # the 24 samples: 90 % vs 50 %
    convert["reference_controls"]["model"] = {"identification": {
        "rate": 0.6, "chance": 1 / 3, "num_outputs": 84, "hits": 50, "low": 0.49, "high": 0.69}}
    c = crit(run(cps), "last.beyond_pitch")
    assert c["passed"] is False and c["measured"] == pytest.approx(0.1) and "of 84 conversions" in c["note"]


def test_a_frame_rate_tone_is_reported_and_warned_of_without_changing_the_class(healthy_run):
    """The failing input: conversions whose frame-rate lines stand 12 dB over their sources'."""
    clean = run(healthy_run())
    cps = healthy_run()
    cps[-1]["outputs"]["quality"]["convert"]["frame_tone"] = {"output_db": 9.0, "source_db": -3.0, "excess_db": 12.0,
                                                               "num_outputs": 8}
    toned = run(cps)
    c = crit(toned, "last.frame_rate_tone")
    assert (c["measured"], c["passed"], c["informational"]) == (12.0, False, True)
    assert any("frame rate" in w for w in toned["warnings"])
    assert (toned["class"], toned["branch"]) == (clean["class"], clean["branch"])
    assert crit(clean, "last.frame_rate_tone")["passed"] is True
    assert not any("frame rate" in w for w in clean["warnings"])


def test_low_perplexity_defers_to_the_ab_it_names(make_cp):
    cps = [make_cp(s, [p], share=[0.2]) for s, p in zip(STEPS, (3.0, 3.5, 4.0, 4.5))]
    v = decide(cps, steps=STEPS, progressive_steps=2000, reference=REFERENCE, ab_command="snakemake X.json")
    assert v["codebook"]["branch"] == "partial_low_perplexity"
    assert v["codebook"]["next_action"].startswith("build the commitment-cost A/B (snakemake X.json)")
    assert "only if its advice says the A/B supports it" in v["codebook"]["next_action"]


def test_loss_trend_noise_allowance_from_paired_utterances(healthy_run):
    """A rise within the paired per-utterance noise is kept; a consistent rise beyond it fails."""
    import random
    rng = random.Random(0)
    cps = healthy_run()
    before = [0.05 * (1 + 0.2 * rng.random()) for _ in range(40)]
    noisy = [b * (1 + rng.gauss(0.01, 0.05)) for b in before]  # +1 % on average, 5 % spread per utterance
    cps[1]["validation"]["per_utterance"] = {"loss_l1": before, "loss_stft": before}
    cps[2]["validation"]["per_utterance"] = {"loss_l1": noisy, "loss_stft": noisy}
    cps[1]["validation"]["loss_l1"], cps[2]["validation"]["loss_l1"] = sum(before) / 40, sum(noisy) / 40
    c = crit(run(cps), "5k.loss_l1_improving")
    assert c["passed"] is True and "noise allowance" in c["note"]
    consistent = [b * 1.01 for b in before]  # +1 % on every utterance: beyond its (zero) noise
    cps[2]["validation"]["per_utterance"]["loss_l1"] = consistent
    cps[2]["validation"]["loss_l1"] = sum(consistent) / 40
    assert crit(run(cps), "5k.loss_l1_improving")["passed"] is False


def test_model_speaker_threshold_is_the_lever_of_the_precondition(healthy_run):
    cps = healthy_run()
    assert run(cps)["conversion"]["class"] == "success"
    assert run(cps, thresholds=replace(PROTOCOL, model_speaker_min_auc=0.96))["conversion"]["class"] == "not_evaluable"


def test_poor_speaker_separation_warns(healthy_run):
    weak = {"speaker": {"same_mean": 0.7, "different_mean": 0.68, "auc": 0.6, "eer": 0.4}}
    assert any("separates this corpus's speakers poorly" in w for w in run(healthy_run(), reference=weak)["warnings"])
    assert not any("poorly" in w for w in run(healthy_run())["warnings"])


def test_speaker_criteria_judge_the_last_checkpoint_not_an_earlier_one(healthy_run):
    cps = healthy_run()
    _controls(cps[3], towards_target=None, same_source_similarity=None)  # 10k: no conversion carries a voice
    v = run(cps)
    for cid in ("last.outputs_diverse", "last.towards_target"):
        c = crit(v, cid)
        assert (c["step"], c["passed"]) == (10000, False), c


def test_reference_without_same_speaker_pairs_is_named(healthy_run):
    one_each = {"speaker": {"same_mean": None, "different_mean": 0.6, "auc": None, "eer": None}}
    c = crit(run(healthy_run(), reference=one_each), "last.outputs_diverse")
    assert c["passed"] is None and "no same-speaker pair" in c["note"]
    assert "no reference levels given" in crit(run(healthy_run(), reference=None), "last.outputs_diverse")["note"]


def test_configured_scale_is_the_verdicts_and_hand_cut_steps_are_flagged(healthy_run):
    steps = [50, 100, 250, 500]
    scaled = decide(healthy_run(steps), steps=steps, progressive_steps=100, reference=REFERENCE, scale=0.05)
    assert scaled["scale"] == 0.05 and scaled["scaled"] and scaled["warnings"] == []
    by_hand = decide(healthy_run(steps), steps=steps, progressive_steps=100, reference=REFERENCE, scale=1.0)
    assert by_hand["scale"] == 0.05  # inferred, as before train.scale existed
    assert any("cut by hand" in w for w in by_hand["warnings"])
    assert by_hand["steps_cut_by_hand"] and not scaled["steps_cut_by_hand"]
    paper = decide(healthy_run(STEPS), steps=STEPS, progressive_steps=2000, reference=REFERENCE, scale=1.0)
    assert not paper["scaled"] and not any("cut by hand" in w for w in paper["warnings"])
    assert not paper["steps_cut_by_hand"]


def test_the_report_says_cut_by_hand_not_scaled_for_hand_cut_steps(tmp_path, healthy_run):
    from streamvc_rvq.reporting.report import write_verdict_report

    steps = [50, 100, 250, 500]
    for scale, says, never in ((1.0, "Steps are **cut by hand**", "Steps are **scaled**"),
                               (0.05, "Steps are **scaled**", "cut by hand")):
        verdict = decide(healthy_run(steps), steps=steps, progressive_steps=100, reference=REFERENCE, scale=scale)
        md = write_verdict_report(verdict, healthy_run(steps), None, None, tmp_path / "v.md").read_text()
        assert says in md and never not in md


# ------------------------------------------------------------------ the tables themselves

import dataclasses  # noqa: E402

from streamvc_rvq.verdict import decision as verdict_module  # noqa: E402

ROLE_NAMES = {role for role, _ in verdict_module.ROLES} | {"all", "last"}


def test_criteria_table_is_the_verdicts_order_and_names_real_thresholds():
    table = verdict_module.CRITERIA
    assert [c.id for c in table] == EXPECTED_IDS  # ids unique, in the verdict's order
    for c in table:
        assert c.role in ROLE_NAMES, c.id
        assert c.op in (">=", ">", "<=", "<", "==", "in", None), c.id
        if c.op is None:  # a measurement that judges itself (a trend) has no threshold constant
            assert c.bound is None and c.words, c.id
        elif not c.against:  # an absolute threshold needs its constant
            assert c.bound is not None, c.id
        if c.bound is not None:
            assert hasattr(PROTOCOL, c.bound), c.id


def test_every_threshold_text_is_generated_from_its_threshold(healthy_run):
    stated = {c["id"]: c["threshold"] for c in run(healthy_run())["criteria"]}
    for c in verdict_module.CRITERIA:
        value = getattr(PROTOCOL, c.bound) if c.bound else None
        text = stated[c.id]
        if c.op == "in":
            assert text == f"in [{value[0]:g}, {value[1]:g}]", c.id
        elif c.against:
            factor = "" if value is None else f"{value:g} x "
            assert text.startswith(f"{c.op} {factor}{c.against}") and " = " in text, c.id  # "= <the bar>" when measured
        elif c.op is not None:
            assert text.startswith(f"{c.op} {value:g}"), c.id


def test_threshold_texts_read_as_before_the_tables_were_data(healthy_run):
    """The generated texts are the ones the verdict files have always carried."""
    stated = {c["id"]: c["threshold"] for c in run(healthy_run())["criteria"]}
    assert stated == {
        "1k.perplexity_q0": ">= 5",
        "1k.perplexity_q0_ideal": "> 10 (ideal)",
        "1k.usage_q0": "> 0.05",
        "1k.pre_rvq_std": "in [0.9, 1.1]",
        "1k.pre_rvq_frame_scale": "in [0.5, 2]",
        "1k.loss_stft_falling": "falling: last-window mean < first-window mean and last-window slope <= 0",
        "1k.not_silent": "== 0 (every output std > 0.01)",
        "2k.perplexity_q0_stable": ">= 0.9 x perplexity_q0(1k) = 10.8",
        "2k.loss_stft_undisturbed": "<= 1.1 (window means around the step stage 1 starts)",
        "2k.usage_q0": "> 0.05 (the note's 5 % rule, still)",
        "2k.pre_rvq_std": "in [0.9, 1.1]",
        "2k.pre_rvq_frame_scale": "in [0.5, 2]",
        "5k.perplexity_active_stages": "> 5 each",
        "5k.usage_active_stages": "> 0.05 each (the note's 5 % rule at every checkpoint)",
        "5k.loss_stft_improving": "< loss_stft(2k) = 2.9",
        "5k.loss_l1_improving": "< loss_l1(2k) = 0.055",
        "10k.perplexity_active_stages": "> 5 each",
        "10k.usage_active_stages": "> 0.05 each (the note's 5 % rule at every checkpoint)",
        "10k.loss_stft_improving": "< loss_stft(5k) = 2.5",
        "10k.loss_l1_improving": "< loss_l1(5k) = 0.05",
        "10k.audio_quality_improving": "> ovrl(5k) = 2.4",
        "last.frame_rate_tone": "<= 3 dB (conversions' frame-rate lines over their sources'; reported, not yet part "
                                "of the class)",
        "10k.not_silent": "== 0 (every output std > 0.01)",
        "all.not_silent": "== 0 at every available checkpoint",
        "last.top_code_share_q0": "< 0.5 (diverse; >= 0.5 is a monopoly)",
        "last.outputs_diverse": "< corpus same-speaker similarity (one source to different targets; upper end of the "
                                "95 % interval) = 0.9",
        "last.towards_target": "> 0 (intended target minus the source's other targets; lower end of the 95 % interval)",
        "last.target_identified": ">= 0.75 (Resemblyzer picks the intended target among the source's targets)",
        "last.beyond_pitch": ">= 0.15 (and the lower end of the rate's 95 % interval above the control's rate)",
        "last.pitch_follows_target": ">= 0.8 (median log-F0 over conversions, and above the correlation with the "
                                     "source's)",
        "last.content_kept": ">= 0.5 (content-head accuracy on the conversions above chance, as a share of that on "
                             "the sources)",
    }


def test_decision_table_rows_read_existing_criteria_in_the_documented_order(healthy_run):
    table = verdict_module.DECISION_TABLE
    ids = {c.id for c in verdict_module.CRITERIA}
    for row in table:
        assert set(row.uses) <= ids, row.branch
        assert row.verdict_class in ("success", "partial", "failure"), row.branch
        assert row.branch.split("_")[0] in (row.verdict_class, "success"), row.branch
    assert [row.branch for row in table] == ["failure_flat_low", "failure_monopoly", "success",
                                             "partial_low_perplexity", "partial_stage0_decline", "partial_stage_collapse",
                                             "partial_other"]
    assert [row.otherwise for row in table] == [False] * (len(table) - 1) + [True]  # the catch-all is last
    assert verdict_module.CLASS_OF_BRANCH == {row.branch: row.verdict_class for row in table}
    assert [b["id"] for b in run(healthy_run())["branches"]] == [row.branch for row in table]


def _set(path, value):
    def mutate(cps):
        cp_index, *keys = path
        d = cps[cp_index]
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return mutate


# (Thresholds field, new value, input change or None, criterion id that flips or None, branch before, branch after)
LEVERS = [
    ("perplexity_min_1k", 12.0001, None, "1k.perplexity_q0", "success", "partial_other"),
    ("usage_min_1k", 0.2, None, "1k.usage_q0", "success", "partial_stage0_decline"),
    ("pre_rvq_std_band", (0.9, 0.9999), None, "1k.pre_rvq_std", "success", "partial_other"),
    ("frame_scale_band", (1.0001, 2.0), None, "1k.pre_rvq_frame_scale", "success", "partial_other"),
    ("stable_fraction", 14.0001 / 12.0, None, "2k.perplexity_q0_stable", "success", "partial_stage0_decline"),
    ("disturb_factor", 0.9999, None, "2k.loss_stft_undisturbed", "success", "partial_other"),
    ("healthy_perplexity", 6.0, None, "10k.perplexity_active_stages", "success", "partial_stage_collapse"),
    ("silent_outputs_max", 1, None, "all.not_silent", "success", "partial_other"),
    ("silence_std", 0.1, _set((0, "outputs", "num_silent"), None), "1k.not_silent", "success", "partial_other"),
    ("monopoly_share", 0.05, None, "last.top_code_share_q0", "success", "failure_monopoly"),
]


@pytest.mark.parametrize("name, value, change, cid, before, after", LEVERS, ids=[lever[0] for lever in LEVERS])
def test_a_threshold_is_the_lever_that_reaches_the_decision(healthy_run, name, value, change, cid, before, after):
    """An input just inside the threshold passes; thresholds moved just past it flip the
    criterion, its stated threshold and the decision."""
    cps = healthy_run()
    if change:
        change(cps)
    v = run(cps)
    assert (crit(v, cid)["passed"], v["branch"]) == (True, before)
    moved = run(cps, thresholds=replace(PROTOCOL, **{name: value}))
    assert (crit(moved, cid)["passed"], moved["branch"]) == (False, after)
    stated = value if isinstance(value, tuple) else (value,)
    assert all(f"{x:g}" in crit(moved, cid)["threshold"] for x in stated)  # the text follows the constant


@pytest.mark.parametrize("name, value, series, before, after", [
    ("flat_factor", 1.0999, [1.0, 0.95, 1.05, 1.1], "failure_flat_low", "partial_low_perplexity"),
    ("collapsed_perplexity", 1.1, [1.0, 0.95, 1.05, 1.1], "failure_flat_low", "partial_low_perplexity"),
    ("perplexity_min_1k", 4.5, [3.0, 3.5, 4.0, 4.5], "partial_low_perplexity", "partial_other"),
])
def test_decision_row_thresholds_reach_the_decision(make_cp, name, value, series, before, after):
    cps = [make_cp(s, [p], share=[0.3]) for s, p in zip(STEPS, series)]
    assert run(cps)["branch"] == before
    v = run(cps, thresholds=replace(PROTOCOL, **{name: value}))
    assert v["branch"] == after
    assert any(f"{value:g}" in b["reason"] for b in v["branches"])


def test_a_corpus_with_two_held_out_speakers_leaves_the_controls_unevaluated_not_failed(healthy_run):
    cps = healthy_run()
    _controls(cps[3], towards_target=None, same_source_similarity=None, identification=None, targets_per_source=1)
    v = run(cps)
    for cid in ("last.outputs_diverse", "last.towards_target", "last.target_identified"):
        assert crit(v, cid)["passed"] is None and "holds out 2 speakers" in crit(v, cid)["note"]
    assert v["conversion"]["class"] == "success" and not v["conversion"]["failed_checks"]  # pitch and content judged
    for convert in (cp["outputs"]["quality"]["convert"] for cp in cps):
        convert.pop("pitch_level"), convert.pop("content_labels")
    assert run(cps)["conversion"]["class"] == "not_evaluable"


@pytest.mark.parametrize("rate,passed", [(0.75, True), (0.70, False), (1 / 3, False)])
def test_target_identification_bound(healthy_run, rate, passed):
    cps = healthy_run()
    _controls(cps[3], identification={"rate": rate, "chance": 1 / 3, "num_outputs": 24})
    c = crit(run(cps), "last.target_identified")
    assert (c["measured"], c["passed"]) == (rate, passed) and "chance 33%" in c["note"]


@pytest.mark.parametrize("target,source,passed", [
    (0.9, 0.1, True),
    (0.79, 0.1, False),   # below the bound
    (0.85, 0.95, False),  # follows the source's level more than the target's: a source copy
    (None, None, False),  # one pitch level for every target: a pitch-flat model
])
def test_pitch_follows_target_fails_a_flat_or_source_copying_model(healthy_run, target, source, passed):
    cps = healthy_run()
    cps[3]["outputs"]["quality"]["convert"]["pitch_level"].update(correlation_with_target=target,
                                                                  correlation_with_source=source)
    assert crit(run(cps), "last.pitch_follows_target")["passed"] is passed


@pytest.mark.parametrize("output,source,kept,passed", [
    (0.5, 0.6, 0.8, True),
    (0.3, 0.6, 0.4, False),  # lost more than half of what the head reads above chance
    (0.1, 0.6, 0.0, False),  # at chance: the words are gone
    (0.1, 0.1, None, None),  # the head is at chance on the sources too: not judged
])
def test_content_kept_against_the_sources_and_chance(healthy_run, output, source, kept, passed):
    cps = healthy_run()
    labels = cps[3]["outputs"]["quality"]["convert"]["content_labels"]
    labels["output"]["accuracy"], labels["source"]["accuracy"] = output, source
    c = crit(run(cps), "last.content_kept")
    assert c["passed"] is passed
    assert (c["measured"] is None) if kept is None else c["measured"] == pytest.approx(kept)


def test_the_written_protocol_is_generated_from_the_tables_and_follows_the_thresholds():
    """docs/criteria.md is criteria_doc's output (regenerate it when a table changes); other
    thresholds give another document, so it cannot keep stale numbers."""
    from pathlib import Path

    from streamvc_rvq.verdict.criteria_doc import criteria_markdown

    committed = (Path(__file__).resolve().parents[2] / "docs" / "criteria.md").read_text()
    assert committed == criteria_markdown(), "regenerate: python -m streamvc_rvq.verdict.criteria_doc > docs/criteria.md"
    moved = criteria_markdown(replace(PROTOCOL, perplexity_min_1k=7.0))
    assert "| `1k.perplexity_q0` | codebook | perplexity_q0 | >= 7 |" in moved and moved != committed
