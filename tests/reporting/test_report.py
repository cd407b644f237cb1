"""The Markdown reports."""

import re

from streamvc_rvq.verdict.comparison import compare_arms, control_comparison
from streamvc_rvq.reporting.report import conversion_table, quality_table, write_ab_report, write_verdict_report
from streamvc_rvq.verdict.decision import decide

STEPS = [1000, 2000, 5000, 10000]


def test_verdict_report(tmp_path, healthy_run, make_cp, hist):
    cps = healthy_run()
    verdict = decide(cps, steps=STEPS, progressive_steps=2000)
    control = control_comparison(cps, [make_cp(s, counts=[hist.collapsed()], experiment="baseline")
                                       for s in STEPS])
    plots = tmp_path / "report" / "plots"
    pngs = [plots / "codebook.png", plots / "pre_rvq_std.png", plots / "losses.png"]  # drawn in test_plots.py
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


def test_verdict_report_shows_both_answers_side_by_side(tmp_path, healthy_run):
    cps = healthy_run()
    cps[-1]["speaker_embedding"]["auc"] = 0.56
    verdict = decide(cps, steps=STEPS, progressive_steps=2000,
                     reference={"speaker": {"same_mean": 0.9, "different_mean": 0.65, "auc": 0.99}})
    md = write_verdict_report(verdict, cps, None, [], tmp_path / "verdict.md").read_text()
    assert "| codebook (the design note's) | **success** (`success`) | Phase 2: GAN on" in md
    assert "| conversion | **not_evaluable** | fix the speaker path first" in md
    assert "speaker_embedding_separates 0.56 (not met)" in md
    assert "| `last.towards_target` (conversion) |" in md


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


def test_ab_report(tmp_path, make_cp):
    arms = {
        "phase1": {0: [make_cp(1000, [6.0]), make_cp(2000, [8.0, 5.5])],
                   1: [make_cp(1000, [7.0]), make_cp(2000, [9.0, 6.5])]},
        "phase1_beta1": {0: [make_cp(1000, [9.0]), make_cp(2000, [11.0, 7.0])]},
    }
    verdicts = {arm: {seed: decide(cps, steps=[1000, 2000], progressive_steps=2000) for seed, cps in runs.items()}
                for arm, runs in arms.items()}
    cmp = compare_arms(arms, verdicts)
    png = tmp_path / "ab" / "perplexity.png"  # drawn in test_plots.py
    md = write_ab_report(cmp, tmp_path / "ab" / "commitment_cost.md", [png]).read_text()
    assert md.splitlines()[0] == "# A/B comparison: phase1 vs phase1_beta1"
    assert "## Step 1000 (nominal 1k)" in md and "## Step 2000 (nominal 2k)" in md
    assert "| `phase1` | 2 | 6.5 ± 0.7071 |" in md
    assert "| `phase1_beta1` | 1 | 9 |" in md
    assert "Higher perplexity_q0: `phase1_beta1` by 2.5." in md
    assert "](perplexity.png)" in md


def test_quality_table_and_playable_samples(tmp_path, healthy_run, reference):
    from streamvc_rvq.reporting.samples_page import write_samples_pages

    cps = healthy_run()
    table = "\n".join(quality_table(cps, dict(reference, num_utterances=9, num_speakers=3)))
    assert "| corpus | 9 utterances of 3 speakers | same speaker 0.9 / different 0.65 (EER 0.05, AUC 0.99)" in table
    skipped = "\n".join(quality_table(cps, dict(reference, recognition_skipped="skipped: ...",
                                                recognition_probe={"wer": 0.9, "cer": 0.7, "num_utterances": 4})))
    corpus_row = next(line for line in skipped.splitlines() if line.startswith("| corpus |"))
    assert "skipped: unreadable" in corpus_row and "0.9 / 0.7" not in corpus_row
    assert "| 10000 | convert (—) | 0.7 / 0.5 | 0.6 | 3.10 / 3.60 / 2.60 |" in table
    # one page per checkpoint: each output, its source and target reference, all embedded
    dirs = _samples_fixture(tmp_path, cps[:2], seconds=0.25)
    pages = write_samples_pages(cps[:2], dirs, tmp_path / "manifest.csv", tmp_path / "samples", "phase1")
    assert [p.name for p in pages] == ["step_1000.html", "step_2000.html"]
    page = pages[0].read_text()
    assert page.count('<audio controls preload="metadata" src="data:audio/ogg;base64,') == 3  # output, source, target
    assert "step 1000" in page and "step 2000" not in page and "sim→target 0.61" in page and "WER 0.50" in page
    assert "hello &lt;there&gt;" in page  # transcripts are escaped


