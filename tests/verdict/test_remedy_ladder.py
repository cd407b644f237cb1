"""The remedy ladder's ranking, its statement and the cross-check pairing (pure functions), and
the ladder command on real micro-scale files."""

import json

import pytest

from streamvc_rvq.verdict.remedy_ladder import COLLAPSE_CRITERIA, rank_key, rank_ladder

OTHER = ("1k.loss_stft_falling", "10k.loss_l1_improving", "last.towards_target")


def verdict(cls: str, failed=(), unevaluated=()) -> dict:
    ids = COLLAPSE_CRITERIA + OTHER
    crit = [{"id": cid, "passed": None if cid in unevaluated else cid not in failed} for cid in ids]
    return {"class": cls, "branch": cls, "criteria": crit}


def metrics(step: int, ppl: float, ovrl: float | None = None, size: int = 1024, used: int | None = None) -> dict:
    used = size // 2 if used is None else used
    cp = {"step": step, "num_active_quantizers": 2,
          "stages": [{"index": 0, "perplexity": ppl, "usage": used / size, "top_code_share": 0.1,
                      "codes_used": used, "dead_codes": size - used},
                     {"index": 1, "perplexity": ppl / 2, "usage": 0.4, "top_code_share": 0.1}],
          "validation": {"loss_stft": 20.0}}
    if ovrl is not None:
        cp["outputs"] = {"quality": {"convert": {"dnsmos": {"ovrl": ovrl}, "towards_target_margin": 0.01}}}
    return cp


def run(cls, ppl, failed=(), ovrl=None):
    return verdict(cls, failed), [metrics(10, ppl * 2, ovrl), metrics(20, ppl, ovrl)]


def test_an_arm_whose_later_stages_go_unused_has_not_fixed_the_collapse():
    """The quick ladder's phase2_codebook_lr: every perplexity criterion passed, the active
    stages' usage failed at 5k and 10k. It must not count as a fix."""
    unused = ("5k.usage_active_stages", "10k.usage_active_stages")
    ladder = rank_ladder({"phase2_codebook_lr": {0: run("partial", 12.0, failed=unused)},
                          "phase2_dead_code": {0: run("success", 600.0)}}, reference="phase1")
    assert ladder["fixed"] == ["phase2_dead_code"]
    lr = next(s for s in ladder["ranking"] if s["arm"] == "phase2_codebook_lr")
    assert lr["collapse_failed"] == list(unused) and not lr["fixed"]


def test_a_bigger_but_emptier_codebook_does_not_rank_first():
    """Micro's case: residual FSQ's 1000-point grid with 210 points used and perplexity 77.5
    against a 32-code codebook using all 32 at perplexity 30. By raw perplexity (the control, the
    old last key) FSQ wins; as a share of its codebook it is the emptier one and ranks second."""
    native = (verdict("partial"), [metrics(10, 31.0, size=32, used=32), metrics(20, 30.0, size=32, used=32)])
    fsq = (verdict("partial"), [metrics(10, 80.0, size=1000, used=215), metrics(20, 77.5, size=1000, used=210)])
    ladder = rank_ladder({"phase2_ema": {0: native}, "phase2_fsq": {0: fsq}}, reference="phase1")
    assert [s["arm"] for s in ladder["ranking"]] == ["phase2_ema", "phase2_fsq"]
    by = {s["arm"]: s for s in ladder["ranking"]}
    assert by["phase2_fsq"]["perplexity_q0"] > by["phase2_ema"]["perplexity_q0"]  # raw: FSQ would win
    assert by["phase2_fsq"]["codebook_size_q0"] == 1000 and by["phase2_ema"]["perplexity_share_q0"] > 0.95
    assert {"key": "perplexity_share_q0", "better": "higher"} in ladder["rank_keys"]


def test_a_collapsed_arm_ranks_below_a_healthy_one_and_the_statement_names_the_fix():
    ladder = rank_ladder({
        "phase1": {0: run("failure", 1.0, failed=("2k.perplexity_q0_stable", "10k.perplexity_active_stages"))},
        "phase2_ema": {0: run("partial", 40.0, failed=("10k.loss_l1_improving",))},
    }, reference="phase1")
    assert [s["arm"] for s in ladder["ranking"]] == ["phase2_ema", "phase1"]
    assert ladder["fixed"] == ["phase2_ema"]
    assert ladder["statement"].startswith("Fixed the collapse") and "phase2_ema" in ladder["statement"]
    assert ladder["ranking"][1]["collapse_failed"] == ["2k.perplexity_q0_stable", "10k.perplexity_active_stages"]


