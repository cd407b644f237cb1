"""The assembled StreamVC: shapes, frame-rate RVQ, causality, streaming == offline, float32.

Latency contract tested here: output sample ``p`` (in frame ``n = p // 320``) depends on
source samples ``<= (n + 1) * 320 - 1`` only -- the end of its own frame. A perturbation at
sample ``t`` therefore leaves every output sample before ``320 * (t // 320)`` unchanged; the
algorithmic delay is one frame, 320 samples = 20 ms, with no look-ahead beyond it.
"""

from __future__ import annotations

import pytest
import torch

from streamvc_rvq.model.streamvc import StreamVC

from .conftest import HOP, SR, tiny_causal_config, tiny_config, voiced


def first_change(a: torch.Tensor, b: torch.Tensor) -> int:
    changed = (a != b).flatten(0, -2).any(0).nonzero()
    return int(changed[0]) if len(changed) else -1


@pytest.fixture
def causal_model() -> StreamVC:
    return StreamVC(tiny_causal_config()).eval()


def test_forward_shapes_and_truncation_to_whole_frames():
    model = StreamVC(tiny_config())
    source, reference = torch.randn(2, 10 * HOP + 123), torch.randn(2, 7 * HOP)
    out = model(source, reference)
    assert model.hop_length == HOP
    assert out.audio.shape == (2, 10 * HOP)
    assert out.content_logits.shape == (2, 5, 10)
    assert out.content_features.shape == (2, 8, 10)
    assert out.rvq.quantized.shape == (2, 8, 10)
    assert out.pre_rvq_std.dim() == 0 and not out.pre_rvq_std.requires_grad
    assert out.rvq.loss.dim() == 0 and len(out.rvq.stats) == 3