def test_samples_pages_encode_each_corpus_file_once(tmp_path, healthy_run, monkeypatch):
    """Sources and target references recur on every checkpoint's page: encoded once, the same player each time."""
    from streamvc_rvq.reporting import samples_page

    encoded = []
    real = samples_page.audio_tag
    monkeypatch.setattr(samples_page, "audio_tag", lambda audio, rate: encoded.append(len(audio)) or real(audio, rate))
    cps = healthy_run()
    dirs = _samples_fixture(tmp_path, cps[:2], seconds=0.25, outputs=2)
    pages = samples_page.write_samples_pages(cps[:2], dirs, tmp_path / "manifest.csv", tmp_path / "samples", "phase1")
    assert len(encoded) == 2 * 2 + 2  # each checkpoint's two outputs, the source and the target once
    players = [tag for p in pages for tag in re.findall(r'src="data:[^"]+"', p.read_text())]
    assert len(players) == 2 * 2 * 3 and len(set(players)) == 2 * 2 + 2  # (Ogg streams differ per encoding)


def _samples_fixture(tmp_path, cps, seconds: float, outputs: int = 1) -> list:
    """A manifest of two held-out utterances and ``outputs`` noise conversions per checkpoint
    (noise: FLAC cannot shrink it, so its size is the page's worst case)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    rate = 16000
    (tmp_path / "audio").mkdir(exist_ok=True)
    for name in ("a_0", "b_0"):
        sf.write(tmp_path / "audio" / f"{name}.wav", 0.1 * rng.standard_normal(int(rate * seconds)).astype(np.float32), rate)
    (tmp_path / "manifest.csv").write_text(
        "utterance_id,path,speaker,duration,split,labels_path,text\n"
        f"a_0,audio/a_0.wav,a,{seconds},heldout,,hello <there>\nb_0,audio/b_0.wav,b,{seconds},heldout,,\n")
    dirs = []
    for cp in cps:
        d = tmp_path / f"samples_{cp['step']}"
        d.mkdir()
        cp["outputs"]["samples"] = []
        for i in range(outputs):
            sf.write(d / f"convert_a_0_to_b_{i}.wav", 0.1 * rng.standard_normal(int(rate * seconds)).astype(np.float32), rate)
            cp["outputs"]["samples"].append({
                "name": f"convert_a_0_to_b_{i}", "kind": "convert", "source": "a_0", "target_reference": "b_0",
                "target_speaker": "b", "speaker_similarity_target": 0.61, "transcript": "hello <there>",
                "errors": {"word_errors": 1, "words": 2}})
        dirs.append(d)
    return dirs


def test_samples_pages_split_to_stay_openable_in_the_report(tmp_path, healthy_run):
    """Twelve 8-second noise conversions (36 players, about 2.5 MB of Opus) at one checkpoint do not
    fit one page the report can open (Chromium shows nothing past 2 MB of data: address): the page
    splits into parts, each under the limit once base64-encoded, and no sample is lost."""
    import base64

    from streamvc_rvq.reporting.samples_page import write_samples_pages
    from streamvc_rvq.reporting.verdict_page import CHROMIUM_URL_LIMIT

    cps = healthy_run()[:1]
    dirs = _samples_fixture(tmp_path, cps, seconds=8.0, outputs=12)
    pages = write_samples_pages(cps, dirs, tmp_path / "manifest.csv", tmp_path / "samples", "phase1")
    assert len(pages) > 1 and pages[1].name == "step_1000.2.html"
    assert all(len(base64.b64encode(p.read_bytes())) + 100 < CHROMIUM_URL_LIMIT for p in pages)
    assert sum(p.read_text().count("<audio") for p in pages) == 36
    assert "part 1 of" in pages[0].read_text()


def test_verdict_html_page_embeds_plots_within_budget(tmp_path):
    """The verdict as HTML: tables rendered, the plots inlined (the report opens the page from a
    data: address where a relative link resolves to nothing); a plot past the budget stays a link
    and the page says so."""
    from streamvc_rvq.reporting.verdict_page import markdown_page

    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "small.png").write_bytes(b"\x89PNG" + b"0" * 1000)
    (tmp_path / "plots" / "big.png").write_bytes(b"\x89PNG" + b"0" * 5000)
    text = ("# Verdict: PARTIAL — phase1\n\n| criterion | passed |\n|---|---|\n| a | yes |\n\n"
            "![small](plots/small.png)\n\n![big](plots/big.png)\n")
    page = markdown_page(text, "phase1", tmp_path, budget=4000)
    assert "<h1>Verdict: PARTIAL — phase1</h1>" in page and "<td>a</td>" in page
    assert page.count('src="data:image/png;base64,') == 1 and '<a href="plots/big.png">big</a>' in page
    assert "1 plot(s) left out" in page
    assert markdown_page(text, "phase1", tmp_path).count("data:image/png") == 2


def test_verdict_report_notices(tmp_path, healthy_run):
    cps = healthy_run()
    verdict = dict(decide(cps, steps=STEPS, progressive_steps=2000), warnings=["a | b"], ignored_steps=[20000],
                   branches=[])
    md = write_verdict_report(verdict, cps, None, None, tmp_path / "v.md").read_text()
    assert "> warning: a | b\n" in md
    assert "Checkpoints beyond the protocol (not judged): [20000]." in md
    assert "## Decision table" not in md and "## Plots" not in md


def test_ab_report_tie_and_not_comparable(tmp_path, make_cp):
    arms = {"a": {0: [make_cp(1000, [6.0]), make_cp(2000, [8.0])]},
            "b": {0: [make_cp(1000, [6.0])]}}
    verdicts = {arm: {0: decide(runs[0], steps=[1000, 2000], progressive_steps=2000)} for arm, runs in arms.items()}
    md = write_ab_report(compare_arms(arms, verdicts), tmp_path / "ab.md").read_text()
    assert "step 1000 (1k): tie; step 2000 (2k): not comparable." in md
    assert "perplexity_q0: tie." in md


def test_conversion_table_shows_every_measure_and_a_dash_where_one_is_missing(healthy_run, reference):
    cps = healthy_run()
    del cps[0]["outputs"]["quality"]["convert"]["pitch_level"]
    del cps[1]["outputs"]["quality"]["convert"]["identified_by_model"]
    lines = conversion_table(cps, reference)
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[2:] if line}
    del cps[2]["outputs"]["quality"]["convert"]["reference_controls"]
    cps[3]["outputs"]["quality"]["convert"]["reference_controls"]["model"] = {"identification": {
        "rate": 0.7, "chance": 1 / 3, "num_outputs": 84, "hits": 59, "low": 0.6, "high": 0.79}}
    cps[3]["outputs"]["quality"]["convert"]["reference_controls"]["timbre_only"] = {"identification": {
        "rate": 0.45, "chance": 1 / 3, "num_outputs": 84, "hits": 38, "low": 0.35, "high": 0.56}}
    cps[3]["content_speaker"] = {"decoder_input": 0.06, "log_mel": 0.6, "chance": 0.05, "num_speakers": 20}
    cps[3]["outputs"]["quality"]["convert"]["band_harmonicity"] = {"output_db": 1.5, "source_db": 7.9}
    lines = conversion_table(cps, reference)
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[2:] if line}
    assert rows[str(cps[3]["step"])] == (f"| {cps[3]['step']} | 0.95 / 0.1 | 90% of 24 (33%), 95 % 73%-98% | "
                                          "70% / 45% / 50% / 100% of 84, 95 % 60%-79% | 100% | 0.9 / 0.1 | 0.5 / 0.6 (0.1) | "
                                          "0.85 | -2 / -3 | 1.5 / 7.9 | 0.06 / 0.6 (0.05) |")
    assert " | — / — | " in rows[str(cps[0]["step"])]
    assert " | — / — / 50% / 100% | — | " in rows[str(cps[1]["step"])]
    assert " 73%-98% | — / — / — / — | " in rows[str(cps[2]["step"])]
    cps[3]["outputs"]["quality"]["convert"]["reference_controls"]["model"]["source_kept"] = {
        "rate": 0.1, "hits": 8, "num_outputs": 84, "low": 0.05, "high": 0.18}
    cps[3]["outputs"]["quality"]["convert"]["reference_controls"]["pitch_only"]["source_kept"] = {
        "rate": 0.6, "hits": 50, "num_outputs": 84, "low": 0.49, "high": 0.69}
    row = next(line for line in conversion_table(cps, reference) if line.startswith(f"| {cps[3]['step']} |"))
    assert "of 84, 95 % 60%-79%; source kept 10% / 60% | 100% |" in row
    assert not any(line.startswith("Identified per target") for line in conversion_table(cps, reference))
    controls = cps[3]["outputs"]["quality"]["convert"]["reference_controls"]
    controls["model"]["identification"]["by_target"] = {"s01": {"hits": 20, "num_outputs": 21}, "s06": {"hits": 0, "num_outputs": 21}}
    controls["pitch_only"]["identification"]["by_target"] = {"s01": {"hits": 19, "num_outputs": 21}, "s06": {"hits": 13, "num_outputs": 21}}
    assert (f"Identified per target speaker at step {cps[3]['step']}, conversions (pitch-only shift): s01 20/21 (19/21) · "
            "s06 0/21 (13/21).") in conversion_table(cps, reference)
    assert rows[str(cps[2]["step"])].endswith(" | — / — | — |")  # no band measure, no probe at that checkpoint
    assert rows["corpus"].endswith("same speaker 0.9 / different 0.65 | — | — | — |")


def test_verdict_report_links_each_checkpoints_samples_page(tmp_path, healthy_run):
    cps = healthy_run()
    verdict = decide(cps, steps=STEPS, progressive_steps=2000)
    pages = [tmp_path / "report" / "samples" / name for name in ("step_1000.html", "step_1000.2.html", "step_2000.html")]
    md = write_verdict_report(verdict, cps, None, None, tmp_path / "report" / "report.md", samples_pages=pages).read_text()
    assert ("step 1000 ([1](samples/step_1000.html), [2](samples/step_1000.2.html)) · "
            "[step 2000](samples/step_2000.html).") in md
    assert "Listen" not in write_verdict_report(verdict, cps, None, None, tmp_path / "v.md").read_text()


def test_a_rate_opus_lacks_plays_as_flac():
    import numpy as np

    from streamvc_rvq.reporting.samples_page import audio_tag

    assert 'src="data:audio/flac;base64,' in audio_tag(np.zeros(2205, dtype=np.float32), 22050)
    assert 'src="data:audio/ogg;base64,' in audio_tag(np.zeros(1600, dtype=np.float32), 16000)