def test_an_arm_fixes_the_collapse_only_when_every_seed_does():
    ladder = rank_ladder({
        "phase1": {0: run("failure", 1.0, failed=COLLAPSE_CRITERIA)},
        "phase2_cosine": {0: run("partial", 30.0), 1: run("partial", 3.0, failed=("10k.perplexity_active_stages",))},
    }, reference="phase1")
    cosine = next(s for s in ladder["ranking"] if s["arm"] == "phase2_cosine")
    assert cosine["fixed"] is False and cosine["seeds"] == [0, 1]
    assert cosine["perplexity_q0"] == pytest.approx(16.5)  # mean over seeds
    assert ladder["fixed"] == []
    assert ladder["statement"].startswith("No remedy fixed the collapse") and "phase2_cosine" in ladder["statement"]


def test_codebook_health_then_quality_break_a_tie_on_the_criteria_and_missing_quality_ranks_last():
    """Tied on the criteria: the healthier codebook first (the ladder's question), then quality;
    an arm whose quality was not measured ranks after those with the same codebook health."""
    ladder = rank_ladder({
        "a": {0: run("partial", 20.0, ovrl=1.2)},
        "b": {0: run("partial", 20.0, ovrl=2.0)},
        "c": {0: run("partial", 90.0)},  # the healthiest codebook, no quality measured
        "d": {0: run("partial", 20.0)},  # a's and b's codebook, no quality measured
    })
    assert [s["arm"] for s in ladder["ranking"]] == ["c", "b", "a", "d"]
    assert [s["rank"] for s in ladder["ranking"]] == [1, 2, 3, 4]


def test_the_class_outranks_everything_after_it():
    good = {"arm": "x", "class_rank": 1.0, "collapse_passed_share": 0.5}
    better = {"arm": "y", "class_rank": 2.0, "collapse_passed_share": 0.1}
    assert rank_key(better) < rank_key(good)


def test_cross_check_pairs_the_library_arm_with_its_native_twin_and_reports_disagreement():
    native = {"model": {"rvq": {"codebook_update": "ema", "implementation": "native"}}, "train": {"seed": 0}}
    library = {"model": {"rvq": {"codebook_update": "ema", "implementation": "vector_quantize_pytorch"}},
               "train": {"seed": 0}}
    other = {"model": {"rvq": {"codebook_update": "gradient", "implementation": "native"}}, "train": {"seed": 0}}
    fsq = {"model": {"rvq": {"codebook_update": "ema", "implementation": "fsq"}}, "train": {"seed": 0}}
    runs = {"encodec": {0: run("partial", 30.0)}, "library": {0: run("failure", 1.0, failed=COLLAPSE_CRITERIA)},
            "plain": {0: run("partial", 30.0)}, "fsq": {0: run("partial", 30.0)}}
    ladder = rank_ladder(runs, {"encodec": native, "library": library, "plain": other, "fsq": fsq})
    (check,) = ladder["cross_checks"]  # FSQ is another quantizer, not a cross-check of ours
    assert (check["arm"], check["native_arm"], check["agree"]) == ("library", "encodec", False)
    runs["library"] = {0: run("partial", 28.0)}
    assert rank_ladder(runs, {"encodec": native, "library": library, "plain": other, "fsq": fsq})["cross_checks"][0]["agree"] is True


