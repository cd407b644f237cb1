"""How sure a verdict is: seeds that disagree must be called unstable, and two protocol
scales that disagree must be stated as such, with the factors measured."""

import pytest

from streamvc_rvq.verdict.confidence import scale_fidelity, scale_label, seed_agreement
from streamvc_rvq.verdict.decision import decide

from checkpoint_metrics import REFERENCE, _make_cp

SMALL, LARGE = [50, 100, 250, 500], [100, 200, 500, 1000]


def _healthy(steps, ppl_scale=1.0, frame_scale=1.0):
    s1, s2, s5, s10 = steps
    return [
        _make_cp(s1, [12.0 * ppl_scale], [0.2], [0.05], stft=3.0, l1=0.06, ovrl=2.0, frame_scale=frame_scale),
        _make_cp(s2, [14.0 * ppl_scale, 6.0], stft=2.9, l1=0.055, ovrl=2.2, frame_scale=frame_scale),
        _make_cp(s5, [20.0 * ppl_scale, 12.0, 8.0], stft=2.5, l1=0.05, ovrl=2.4, frame_scale=frame_scale),
        _make_cp(s10, [25.0 * ppl_scale, 18.0, 12.0, 9.0, 7.0, 6.0], stft=2.2, l1=0.045, ovrl=2.6, frame_scale=frame_scale),
    ]


def _collapsed(steps):
    return [_make_cp(s, [1.05] * (i + 1), [0.001] * (i + 1), [0.97] * (i + 1)) for i, s in enumerate(steps)]


def _verdict(cps, steps, scale, seed=0):
    v = decide(cps, steps=steps, progressive_steps=steps[1], reference=REFERENCE, scale=scale)
    v["seed"] = seed
    return v


def test_seeds_that_agree_are_stable_with_their_spread():
    verdicts = [_verdict(_healthy(SMALL, ppl_scale=f), SMALL, 0.05, seed=s) for s, f in ((0, 1.0), (1, 1.5), (2, 2.0))]
    agreement = seed_agreement(verdicts)
    assert agreement["stable"] and agreement["class_by_seed"] == {"0": "success", "1": "success", "2": "success"}
    q0 = next(c for c in agreement["criteria"] if c["id"] == "1k.perplexity_q0")
    assert q0["spread"]["min"] == pytest.approx(12.0) and q0["spread"]["max"] == pytest.approx(24.0)
    assert q0["spread"]["mean"] == pytest.approx(18.0) and q0["spread"]["std"] == pytest.approx(6.0)
    assert agreement["statement"].startswith("stable over 3 seeds")


def test_seeds_that_disagree_are_unstable_and_name_the_criteria():
    verdicts = [_verdict(_healthy(SMALL), SMALL, 0.05, seed=0), _verdict(_collapsed(SMALL), SMALL, 0.05, seed=1)]
    agreement = seed_agreement(verdicts)
    assert not agreement["stable"]
    assert agreement["class_by_seed"] == {"0": "success", "1": "failure"}
    assert "1k.perplexity_q0" in agreement["disagreeing_criteria"]
    assert agreement["statement"].startswith("UNSTABLE over seeds: seed 0 success, seed 1 failure")


def test_a_seed_given_twice_is_refused():
    v = _verdict(_healthy(SMALL), SMALL, 0.05)
    with pytest.raises(ValueError, match="two verdicts for one seed"):
        seed_agreement([v, v])


def test_two_scales_that_agree():
    small, large = _healthy(SMALL), _healthy(LARGE, ppl_scale=1.25, frame_scale=0.8)
    fidelity = scale_fidelity(_verdict(small, SMALL, 0.05), small, _verdict(large, LARGE, 0.1), large)
    summary = fidelity["summary"]
    assert summary["same_class"] and summary["perplexity_q0_factor"] == pytest.approx(1.25)
    assert summary["frame_scale_factor"] == pytest.approx(1.25)
    assert summary["criteria_differing"] == [] and summary["criteria_compared"] >= 20
    assert fidelity["statement"].startswith("scaled 1/20; at 1/10 the same class (success), perplexity_q0 within x1.25")
    assert [r["steps"] for r in fidelity["roles"]] == [[50, 100], [100, 200], [250, 500], [500, 1000]]


def test_two_scales_that_disagree_are_stated_as_such():
    small, large = _collapsed(SMALL), _healthy(LARGE)
    fidelity = scale_fidelity(_verdict(small, SMALL, 0.05), small, _verdict(large, LARGE, 0.1), large)
    assert not fidelity["summary"]["same_class"]
    assert "a DIFFERENT class (success, here failure)" in fidelity["statement"]
    assert fidelity["summary"]["perplexity_q0_factor"] == pytest.approx(25.0 / 1.05)
    assert "1k.perplexity_q0" in fidelity["summary"]["criteria_differing"]


@pytest.mark.parametrize("scale,label", [(0.05, "1/20"), (0.2, "1/5"), (1.0, "paper size"), (0.03, "0.03")])
def test_scale_label(scale, label):
    assert scale_label(scale) == label
