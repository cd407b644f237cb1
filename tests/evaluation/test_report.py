"""Plots (valid, non-empty PNG files) and the Markdown reports."""

import re
from pathlib import Path

import pytest

from streamvc_rvq.evaluation.comparison import compare_arms, control_comparison
from streamvc_rvq.evaluation.report import (
    plot_ab,
    plot_codebook,
    plot_losses,
    plot_pre_rvq_std,
    write_ab_report,
    write_verdict_report,
)
from streamvc_rvq.evaluation.verdict import decide

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEPS = [1000, 2000, 5000, 10000]


def assert_png(path: Path):
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 2000, (path, len(data))
    # IHDR: width and height are non-zero
    assert int.from_bytes(data[16:20], "big") > 100 and int.from_bytes(data[20:24], "big") > 100


def scalars_for(max_step=10000, every=100):
    s = {}
    for step in range(0, max_step + 1, every):
        active = min(8, 1 + step // 2000)
        s.setdefault("train/loss_stft", []).append((step, 5.0 - step / 5000))
        s.setdefault("train/loss_l1", []).append((step, 0.1 - step / 300000))
        s.setdefault("train/pre_rvq_std", []).append((step, 1.0 + 0.02 * ((step // 100) % 3 - 1)))
        for i in range(active):
            s.setdefault(f"train/rvq_perplexity_q{i}", []).append((step, 2.0 + step / 400 - i))
            s.setdefault(f"train/rvq_usage_q{i}", []).append((step, 0.01 + step / 50000))
    return s


@pytest.mark.parametrize("with_scalars", [True, False])
def test_plots_are_valid_pngs(tmp_path, healthy_run, with_scalars):
    cps = healthy_run()
    sc = scalars_for() if with_scalars else None
    for fn, name in ((plot_codebook, "codebook.png"), (plot_pre_rvq_std, "pre_rvq_std.png"),
                     (plot_losses, "losses.png")):
        out = fn(cps, sc, tmp_path / "plots" / name)
        assert out == tmp_path / "plots" / name
        assert_png(out)


def test_verdict_report(tmp_path, healthy_run, make_cp, hist):
    cps = healthy_run()
    verdict = decide(cps, steps=STEPS, progressive_steps=2000)
    control = control_comparison(cps, [make_cp(s, counts=[hist.collapsed()], experiment="baseline")
                                       for s in STEPS])
    plots = tmp_path / "report" / "plots"
    pngs = [plot_codebook(cps, scalars_for(), plots / "codebook.png"),
            plot_pre_rvq_std(cps, scalars_for(), plots / "pre_rvq_std.png"),
            plot_losses(cps, scalars_for(), plots / "losses.png")]
    md_path = write_verdict_report(verdict, cps, control, pngs, tmp_path / "report" / "verdict.md")
    md = md_path.read_text()
    first = md.splitlines()[0]
    assert "SUCCESS" in first and "phase1" in first
    assert "Phase 2: GAN on (phase2_gan), long training" in md
    for c in verdict["criteria"]:
        assert f"`{c['id']}`" in md
    assert len(re.findall(r"^\| `(1k|2k|5k|10k|all|last)\.", md, re.M)) == len(verdict["criteria"])
    assert "Baseline reproduced the collapse: **yes** — perplexity_q0 1.004 (`baseline`, step 10000) vs 25 " in md
    assert "| 10000 | perplexity_q0 | 25 | 1.004 | 24 |" in md
    for p in ("plots/codebook.png", "plots/pre_rvq_std.png", "plots/losses.png"):
        assert f"]({p})" in md  # relative links next to the report
    assert "| 1000 (1k) | perplexity_q0 | >= 5 | 12 | pass |" in md


def test_verdict_report_failure_scaled_and_missing(tmp_path, make_cp, hist):
    steps = [50, 100, 250, 500]
    cps = [make_cp(s, counts=[hist.collapsed()]) for s in steps[:3]]
    verdict = decide(cps, steps=steps, progressive_steps=100)
    md = write_verdict_report(verdict, cps, None, {}, tmp_path / "v.md").read_text()
    assert md.splitlines()[0].startswith("# Verdict: FAILURE")
    assert "scaled" in md and "1k → step 50" in md and "10k → step 500" in md
    assert "Missing checkpoints: 10k" in md
    assert "not evaluated" in md and "No control run was compared." in md
    assert "| 500 (10k) |" in md and "compare/remedies.json" in md
    for c in verdict["criteria"]:
        assert f"`{c['id']}`" in md


def test_control_not_reproduced_is_said(tmp_path, healthy_run):
    cps = healthy_run()
    control = control_comparison(cps, healthy_run(experiment="baseline"))
    verdict = decide(cps, steps=STEPS, progressive_steps=2000)
    md = write_verdict_report(verdict, cps, control, None, tmp_path / "v.md").read_text()
    assert "Baseline reproduced the collapse: **no**" in md


def test_ab_report_and_plot(tmp_path, make_cp):
    arms = {
        "phase1": {0: [make_cp(1000, [6.0]), make_cp(2000, [8.0, 5.5])],
                   1: [make_cp(1000, [7.0]), make_cp(2000, [9.0, 6.5])]},
        "phase1_beta1": {0: [make_cp(1000, [9.0]), make_cp(2000, [11.0, 7.0])]},
    }
    verdicts = {arm: {seed: decide(cps, steps=[1000, 2000], progressive_steps=2000) for seed, cps in runs.items()}
                for arm, runs in arms.items()}
    cmp = compare_arms(arms, verdicts)
    png = plot_ab(cmp, tmp_path / "ab" / "perplexity.png",
                  scalars_by_arm={"phase1": scalars_for(2000), "phase1_beta1": scalars_for(2000)})
    assert_png(png)
    md = write_ab_report(cmp, tmp_path / "ab" / "commitment_cost.md", [png]).read_text()
    assert md.splitlines()[0] == "# A/B comparison: phase1 vs phase1_beta1"
    assert "## Step 1000 (nominal 1k)" in md and "## Step 2000 (nominal 2k)" in md
    assert "| `phase1` | 2 | 6.5 ± 0.7071 |" in md
    assert "| `phase1_beta1` | 1 | 9 |" in md
    assert "Higher perplexity_q0: `phase1_beta1` by 2.5." in md
    assert "](perplexity.png)" in md


def test_quality_plot_table_and_playable_samples(tmp_path, healthy_run, reference):
    import numpy as np
    import soundfile as sf

    from streamvc_rvq.evaluation.report import plot_quality, quality_table
    from streamvc_rvq.evaluation.samples_page import write_samples_page

    cps = healthy_run()
    assert_png(plot_quality(cps, reference, tmp_path / "quality.png"))
    assert_png(plot_quality(cps, None, tmp_path / "quality_no_reference.png"))
    table = "\n".join(quality_table(cps, dict(reference, num_utterances=9, num_speakers=3)))
    assert "| corpus | 9 utterances of 3 speakers | same speaker 0.9 / different 0.65 (EER 0.05, AUC 0.99)" in table
    assert "| 10000 | convert (—) | 0.7 / 0.5 | 0.6 | 3.10 / 3.60 / 2.60 |" in table
    # the samples page: each output at each checkpoint, its source and target reference, all embedded
    (tmp_path / "audio").mkdir()
    rate = 16000
    for name in ("a_0", "b_0"):
        sf.write(tmp_path / "audio" / f"{name}.wav", np.zeros(rate // 4, dtype=np.float32), rate)
    (tmp_path / "manifest.csv").write_text(
        "utterance_id,path,speaker,duration,split,labels_path,text\n"
        "a_0,audio/a_0.wav,a,0.25,heldout,,hello there\nb_0,audio/b_0.wav,b,0.25,heldout,,\n")
    dirs = []
    for cp in cps[:2]:
        d = tmp_path / f"samples_{cp['step']}"
        d.mkdir()
        sf.write(d / "convert_a_0_to_b.wav", 0.1 * np.ones(rate // 4, dtype=np.float32), rate)
        cp["outputs"]["samples"] = [{"name": "convert_a_0_to_b", "kind": "convert", "source": "a_0",
                                     "target_reference": "b_0", "target_speaker": "b", "speaker_similarity_target": 0.61,
                                     "transcript": "hello <there>", "errors": {"word_errors": 1, "words": 2}}]
        dirs.append(d)
    page = write_samples_page(cps[:2], dirs, tmp_path / "manifest.csv", tmp_path / "samples.html", "phase1").read_text()
    assert page.count('<audio controls preload="none" src="data:audio/flac;base64,') == 4  # 2 steps + source + target
    assert "step 1000" in page and "step 2000" in page and "sim→target 0.61" in page and "WER 0.50" in page
    assert "hello &lt;there&gt;" in page  # transcripts are escaped