def test_ladder_command_writes_json_report_and_plots(tmp_path, capsys):
    from streamvc_rvq.cli import main

    files = {"verdicts": [], "metrics": []}
    for arm, ppl in (("phase1", 1.0), ("phase2_ema", 30.0)):
        v, cps = run("failure" if ppl < 2 else "partial", ppl, failed=COLLAPSE_CRITERIA if ppl < 2 else ())
        v["experiment"] = arm
        (tmp_path / arm / "metrics").mkdir(parents=True)
        (tmp_path / arm / "verdict.json").write_text(json.dumps(v))
        files["verdicts"].append(str(tmp_path / arm / "verdict.json"))
        for cp in cps:
            cp.update(experiment=arm, seed=0)
            path = tmp_path / arm / "metrics" / f"step_{cp['step']}.json"
            path.write_text(json.dumps(cp))
            files["metrics"].append(str(path))
    out = tmp_path / "compare"
    assert main(["ladder", "--arms", "phase1", "phase2_ema", "--verdicts", *files["verdicts"],
                 "--metrics", *files["metrics"], "--skipped", "phase2_encodec_library=not installed",
                 "--output", str(out / "remedies.json"), "--report", str(out / "remedies.md"),
                 "--plots-dir", str(out / "plots")]) == 0
    ladder = json.loads((out / "remedies.json").read_text())
    assert ladder["fixed"] == ["phase2_ema"] and ladder["skipped"] == {"phase2_encodec_library": "not installed"}
    report = (out / "remedies.md").read_text()
    assert "Left out: `phase2_encodec_library`" in report and "| 1 | `phase2_ema` |" in report
    assert "frame-rate tone over sources (dB)" in report and "identified minus pitch-only" in report
    assert {p.name for p in (out / "plots").glob("*.png")} == {"perplexity.png", "usage.png"}
    assert "phase2_ema" in capsys.readouterr().out


def test_the_ladder_ranks_by_the_codebook_answer_not_the_top_level_class():
    """A remedy whose codebook held but whose conversions fail (top class failure) ranks above one
    whose codebook is partial (top class partial, conversion not evaluable)."""
    held, _ = run("failure", 40.0)
    held.update(codebook={"class": "success"}, conversion={"class": "failure"})
    partial, _ = run("partial", 40.0)
    partial.update(codebook={"class": "partial"}, conversion={"class": "not_evaluable"})
    ladder = rank_ladder({
        "phase1": {0: (partial, [metrics(10, 80.0), metrics(20, 40.0)])},
        "phase2_encodec": {0: (held, [metrics(10, 80.0), metrics(20, 40.0)])},
    }, reference="phase1")
    assert [s["arm"] for s in ladder["ranking"]] == ["phase2_encodec", "phase1"]
    assert ladder["ranking"][0]["classes"] == ["success"]


# ------------------------------------------------------------------ Phase 2: the winner with the GAN on

GAN = {"adversarial": 1.0, "feature_matching": 2.0}
GENERATOR = {"model": {"decoder": {"upsample": "repeat"}}, "train": {"loss_weights": GAN}}  # config.yaml's phase2_gan_repeat


def _configs(**rvq_of_arm):
    base = {"codebook_update": "gradient", "dead_code_threshold": 0.0, "codebook_size": 1024}
    return {arm: {"model": {"rvq": {**base, **rvq}, "decoder": {"channels": 8}}, "train": {"seed": 0}}
            for arm, rvq in rvq_of_arm.items()}


def test_phase2_overlay_runs_the_winner_quantizer_in_the_generator_and_nothing_else():
    from streamvc_rvq.verdict.remedy_ladder import phase2_overlay

    ladder = rank_ladder({"phase1": {0: run("partial", 10.0)}, "phase2_ema": {0: run("success", 40.0)}},
                         reference="phase1")
    configs = _configs(phase1={}, phase2_ema={"codebook_update": "ema"})
    overlay = phase2_overlay(ladder, configs, GENERATOR)
    assert overlay == {"experiments": {"phase2": {"train": {"loss_weights": GAN},
                                                  "model": {"decoder": {"upsample": "repeat"},
                                                            "rvq": {"codebook_update": "ema"}}}},
                       "verdict": {"experiment": "phase2"}}
    assert GENERATOR == {"model": {"decoder": {"upsample": "repeat"}}, "train": {"loss_weights": GAN}}  # not changed
    # the reference itself winning: the GAN on phase1's quantizer, no model change
    ladder = rank_ladder({"phase1": {0: run("success", 40.0)}, "phase2_ema": {0: run("failure", 1.0)}},
                         reference="phase1")
    assert phase2_overlay(ladder, configs, GENERATOR)["experiments"]["phase2"] == GENERATOR


def test_the_workflow_runs_phase2_in_the_measured_generator():
    """phase2.yaml's generator is config.yaml's phase2_gan_repeat: the GAN losses of phase2_gan
    (one home, a YAML anchor) with the repeat upsampler."""
    from micro import ROOT
    from streamvc_rvq.config import load_config

    experiments = load_config(ROOT / "config" / "config.yaml")["experiments"]
    assert experiments["phase2_gan_repeat"] == GENERATOR
    assert experiments["phase2_gan_repeat"]["train"] == experiments["phase2_gan"]["train"]
    assert "phase2_gan_repeat" in (ROOT / "rules" / "common.smk").read_text()


