"""The content path's speaker probe: it finds a speaker where one is, and not where none is."""

import torch

from micro import micro_config
from streamvc_rvq.data.dataset import load_utterances
from streamvc_rvq.evaluation.speaker_probe import content_speaker_probe, frame_log_mel, linear_probe_accuracy
from streamvc_rvq.model.streamvc import StreamVC


def _frames(speakers: int, per_speaker: int, dim: int, carry: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(speakers).repeat_interleave(per_speaker)
    directions = torch.randn(speakers, dim, generator=torch.Generator().manual_seed(99))
    return torch.randn(len(y), dim, generator=g) + carry * directions[y], y


def test_features_that_carry_the_speaker_are_read():
    train_x, train_y = _frames(6, 200, 16, carry=2.0, seed=1)
    test_x, test_y = _frames(6, 100, 16, carry=2.0, seed=2)
    assert linear_probe_accuracy(train_x, train_y, test_x, test_y, 6) > 0.9


def test_features_without_the_speaker_score_chance():
    train_x, train_y = _frames(6, 200, 16, carry=0.0, seed=1)
    test_x, test_y = _frames(6, 100, 16, carry=0.0, seed=2)
    assert linear_probe_accuracy(train_x, train_y, test_x, test_y, 6) < 1 / 6 + 0.08


def test_frame_log_mel_is_causal_per_frame():
    audio = torch.randn(16 * 320)
    later = audio.clone()
    later[10 * 320:] = torch.randn(6 * 320)  # frames 10.. change
    a, b = frame_log_mel(audio, 16000, 320, 16), frame_log_mel(later, 16000, 320, 16)
    assert a.shape == (16, 40)
    assert torch.equal(a[:10], b[:10]) and not torch.equal(a[10:], b[10:])


def test_on_the_micro_corpus_the_signal_names_its_speaker(micro_manifest):
    cfg = micro_config()
    model = StreamVC(cfg["model"]).eval()
    train = load_utterances(micro_manifest, "train", labels=None)
    valid = load_utterances(micro_manifest, "valid", labels=None)
    probe = content_speaker_probe(model, train, valid, 1, "cpu")
    assert probe is not None and probe["num_speakers"] >= 2
    # the ceiling control reads the voice from the same frames; the model's number is a share
    assert probe["log_mel"] > probe["chance"] + 0.2
    assert 0.0 <= probe["decoder_input"] <= 1.0


def test_no_shared_speaker_gives_no_probe(micro_manifest):
    model = StreamVC(micro_config()["model"]).eval()
    train = load_utterances(micro_manifest, "train", labels=None)
    heldout = load_utterances(micro_manifest, "heldout", labels=None)  # other speakers
    assert content_speaker_probe(model, train, heldout, 1, "cpu") is None
