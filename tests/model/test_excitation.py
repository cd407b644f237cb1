"""The harmonic excitation: the right frequency, silence where unvoiced, no clicks, exact streaming."""

from __future__ import annotations

import math

import pytest
import torch

from streamvc_rvq.model.excitation import HarmonicSource
from streamvc_rvq.model.streamvc import StreamVC

from .conftest import HOP, SR, tiny_causal_config, tiny_config, voiced


def test_each_harmonic_sits_at_its_multiple_of_f0():
    source = HarmonicSource(SR, HOP, rate_divisor=2, harmonics=3)
    x = source(torch.full((1, 50), 150.0))  # 1 s at 8 kHz
    assert x.shape == (1, 3, 50 * HOP // 2)
    rate = SR / 2
    for k in range(3):
        spectrum = torch.fft.rfft(x[0, k]).abs()
        peak = float(spectrum.argmax()) * rate / x.shape[-1]
        assert peak == pytest.approx(150.0 * (k + 1), abs=1.5)


def test_unvoiced_frames_and_harmonics_above_nyquist_are_silent():
    source = HarmonicSource(SR, HOP, rate_divisor=2, harmonics=8)
    f0 = torch.tensor([[0.0, 600.0, 0.0]])
    x = source(f0).view(1, 8, 3, HOP // 2)
    assert bool((x[..., 0, :] == 0).all()) and bool((x[..., 2, :] == 0).all())
    audible = [k for k in range(8) if bool(x[0, k, 1].abs().max() > 0)]
    assert audible == [0, 1, 2, 3, 4, 5]  # 600 Hz x 7 = 4200 Hz is above the 4 kHz Nyquist of 8 kHz


def test_phase_runs_on_across_frame_edges():
    """A steady f0 gives one unbroken sine: the step between neighbouring samples is the same at a
    frame edge as inside a frame (a phase reset per frame would buzz at the frame rate)."""
    source = HarmonicSource(SR, HOP, rate_divisor=1, harmonics=1)
    x = source(torch.full((1, 10), 123.0))[0, 0]
    t = torch.arange(1, x.numel() + 1, dtype=torch.float32) / SR
    torch.testing.assert_close(x, torch.sin(2 * math.pi * 123.0 * t), atol=1e-3, rtol=0)


def test_streamed_excitation_equals_offline_exactly():
    source = HarmonicSource(SR, HOP, rate_divisor=2, harmonics=4)
    f0 = torch.rand(2, 40) * 200 + 80
    f0[:, 5:9] = 0.0
    offline = source(f0)
    source.reset_stream()
    streamed = torch.cat([source.stream_step(f0[:, i : i + 3]) for i in range(0, 40, 3)], dim=-1)
    assert torch.equal(streamed, offline)


def test_the_target_f0_reaches_the_output_through_the_excitation():
    """The lever acts: the same source to two references an octave apart gives different outputs,
    and the difference goes away without the excitation and the level channel."""
    torch.manual_seed(0)
    source, low, high = voiced(0.5, 150.0), voiced(0.5, 110.0, seed=3), voiced(0.5, 220.0, seed=3)
    model = StreamVC(tiny_config()).eval()
    with torch.no_grad():
        f_low = model.pitch.target_f0(model.pitch.retarget(model.pitch(source), model.pitch_statistics(low)))
        f_high = model.pitch.target_f0(model.pitch.retarget(model.pitch(source), model.pitch_statistics(high)))
    voiced_frames = f_low > 0
    ratio = (f_high[voiced_frames] / f_low[voiced_frames]).median()
    assert float(ratio) == pytest.approx(2.0, rel=0.05)
    dec = model.decoder  # everything else fixed, the excitation alone changes the waveform
    quantized, pitch, speaker = torch.zeros(1, 8, 25), torch.zeros(1, model.pitch.num_features, 25), torch.zeros(1, 8)
    with torch.no_grad():
        a = dec.synthesize(quantized, pitch, speaker, model.excitation(f_low))
        b = dec.synthesize(quantized, pitch, speaker, model.excitation(f_high))
    assert float((a - b).abs().max()) > 1e-3
    off = StreamVC(tiny_config(pitch={"excitation_harmonics": 0, "target": "none"}))
    assert off.excitation is None and off.decoder.source_conv is None
    with pytest.raises(ValueError, match="needs pitch.target: reference"):
        StreamVC(tiny_config(pitch={"target": "none"}))


@pytest.mark.parametrize("pitch", [{}, {"output_excitation_harmonics": 16},
                                   {"output_excitation_harmonics": 16, "output_excitation_mix": "gated"}],
                         ids=["last block", "and output block", "and gated at the output"])
def test_streaming_with_the_excitation_equals_offline(speech_like, pitch):
    model = StreamVC(tiny_causal_config(pitch=pitch)).eval()
    reference = voiced(1.0, 210.0, seed=7)
    with torch.no_grad():
        offline = model(speech_like, reference).audio
    converter = model.stream(reference)
    streamed = torch.cat([converter.process(speech_like[:, i : i + HOP]) for i in range(0, speech_like.shape[-1], HOP)], -1)
    assert float((streamed - offline).abs().max()) <= 1e-4


def _harmonic_prominence_db(audio: torch.Tensor, f0: float, low: float = 2000.0, high: float = 6000.0) -> float:
    """Power at the harmonics of ``f0`` in [low, high] over the power halfway between them (dB)."""
    spectrum = torch.fft.rfft(audio * torch.hann_window(audio.numel())).abs() ** 2
    hz = SR / audio.numel()
    orders = [k for k in range(1, 100) if low <= k * f0 <= high]
    on = torch.stack([spectrum[round(k * f0 / hz)] for k in orders]).mean()
    off = torch.stack([spectrum[round((k + 0.5) * f0 / hz)] for k in orders]).mean()
    return float(10 * torch.log10(on / off))


def _synthesize(model: StreamVC, frames: int, f0: float, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    quantized, pitch = torch.randn(1, 8, frames), torch.randn(1, model.pitch.num_features, frames)
    with torch.no_grad():
        return model.decoder.synthesize(quantized, pitch, torch.randn(1, 8),
                                        *model.harmonic_sources(torch.full((1, frames), f0)))[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_output_excitation_puts_harmonics_above_the_decoders_2khz_stage(seed):
    """The output block's excitation reaches the waveform at the full rate: on random frame features,
    harmonics of f0 between 2 and 6 kHz stand out from the spectrum between them far more with the
    path than without it (the last-block excitation alone: 23-32 dB at initialisation, with: 45-53)."""
    frames, f0 = 50, 150.0
    prominence = {}
    for harmonics in (0, 32):
        torch.manual_seed(seed)
        model = StreamVC(tiny_config(pitch={"output_excitation_harmonics": harmonics})).eval()
        assert (model.output_excitation is None) == (harmonics == 0)
        prominence[harmonics] = _harmonic_prominence_db(_synthesize(model, frames, f0, seed)[5 * HOP:], f0)
    assert prominence[32] > prominence[0] + 10.0


def test_the_output_excitation_needs_the_target_pitch():
    with pytest.raises(ValueError, match="output_excitation_harmonics needs pitch.target: reference"):
        StreamVC(tiny_config(pitch={"target": "none", "excitation_harmonics": 0, "output_excitation_harmonics": 8}))


@pytest.mark.parametrize("seed", [0, 1])
def test_the_gated_output_excitation_starts_quiet_and_can_draw_harmonics(seed):
    """``gated``: at initialisation the harmonics' gains are near zero (the output is the plain decoder's
    within 1 % of its RMS: unit sines at full gain would drown the speech); with the gains at full scale
    the harmonics between 2 and 6 kHz stand far above the spectrum between them."""
    frames, f0 = 50, 150.0
    torch.manual_seed(seed)
    model = StreamVC(tiny_config(pitch={"output_excitation_harmonics": 32, "output_excitation_mix": "gated"})).eval()
    assert model.decoder.output_source_conv is None and model.decoder.output_source_gain is not None
    gain = model.decoder.output_source_gain
    with_path = _synthesize(model, frames, f0, seed)
    with torch.no_grad():
        stored = gain.parametrizations.weight.original0.clone()
        gain.parametrizations.weight.original0.zero_()
        without = _synthesize(model, frames, f0, seed)
        gain.parametrizations.weight.original0.copy_(stored * 1000.0)
        loud = _synthesize(model, frames, f0, seed)
    assert float((with_path - without).pow(2).mean().sqrt()) < 0.01 * float(without.pow(2).mean().sqrt())
    assert _harmonic_prominence_db(loud[5 * HOP:], f0) > _harmonic_prominence_db(without[5 * HOP:], f0) + 10.0


def test_the_output_excitation_mix_is_checked():
    with pytest.raises(ValueError, match="output_excitation_mix: 'multiply' is not one of"):
        StreamVC(tiny_config(pitch={"output_excitation_harmonics": 8, "output_excitation_mix": "multiply"}))
