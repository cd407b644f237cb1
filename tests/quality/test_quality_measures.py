"""The conversion-quality measures, each fed the input on which it must fail."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from streamvc_rvq.data.dataset import load_utterances
from streamvc_rvq.quality import dnsmos, recognition, signal_metrics
from streamvc_rvq.quality import scorer as quality
from streamvc_rvq.quality.scorer import output_similarity
from streamvc_rvq.quality.reference_levels import reference_levels, speaker_levels, spread_over_speakers
from streamvc_rvq.quality.speaker_similarity import cosine, speaker_embedding, verification

RATE = 16000


@pytest.fixture(scope="module")
def corpus(micro_manifest):
    return load_utterances(micro_manifest, None, labels=None)


# ------------------------------------------------------------------ speaker similarity


def test_speaker_measure_separates_two_builtin_speakers(corpus):
    speakers = sorted({u.speaker for u in corpus})[:2]
    picked = [u for s in speakers for u in [v for v in corpus if v.speaker == s][:3]]
    levels = speaker_levels(picked, RATE)
    assert levels["num_same"] == 6 and levels["num_different"] == 9
    assert levels["same_mean"] > levels["different_mean"] + 0.1, levels
    assert levels["auc"] > 0.9, levels


def test_no_embedding_for_silence_and_cosine_needs_both():
    assert speaker_embedding(torch.zeros(RATE), RATE) is None
    assert speaker_embedding(torch.full((RATE,), float("nan")), RATE) is None
    assert cosine(None, np.ones(3)) is None
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == 0.0


def test_verification_auc_and_eer():
    perfect = verification([0.9, 0.8, 0.85], [0.3, 0.5, 0.4])
    assert (perfect["auc"], perfect["eer"]) == (1.0, 0.0)
    chance = verification([0.5, 0.6], [0.5, 0.6])
    assert chance["auc"] == 0.5 and chance["eer"] == 0.5
    inverted = verification([0.1, 0.2], [0.8, 0.9])
    assert inverted["auc"] == 0.0 and inverted["eer"] == 1.0
    assert verification([], [0.3])["auc"] is None


def test_outputs_alike_only_counted_across_targets():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    # the two outputs for target t1 are identical but are not compared with each other
    assert output_similarity([a, a, b], ["t1", "t1", "t2"]) == 0.0
    assert output_similarity([a, a], ["t1", "t2"]) == 1.0
    assert output_similarity([a, a], ["t1", "t1"]) is None


def test_reference_utterances_spread_over_speakers_with_pairs(corpus):
    picked = spread_over_speakers(corpus, 8)
    counts = {s: sum(u.speaker == s for u in picked) for s in {u.speaker for u in corpus}}
    assert len(picked) == 8 and max(counts.values()) - min(counts.values()) <= 1
    # many speakers with one utterance each (validation) never crowd out same-speaker pairs
    singles = [replace(u, speaker=f"single{i}") for i, u in enumerate(corpus)]
    pairs = [replace(u, speaker=f"pair{i % 2}", utterance_id=f"pair_{i}") for i, u in enumerate(corpus[:4])]
    picked = spread_over_speakers(singles + pairs, 4)
    assert sorted(u.speaker for u in picked) == ["pair0", "pair0", "pair1", "pair1"]


# ------------------------------------------------------------------ DNSMOS


def _speech(corpus, seconds: float) -> np.ndarray:
    audio, total = [], 0
    for utt in corpus:
        audio.append(utt.audio.numpy())
        total += utt.audio.numel()
        if total >= seconds * RATE:
            break
    return np.concatenate(audio)


def test_dnsmos_clean_speech_above_the_same_speech_in_heavy_noise(corpus):
    clean = _speech(corpus, 9.5)
    noise = np.random.default_rng(0).standard_normal(clean.size).astype(np.float32)
    noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2))  # 0 dB SNR
    clean_score, noisy_score = dnsmos.score(np.clip(clean, -1, 1)), dnsmos.score(np.clip(clean + noise, -1, 1))
    assert clean_score["ovrl"] > noisy_score["ovrl"] + 0.5, (clean_score, noisy_score)
    assert clean_score["bak"] > noisy_score["bak"] + 0.5


def test_dnsmos_sessions_use_torchs_threads_and_stay_loaded():
    """Parallel jobs share the CPU: DNSMOS runs on the job's thread count (speechmos's own
    sessions take every core), and scoring keeps using those sessions."""
    import speechmos.dnsmos

    dnsmos._run()
    model = speechmos.dnsmos.dnsmos
    assert model.onnx_sess.get_session_options().intra_op_num_threads == torch.get_num_threads()
    dnsmos.score(np.random.default_rng(0).uniform(-0.1, 0.1, int(dnsmos.WINDOW_SECONDS * 16000)))
    assert speechmos.dnsmos.dnsmos is model  # not replaced by a model with speechmos's defaults


def test_dnsmos_never_scores_a_tiled_clip():
    with pytest.raises(ValueError, match="tiled"):
        dnsmos.score(np.zeros(RATE * 2, dtype=np.float32))
    result = dnsmos.dnsmos_of_clips([torch.zeros(RATE * 3)], RATE)
    assert result["num_segments"] == 0 and result["ovrl"] is None


def test_every_second_of_a_segment_is_scored(corpus):
    speech = np.clip(_speech(corpus, 11.0), -1, 1)[: int(10.9 * RATE)]
    assert dnsmos.windows(speech.size) == 1  # speechmos alone scores only 0-9.01 s of 10.9 s
    noisy_tail = speech.copy()
    noisy_tail[int(9.5 * RATE):] += np.random.default_rng(0).standard_normal(noisy_tail.size - int(9.5 * RATE)) * 0.3
    assert dnsmos.score(np.clip(noisy_tail, -1, 1))["ovrl"] < dnsmos.score(speech)["ovrl"]


def test_segments_reach_the_window_and_keep_every_clip():
    assert dnsmos.segments([3.0, 3.0, 4.0, 5.0, 5.0, 1.0]) == [[0, 1, 2], [3, 4, 5]]
    assert dnsmos.segments([10.0, 2.0]) == [[0, 1]]
    assert dnsmos.segments([4.0, 4.0]) == []


# ------------------------------------------------------------------ recognition


def test_source_text_on_source_audio_beats_a_silent_file(corpus):
    texted = [u for u in corpus if u.text][:3]
    speech = recognition.pooled_rates(
        recognition.error_counts(u.text, recognition.transcribe(u.audio, RATE)) for u in texted)
    silent = recognition.pooled_rates(
        recognition.error_counts(u.text, recognition.transcribe(torch.zeros_like(u.audio), RATE)) for u in texted)
    assert silent["cer"] > 0.9 and silent["wer"] > 0.9  # it hears next to nothing
    assert speech["cer"] < silent["cer"] - 0.2, (speech, silent)


def test_a_transcript_does_not_depend_on_what_was_heard_before(corpus):
    # without the reset, 3 of these 4 transcripts changed after 3 s of loud noise
    for utt in corpus[:4]:
        first = recognition.transcribe(utt.audio, RATE)
        recognition.transcribe(torch.randn(RATE * 3), RATE)  # moves the noise estimate and the cepstral mean
        assert recognition.transcribe(utt.audio, RATE) == first, utt.utterance_id


def test_error_counts_and_pooling():
    assert recognition.words("Don't stop, Sarah!") == ["don't", "stop", "sarah"]
    c = recognition.error_counts("the red cat", "the cat sat")
    assert (c["word_errors"], c["words"]) == (2, 3)
    assert recognition.error_counts("a b", "a b")["char_errors"] == 0
    pooled = recognition.pooled_rates([{"word_errors": 1, "words": 4, "char_errors": 2, "chars": 10},
                                       {"word_errors": 3, "words": 4, "char_errors": 0, "chars": 10}, None])
    assert pooled == {"wer": 0.5, "cer": 0.1, "num_utterances": 2}
    assert recognition.pooled_rates([])["wer"] is None


# ------------------------------------------------------------------ signal measures of reconstructions


def test_signal_measures_rank_a_copy_above_a_noisy_copy(corpus):
    x = corpus[0].audio
    noisy = x + 0.3 * x.abs().max() * torch.randn_like(x)
    assert signal_metrics.si_sdr(x, 0.5 * x) > 60  # scale-invariant
    assert signal_metrics.si_sdr(x, noisy) < 10
    assert signal_metrics.mel_cepstral_distortion(x, x) == pytest.approx(0.0, abs=1e-4)
    assert signal_metrics.mel_cepstral_distortion(x, noisy) > 2.0
    assert signal_metrics.si_sdr(x, torch.zeros_like(x)) is None  # undefined, never a flattering 0 dB


def test_reference_levels_of_the_micro_corpus(micro_manifest):
    levels = reference_levels(micro_manifest, measures=["speaker"], max_utterances=4, sample_rate=RATE)
    assert levels["num_utterances"] == 4 and levels["num_speakers"] == 2 and set(levels["seconds"]) == {"speaker"}
    assert "dnsmos" not in levels and (levels["speaker"]["num_same"], levels["speaker"]["num_different"]) == (2, 4)
    with pytest.raises(ValueError, match="unknown quality measure"):
        reference_levels(micro_manifest, measures=["mos"], max_utterances=6, sample_rate=RATE)


def test_the_config_schema_offers_exactly_the_measures_that_exist():
    from importlib.resources import files

    import yaml

    from streamvc_rvq.quality.scorer import MEASURES

    schema = yaml.safe_load(files("streamvc_rvq").joinpath("schema.yaml").read_text())
    measures = schema["properties"]["evaluation"]["properties"]["quality_measures"]
    assert tuple(measures["items"]["enum"]) == MEASURES == tuple(measures["default"])


def test_recognition_is_skipped_only_where_the_recogniser_cannot_read_the_sources():
    assert quality.recognition_skip_reason({"wer": 0.93, "cer": 0.7, "num_utterances": 4}).startswith("skipped")
    assert quality.recognition_skip_reason({"wer": 0.2, "cer": 0.1, "num_utterances": 4}) is None
    assert quality.recognition_skip_reason({"wer": None, "cer": None, "num_utterances": 0}) is None  # no text: nothing to decide


def test_the_scorer_drops_recognition_on_the_builtin_corpus_and_keeps_it_on_text_it_can_read(corpus):
    """On eSpeak audio the recogniser misreads the sources themselves: skipped, with the reason.
    The control that must keep it: the same audio, its text set to what the recogniser hears."""
    texted = [u for u in corpus if u.text][:quality.RECOGNITION_PROBE_UTTERANCES]
    scorer = quality.QualityScorer(["speaker", "recognition"], RATE)
    reason = scorer.probe_recognition(texted)
    assert reason and "recognition" not in scorer.measures and "speaker" in scorer.measures
    heard = [replace(u, text=recognition.transcribe(u.audio, RATE)) for u in texted]
    heard = [u for u in heard if u.text]
    assert heard
    kept = quality.QualityScorer(["recognition"], RATE)
    assert kept.probe_recognition(heard) is None and kept.measures == ("recognition",)
    entry, _ = kept.score("reconstruct", heard[0], heard[0], heard[0].audio)  # what it keeps, it measures
    assert entry["errors"]["word_errors"] == 0 and entry["transcript"] == heard[0].text


def test_reference_recognition_stops_where_the_evaluations_skip_it(corpus):
    """The corpus's reference recognition error follows the evaluation's rule: on eSpeak audio the first
    few utterances already show the recogniser cannot read it, so only they are transcribed and the level
    says why; the same audio with its text set to what the recogniser hears is transcribed in full."""
    from streamvc_rvq.quality.reference_levels import recognition_levels

    texted = [u for u in corpus if u.text][: quality.RECOGNITION_PROBE_UTTERANCES + 2]
    assert len(texted) == quality.RECOGNITION_PROBE_UTTERANCES + 2
    skipped = recognition_levels(texted, RATE)
    assert skipped["recognition_skipped"].startswith("skipped") and skipped["recognition_probe"]["wer"] > 0.5
    assert skipped["recognition_probe"]["num_utterances"] == quality.RECOGNITION_PROBE_UTTERANCES
    assert "recognition" not in skipped  # no corpus level from four utterances (the report and plots read it)
    heard = [u for u in (replace(u, text=recognition.transcribe(u.audio, RATE)) for u in texted) if u.text]
    assert len(heard) > quality.RECOGNITION_PROBE_UTTERANCES
    kept = recognition_levels(heard, RATE)
    assert "recognition_skipped" not in kept
    assert kept["recognition"] == {"wer": 0.0, "cer": 0.0, "num_utterances": len(heard)}