def test_ranking_certainty_calls_a_first_place_within_the_seed_spread_a_tie():
    two = lambda a, b: {0: run("partial", a), 1: run("partial", b)}  # noqa: E731
    close = rank_ladder({"phase1": two(30.0, 50.0), "phase2_ema": two(38.0, 46.0)}, reference="phase1")
    assert close["certainty"]["tie"] is True and "a tie" in close["certainty"]["text"]
    clear = rank_ladder({"phase1": two(10.0, 11.0), "phase2_ema": two(80.0, 81.0)}, reference="phase1")
    assert clear["certainty"]["tie"] is False and clear["certainty"]["top"] == "phase2_ema"
    one = rank_ladder({"phase1": {0: run("partial", 10.0)}, "phase2_ema": {0: run("partial", 40.0)}}, reference="phase1")
    assert one["certainty"]["tie"] is None and "no seed-noise allowance" in one["certainty"]["text"]


def test_phase2_yaml_validates_and_trains_a_micro_checkpoint_with_the_gan_on(tmp_path, micro_manifest):
    """The overlay the ladder writes is a --configfile the pipeline accepts: it validates, and a
    micro run of its experiment builds a checkpoint with the discriminator in it."""
    import torch
    import yaml

    from micro import CONFIG_FILES
    from streamvc_rvq.config import load_config, resolve_experiment
    from streamvc_rvq.verdict.judge import write_phase2_overlay
    from streamvc_rvq.training.trainer import train_to_step

    ladder = rank_ladder({"phase1": {0: run("partial", 10.0)}, "phase2_simvq": {0: run("success", 40.0)}},
                         reference="phase1")
    path = tmp_path / "phase2.yaml"
    write_phase2_overlay(path, ladder, _configs(phase1={}, phase2_simvq={"codebook_update": "simvq"}), GENERATOR)
    text = path.read_text()
    assert text.startswith("# Phase 2") and "phase2_simvq" in text and "no seed-noise allowance" in text
    assert yaml.safe_load(text)["verdict"] == {"experiment": "phase2"}
    cfg = resolve_experiment(load_config(*CONFIG_FILES, path), "phase2")  # validated against the schema
    assert cfg["model"]["rvq"]["codebook_update"] == "simvq" and cfg["train"]["loss_weights"]["adversarial"] == 1.0
    assert cfg["model"]["decoder"]["upsample"] == "repeat"
    out = train_to_step(cfg, manifest=micro_manifest, step=2, output=tmp_path / "step_2.pt", device="cpu")
    payload = torch.load(out, weights_only=True)
    assert "disc_optimizer" in payload and payload["config"]["model"]["rvq"]["codebook_update"] == "simvq"


def test_an_arm_whose_trick_never_acted_is_named_and_one_that_acted_is_not():
    from streamvc_rvq.reporting.ladder_report import trick_lines

    base = {"model": {"rvq": {"straight_through": "identity", "dead_code_threshold": 0.0}}}
    dead = {"model": {"rvq": {"straight_through": "identity", "dead_code_threshold": 0.4}}}
    rotation = {"model": {"rvq": {"straight_through": "rotation", "dead_code_threshold": 0.0}}}
    runs = {"phase1": {0: run("partial", 8.0)}, "dead": {0: run("partial", 8.0)}, "rot": {0: run("partial", 8.0)}}
    configs = {"phase1": base, "dead": dead, "rot": rotation}
    # the micro failure: no code ever redrawn; a rotation of a fraction of a degree
    idle = {"dead": {"train/rvq_redrawn_q0": [(1, 0.0), (2, 0.0)], "train/rvq_redrawn_q1": [(2, 0.0)]},
            "rot": {"train/rvq_rotation_angle_q0": [(1, 20.0), (2, 0.4)]}}
    ladder = rank_ladder(runs, configs, reference="phase1", scalars=idle)
    assert {(t["arm"], t["trick"]) for t in ladder["idle_tricks"]} == {
        ("dead", "dead_code_threshold: 0.4"), ("rot", "straight_through: rotation")}
    assert "did not act" in "\n".join(trick_lines(ladder))
    acting = {"dead": {"train/rvq_redrawn_q0": [(1, 0.0), (2, 0.0)], "train/rvq_redrawn_q1": [(2, 0.03)]},
              "rot": {"train/rvq_rotation_angle_q0": [(1, 0.4), (2, 12.0)]}}
    ladder = rank_ladder(runs, configs, reference="phase1", scalars=acting)
    assert ladder["idle_tricks"] == []
    tricks = {s["arm"]: s["tricks"] for s in ladder["ranking"] if s["arm"] != "phase1"}
    assert tricks["dead"][0]["value"] == pytest.approx(0.03) and tricks["rot"][0]["value"] == 12.0
    # nothing logged: not known, not "did not act"
    ladder = rank_ladder(runs, configs, reference="phase1", scalars={})
    assert ladder["idle_tricks"] == [] and all(t["acted"] is None for s in ladder["ranking"] for t in s.get("tricks", []))


