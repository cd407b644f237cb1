"""What a config change re-runs, where each preset's results go, and one-line config errors,
through the snakemake command line on the micro config."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_support import MICRO, planned_jobs, run_snakemake

from streamvc_rvq.config import load_config

pytestmark = pytest.mark.slow


def overlay(workdir: Path, name: str, text: str) -> str:
    (workdir / name).write_text(text)
    return name


def error_lines(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "error" in line.lower()]


def test_misspelled_key_is_one_line_naming_the_nearest_valid_key(workflow):
    bad = overlay(workflow, "typo.yaml", "train: {stepz: [10]}\n")
    proc = run_snakemake(workflow, "-n", configfiles=("config/micro.yaml", bad), check=False)
    assert proc.returncode != 0
    assert error_lines(proc) == ["error: config key train.stepz is not a known key; did you mean train.steps?"]
    assert len((proc.stdout + proc.stderr).splitlines()) < 8  # no schema, no config dump, no traceback


def test_misspelled_key_in_an_experiment_names_its_full_path(workflow):
    bad = overlay(workflow, "typo_exp.yaml", "experiments: {phase1: {model: {rvq: {comitment_cost: 1.0}}}}\n")
    proc = run_snakemake(workflow, "-n", configfiles=("config/micro.yaml", bad), check=False)
    assert proc.returncode != 0
    assert error_lines(proc) == [
        "error: config key experiments.phase1.model.rvq.comitment_cost is not a known key; "
        "did you mean experiments.phase1.model.rvq.commitment_cost?"
    ]


def test_unknown_experiment_target_lists_the_experiments(workflow):
    proc = run_snakemake(workflow, "-n", f"{MICRO}/nosuchexperiment/verdict.json", check=False)
    assert proc.returncode != 0
    [line] = error_lines(proc)
    assert "no experiment 'nosuchexperiment'" in line and "phase1, phase1_beta1, baseline" in line


def test_another_presets_target_names_where_this_config_writes(workflow):
    proc = run_snakemake(workflow, "-n", "results/phase1/verdict.json", check=False)
    assert proc.returncode != 0
    [line] = error_lines(proc)
    assert f"ask for {MICRO}/phase1/verdict.json" in line


def test_missing_corpus_root_fails_the_dry_run(workflow):
    folder = overlay(workflow, "folder.yaml", "corpus: {name: mine, type: folder, folder: {root: /no/such/dir}}\n")
    proc = run_snakemake(workflow, "-n", configfiles=("config/micro.yaml", folder), check=False)
    assert proc.returncode != 0
    assert error_lines(proc) == ["error: corpus.folder.root /no/such/dir is not a directory"]
    unset = overlay(workflow, "unset.yaml", "corpus: {name: mine, type: folder}\n")
    proc = run_snakemake(workflow, "-n", configfiles=("config/micro.yaml", unset), check=False)
    assert proc.returncode != 0 and "corpus.folder.root is not set" in error_lines(proc)[0]


def test_no_gradient_config_is_refused_before_any_job(workflow):
    frozen = overlay(workflow, "frozen.yaml", "corpus: {labels: none}\n")
    proc = run_snakemake(workflow, "-n", configfiles=("config/micro.yaml", frozen), check=False)
    assert proc.returncode != 0
    [line] = error_lines(proc)
    assert "content encoder would never be trained (corpus.labels is none" in line
    opt_in = overlay(workflow, "opt_in.yaml", "corpus: {labels: none}\ntrain: {allow_untrained_content_encoder: true}\n")
    plan = planned_jobs(run_snakemake(workflow, "-n", configfiles=("config/micro.yaml", opt_in)))
    assert plan["train"] > 0 and "frame_labels" not in plan


def test_each_rule_reruns_only_for_the_config_it_uses(workflow):
    metrics = f"{MICRO}/phase1/metrics/step_2.json"
    run_snakemake(workflow, "--cores", "2", metrics)
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(run_snakemake(workflow, "-n", metrics))
    conversions = overlay(workflow, "conversions.yaml", "evaluation: {num_conversions: 3}\n")
    plan = planned_jobs(run_snakemake(workflow, "-n", metrics, configfiles=("config/micro.yaml", conversions)))
    assert plan == {"evaluate": 1}  # no train, no data preparation, no labelling
    # the other corpus type's settings never re-run data preparation or labelling
    folder_opts = overlay(workflow, "folder_opts.yaml", "corpus: {folder: {extensions: [wav]}}\n")
    proc = run_snakemake(workflow, "-n", metrics, configfiles=("config/micro.yaml", folder_opts))
    assert "Nothing to be done" in proc.stdout + proc.stderr
    # k-means settings do not touch a corpus labelled from its own files
    kmeans = overlay(workflow, "kmeans.yaml", "corpus: {label_kmeans: {num_clusters: 50}}\n")
    proc = run_snakemake(workflow, "-n", metrics, configfiles=("config/micro.yaml", kmeans))
    assert "Nothing to be done" in proc.stdout + proc.stderr
    # the corpus's reference levels re-run for their own settings, never an evaluation
    levels = "results/data/micro/reference_levels.json"
    run_snakemake(workflow, "--cores", "2", levels)
    fewer = overlay(workflow, "fewer.yaml", "evaluation: {reference_utterances: 5}\n")
    assert planned_jobs(run_snakemake(workflow, "-n", metrics, levels, configfiles=("config/micro.yaml", fewer))) \
        == {"reference_levels": 1}
    measures = overlay(workflow, "measures.yaml", "evaluation: {quality_measures: [speaker]}\n")
    assert planned_jobs(run_snakemake(workflow, "-n", metrics, levels, configfiles=("config/micro.yaml", measures))) \
        == {"evaluate": 1, "reference_levels": 1}
    # a change of the training config re-trains
    lr = overlay(workflow, "lr.yaml", "train: {lr: 2.0e-4}\n")
    assert planned_jobs(run_snakemake(workflow, "-n", metrics, configfiles=("config/micro.yaml", lr)))["train"] == 1


def test_seed_variants_and_ab_targets_are_never_taken_by_the_unknown_target_rules(workflow):
    seeds = overlay(workflow, "seeds.yaml", "ab: {commitment_cost: {arms: [phase1, phase1_beta1], seeds: [0, 1]}}\n")
    plan = planned_jobs(run_snakemake(workflow, "-n", f"{MICRO}/ab/commitment_cost.json",
                                      configfiles=("config/micro.yaml", seeds)))
    assert plan["verdict"] == 4 and plan["ab_comparison"] == 1 and not any(k.startswith("unknown") for k in plan)


def test_an_experiments_own_train_device_is_honoured(workflow):
    device = overlay(workflow, "device.yaml", "experiments: {phase1_beta1: {train: {device: 'cuda:3'}}}\n")
    proc = run_snakemake(workflow, "-n", "-p", f"{MICRO}/phase1_beta1/checkpoints/step_2.pt",
                         configfiles=("config/micro.yaml", device))
    [command] = [line for line in proc.stdout.splitlines() if "streamvc-rvq train" in line]
    assert '"device": "cuda:3"' in command and "--device" not in command


def test_another_preset_leaves_the_first_presets_checkpoints_untouched(workflow):
    first = workflow / MICRO / "phase1/checkpoints/step_2.pt"
    if not first.exists():
        run_snakemake(workflow, "--cores", "2", str(first.relative_to(workflow)))
    before = (first.read_bytes(), first.stat().st_mtime_ns)
    quick = overlay(workflow, "as_quick.yaml", "preset: quick\n")
    other = "results/quick/micro/phase1/checkpoints/step_2.pt"
    run_snakemake(workflow, "--cores", "2", other, configfiles=("config/micro.yaml", quick))
    assert (workflow / other).stat().st_size > 0
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before
    proc = run_snakemake(workflow, "-n", str(first.relative_to(workflow)))
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_quick_and_paper_presets_plan_disjoint_results():
    """The real presets' plans (dry runs in a scratch copy): no output of one is an output of the other."""
    from workflow_support import ROOT, copy_workflow
    import tempfile

    def outputs(args, configfiles):
        with tempfile.TemporaryDirectory() as tmp:
            proc = run_snakemake(copy_workflow(Path(tmp)), "-n", *args, configfiles=configfiles)
        return {o for line in proc.stdout.splitlines() if line.strip().startswith("output:")
                for o in line.split(":", 1)[1].replace(",", " ").split()}

    paper = outputs(["results/phase1/verdict.json"], ())
    quick = outputs(["results/quick/espeak_quick/phase1/verdict.json"], ("config/quick.yaml",))
    assert "results/phase1/checkpoints/step_1000.pt" in paper
    assert "results/quick/espeak_quick/phase1/checkpoints/step_50.pt" in quick
    assert not paper & quick
    assert all(re.match(r"results/(quick/espeak_quick|data/espeak_quick)/", o) for o in quick)


