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
    from streamvc_rvq.data.audio import load_audio
    from streamvc_rvq.inference.conversion import convert, load_trained_model
    from streamvc_rvq.quantization.rvq import StageSchedule

    model, cfg, step = load_trained_model(checkpoints["phase1_causal"])
    src, ref = load_audio(wavs["stereo44k"]), load_audio(wavs["ref"])
    n = StageSchedule.of(cfg["model"]).in_checkpoint(step)
    diff = (convert(model, src, ref, n) - convert(model, src, ref, n, stream=True)).abs().max()
    assert float(diff) <= 1e-4


def test_stream_is_refused_for_utterance_normalisation(checkpoints, wavs, tmp_path, capsys):
    code, _, err = infer(capsys, checkpoints["phase1"], wavs["stereo44k"], wavs["ref"], tmp_path / "o.wav", "--stream")
    assert code == 2 and "utterance" in err
