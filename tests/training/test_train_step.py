"""One training step's scalars: Python floats for the logger, converted in one place."""

from __future__ import annotations

import pytest
import torch

from micro import EVERY_ARM, micro_config
from streamvc_rvq.data.dataset import load_utterances
from streamvc_rvq.training.trainer import Trainer, build_state


def test_train_step_returns_python_floats_for_every_tag(micro_manifest):
    cfg = micro_config("phase2_gan")
    state = build_state(cfg, torch.device("cpu"))
    trainer = Trainer(cfg, state, torch.device("cpu"))
    state.model.train()
    utterances = load_utterances(micro_manifest, "train", labels="manifest")
    scalars = trainer.train_step(trainer.batch(utterances, 0), 0)
    assert {"train/loss_total", "train/loss_feature_matching", "train/loss_discriminator", "train/grad_norm",
            "train/pre_rvq_std", "train/rvq_perplexity_q0", "train/rvq_redrawn_q0"} <= set(scalars)
    assert all(type(value) is float for value in scalars.values()), {k: type(v) for k, v in scalars.items()}


def _speaker_grad(micro_manifest, weights: dict) -> tuple[dict, float]:
    cfg = micro_config("phase1", train={"loss_weights": weights})
    torch.manual_seed(0)
    state = build_state(cfg, torch.device("cpu"))
    trainer = Trainer(cfg, state, torch.device("cpu"))
    state.model.train()
    utterances = load_utterances(micro_manifest, "train", labels="manifest")
    batch = trainer.batch(utterances, 0)
    assert len(set(batch.speakers)) > 1  # the loss has speakers to tell apart
    scalars = trainer.train_step(batch, 0)  # the step's gradients stay on the parameters until the next
    grad = sum(float(p.grad.abs().sum()) for p in state.model.speaker_encoder.parameters() if p.grad is not None)
    return scalars, grad


def test_speaker_loss_is_logged_and_alone_moves_the_speaker_encoder(micro_manifest):
    """The lever acts: with every other loss off, loss_speaker alone gives the speaker encoder a
    gradient; with its weight 0 too, nothing does (and the term is not logged)."""
    off = {"stft": 0.0, "l1": 0.0, "rvq": 0.0, "content_ce": 0.0, "speaker_consistency": 0.0}
    scalars, grad = _speaker_grad(micro_manifest, {**off, "speaker": 1.0})
    assert scalars["train/loss_speaker"] > 0 and grad > 0
    scalars, grad = _speaker_grad(micro_manifest, {**off, "rvq": 1.0, "speaker": 0.0})
    assert "train/loss_speaker" not in scalars and grad == 0


def test_speaker_consistency_teaches_the_decoder_and_never_the_quantizer(micro_manifest):
    """The lever acts where it claims: alone, loss_speaker_consistency moves FiLM (the decoder's
    use of the target voice) and leaves the pre-RVQ encoder and the codebooks untouched (the
    codes are detached: the codebook question stays the reconstruction's)."""
    off = {"stft": 0.0, "l1": 0.0, "rvq": 0.0, "content_ce": 0.0, "speaker": 0.0}
    cfg = micro_config("phase1", train={"loss_weights": {**off, "speaker_consistency": 1.0}})
    torch.manual_seed(0)
    state = build_state(cfg, torch.device("cpu"))
    trainer = Trainer(cfg, state, torch.device("cpu"))
    state.model.train()
    batch = trainer.batch(load_utterances(micro_manifest, "train", labels="manifest"), 0)
    scalars = trainer.train_step(batch, 0)
    assert scalars["train/loss_speaker_consistency"] > 0

    def grad(module) -> float:
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    decoder = state.model.decoder
    assert grad(decoder.films) > 0 and grad(decoder.blocks) > 0
    assert grad(decoder.pre_rvq) == 0 and grad(decoder.rvq) == 0 and grad(state.model.content_encoder) == 0
    assert all(p.requires_grad for p in state.model.speaker_encoder.parameters())  # held only for the judging pass