@pytest.mark.parametrize("num_active", [1, 2, None])
def test_rvq_runs_at_the_frame_rate(num_active):
    model = StreamVC(tiny_config())
    samples = 25 * HOP + 7
    out = model(torch.randn(1, samples), torch.randn(1, 4 * HOP), num_active)
    assert len(out.rvq.codes) == (num_active or 3)
    for codes in out.rvq.codes:
        assert codes.shape == (1, samples // HOP)  # one code vector per 20 ms frame, not per sample


def test_label_head_is_optional():
    model = StreamVC(tiny_config(content_encoder={"num_labels": 0}))
    assert model(torch.randn(1, 4 * HOP), torch.randn(1, 4 * HOP)).content_logits is None


def test_missing_keys_take_schema_defaults():
    model = StreamVC({"rvq": {"codebook_size": 16}})
    assert model.sample_rate == SR and model.hop_length == HOP
    assert model.decoder.rvq.num_quantizers == 8 and model.decoder.norm.mode == "utterance"


def test_pitch_reference_keeps_that_utterances_pitch_level_and_the_references_speaker():
    """The timbre-only conversion (the evaluation's ``timbre_only`` control): the speaker vector
    from the reference, the pitch level from ``pitch_reference``; the reference itself as
    ``pitch_reference`` is the plain conversion, and another pitch changes the output."""
    model = StreamVC(tiny_config()).eval()
    source, reference = voiced(0.6, f0=120.0, seed=1), voiced(0.6, f0=240.0, seed=2)
    with torch.no_grad():
        plain = model(source, reference)
        kept = model(source, reference, pitch_reference=source)
        same = model(source, reference, pitch_reference=reference)
    torch.testing.assert_close(kept.speaker, plain.speaker, rtol=0, atol=0)
    torch.testing.assert_close(kept.pitch_level, model.pitch_statistics(source), rtol=0, atol=0)
    assert not torch.allclose(kept.pitch_level, plain.pitch_level)
    torch.testing.assert_close(same.audio, plain.audio, rtol=0, atol=0)
    assert (kept.audio - plain.audio).abs().max() > 1e-4


def test_too_short_source_is_an_error():
    with pytest.raises(ValueError, match="at least one frame"):
        StreamVC(tiny_config())(torch.randn(1, HOP - 1), torch.randn(1, HOP))


# -- causality --------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0, 6 * HOP, 6 * HOP + 250, 19 * HOP + 319])
def test_content_encoder_is_causal(causal_model, t):
    x = voiced(0.4)
    x2 = x.clone()
    x2[0, t] += 0.3
    with torch.no_grad():
        a, _ = causal_model.content_encoder(x)
        b, _ = causal_model.content_encoder(x2)
    assert first_change(a, b) == t // HOP  # frame n depends on samples <= (n + 1) * HOP - 1


@pytest.mark.parametrize("frame", [0, 3, 9])
def test_decoder_is_causal_given_frame_features(causal_model, frame):
    dec = causal_model.decoder
    quantized, pitch = torch.randn(1, 8, 10), torch.randn(1, causal_model.pitch.num_features, 10)
    speaker, f0 = torch.randn(1, 8), torch.full((1, 10), 150.0)
    with torch.no_grad():
        a = dec.synthesize(quantized, pitch, speaker, causal_model.excitation(f0))
        for q, p, f in ((quantized.clone(), pitch, f0), (quantized, pitch.clone(), f0), (quantized, pitch, f0.clone())):
            changed = next(x for x, y in ((q, quantized), (p, pitch), (f, f0)) if x is not y)
            changed[..., frame] += 1.0 if changed is not f else 50.0
            b = dec.synthesize(q, p, speaker, causal_model.excitation(f))
            assert first_change(a, b) == frame * HOP  # nothing before the frame's own samples


@pytest.mark.parametrize("t", [0, 7 * HOP, 7 * HOP + 160, 7 * HOP + 319])
def test_whole_conversion_is_causal_up_to_the_end_of_each_frame(causal_model, t):
    source, reference = voiced(0.5), voiced(0.3, 200.0, seed=3)
    s2 = source.clone()
    s2[0, t] += 0.3
    with torch.no_grad():
        a = causal_model(source, reference).audio
        b = causal_model(s2, reference).audio
    change = first_change(a, b)
    assert change >= HOP * (t // HOP)  # the documented delay: at most to the end of t's frame
    assert change < HOP * (t // HOP + 1)  # and the bound is tight: t's own frame does change


def test_utterance_normalisation_is_not_causal():
    """Control: the test above would catch a look-ahead (the design note's normalisation)."""
    model = StreamVC(tiny_config()).eval()
    source, reference = voiced(0.5), voiced(0.3, 200.0, seed=3)
    s2 = source.clone()
    s2[0, -HOP:] += 0.5 * torch.randn(HOP)  # the last frame only
    with torch.no_grad():  # output before the perturbed frame changes (which frame first depends on the codes drawn)
        assert 0 <= first_change(model(source, reference).audio, model(s2, reference).audio) < source.shape[-1] - HOP


# -- streaming --------------------------------------------------------------------------


def stream_all(model: StreamVC, source: torch.Tensor, reference: torch.Tensor, chunk: int = HOP, **kw):
    converter = model.stream(reference, **kw)
    return torch.cat([converter.process(source[:, i : i + chunk]) for i in range(0, source.shape[-1], chunk)], -1)


@pytest.mark.parametrize("num_active", [None, 2])
def test_streaming_equals_offline(causal_model, speech_like, num_active):
    reference = voiced(1.0, 210.0, seed=7)
    with torch.no_grad():
        offline = causal_model(speech_like, reference, num_active).audio
    streamed = stream_all(causal_model, speech_like, reference, num_active_quantizers=num_active)
    assert streamed.shape == offline.shape == (1, 3 * SR)
    assert float((streamed - offline).abs().max()) <= 1e-4


def test_streaming_in_multi_frame_chunks_and_after_reset(causal_model, speech_like):
    reference = voiced(1.0, 210.0, seed=7)
    with torch.no_grad():
        offline = causal_model(speech_like, reference).audio
    converter = causal_model.stream(reference)
    converter.process(torch.randn(1, 4 * HOP))  # some other audio first
    converter.reset()
    streamed = torch.cat([converter.process(speech_like[:, i : i + 3 * HOP]) for i in range(0, 3 * SR, 3 * HOP)], -1)
    assert float((streamed - offline).abs().max()) <= 1e-4


@pytest.mark.parametrize("norm", ["none", "causal"])
def test_streaming_with_cosine_codes_and_each_streamable_norm(norm, speech_like):
    model = StreamVC(tiny_causal_config(pre_rvq_norm=norm, rvq={"distance": "cosine"})).eval()
    reference = voiced(1.0, 210.0, seed=7)
    with torch.no_grad():
        offline = model(speech_like, reference).audio
    assert float((stream_all(model, speech_like, reference) - offline).abs().max()) <= 1e-4


def test_streaming_with_the_repeat_upsampler(speech_like):
    model = StreamVC(tiny_causal_config(decoder={"upsample": "repeat"})).eval()
    assert all(type(block.up).__name__ == "RepeatUpsample" for block in model.decoder.blocks)
    reference = voiced(1.0, 210.0, seed=7)
    with torch.no_grad():
        offline = model(speech_like, reference).audio
    assert float((stream_all(model, speech_like, reference) - offline).abs().max()) <= 1e-4


def test_streaming_equals_offline_at_paper_size(speech_like):
    model = StreamVC({"pre_rvq_norm": "causal", "pitch": {"whitening": "running"}}).eval()
    # paper size: 27.5 M parameters (31.4 M with the waveform speaker encoder of 4.7 M; the log-mel one is 0.8 M)
    assert sum(p.numel() for p in model.parameters()) > 27_000_000
    source, reference = speech_like[:, : 2 * SR], voiced(1.0, 210.0, seed=7)
    with torch.no_grad():
        offline = model(source, reference).audio
    assert float((stream_all(model, source, reference) - offline).abs().max()) <= 1e-4


def test_streamed_chunk_n_is_output_chunk_n(causal_model):
    converter = causal_model.stream(voiced(0.5))
    assert converter.algorithmic_delay_samples == HOP == causal_model.algorithmic_delay_samples
    assert converter.process(torch.zeros(1, HOP)).shape == (1, HOP)


@pytest.mark.parametrize(
    "overrides, match",
    [({"pre_rvq_norm": "utterance"}, "pre_rvq_norm 'utterance'"), ({"pitch": {"whitening": "utterance"}}, "whitening")],
)
def test_utterance_statistics_refuse_to_stream(overrides, match):
    model = StreamVC(tiny_causal_config(**overrides)).eval()
    with pytest.raises(ValueError, match=match):
        model.stream(voiced(0.5))


def test_streaming_needs_eval_mode(causal_model):
    causal_model.train()
    with pytest.raises(ValueError, match="eval"):
        causal_model.stream(voiced(0.5))


def test_an_older_converter_stops_when_a_new_stream_starts(causal_model):
    old = causal_model.stream(voiced(0.5))
    causal_model.stream(voiced(0.5, 200.0))
    with pytest.raises(RuntimeError, match="another stream"):
        old.process(torch.zeros(1, HOP))
    with pytest.raises(ValueError, match="chunk"):
        causal_model.stream(voiced(0.5)).process(torch.zeros(1, HOP + 1))
    with pytest.raises(ValueError, match="num_active_quantizers"):
        causal_model.stream(voiced(0.5), num_active_quantizers=4)


# -- training behaviour and dtypes ------------------------------------------------------


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_stop_gradient_between_content_encoder_and_decoder(stop_gradient):
    model = StreamVC(tiny_config(content_encoder={"stop_gradient": stop_gradient}))
    out = model(voiced(0.2), voiced(0.2, 200.0))
    (out.audio.square().mean() + out.rvq.loss).backward()
    grads = [p.grad for p in model.content_encoder.encoder.parameters()]
    reached = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    assert reached is (not stop_gradient)
    assert all(p.grad is not None for p in model.decoder.blocks.parameters())
    assert all(p.grad is not None for p in model.speaker_encoder.parameters())


def test_label_loss_trains_the_content_encoder():
    model = StreamVC(tiny_config())
    out = model(voiced(0.2), voiced(0.2, 200.0))
    torch.nn.functional.cross_entropy(out.content_logits, torch.zeros(1, 10, dtype=torch.long)).backward()
    assert all(p.grad is not None for p in model.content_encoder.parameters())


def test_everything_is_float32(causal_model, speech_like):
    for name, tensor in causal_model.state_dict().items():
        assert tensor.dtype != torch.float64, name
    out = causal_model(speech_like[:, :SR], voiced(0.5))
    for value in (out.audio, out.content_logits, out.content_features, out.rvq.quantized, out.pre_rvq_std, out.rvq.loss):
        assert value.dtype == torch.float32
    streamed = causal_model.stream(voiced(0.5)).process(speech_like[:, :HOP].double())
    assert streamed.dtype == torch.float32


def test_quantizer_stays_float32_under_autocast():
    model = StreamVC(tiny_config())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(voiced(0.2), voiced(0.2, 200.0))
    assert out.rvq.quantized.dtype == torch.float32 and out.rvq.loss.dtype == torch.float32
    assert out.content_logits.dtype == torch.bfloat16  # the content encoder did run in bfloat16
    assert out.audio.dtype == torch.float32  # the decoder stays float32 (Decoder.synthesize)


def test_one_encoding_decoded_for_several_references_equals_forward():
    """``encode`` once, ``decode`` per reference (the evaluation's conversions): each output is forward's to
    the bit, and decoding leaves the encoding as it was (the second reference sees what the first saw).
    The failing input: a decode that took the reference's pitch level where the source's was asked for."""
    model = StreamVC(tiny_config(pitch={"target": "reference"})).eval()
    source = voiced(0.5, f0=120.0) + 0.0
    references = [voiced(0.4, f0=220.0, seed=1), voiced(0.3, f0=90.0, seed=2)]
    with torch.inference_mode():
        encoded = model.encode(source)
        for reference in references * 2:
            for kept in (None, source):
                assert torch.equal(model.decode(encoded, reference, 2, pitch_reference=kept).audio,
                                   model(source, reference, 2, pitch_reference=kept).audio)
        own = model.decode(encoded, references[0], 2, pitch_reference=source).audio
        assert not torch.equal(own, model(source, references[0], 2).audio)
        rvq, _ = model.decoder.quantize(encoded.content, 2, encoded.stats, encoded.valid)  # the speaker probe's codes
        assert torch.equal(rvq.quantized, model(source, references[0], 2).rvq.quantized)
