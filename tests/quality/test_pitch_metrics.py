"""Pitch preservation measures: each can fail, on a contour it should not accept."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from streamvc_rvq.quality.pitch_metrics import median_f0, pitch_level_following, pitch_preservation
from streamvc_rvq.verdict.thresholds import PROTOCOL

SR = 16000


def glide(direction: float = 1.0, base: float = 150.0, seconds: float = 2.0) -> torch.Tensor:
    """A harmonic tone whose F0 moves 0.4 octave up and down twice a second (or mirrored)."""
    t = torch.arange(int(seconds * SR)) / SR
    f0 = base * 2 ** (direction * 0.4 * torch.sin(2 * math.pi * 1.0 * t))
    phase = 2 * math.pi * torch.cumsum(f0, 0) / SR
    return 0.3 * sum(torch.sin(k * phase) / k for k in (1, 2, 3))


def test_f0_correlation_is_one_on_itself_high_an_octave_up_and_low_for_a_mirrored_contour():
    source = glide()
    same = pitch_preservation(source, source)
    assert same["log_f0_correlation"] > 0.99 and same["voicing_agreement"] == 1.0
    octave = pitch_preservation(source, glide(base=300.0))
    assert octave["log_f0_correlation"] > 0.9
    mirrored = pitch_preservation(source, glide(direction=-1.0))
    assert mirrored["log_f0_correlation"] < -0.5
    assert same["voiced_frames"] > 80


def test_silence_has_no_correlation_and_disagrees_on_voicing():
    source = glide()
    silent = pitch_preservation(source, torch.zeros_like(source))
    assert silent["log_f0_correlation"] is None and silent["voiced_frames"] == 0
    assert silent["voicing_agreement"] < 0.2


def test_median_f0_reads_the_level_and_none_without_voice():
    assert median_f0(glide(base=200.0)) == pytest.approx(200.0, rel=0.05)
    assert median_f0(torch.zeros(SR)) is None


SPEAKERS = ["s0", "s1", "s2", "s3"]  # the built-in corpus's 4 held-out speakers


def _levels(rng, mode: str, follows: float = 1.0) -> list[dict]:
    """Median F0 of a model's conversions with evaluate's pair structure (8 sources round-robin
    over 4 speakers, each to the 3 others). ``mode``: ``one_voice`` (every output at one level,
    the measured failure), ``source`` (the source's level kept), ``follow`` (``follows`` of the
    way from the source's level to the target's), each with output noise of its own."""
    level = {s: math.exp(rng.uniform(math.log(80), math.log(300))) for s in SPEAKERS}
    reference = {s: level[s] * 2 ** rng.normal(0, 0.05) for s in SPEAKERS}
    rows = []
    for k in range(8):
        source = level[SPEAKERS[k % 4]] * 2 ** rng.normal(0, 0.1)
        for j in (1, 2, 3):
            target = reference[SPEAKERS[(k + j) % 4]]
            centre = {"one_voice": 75.0, "source": source,
                      "follow": math.exp((1 - follows) * math.log(source) + follows * math.log(target))}[mode]
            rows.append({"output": centre * 2 ** rng.normal(0, 0.1), "target": target, "source": source})
    return rows


def _passes(level: dict) -> bool:  # the verdict's rule (last.pitch_follows_target)
    target, source = level["correlation_with_target"], level["correlation_with_source"]
    return target is not None and target >= PROTOCOL.pitch_level_min_correlation and (source is None or target > source)


@pytest.mark.parametrize("mode", ["one_voice", "source"])
def test_a_target_blind_pitch_level_never_passes_over_200_seeds(mode):
    """False-pass rate of a blind stand-in (one voice for every target, or the source's level
    kept): measured 0 of 500 seeds each; the bound is 5 %."""
    rate = np.mean([_passes(pitch_level_following(_levels(np.random.default_rng(seed), mode))) for seed in range(200)])
    assert rate <= 0.05, rate


def test_a_model_at_the_targets_level_passes_and_halfway_does_not():
    follow = np.mean([_passes(pitch_level_following(_levels(np.random.default_rng(s), "follow"))) for s in range(200)])
    halfway = np.mean([_passes(pitch_level_following(_levels(np.random.default_rng(s), "follow", 0.5)))
                       for s in range(200)])
    assert follow >= 0.95 and halfway <= 0.05, (follow, halfway)


def test_a_flat_output_level_has_no_correlation():
    rows = [{"output": 75.0, "target": t, "source": 150.0} for t in (80.0, 120.0, 200.0, 300.0)]
    level = pitch_level_following(rows)
    assert level["correlation_with_target"] is None and level["num_conversions"] == 4
    assert level["median_error_semitones"] > 0
    assert pitch_level_following(rows[:2])["correlation_with_target"] is None  # too few conversions
    assert pitch_level_following([{"output": None, "target": 100.0, "source": 100.0}] * 5)["num_conversions"] == 0


def test_a_periodicity_above_fmax_is_not_read_as_a_500_hz_voice():
    """Yin's first dip for a 1 kHz tone is at 32 samples (two periods): 500 Hz, the top of the
    range. The tracker calls such frames unvoiced; a 450 Hz voice stays voiced."""
    t = torch.arange(SR) / SR
    assert median_f0(0.3 * torch.sin(2 * math.pi * 1000.0 * t)) is None
    assert median_f0(0.3 * torch.sin(2 * math.pi * 450.0 * t)) == pytest.approx(450.0, rel=0.01)


def test_more_conversions_without_pitch_than_with_gives_no_correlation():
    following = [{"output": t * 1.01, "target": t, "source": 150.0} for t in (90.0, 130.0, 200.0, 300.0)]
    assert pitch_level_following(following)["correlation_with_target"] > 0.99
    lost = following + [{"output": None, "target": 120.0, "source": 150.0}] * 5
    level = pitch_level_following(lost)
    assert level["correlation_with_target"] is None and level["num_without_pitch"] == 5
    assert pitch_level_following(following + lost[4:8])["correlation_with_target"] > 0.99  # 4 of 8: still judged
