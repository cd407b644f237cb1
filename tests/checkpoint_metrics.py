"""Hand-made checkpoint metrics for the evaluation, verdict and reporting tests.

``make_cp`` builds a metrics dict in the shape of results/{experiment}/metrics/step_{N}.json.
Stages are given either as explicit numbers or as code histograms, whose statistics are
computed with the project's own stats.py (so the tests also exercise it).
"""

from __future__ import annotations

import pytest
import torch

from streamvc_rvq.quantization import stats

CODEBOOK = 1024


def stage_from_counts(index: int, counts) -> dict:
    c = torch.as_tensor(counts, dtype=torch.float32)
    return {
        "index": index,
        "perplexity": stats.perplexity(c),
        "usage": stats.usage(c),
        "top_code_share": stats.top_code_share(c),
        "dead_codes": stats.dead_codes(c),
        "codes_used": stats.codes_used(c),
    }


def healthy_counts(n_codes: int = 200) -> list[float]:
    """``n_codes`` codes used equally out of 1024: perplexity n_codes, usage n_codes/1024."""
    return [10.0] * n_codes + [0.0] * (CODEBOOK - n_codes)


def collapsed_counts() -> list[float]:
    """Code 808 wins nearly every search (the note's collapse)."""
    c = [0.0] * CODEBOOK
    c[808] = 5000.0
    c[3] = 2.0
    return c


def _make_cp(step, ppl=(20.0,), usage=None, share=None, *, counts=None, std=1.0, stft=3.0, l1=0.05,
             silent=0, falling=True, active=None, experiment="phase1", curve=True, frame_scale=1.0,
             ovrl=None, alike=0.6, margin=0.2, quality=True, speaker_auc=0.95):
    if counts is not None:
        stages = [stage_from_counts(i, c) for i, c in enumerate(counts)]
    else:
        ppl = list(ppl)
        usage = list(usage) if usage is not None else [0.2] * len(ppl)
        share = list(share) if share is not None else [0.05] * len(ppl)
        stages = [{"index": i, "perplexity": p, "usage": u, "top_code_share": s, "dead_codes": 0}
                  for i, (p, u, s) in enumerate(zip(ppl, usage, share))]
    cp = {
        "experiment": experiment,
        "step": step,
        "num_active_quantizers": len(stages) if active is None else active,
        "stages": stages,
        "pre_rvq_std": std,
        "pre_rvq_frame": {"frame_scale": frame_scale, "effective_rank": 12.0, "first_frames_energy_share": 0.13,
                          "first_frames_share": 0.125},
        "validation": {"loss_stft": stft, "loss_l1": l1, "num_utterances": 60},
        "outputs": {"std": [0.0] * silent + [0.1] * (4 - silent), "num_outputs": 4, "num_silent": silent,
                    "rms_ratio": 0.8},
    }
    if quality:
        ovrl = 2.0 + step / 20000 if ovrl is None else ovrl  # by default DNSMOS rises with training
        cp["outputs"]["quality"] = {"measures": ["speaker", "dnsmos", "recognition"], "convert": {
            "dnsmos": {"sig": ovrl + 0.5, "bak": ovrl + 1.0, "ovrl": ovrl, "num_segments": 2},
            "output_similarity": alike, "speaker_similarity_target": 0.5 + margin, "speaker_similarity_source": 0.5,
            "towards_target_margin": margin, "towards_target_share": 1.0 if margin > 0 else 0.0,
            # the target-blind controls (conversion_controls.target_controls): intervals over 8 sources
            "controls": {"towards_target": {"mean": margin, "low": margin - 0.05, "high": margin + 0.05, "num": 8},
                         "same_source_similarity": {"mean": alike, "low": alike - 0.05, "high": alike + 0.05, "num": 8},
                         "identification": {"rate": 0.9, "chance": 1 / 3, "num_outputs": 24, "hits": 22,
                                            "low": 0.73, "high": 0.98}, "num_sources": 8},
            "reference_controls": {
                "pitch_only": {"identification": {"rate": 0.5, "chance": 1 / 3, "num_outputs": 24, "hits": 12,
                                                  "low": 0.31, "high": 0.69}},
                "oracle": {"identification": {"rate": 1.0, "chance": 1 / 3, "num_outputs": 24, "hits": 24,
                                              "low": 0.86, "high": 1.0}}},
            "identified_by_model": {"rate": 1.0, "chance": 1 / 3, "num_outputs": 24},
            "pitch_level": {"correlation_with_target": 0.9, "correlation_with_source": 0.1,
                            "median_error_semitones": 1.0, "num_conversions": 24},
            "content_labels": {"output": {"accuracy": 0.5, "chance": 0.1, "num_frames": 2000},
                               "source": {"accuracy": 0.6, "chance": 0.1, "num_frames": 800}},
            "frame_tone": {"output_db": -2.0, "source_db": -3.0, "excess_db": 1.0, "num_outputs": 24}},
            "reconstruct": {"speaker_similarity_source": 0.85}}
        cp["speaker_embedding"] = {"auc": speaker_auc, "eer": 0.1, "num_utterances": 32, "num_speakers": 4}
    if curve:
        cp["training_curve"] = {
            "up_to_step": step,
            "window": 10,
            "tags": {"train/loss_stft": {"first": 4.0, "last": 3.0 if falling else 4.2,
                                         "slope": -1e-3 if falling else 1e-3, "num_points": 100,
                                         "falling": falling}},
        }
        if step > 2000:  # the curve around stage 1's start (progressive_steps 2000), as evaluate records it
            cp["training_curve"]["stage1_start"] = {"step": 2000, "width": 500, "before_mean": 3.0, "after_mean": 3.0,
                                                    "num_before": 50, "num_after": 50, "ratio": 1.0}
    return cp


# Reference levels of a corpus whose speakers the speaker measure separates well.
REFERENCE = {"speaker": {"same_mean": 0.9, "different_mean": 0.65, "auc": 0.99, "eer": 0.05},
             "dnsmos": {"sig": 3.0, "bak": 3.6, "ovrl": 2.6}, "recognition": {"wer": 0.7, "cer": 0.5}}


@pytest.fixture
def reference():
    return REFERENCE


@pytest.fixture
def make_cp():
    return _make_cp


@pytest.fixture
def hist():
    """Histogram helpers: ``hist.stage(index, counts)``, ``hist.healthy(n)``, ``hist.collapsed()``."""

    class _Hist:
        stage = staticmethod(stage_from_counts)
        healthy = staticmethod(healthy_counts)
        collapsed = staticmethod(collapsed_counts)

    return _Hist


@pytest.fixture
def healthy_run():
    """A run that passes every criterion at steps 1000, 2000, 5000, 10000."""

    def build(steps=(1000, 2000, 5000, 10000), experiment="phase1"):
        s1, s2, s5, s10 = steps
        return [
            _make_cp(s1, [12.0], [0.2], [0.05], stft=3.0, l1=0.06, experiment=experiment, ovrl=2.0),
            _make_cp(s2, [14.0, 6.0], stft=2.9, l1=0.055, experiment=experiment, ovrl=2.2),
            _make_cp(s5, [20.0, 12.0, 8.0], stft=2.5, l1=0.05, experiment=experiment, ovrl=2.4),
            _make_cp(s10, [25.0, 18.0, 12.0, 9.0, 7.0, 6.0], stft=2.2, l1=0.045, experiment=experiment, ovrl=2.6),
        ]

    return build