def test_the_ladder_plans_without_the_optional_library_and_says_why(workflow, tmp_path):
    """With vector-quantize-pytorch absent (an import that fails, shadowing any installed copy)
    the ladder plans every other arm and hands the left-out one to the ranking with its reason."""
    shadow = tmp_path / "shadow" / "vector_quantize_pytorch"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('simulated: not installed')\n")
    target = f"{MICRO}/compare/remedies.json"
    proc = run_snakemake(workflow, "-n", "-p", target, "--forcerun", target,
                         env={"PYTHONPATH": str(shadow.parent)})
    text = proc.stdout + proc.stderr
    assert "--skipped 'phase2_encodec_library=vector_quantize_pytorch is not installed" in text
    assert "phase2_encodec_library/checkpoints" not in text and "phase2_encodec/checkpoints" in text
    with_library = run_snakemake(workflow, "-n", "-p", target, "--forcerun", target)
    assert "phase2_encodec_library/checkpoints" in with_library.stdout + with_library.stderr
    assert "--skipped" not in with_library.stdout + with_library.stderr


def test_each_evaluation_runs_the_quality_measures_its_role_reads(workflow):
    """evaluation.quality_at: verdict gives the micro steps [2, 4, 10, 20] DNSMOS at 10 (5k) and
    everything at 20; every gives everything everywhere."""
    measures = overlay(workflow, "measures.yaml", "evaluation: {quality_measures: [speaker, dnsmos]}\n")
    every = overlay(workflow, "every.yaml", "evaluation: {quality_at: every}\n")

    def flags(*configs):
        proc = run_snakemake(workflow, "-n", "-p", f"{MICRO}/phase1/verdict.json",
                             configfiles=("config/micro.yaml", *configs))
        found = re.findall(r"phase1/scalars/step_(\d+)\.json --quality-measures ?([a-z ]*?) ?--", proc.stdout)
        return {int(step): words.split() for step, words in found}

    assert flags(measures) == {2: [], 4: [], 10: ["dnsmos"], 20: ["speaker", "dnsmos"]}
    assert flags(measures, every) == {s: ["speaker", "dnsmos"] for s in (2, 4, 10, 20)}