def test_speaker_consistency_rows_convert_only_those_rows_and_each_as_the_whole_batch_does(micro_manifest):
    """The cost lever: ``speaker_consistency_rows`` K converts the first K rows only, each row the
    same conversion (its own codes and pitch, the previous row's voice) as in a whole-batch pass."""
    cfg = micro_config("phase1", train={"speaker_consistency_rows": 1})
    torch.manual_seed(0)
    state = build_state(cfg, torch.device("cpu"))
    trainer = Trainer(cfg, state, torch.device("cpu"))
    batch = trainer.batch(load_utterances(micro_manifest, "train", labels="manifest"), 0)
    model = state.model.eval()
    with torch.no_grad():
        out = model(batch.source, batch.reference, 1, lengths=batch.lengths)
        order = torch.roll(torch.arange(len(batch.speakers)), 1)
        whole, sub = model.reconvert(out, order), model.reconvert(out, order[:1])
    assert len(batch.speakers) > 1 and sub.shape[0] == 1
    torch.testing.assert_close(sub, whole[:1], rtol=1e-5, atol=1e-6)
    seen = []
    hook = model.speaker_encoder.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    model.train()
    trainer.train_step(batch, 0)
    hook.remove()
    assert seen[-1] == 1  # the judging pass saw the converted sub-batch only


@pytest.mark.parametrize("pitch", ["reference", "source"])
def test_reconstruction_pitch_sets_the_excitation_f0_the_losses_compare_against(micro_manifest, pitch):
    """``train.reconstruction_pitch``: at ``source`` the training excitation's f0 is the source's own (Yin's, to
    rounding); at ``reference`` it is the source's contour at the reference crop's level, several per cent
    off on real speech: the input on which the harmonics above ~1 kHz land between the target's."""
    cfg = micro_config("phase1", train={"reconstruction_pitch": pitch})
    torch.manual_seed(0)
    state = build_state(cfg, torch.device("cpu"))
    trainer = Trainer(cfg, state, torch.device("cpu"))
    utterances = load_utterances(micro_manifest, "train", labels="manifest")
    model, ratios = state.model.eval(), []
    for step in range(4):
        batch = trainer.batch(utterances, step)
        with torch.no_grad():
            out = trainer.forward(batch, batch.source, trainer.active_stages(step))
            features = model.pitch(batch.source)
            excitation_f0 = model.pitch.target_f0(model.pitch.retarget(features, out.pitch_level))
            own_f0 = model.pitch.target_f0(model.pitch.retarget(features, model.pitch_statistics(batch.source)))
        voiced = (excitation_f0 > 0) & (own_f0 > 0)
        ratios.append(excitation_f0[voiced] / own_f0[voiced])
    ratios = torch.cat(ratios)
    assert ratios.numel() > 50
    error = float(ratios.log().abs().median())
    if pitch == "source":
        assert error < 1e-4
    else:
        assert error > 0.01


def test_speaker_consistency_is_on_in_every_arm_by_default():
    """On in the control too: it never reaches the quantizer, so phase1 and baseline still differ by the RVQ fix alone."""
    for arm in ("phase1", "baseline"):
        assert micro_config(arm)["train"]["loss_weights"]["speaker_consistency"] == 1.0


def test_codebook_lr_scale_moves_the_codebooks_that_much_slower(micro_manifest):
    """The lever reaches the codebooks: after one AdamW step from the same state, a 0.1 scale
    moves every codebook 0.1 x as far, and the rest of the model as far as with 1.0."""
    moves = {}
    for scale in (1.0, 0.1):
        cfg = micro_config("phase1", model={"rvq": {"codebook_lr_scale": scale}})
        state = build_state(cfg, torch.device("cpu"))
        trainer = Trainer(cfg, state, torch.device("cpu"))
        state.model.train()
        rvq, decoder_conv = state.model.decoder.rvq, state.model.decoder.output_conv
        before = [p.detach().clone() for p in rvq.codebook_parameters()] + [decoder_conv.weight.detach().clone()]
        trainer.train_step(trainer.batch(load_utterances(micro_manifest, "train", labels="manifest"), 30), 30)
        after = [p.detach() for p in rvq.codebook_parameters()] + [decoder_conv.weight.detach()]
        moves[scale] = [float((a - b).abs().sum()) for a, b in zip(after, before)]
        assert len(state.optimizer.param_groups) == (1 if scale == 1.0 else 2)
    *codebooks, rest = zip(moves[1.0], moves[0.1])
    stage0 = codebooks[0]
    assert stage0[0] > 0 and stage0[1] / stage0[0] == pytest.approx(0.1, rel=0.05)
    assert rest[1] == pytest.approx(rest[0], rel=1e-4)


