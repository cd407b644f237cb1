"""The speaker encoder: level invariance, speaker separation, its options and the speaker loss."""

from __future__ import annotations

import pytest
import torch

from streamvc_rvq.model.speaker_encoder import SpeakerEncoder
from streamvc_rvq.training.losses import speaker_contrastive

from .conftest import voiced


def test_log_mel_front_end_is_level_invariant():
    torch.manual_seed(0)
    x = voiced(1.0, 150.0)
    encoder = SpeakerEncoder(4, 8).eval()
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), encoder(10.0 * x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_untrained_log_mel_embedding_tells_voices_apart_and_the_waveform_one_does_not(seed):
    """The failure the log-mel front end fixes: at initialisation the waveform encoder gives two
    voices (120 and 260 Hz) embeddings with cosine > 0.9999 (a constant, whatever the pooling);
    the log-mel one puts them further apart than two utterances of one voice."""
    cos = torch.nn.functional.cosine_similarity
    a1, a2, b = voiced(1.0, 120.0, seed=1), voiced(1.0, 120.0, seed=2), voiced(1.0, 260.0, seed=3)
    torch.manual_seed(seed)
    with torch.no_grad():
        for pooling in ("attentive_stats", "attention"):
            log_mel = SpeakerEncoder(4, 8, pooling=pooling).eval()
            assert float(cos(log_mel(a1), log_mel(a2))) > float(cos(log_mel(a1), log_mel(b))) + 0.01
            waveform = SpeakerEncoder(4, 8, front_end="waveform", pooling=pooling).eval()
            assert float(cos(waveform(a1), waveform(b))) > 0.9999


@pytest.mark.parametrize("front_end,pooling", [("log_mel", "attentive_stats"), ("log_mel", "attention"),
                                               ("waveform", "attentive_stats"), ("waveform", "attention")])
def test_every_option_gives_one_vector_per_reference(front_end, pooling):
    encoder = SpeakerEncoder(4, 8, front_end=front_end, pooling=pooling)
    assert encoder(torch.randn(3, 8000) * 0.1).shape == (3, 8)


def test_bad_options_and_short_references_are_refused():
    with pytest.raises(ValueError, match="front_end"):
        SpeakerEncoder(4, 8, front_end="mfcc")
    with pytest.raises(ValueError, match="pooling"):
        SpeakerEncoder(4, 8, pooling="max")
    with pytest.raises(ValueError, match="at least 320 samples"):
        SpeakerEncoder(4, 8)(torch.zeros(1, 100))


def test_speaker_contrastive_rewards_separation_and_fails_a_constant_embedding():
    speakers = ["a", "a", "b", "c"]
    separated = torch.eye(4)[[0, 0, 1, 2]]
    constant = torch.ones(4, 4)
    good = speaker_contrastive(separated, separated, speakers)
    bad = speaker_contrastive(constant, constant, speakers)
    assert float(good) < 0.01 and float(bad) > 1.0  # a constant: log(4 / 2 ... 4 / 1) per row
    assert float(bad) == pytest.approx(float(torch.log(torch.tensor([2.0, 2.0, 4.0, 4.0])).mean()), rel=1e-5)
    one_speaker = speaker_contrastive(torch.randn(3, 4, requires_grad=True), torch.randn(3, 4), ["a"] * 3)
    assert float(one_speaker) == 0.0
    with pytest.raises(ValueError, match="B speakers"):
        speaker_contrastive(separated, separated, speakers[:3])


def test_speaker_contrastive_gradient_pulls_same_speaker_together():
    anchors = torch.randn(4, 8, requires_grad=True)
    references = torch.randn(4, 8)
    speakers = ["a", "b", "c", "d"]
    before = torch.nn.functional.cosine_similarity(anchors, references).mean()
    optimiser = torch.optim.SGD([anchors], lr=0.5)
    for _ in range(50):
        optimiser.zero_grad()
        speaker_contrastive(anchors, references, speakers).backward()
        optimiser.step()
    after = torch.nn.functional.cosine_similarity(anchors, references).mean()
    assert float(after) > float(before) + 0.3


def test_speaker_contrastive_with_asked_speakers_fails_a_conversion_that_keeps_the_source_voice():
    """The consistency form: anchors labelled with the voice asked for. A conversion that
    sounds like its target scores ~0; one that keeps its source's voice (target-blind) scores high."""
    references = torch.eye(4)  # rows a, b, c, d
    speakers = ["a", "b", "c", "d"]
    asked = ["d", "a", "b", "c"]  # row i converted to row i-1's voice
    converted = references[[3, 0, 1, 2]]
    kept_source = references.clone()
    good = speaker_contrastive(converted, references, asked, reference_speakers=speakers)
    blind = speaker_contrastive(kept_source, references, asked, reference_speakers=speakers)
    assert float(good) < 0.01 and float(blind) > 5.0
    with pytest.raises(ValueError, match="B speakers"):
        speaker_contrastive(converted, references, asked, reference_speakers=speakers[:3])


def test_speaker_contrastive_of_a_sub_batch_scores_its_rows_as_the_whole_batch_does():
    """K anchors against all B references: each row's term is the full batch's term for that row,
    so two halves average to the whole (a sub-batch scored against only its own references would not)."""
    torch.manual_seed(0)
    speakers = ["a", "b", "c", "d", "a", "b", "c", "d"]
    anchors, references = torch.randn(8, 6), torch.randn(8, 6)
    whole = speaker_contrastive(anchors, references, speakers)
    halves = [speaker_contrastive(anchors[rows], references, speakers[rows], reference_speakers=speakers) for rows in (slice(0, 4), slice(4, 8))]
    assert torch.allclose(whole, sum(halves) / 2, atol=1e-6)
    own_references_only = speaker_contrastive(anchors[:4], references[:4], speakers[:4])
    assert not torch.allclose(own_references_only, halves[0], atol=1e-3)
    with pytest.raises(ValueError, match="K x D anchors"):
        speaker_contrastive(anchors[:4], references, speakers)  # 4 anchors, 8 names
