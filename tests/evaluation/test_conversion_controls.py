"""The target-blind controls: a blind model must fail them, a converting model must pass."""

import numpy as np
import pytest

from streamvc_rvq.evaluation.conversion_controls import mean_interval, target_controls
from streamvc_rvq.verdict.thresholds import PROTOCOL

SPEAKERS = ["s0", "s1", "s2", "s3"]  # the built-in corpus holds out 4 speakers
DIM = 256  # Resemblyzer's embedding size


def _unit(x):
    return x / np.linalg.norm(x)


def _simulate(rng, *, follows: float, sources: int = 8, noise: float = 0.6, copy_source: bool = False):
    """Embeddings of a corpus and of a model's conversions: each source (round-robin over
    the speakers) to the three other speakers. ``follows``: how far an output moves from the
    source voice to the target's (0: target-blind, plus output noise independent of the target)."""
    voice = {s: _unit(rng.normal(size=DIM)) for s in SPEAKERS}
    reference = {s: _unit(voice[s] + noise * _unit(rng.normal(size=DIM))) for s in SPEAKERS}
    second = {s: _unit(voice[s] + noise * _unit(rng.normal(size=DIM))) for s in SPEAKERS}  # another utterance each
    outputs = []
    for k in range(sources):
        speaker = SPEAKERS[k % len(SPEAKERS)]
        source_voice = _unit(voice[speaker] + noise * _unit(rng.normal(size=DIM)))
        targets = [SPEAKERS[(k + j) % len(SPEAKERS)] for j in (1, 2, 3)]
        for target in targets:
            if copy_source:
                out = source_voice
            else:
                out = _unit((1 - follows) * source_voice + follows * voice[target]
                            + 0.3 * noise * _unit(rng.normal(size=DIM)))
            to_targets = {t: float(out @ reference[t]) for t in targets}
            outputs.append({"source": f"utt{k}", "target": target, "embedding": out, "to_targets": to_targets,
                            "to_source": float(out @ second[speaker])})
    return outputs


def _passes_towards_target(controls) -> bool:
    return controls["towards_target"]["low"] > PROTOCOL.towards_target_margin


def test_a_target_blind_model_never_passes_towards_target_over_200_seeds():
    """Outputs that ignore the target (with output noise of their own): false-pass rate <= 5 %
    (the two-sided 95 % interval's lower end puts it near 2.5 %)."""
    passes = [_passes_towards_target(target_controls(_simulate(np.random.default_rng(seed), follows=0.0)))
              for seed in range(200)]
    rate = sum(passes) / len(passes)
    assert rate <= 0.05, rate


def test_an_exactly_blind_model_has_a_zero_control_and_fails():
    """Every target of a source gets the same output: the shuffled-target difference is 0 per source."""
    outputs = _simulate(np.random.default_rng(0), follows=0.0, noise=0.0)
    for o in outputs:  # the same output for every target of a source
        first = next(x for x in outputs if x["source"] == o["source"])
        o["embedding"] = first["embedding"]
        o["to_targets"] = first["to_targets"]
    controls = target_controls(outputs)
    assert controls["towards_target"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert not _passes_towards_target(controls)
    assert controls["same_source_similarity"]["mean"] == pytest.approx(1.0)


def test_a_model_that_copies_its_source_fails_towards_target_and_diversity():
    outputs = _simulate(np.random.default_rng(1), follows=0.0, copy_source=True)
    controls = target_controls(outputs)
    assert not _passes_towards_target(controls)
    assert controls["same_source_similarity"]["high"] >= 0.999  # above any corpus's same-speaker level


def test_a_converting_model_passes_and_identifies_its_targets():
    passes, rates = [], []
    for seed in range(50):
        controls = target_controls(_simulate(np.random.default_rng(seed), follows=0.7))
        passes.append(_passes_towards_target(controls))
        rates.append(controls["identification"]["rate"])
    assert sum(passes) >= 48
    assert np.mean(rates) > 0.9 and controls["identification"]["chance"] == pytest.approx(1 / 3)
    assert controls["same_source_similarity"]["mean"] < 0.9


def test_source_kept_reads_a_copy_of_the_source_and_not_a_conversion():
    """The failing input: outputs that copy their source are nearer their own speaker than their
    target nearly always; outputs that follow their target almost never."""
    copy = target_controls(_simulate(np.random.default_rng(2), follows=0.0, copy_source=True, sources=28))
    converted = target_controls(_simulate(np.random.default_rng(2), follows=0.7, sources=28))
    assert copy["source_kept"]["num_outputs"] == 84 and copy["source_kept"]["rate"] >= 0.9, copy["source_kept"]
    assert converted["source_kept"]["rate"] <= 0.1, converted["source_kept"]
    assert converted["source_kept"]["high"] < copy["source_kept"]["low"]


def test_identification_per_target_adds_up_and_finds_the_one_voice_a_model_misses():
    """A model that converts to every target but one (its outputs for that target stay the source's):
    the per-target counts sum to the whole, and that target alone reads 0."""
    outputs = _simulate(np.random.default_rng(3), follows=0.9, sources=28)
    missed = "s2"
    for o in outputs:
        if o["target"] == missed:  # the voice it cannot render: its output is nearer every other target
            o["to_targets"][missed] = min(o["to_targets"].values()) - 0.1
    ident = target_controls(outputs)["identification"]
    per = ident["by_target"]
    assert sum(c["hits"] for c in per.values()) == ident["hits"] and sum(c["num_outputs"] for c in per.values()) == 84
    assert per[missed]["hits"] == 0 and all(c["hits"] >= 0.8 * c["num_outputs"] for t, c in per.items() if t != missed)


def test_outputs_without_a_voice_or_a_second_target_give_no_control():
    assert target_controls([])["towards_target"] is None
    one = [{"source": "u", "target": "s1", "embedding": np.ones(3), "to_targets": {"s1": 0.5}}]
    assert target_controls(one)["towards_target"] is None
    assert target_controls(one)["source_kept"] is None  # no similarity to the source's speaker given
    silent = [{"source": "u", "target": "s1", "embedding": None, "to_targets": None}]
    assert target_controls(silent)["num_sources"] == 0


def test_mean_interval_is_students_t():
    iv = mean_interval([1.0, 2.0, 3.0])
    assert iv["mean"] == 2.0 and iv["num"] == 3
    assert iv["high"] - iv["mean"] == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)  # t(0.975, 2 df)
    one = mean_interval([0.3])
    assert one["low"] == -np.inf and one["high"] == np.inf  # one source proves nothing
    assert mean_interval([]) is None
