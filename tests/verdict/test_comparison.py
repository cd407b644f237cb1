"""A/B comparison over seeds and the control (pre-fix baseline) comparison."""

import json
import statistics

import pytest

from streamvc_rvq.verdict.comparison import candidate_decision, compare_arms, control_comparison, decision_advice
from streamvc_rvq.verdict.decision import decide

STEPS = [1000, 2000]


def arm_runs(make_cp, experiment, ppl_by_seed, stft_by_seed):
    """{seed: [cp@1000, cp@2000]} with stage-0 perplexities ppl_by_seed[seed] = (p1k, p2k)."""
    runs = {}
    for seed, (p1, p2) in ppl_by_seed.items():
        s1, s2 = stft_by_seed[seed]
        runs[seed] = [make_cp(1000, [p1], usage=[0.1 + seed / 100], stft=s1, experiment=experiment),
                      make_cp(2000, [p2, 6.0 + seed], stft=s2, experiment=experiment)]
    return runs


@pytest.fixture
def ab(make_cp):
    arms = {
        "phase1": arm_runs(make_cp, "phase1", {0: (6.0, 8.0), 1: (8.0, 10.0)}, {0: (3.0, 2.9), 1: (3.2, 3.0)}),
        "phase1_beta1": arm_runs(make_cp, "phase1_beta1", {0: (9.0, 9.5), 1: (11.0, 12.5)},
                                 {0: (3.1, 2.8), 1: (3.3, 3.1)}),
    }
    verdicts = {arm: {seed: decide(cps, steps=STEPS, progressive_steps=2000) for seed, cps in runs.items()}
                for arm, runs in arms.items()}
    return arms, verdicts


def test_means_stds_and_better_arm(ab):
    arms, verdicts = ab
    cmp = compare_arms(arms, verdicts)
    assert cmp["arms"] == ["phase1", "phase1_beta1"]
    assert [r["step"] for r in cmp["steps"]] == [1000, 2000]
    r1k = cmp["steps"][0]
    a = r1k["arms"]["phase1"]
    q0 = a["perplexity"][0]
    assert q0["stage"] == 0 and q0["mean"] == pytest.approx(7.0) and q0["n"] == 2
    assert q0["std"] == pytest.approx(statistics.stdev([6.0, 8.0]))
    assert a["usage"][0]["mean"] == pytest.approx(0.105)
    assert a["loss_stft"]["mean"] == pytest.approx(3.1)
    assert a["loss_stft"]["std"] == pytest.approx(statistics.stdev([3.0, 3.2]))
    assert r1k["better_arm"] == "phase1_beta1" and r1k["difference"] == pytest.approx(10.0 - 7.0)
    r2k = cmp["steps"][1]
    assert r2k["better_arm"] == "phase1_beta1" and r2k["difference"] == pytest.approx(11.0 - 9.0)
    assert [p["stage"] for p in r2k["arms"]["phase1"]["perplexity"]] == [0, 1]
    assert r2k["arms"]["phase1"]["perplexity"][1]["mean"] == pytest.approx(6.5)
    # nominal steps come from the verdicts; the note compares the arms at 1k and 2k
    assert [(r["nominal_step"], r["focus"]) for r in cmp["steps"]] == [(1000, True), (2000, True)]
    json.dumps(cmp, allow_nan=False)


def test_verdict_classes_per_seed(ab):
    arms, verdicts = ab
    verdicts["phase1"][1] = dict(verdicts["phase1"][1], **{"class": "partial", "branch": "partial_other"})
    cmp = compare_arms(arms, verdicts)
    assert [(v["seed"], v["class"]) for v in cmp["per_arm"]["phase1"]["verdicts"]] == [(0, "success"), (1, "partial")]
    assert cmp["steps"][0]["arms"]["phase1"]["verdicts"] == [{"seed": 0, "class": "success"},
                                                             {"seed": 1, "class": "partial"}]


def test_single_seed_has_no_std_and_tie(make_cp):
    arms = {"a": {0: [make_cp(1000, [7.0])]}, "b": {0: [make_cp(1000, [7.0])]}}
    cmp = compare_arms(arms, {})
    row = cmp["steps"][0]
    assert row["arms"]["a"]["perplexity"][0]["std"] is None
    assert row["better_arm"] is None and row["difference"] == 0.0
    assert row["nominal_step"] is None and row["focus"] is False
    assert cmp["per_arm"]["a"]["verdicts"] == [{"seed": 0, "class": None, "branch": None, "next_action": None}]


