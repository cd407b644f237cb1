"""A checkpoint at step N was trained on steps 0..N-1: it is evaluated with those stages only."""

from __future__ import annotations

import json

from micro import micro_config
from streamvc_rvq.evaluation.evaluate import evaluate_checkpoint
from streamvc_rvq.quantization.rvq import active_quantizers, checkpoint_stages, stage_trained_steps
from streamvc_rvq.training.trainer import train_to_step


def test_checkpoint_stages_are_those_active_during_training():
    # progressive_steps 2000: stage 1 becomes active at exactly 2000, after the last step of
    # the "2k" checkpoint's training
    assert active_quantizers(2000, 8, 2000) == 2
    assert checkpoint_stages(2000, 8, 2000) == 1
    assert checkpoint_stages(2001, 8, 2000) == 2
    assert checkpoint_stages(10000, 8, 2000) == 5
    assert checkpoint_stages(0, 8, 2000) == 1
    assert checkpoint_stages(5, 8, 0) == 8
    assert [stage_trained_steps(i, 10000, 2000) for i in range(6)] == [10000, 8000, 6000, 4000, 2000, 0]


def test_evaluation_at_step_n_uses_the_stages_of_step_n_minus_1(micro_manifest, tmp_path):
    cfg = micro_config("phase1", train={"steps": [4]},  # progressive_steps 4: stage 1 starts at 4
                       evaluation={"quality_measures": ["speaker", "dnsmos", "recognition"]})
    ckpt = train_to_step(cfg, manifest=micro_manifest, step=4, output=tmp_path / "step_4.pt", device="cpu")
    out = tmp_path / "metrics.json"
    evaluate_checkpoint(cfg, checkpoint=ckpt, manifest=micro_manifest, scalars=[],
                        samples_dir=tmp_path / "samples", output=out, device="cpu")
    metrics = json.loads(out.read_text())
    assert metrics["num_active_quantizers"] == 1
    assert [s["index"] for s in metrics["stages"]] == [0]
    assert metrics["stages"][0]["trained_steps"] == 4
    assert metrics["untrained_stages"] == [{"index": 1, "trained_steps": 0}]
    # where the conversions are judged, the content path's speaker probe with its log-mel ceiling
    probe = metrics["content_speaker"]
    assert probe["num_speakers"] >= 2 and probe["log_mel"] > probe["chance"]
    # every sample output carries its quality measures against its source (and target)
    quality = metrics["outputs"]["quality"]
    assert quality["convert"]["num_outputs"] + quality["reconstruct"]["num_outputs"] == metrics["outputs"]["num_outputs"]
    # the recogniser cannot read eSpeak sources: recognition is skipped, with the reason
    assert quality["measures"] == ["speaker", "dnsmos"] and quality["seconds"]["total"] > 0
    assert quality["recognition_skipped"].startswith("skipped: the recogniser's word error")
    for sample in metrics["outputs"]["samples"]:
        assert 0.0 <= sample["voicing_agreement"] <= 1.0
        assert sample["log_f0_correlation"] is None or -1.0 <= sample["log_f0_correlation"] <= 1.0
        assert -1.0 <= sample["speaker_similarity_source"] <= 1.0
        assert "errors" not in sample and "transcript" not in sample
        if sample["kind"] == "convert":
            assert -1.0 <= sample["speaker_similarity_target"] <= 1.0
        else:
            assert "si_sdr" in sample and sample["mel_cepstral_distortion"] >= 0
    assert "recognition" not in quality["convert"]
    assert quality["convert"]["output_similarity"] is not None  # two conversions to different targets
    assert metrics["content_labels"]["valid"]["chance"] > 0  # the micro corpus's eSpeak labels
    # the conversions' content (the content head on them and on their sources) and pitch level
    content = quality["convert"]["content_labels"]
    assert content["output"]["num_frames"] > 0 and content["source"]["chance"] > 0
    level = quality["convert"]["pitch_level"]
    assert set(level) >= {"correlation_with_target", "correlation_with_source", "num_conversions", "num_without_pitch"}
    # the model, its pitch-only floor and its oracle ceiling on every held-out source, the same trials
    wide = quality["convert"]["reference_controls"]
    assert wide["num_pairs"] > quality["convert"]["num_outputs"] and set(wide) >= {"model", "timbre_only", "pitch_only", "oracle"}
    # (micro's held-out split gives each source one target: no identification, as for the samples)
    assert wide["model"]["identification"] is quality["convert"]["controls"]["identification"] is None
    assert all(set(s["median_f0"]) == {"output", "target", "source"} for s in metrics["outputs"]["samples"]
               if s["kind"] == "convert")
    # each source goes to several held-out targets, and every output is compared with each of them
    converted = [s for s in metrics["outputs"]["samples"] if s["kind"] == "convert"]
    targets_of = {}
    for s in converted:
        targets_of.setdefault(s["source"], set()).add(s["target_speaker"])
        assert set(s["similarity_to_targets"]) == targets_of[s["source"]] | set(s["similarity_to_targets"])
        assert s["target_speaker"] in s["similarity_to_targets"]
    heldout = {s["target_speaker"] for s in converted} | {t for ts in targets_of.values() for t in ts}
    assert all(len(t) == min(3, len(heldout) - 1) for t in targets_of.values())  # the micro corpus holds out 2
    controls = quality["convert"]["controls"]
    assert controls["targets_per_source"] == min(3, len(heldout) - 1) == 1 and controls["towards_target"] is None
    # the model's own encoder judges the same conversions (no second target here: nothing to pick from)
    assert "identified_by_model" in quality["convert"] and quality["convert"]["identified_by_model"] is None
    # the model's own speaker embedding, measured over pairs of held-out utterances
    separation = metrics["speaker_embedding"]
    assert separation["num_speakers"] >= 2 and 0.0 <= separation["auc"] <= 1.0
    # per-utterance validation losses pair up between checkpoints (the verdict's noise allowance)
    per = metrics["validation"]["per_utterance"]
    assert len(per["loss_l1"]) == metrics["validation"]["num_utterances"]
    assert abs(sum(per["loss_l1"]) / len(per["loss_l1"]) - metrics["validation"]["loss_l1"]) < 1e-9

    # a checkpoint whose role reads only DNSMOS (the workflow's --quality-measures): the rest equal
    only = evaluate_checkpoint(cfg, checkpoint=ckpt, manifest=micro_manifest, scalars=[], samples_dir=tmp_path / "s2",
                               output=tmp_path / "m2.json", device="cpu", quality_measures=["dnsmos"])
    assert only["outputs"]["quality"]["measures"] == ["dnsmos"]
    assert only["outputs"]["quality"]["convert"]["dnsmos"] == quality["convert"]["dnsmos"]
    assert not any("speaker_similarity_source" in s for s in only["outputs"]["samples"])
    assert "controls" not in only["outputs"]["quality"]["convert"] and "recognition_skipped" not in only["outputs"]["quality"]
    assert only["stages"] == metrics["stages"] and only["validation"] == metrics["validation"]


def test_the_stage_schedule_answers_for_training_evaluation_and_inference():
    """One home for "stages at step N": the schedule of a config equals the pure functions it wraps."""
    from streamvc_rvq.quantization.rvq import StageSchedule

    schedule = StageSchedule.of({"rvq": {"num_quantizers": 8, "progressive_steps": 2000}})
    assert [schedule.active_at(s) for s in (0, 1999, 2000, 20000)] == [1, 1, 2, 8]
    assert [schedule.in_checkpoint(s) for s in (0, 2000, 2001, 10000)] == [1, 1, 2, 5]
    assert schedule.trained_steps(1, 10000) == 8000 and schedule.trained_steps(5, 10000) == 0
    assert StageSchedule(3, 0).active_at(0) == 3 and StageSchedule(3, 0).in_checkpoint(5) == 3
