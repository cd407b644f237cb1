"""The infer command on generated inputs: good files convert, bad ones give one error line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import yaml

from micro import CONFIG_FILES, micro_config
from streamvc_rvq.cli import main
from streamvc_rvq.training.trainer import train_to_step


@pytest.fixture(scope="module")
def checkpoints(micro_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("infer_ckpt")
    paths = {}
    for experiment in ("phase1_causal", "phase1"):
        cfg = micro_config(experiment, train={"steps": [2]})
        paths[experiment] = train_to_step(cfg, manifest=micro_manifest, step=2, output=out / f"{experiment}.pt", device="cpu")
    return paths


@pytest.fixture()
def wavs(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(int(0.8 * 44100)) / 44100
    voiced = 0.3 * np.sin(2 * np.pi * 140 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
    files = {
        "stereo44k": tmp_path / "stereo44k.wav",
        "ref": tmp_path / "ref.flac",
        "empty": tmp_path / "empty.wav",
        "text": tmp_path / "text.wav",
        "short": tmp_path / "short.wav",
    }
    sf.write(files["stereo44k"], np.stack([voiced, 0.5 * voiced], 1), 44100)
    sf.write(files["ref"], (0.2 * rng.standard_normal(24000)).astype(np.float32), 24000)
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not audio\n")
    sf.write(files["short"], np.zeros(100, dtype=np.float32) + 0.1, 16000)
    return files


def infer(capsys, checkpoint, source, ref, output, *extra):
    code = main(["infer", "--checkpoint", str(checkpoint), "--source", str(source), "--target-ref", str(ref),
                 "--output", str(output), "--device", "cpu", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_converts_any_rate_and_channel_count(checkpoints, wavs, tmp_path, capsys):
    out = tmp_path / "out.wav"
    code, stdout, err = infer(capsys, checkpoints["phase1"], wavs["stereo44k"], wavs["ref"], out)
    assert code == 0, err
    audio, sr = sf.read(out)
    assert sr == 16000 and audio.ndim == 1
    assert abs(len(audio) - 0.8 * 16000) <= 320
    assert json.loads(stdout)["seconds"] == pytest.approx(len(audio) / 16000)


@pytest.mark.parametrize(
    "source, message",
    [("missing", "source file not found"), ("empty", "empty file"), ("text", "source file"), ("short", "too short")],
)
def test_bad_inputs_are_one_line_errors_and_leave_existing_output(checkpoints, wavs, tmp_path, capsys, source, message):
    out = tmp_path / "out.wav"
    out.write_bytes(b"previous result")
    path = wavs.get(source, tmp_path / "missing.wav")
    code, _, err = infer(capsys, checkpoints["phase1"], path, wavs["ref"], out)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert out.read_bytes() == b"previous result"


def test_checkpoint_not_matching_config_is_refused(checkpoints, wavs, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"model": {"rvq": {"codebook_size": 16}}}))
    code, _, err = infer(capsys, checkpoints["phase1"], wavs["stereo44k"], wavs["ref"], tmp_path / "o.wav",
                         "--config", str(CONFIG_FILES[0]), "--config", str(CONFIG_FILES[1]), "--config", str(other))
    assert code == 2 and "different model config: rvq.codebook_size" in err
    code, _, err = infer(capsys, tmp_path / "nope.pt", wavs["stereo44k"], wavs["ref"], tmp_path / "o.wav")
    assert code == 2 and "checkpoint not found" in err


def test_stream_equals_offline_for_a_causal_config(checkpoints, wavs, tmp_path, capsys):
    offline, streamed = tmp_path / "offline.wav", tmp_path / "streamed.wav"
    assert infer(capsys, checkpoints["phase1_causal"], wavs["stereo44k"], wavs["ref"], offline)[0] == 0
    assert infer(capsys, checkpoints["phase1_causal"], wavs["stereo44k"], wavs["ref"], streamed, "--stream")[0] == 0
    # compare in float32 before PCM quantisation, through the same library call
    from streamvc_rvq.inference.conversion import convert, load_trained_model
    from streamvc_rvq.quantization.rvq import StageSchedule

    model, cfg, step = load_trained_model(checkpoints["phase1_causal"])
    n = StageSchedule.of(cfg["model"]).in_checkpoint(step)
    # a speech-like source: on the steady tone above, the content features barely vary per channel, so
    # the causal normalisation divides their float rounding (~1e-6) by a near-zero running std, and on an
    # AMD EPYC host a code of frame 27 of 40 flipped (output 7e-4 apart; here 3.6e-7 on 4 seeds)
    src, ref = _speechlike(2.0), _speechlike(2.0, seed=2)
    # equal to 1e-4 up to the first frame whose code flips on a tie to float precision: the stream's
    # 20 ms chunks (one frame each) sum in another order than the one pass (the offline small-channel
    # convolution kernel, the stream's folded products)
    first_flip = _first_code_flip(model, src, n, 1)
    agree = slice(0, model.hop_length * (first_flip if first_flip is not None else len(src)))
    diff = (convert(model, src, ref, n) - convert(model, src, ref, n, stream=True))[agree].abs().max()
    assert float(diff) <= 1e-4


def _against_fp32(checkpoints, stream: bool, precision: str, min_si_sdr: float):
    """Convert one source both ways on the micro causal checkpoint: the reduced output must move off
    float32 (the control: it is not float32 in disguise) but only by rounding (SI-SDR above ``min_si_sdr``)."""
    import torch

    from streamvc_rvq.inference.conversion import convert, load_trained_model
    from streamvc_rvq.quality.signal_metrics import si_sdr
    from streamvc_rvq.quantization.rvq import StageSchedule

    model, cfg, step = load_trained_model(checkpoints["phase1_causal"])
    src, ref = _speechlike(1.0), _speechlike(0.8, seed=2)
    n = StageSchedule.of(cfg["model"]).in_checkpoint(step)
    fp32 = convert(model, src, ref, n, stream=stream)
    reduced = convert(model, src, ref, n, stream=stream, precision=precision)
    assert reduced.dtype == torch.float32 and reduced.shape == fp32.shape
    assert float((reduced - fp32).abs().max()) > 1e-4
    assert float(si_sdr(fp32, reduced)) > min_si_sdr
    return model, ref, n


@pytest.mark.parametrize("stream", [False, True])
def test_bf16_conversion_runs_reduced_and_stays_near_fp32(checkpoints, stream):
    """bf16 autocast: SI-SDR against the float32 output > 25 dB."""
    _against_fp32(checkpoints, stream, "bf16", 25.0)


@pytest.mark.parametrize("stream", [False, True])
def test_int8_conversion_multiplies_in_int8_and_stays_near_fp32(checkpoints, stream, monkeypatch):
    """int8 products act (offline too, where they need the chunked path) and stay above 15 dB against
    float32 (paper size, random weights: 22 dB). The pre-RVQ convolution before the code search stays
    float32. Every micro weight is under the size from which int8 applies, so the test lowers it to 0."""
    from streamvc_rvq.inference.conversion import precision_context
    from streamvc_rvq.modules import conv

    monkeypatch.setattr(conv, "INT8_MIN_WEIGHTS", 0)
    model, ref, n = _against_fp32(checkpoints, stream, "int8", 15.0)
    if stream:  # the stream's layers keep their folded products: int8 everywhere but before the code search
        with precision_context("int8", "cpu"):
            model.stream(ref.unsqueeze(0), n)
        folded = {name: layer._stream.product.int8 is not None for name, layer in model.named_modules()
                  if isinstance(layer, conv.CausalConv1d) and layer._stream.product is not None}
        assert folded and not any(v for name, v in folded.items() if name.startswith("decoder.pre_rvq"))
        assert all(v for name, v in folded.items() if name.startswith(("content_encoder.", "decoder.blocks.")))


def test_an_int8_stream_stays_int8_after_another_conversion_and_a_reset(checkpoints, monkeypatch):
    """Another conversion of the model drops the stream's folded weights; after reset() the converter
    folds them again the way it was made (int8), not in the caller's region: the same output as before."""
    import torch

    from streamvc_rvq.inference.conversion import convert, load_trained_model, precision_context
    from streamvc_rvq.modules import conv
    from streamvc_rvq.quantization.rvq import StageSchedule

    monkeypatch.setattr(conv, "INT8_MIN_WEIGHTS", 0)
    model, cfg, step = load_trained_model(checkpoints["phase1_causal"])
    n = StageSchedule.of(cfg["model"]).in_checkpoint(step)
    src, ref = _speechlike(0.6), _speechlike(0.8, seed=2)
    chunks = src[: src.numel() // 320 * 320].view(-1, 1, 320)
    with precision_context("int8", "cpu"):
        converter = model.stream(ref.unsqueeze(0), n)
    first = torch.cat([converter.process(c) for c in chunks], -1)
    convert(model, src, ref, n, stream=True)  # a float32 stream of the same model: drops every folded weight
    converter.reset()
    again = torch.cat([converter.process(c) for c in chunks], -1)
    assert model.content_encoder.encoder.input_conv._stream.product.int8 is not None
    torch.testing.assert_close(again, first, atol=1e-6, rtol=0)


def test_offline_int8_says_it_pays_only_when_streaming(checkpoints, wavs, tmp_path, capsys):
    code, _, err = infer(capsys, checkpoints["phase1"], wavs["stereo44k"], wavs["ref"], tmp_path / "o.wav",
                         "--precision", "int8")
    assert code == 0 and "slower than fp32 offline; it pays with --stream" in err
    code, _, err = infer(capsys, checkpoints["phase1"], wavs["stereo44k"], wavs["ref"], tmp_path / "o.wav")
    assert code == 0 and "int8" not in err


def test_int8_is_refused_off_the_cpu():
    from streamvc_rvq.inference.conversion import precision_context

    with pytest.raises(ValueError, match="int8 runs on the CPU only"):
        precision_context("int8", "cuda")


def test_emulated_16_bit_precision_is_named_on_a_cpu_without_it(monkeypatch):
    from streamvc_rvq.inference import conversion

    monkeypatch.setattr(conversion, "native_16bit_cpu", lambda: False)
    assert "emulated" in conversion.emulated_precision_note("bf16", "cpu")
    assert conversion.emulated_precision_note("fp32", "cpu") is None
    assert conversion.emulated_precision_note("int8", "cpu") is None  # integer products: native on every CPU
    assert conversion.emulated_precision_note("bf16", "cuda") is None
    monkeypatch.setattr(conversion, "native_16bit_cpu", lambda: True)
    assert conversion.emulated_precision_note("bf16", "cpu") is None


def test_an_unknown_precision_is_one_line(checkpoints, wavs, tmp_path, capsys):
    code, _, err = infer(capsys, checkpoints["phase1"], wavs["stereo44k"], wavs["ref"], tmp_path / "o.wav",
                         "--precision", "int4")
    assert code == 2 and "--precision must be one of fp32, bf16, fp16, int8" in err


def test_stream_is_refused_for_utterance_normalisation(checkpoints, wavs, tmp_path, capsys):
    code, _, err = infer(capsys, checkpoints["phase1"], wavs["stereo44k"], wavs["ref"], tmp_path / "o.wav", "--stream")
    assert code == 2 and "utterance" in err


def _speechlike(seconds: float, rate: int = 16000, seed: int = 1) -> "torch.Tensor":
    """A voiced tone whose pitch and loudness drift, so the utterance statistics differ by part."""
    import torch

    t = np.arange(int(seconds * rate)) / rate
    f0 = 110 + 60 * t / seconds + 15 * np.sin(2 * np.pi * 0.7 * t)
    tone = np.sin(2 * np.pi * np.cumsum(f0) / rate) * (0.1 + 0.3 * t / seconds)
    noise = 0.02 * np.random.default_rng(seed).standard_normal(t.size)
    return torch.from_numpy((tone + noise).astype(np.float32))


@pytest.mark.parametrize("experiment", ["phase1", "phase1_causal"])
def test_a_long_source_converts_in_chunks_equal_to_the_whole_file(checkpoints, experiment):
    """phase1 normalises over the whole utterance (not streamable): the chunked path keeps the
    utterance statistics and equals the whole-file conversion; converting each chunk alone (the
    control) does not."""
    import torch

    from streamvc_rvq.inference.conversion import convert, load_trained_model
    from streamvc_rvq.quantization.rvq import StageSchedule

    model, cfg, step = load_trained_model(checkpoints[experiment])
    n = StageSchedule.of(cfg["model"]).in_checkpoint(step)
    src, ref = _speechlike(6.0), _speechlike(2.0, seed=2)
    whole = convert(model, src, ref, n)
    calls = []
    chunked = convert(model, src, ref, n, chunk_frames=37, progress=lambda done, total: calls.append((done, total)))
    assert chunked.shape == whole.shape
    hop = model.hop_length
    first_flip = _first_code_flip(model, src, n, 37)
    # equal to 1e-4 up to the first frame whose code flips on a tie to float precision (the
    # chunks' content features differ from the one pass's by ~1e-6 relative: micro phase1 at
    # step 2 flips one code of 300, at frame 289, and the causal decoder carries it to the end)
    agree = slice(0, hop * (first_flip if first_flip is not None else 300))
    assert float((chunked[agree] - whole[agree]).abs().max()) <= 1e-4
    assert calls[-1][0] == calls[-1][1] == 2 * 9 and len(calls) == 18  # 300 frames: 9 chunks, two passes
    alone = torch.cat([convert(model, src[a * hop : (a + 37) * hop], ref, n) for a in range(0, 300, 37)])
    assert float((alone - whole).abs().max()) > 1e-3
    # the streaming state is left clean: the whole-file conversion again gives the same
    assert torch.equal(convert(model, src, ref, n), whole)


ROUNDING = 1e-5  # relative difference of the chunked content features from the one pass's


def _first_code_flip(model, source, num_active: int, chunk_frames: int) -> int | None:
    """The first frame whose codes differ between the one-pass content features and the chunked
    (streamed) ones, or None. Fails unless the two sets of features agree to float rounding
    (:data:`ROUNDING`, relative to their largest value) and flips are rare: a code can then flip
    only where a frame sits on the boundary between two codes to that precision."""
    import torch

    from streamvc_rvq.inference.conversion import content_in_chunks

    hop = model.hop_length
    with torch.inference_mode():
        audio = model._prepare(source.unsqueeze(0))
        frames = audio.shape[-1] // hop
        whole = model.content_encoder(audio)
        whole = whole[0] if isinstance(whole, tuple) else whole
        parts = content_in_chunks(model, audio, chunk_frames)
        assert float((whole - parts).abs().max()) <= ROUNDING * float(whole.abs().max())
        stats, valid = model.frame_masks(frames, 1, None, audio.device)
        one, other = (model.decoder.quantize(c, num_active, stats, valid)[0] for c in (whole, parts))
    flips = sorted({f for a, b in zip(one.codes, other.codes) for f in (a[0] != b[0]).nonzero().flatten().tolist()})
    assert len(flips) <= 0.01 * frames, flips
    return flips[0] if flips else None


def test_pitch_analysed_in_chunks_equals_the_whole(checkpoints):
    from streamvc_rvq.inference.conversion import load_trained_model

    model, _, _ = load_trained_model(checkpoints["phase1"])
    audio = _speechlike(3.0).unsqueeze(0)
    whole, parts = model.pitch.yin(audio), model.pitch.yin(audio, 11)
    for name in ("f0", "unvoiced", "cmnd", "energy"):
        assert torch_equal(getattr(whole, name), getattr(parts, name)), name


def torch_equal(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.allclose(a.float(), b.float(), atol=1e-5, rtol=0))


def test_experiment_without_config_is_one_line(checkpoints, wavs, tmp_path, capsys):
    code, _, err = infer(capsys, checkpoints["phase1"], wavs["stereo44k"], wavs["ref"], tmp_path / "o.wav",
                         "--experiment", "nonexistent")
    assert code == 2 and err.count("\n") == 1 and "--experiment" in err and not (tmp_path / "o.wav").exists()


def test_a_source_shorter_than_the_warm_up_gets_a_note(checkpoints, wavs, tmp_path, capsys):
    code, _, err = infer(capsys, checkpoints["phase1"], wavs["stereo44k"], wavs["ref"], tmp_path / "o.wav")
    assert code == 0 and "note:" not in err
    short = tmp_path / "short.wav"
    sf.write(short, 0.1 * np.sin(np.arange(1600) / 10).astype(np.float32), 16000)  # 0.1 s
    code, _, err = infer(capsys, checkpoints["phase1"], short, wavs["ref"], tmp_path / "o.wav")
    assert code == 0 and err.startswith("note: the source is 0.10 s")