def test_step_only_one_arm_has(make_cp):
    arms = {"a": {0: [make_cp(1000, [7.0]), make_cp(2000, [8.0])]}, "b": {0: [make_cp(1000, [5.0])]}}
    rows = compare_arms(arms, {})["steps"]
    assert rows[0]["better_arm"] == "a" and rows[0]["difference"] == pytest.approx(2.0)
    assert set(rows[1]["arms"]) == {"a"} and rows[1]["better_arm"] is None and rows[1]["difference"] is None


def one_seed_ab(make_cp, control_ppl, candidate_ppl):
    arms = {"phase1": {0: [make_cp(s, [p], experiment="phase1") for s, p in zip(STEPS, control_ppl)]},
            "phase1_beta1": {0: [make_cp(s, [p], experiment="phase1_beta1") for s, p in zip(STEPS, candidate_ppl)]}}
    verdicts = {arm: {0: decide(runs[0], steps=STEPS, progressive_steps=2000)} for arm, runs in arms.items()}
    return compare_arms(arms, verdicts)


def test_candidate_supported_when_higher_at_1k_and_2k(make_cp):
    d = candidate_decision(one_seed_ab(make_cp, (76.0, 70.0), (80.0, 75.0)))
    assert (d["control"], d["candidate"], d["supports"]) == ("phase1", "phase1_beta1", True)
    assert "perplexity_q0 at 1k: phase1 76.0, phase1_beta1 80.0" in d["evidence"] and "one seed" in d["evidence"]
    assert decision_advice(d).startswith("the A/B supports phase1_beta1 over phase1: adopt it")


def test_candidate_contradicted_when_lower_at_one_focus_step(make_cp):
    """The project's measured case: β = 1.0 lower at 2k (56.7 against 76.0)."""
    d = candidate_decision(one_seed_ab(make_cp, (86.0, 76.0), (90.0, 56.7)))
    assert d["supports"] is False and "phase1_beta1 higher at 1 of 2 checkpoints" in d["evidence"]
    advice = decision_advice(d)
    assert advice.startswith("the A/B contradicts phase1_beta1: keep phase1") and "remedy ladder" in advice


def test_candidate_within_seed_noise_is_not_supported(ab):
    """Higher means at 1k and 2k, but at 2k by less than the seeds' spread (2.0 < sd 1.4 + 2.1)."""
    arms, verdicts = ab
    d = candidate_decision(compare_arms(arms, verdicts))
    assert d["supports"] is False and "seed sd allowance 3.5" in d["evidence"] and "one seed" not in d["evidence"]


def test_no_shared_focus_step_decides_nothing(make_cp):
    cmp = compare_arms({"a": {0: [make_cp(1000, [7.0])]}, "b": {0: [make_cp(1000, [9.0])]}}, {})
    assert candidate_decision(cmp) is None and "nothing to decide" in decision_advice(None)


def test_control_reproduced_collapse(make_cp, hist):
    fixed = [make_cp(1000, [7.4], share=[0.1], stft=3.0), make_cp(2000, [9.0, 6.0], share=[0.08, 0.1], stft=2.8)]
    control = [make_cp(s, counts=[hist.collapsed()] * 8, stft=4.0, experiment="baseline") for s in (1000, 2000)]
    out = control_comparison(fixed, control)
    assert out["collapse_reproduced"] is True
    assert out["control_experiment"] == "baseline" and out["fixed_experiment"] == "phase1"
    assert out["control_perplexity_q0"] < 1.01 and out["control_top_code_share_q0"] > 0.99
    assert out["common_steps"] == [1000, 2000]
    d1k = out["steps"][0]["deltas"]
    assert d1k["perplexity_q0"] == pytest.approx(7.4 - out["steps"][0]["control"]["perplexity_q0"])
    assert d1k["loss_stft"] == pytest.approx(-1.0)
    assert "perplexity_q1" not in d1k  # the fixed run has one stage at 1k: only common stages
    assert "perplexity_q1" in out["steps"][1]["deltas"]
    json.dumps(out, allow_nan=False)


@pytest.mark.parametrize("ppl, share, reproduced", [
    (1.99, 0.1, True),     # perplexity < 2
    (2.0, 0.1, False),     # 2 is not < 2
    (30.0, 0.5, True),     # share exactly 0.5 is a monopoly
    (30.0, 0.4999, False),
])
def test_control_collapse_boundaries(make_cp, ppl, share, reproduced):
    fixed = [make_cp(1000, [7.0])]
    control = [make_cp(500, [1.0], share=[0.9]), make_cp(1000, [ppl], share=[share])]  # the LAST one decides
    out = control_comparison(fixed, control)
    assert out["collapse_reproduced"] is reproduced
    assert out["control_last_step"] == 1000 and out["common_steps"] == [1000]


def test_control_needs_both_runs(make_cp):
    with pytest.raises(ValueError):
        control_comparison([make_cp(1000)], [])
