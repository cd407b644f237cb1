"""Each evaluation runs the quality measures the verdict reads at its checkpoint's role, and
the verdict is the same as with every measure at every checkpoint."""

import copy

import pytest

from streamvc_rvq.verdict.decision import decide
from streamvc_rvq.verdict.roles import quality_measures_at

ALL = ["speaker", "dnsmos", "recognition"]
QUICK = [50, 100, 250, 500]

# What each measure writes into a kind's quality summary (quality.scorer.QualityScorer.summarise)
SPEAKER_KEYS = ("speaker_similarity_source", "speaker_similarity_target", "towards_target_margin",
                "towards_target_share", "output_similarity", "controls")


@pytest.mark.parametrize("step, expected", [(50, []), (100, []), (250, ["dnsmos"]), (500, ALL)])
def test_quick_steps_run_what_their_role_reads(step, expected):
    assert quality_measures_at(step, QUICK, ALL) == expected


def test_every_runs_all_measures_everywhere():
    assert all(quality_measures_at(s, QUICK, ALL, every=True) == ALL for s in QUICK)


def test_the_configured_measures_bound_the_choice():
    assert quality_measures_at(250, QUICK, ["speaker"]) == []
    assert quality_measures_at(500, QUICK, ["dnsmos", "speaker"]) == ["dnsmos", "speaker"]
    assert quality_measures_at(500, QUICK, []) == []


def test_a_longer_run_measures_its_10k_role_and_its_last_step():
    steps = [50, 100, 250, 500, 750, 1000]
    assert quality_measures_at(500, steps, ALL) == ALL  # plays 10k
    assert quality_measures_at(750, steps, ALL) == []
    assert quality_measures_at(1000, steps, ALL) == ALL  # the last checkpoint: the report's and the ladder's


def test_a_short_run_measures_everything_at_its_last_step():
    assert quality_measures_at(2, [2, 4], ALL) == []
    assert quality_measures_at(4, [2, 4], ALL) == ALL


def _strip(cp: dict, kept: list[str]) -> dict:
    """The checkpoint's metrics as an evaluation that ran only ``kept`` writes them."""
    cp = copy.deepcopy(cp)
    quality = cp["outputs"]["quality"]
    quality["measures"] = [m for m in quality["measures"] if m in kept]
    for kind in ("convert", "reconstruct"):
        summary = quality[kind]
        if "speaker" not in kept:
            for key in SPEAKER_KEYS:
                summary.pop(key, None)
        for measure in ("dnsmos", "recognition"):
            if measure not in kept:
                summary.pop(measure, None)
    return cp


def _verdict_rows(v: dict) -> tuple:
    return (v["class"], v["branch"], v["conversion"]["class"],
            [(c["id"], c["passed"], c["measured"]) for c in v["criteria"]])


def _judged(cps, steps, reference):
    return decide(cps, steps=steps, progressive_steps=2000 * steps[0] // 1000, reference=reference,
                  scale=steps[0] / 1000)


@pytest.mark.parametrize("falling_dnsmos", [False, True])
@pytest.mark.parametrize("margin", [0.2, -0.1])
def test_the_verdict_is_the_same_with_measures_only_where_read(healthy_run, reference, falling_dnsmos, margin):
    steps = [1000, 2000, 5000, 10000]
    full = healthy_run(steps)
    if falling_dnsmos:  # a run that fails audio_quality_improving: the 5k point decides it
        full[2]["outputs"]["quality"]["convert"]["dnsmos"]["ovrl"] = 3.0
    for cp in full:
        cp["outputs"]["quality"]["convert"]["controls"]["towards_target"]["mean"] = margin
    sparse = [_strip(cp, quality_measures_at(cp["step"], steps, ALL)) for cp in full]
    assert sparse[0]["outputs"]["quality"]["measures"] == []  # the stripping took effect
    assert _verdict_rows(_judged(sparse, steps, reference)) == _verdict_rows(_judged(full, steps, reference))


def test_dropping_a_measure_the_verdict_reads_changes_it(healthy_run, reference):
    """The control: DNSMOS dropped at the 5k checkpoint too, and the verdict loses a criterion."""
    steps = [1000, 2000, 5000, 10000]
    full = healthy_run(steps)
    wrong = [_strip(cp, ALL if cp["step"] == 10000 else []) for cp in full]
    assert _verdict_rows(_judged(wrong, steps, reference)) != _verdict_rows(_judged(full, steps, reference))