def test_codebook_lr_scale_needs_a_gradient_codebook():
    from streamvc_rvq.quantization.rvq import ResidualVectorQuantizer

    with pytest.raises(ValueError, match="codebook_update: gradient"):
        ResidualVectorQuantizer(codebook_update="ema", codebook_lr_scale=0.1)


@pytest.mark.parametrize("arm", EVERY_ARM)
def test_every_ladder_arm_trains_past_its_second_stage_and_converts(micro_manifest, arm):
    """Each remedy runs through the real model: training steps past the second stage's start
    (progressive RVQ), code statistics of every active stage, then an eval-mode conversion whose
    codes decode to the quantized value."""
    from streamvc_rvq.quantization.build import unavailable_reason

    cfg = micro_config(arm)
    if unavailable_reason(cfg["model"]["rvq"]):
        pytest.skip(unavailable_reason(cfg["model"]["rvq"]))
    torch.manual_seed(0)
    state = build_state(cfg, torch.device("cpu"))
    trainer = Trainer(cfg, state, torch.device("cpu"))
    state.model.train()
    utterances = load_utterances(micro_manifest, "train", labels="manifest")
    step = cfg["model"]["rvq"]["progressive_steps"] + 1
    trainer.init_codebooks(utterances, step)
    scalars = trainer.train_step(trainer.batch(utterances, step), step)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in scalars.items() if "perplexity" in k)
    assert scalars["train/rvq_perplexity_q1"] >= 1.0
    model = state.model.eval()
    x = utterances[0].audio[: 20 * model.hop_length].unsqueeze(0)
    active = trainer.active_stages(step)  # the trained stages, as evaluation runs them
    with torch.no_grad():
        out = model(x, x, active)
        assert len(out.rvq.codes) == active == 2 and torch.isfinite(out.audio).all()
        valid = out.valid[0]  # the library arm passes warm-up frames through unquantized (library_rvq.py)
        assert bool(valid.any())
        torch.testing.assert_close(model.decoder.rvq.decode(out.rvq.codes)[0][:, valid], out.rvq.quantized[0][:, valid],
                                   atol=1e-4, rtol=1e-4)


def test_train_settings_are_the_schemas_train_keys_typed_once():
    """TrainSettings has exactly the schema's train keys; a key a config lacks takes the schema's
    default, an unknown key is one line naming it."""
    from dataclasses import fields
    from importlib.resources import files

    import yaml

    from streamvc_rvq.training.settings import TrainSettings

    schema = yaml.safe_load(files("streamvc_rvq").joinpath("schema.yaml").read_text())
    assert {f.name for f in fields(TrainSettings)} == set(schema["properties"]["train"]["properties"])
    cfg = micro_config("phase1")["train"]
    settings = TrainSettings.of(cfg)
    assert settings.steps == tuple(cfg["steps"]) and settings.betas == tuple(cfg["betas"])
    assert settings.loss_weights["speaker_consistency"] == cfg["loss_weights"]["speaker_consistency"]
    older = {k: v for k, v in cfg.items() if k != "speaker_consistency_rows"}
    assert TrainSettings.of(older).speaker_consistency_rows == 0
    with pytest.raises(ValueError, match="unknown train setting"):
        TrainSettings.of({**cfg, "learning_rate": 1e-3})