def test_the_ladder_runs_depth_first_control_first(workflow):
    """Job priorities: the control, then the experiments in config order; an experiment's every
    job ranks with it, so with few cores whole arms finish before the next starts."""
    proc = run_snakemake(workflow, "-n", f"{MICRO}/compare/remedies.json")
    jobs = re.findall(r"^rule (\w+):.*?wildcards: experiment=(\w+)(?:, step=(\d+))?.*?priority: (\d+)", proc.stdout,
                      flags=re.S | re.M)
    priority = {}
    for rule, experiment, step, value in jobs:
        priority.setdefault(experiment, set()).add(int(value))
    assert all(len(values) == 1 for values in priority.values()), priority  # one rank per experiment
    order = sorted(priority, key=lambda name: -priority[name].pop())
    arms = load_config(workflow / "config/config.yaml", workflow / "config/micro.yaml")["ladder"]["arms"]
    assert order[:2] == ["baseline", "phase1"] and sorted(order) == sorted(["baseline", *arms]), order


def test_the_workflow_lints_clean(workflow):
    proc = run_snakemake(workflow, "--lint", configfiles=())
    out = proc.stdout + proc.stderr
    assert "Lints for" not in out and "good condition" in out, out[-3000:]


def test_a_too_small_corpus_fails_with_its_evidence_kept(workflow):
    """The failed ingest's outputs (rejected.csv) are deleted by snakemake; the error line reaches
    the terminal with the config keys that decide, and the kept log lists every rejected file."""
    import numpy as np
    import soundfile as sf

    root = workflow / "tiny_corpus"
    for speaker in ("a", "b"):
        (root / speaker).mkdir(parents=True)
        sf.write(root / speaker / "1.wav", 0.1 * np.sin(np.arange(16000) / 8).astype(np.float32), 16000)
    (root / "b" / "2.wav").write_bytes(b"")
    tiny = overlay(workflow, "tiny.yaml", f"corpus: {{name: tiny, type: folder, folder: {{root: {root}}}}}\n")
    proc = run_snakemake(workflow, "--cores", "1", "results/data/tiny/manifest.csv",
                         configfiles=("config/micro.yaml", tiny), check=False)
    assert proc.returncode != 0
    assert "corpus.min_files" in proc.stderr and "log: results/logs/prepare_data/tiny.log" in proc.stderr
    log = (workflow / "results/logs/prepare_data/tiny.log").read_text()
    assert "rejected: " in log and "empty file" in log
    assert not (workflow / "results/data/tiny/rejected.csv").exists()  # gone with the failed job


def test_plan_says_what_a_target_would_run_before_anything_runs(workflow):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, "-m", "streamvc_rvq", "plan", f"{MICRO}/phase1_beta1/verdict.json",
                           "--configfile", "config/micro.yaml", "--cores", "2"],
                          cwd=workflow, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    jobs, training, cpu = proc.stdout.splitlines()
    assert "train 8" in jobs and "verdict 1" in jobs  # the arm and its control, 4 segments each
    assert training.startswith("training: 40 steps in 8 jobs over 2 experiments")
    assert cpu.startswith("CPU training: 40 steps")
    assert not (workflow / MICRO / "phase1_beta1").exists()  # nothing ran
    bad = subprocess.run([sys.executable, "-m", "streamvc_rvq", "plan", "results/nonsense.json"],
                         cwd=workflow, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