def test_each_arm_shows_its_frame_rate_tone_and_identification_beyond_pitch_without_ranking_on_them():
    toned, clean = run("partial", 30.0, ovrl=2.0), run("partial", 30.0, ovrl=2.0)
    for (_, cps), excess, model in ((toned, 17.0, 0.67), (clean, 2.8, 0.79)):
        cps[-1]["outputs"]["quality"]["convert"].update(frame_tone={"excess_db": excess}, reference_controls={
            "model": {"identification": {"rate": model}}, "pitch_only": {"identification": {"rate": 0.6}}})
    ladder = rank_ladder({"phase1": {0: toned}, "phase1_repeat_upsample": {0: clean}})
    by_arm = {s["arm"]: s for s in ladder["ranking"]}
    assert by_arm["phase1"]["frame_tone_excess_db"] == 17.0 and by_arm["phase1_repeat_upsample"]["frame_tone_excess_db"] == 2.8
    assert by_arm["phase1"]["beyond_pitch_margin"] == pytest.approx(0.07)
    assert by_arm["phase1_repeat_upsample"]["beyond_pitch_margin"] == pytest.approx(0.19)
    # equal on every ranking key: the tone and the margin (both better in the second arm) break no tie
    assert [s["arm"] for s in ladder["ranking"]] == ["phase1", "phase1_repeat_upsample"]


def test_cross_check_agreement_is_the_codebook_question_within_the_seed_spread():
    """The quick ladder's case: both implementations fix the collapse on seeds 0-2 at the same
    stage-0 share, the native arm's seed 2 partial on a training-curve criterion
    (`1k.loss_stft_falling`): they agree. The control: the library's stage 0 far under the
    native one's beyond the seeds' spread, every seed still a fix: they disagree."""
    native = {"model": {"rvq": {"codebook_update": "ema", "implementation": "native"}}, "train": {"seed": 0}}
    library = {"model": {"rvq": {"codebook_update": "ema", "implementation": "vector_quantize_pytorch"}},
               "train": {"seed": 0}}
    configs = {"encodec": native, "library": library}
    runs = {"encodec": {0: run("success", 640.0), 1: run("success", 690.0),
                        2: run("partial", 600.0, failed=("1k.loss_stft_falling",))},
            "library": {0: run("success", 630.0), 1: run("success", 590.0), 2: run("success", 655.0)}}
    from streamvc_rvq.reporting.ladder_report import cross_check_lines

    ladder = rank_ladder(runs, configs)
    (check,) = ladder["cross_checks"]
    assert check["agree"] is True and check["classes"]["encodec"] != check["classes"]["library"]
    assert abs(check["margin_perplexity_share_q0"]) <= check["seed_spread"]
    assert "agrees with `encodec`" in cross_check_lines(ladder)[0] and "within the seed spread" in cross_check_lines(ladder)[0]
    runs["library"] = {0: run("success", 300.0), 1: run("success", 310.0), 2: run("success", 305.0)}
    ladder = rank_ladder(runs, configs)
    (check,) = ladder["cross_checks"]
    assert check["fixed"] == {"library": True, "encodec": True} and check["agree"] is False
    assert abs(check["margin_perplexity_share_q0"]) > check["seed_spread"]
    assert "DISAGREES with `encodec`" in cross_check_lines(ladder)[0] and "beyond the seed spread" in cross_check_lines(ladder)[0]
