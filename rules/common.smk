# Helpers shared by the rules: config checks, experiment resolution, result paths, step
# chains and target lists. Every path scheme comes from streamvc_rvq.config.
import json
import math
import os
import re
import sys
from pathlib import Path
from shlex import quote as shell_quote

from streamvc_rvq.config import (
    ConfigError,
    ab_target,
    check_corpus,
    check_references,
    compare_dir,
    control_of,
    data_dir,
    experiment_names,
    fidelity_variant,
    hop_length,
    labels_config,
    prepare_config,
    reference_config,
    resolve_experiment,
    results_dir,
    rule_config,
    seed_runs,
    seed_variants,
    validate,
    verdict_arms,
)
from streamvc_rvq.quantization.build import unavailable_reason
from streamvc_rvq.verdict.roles import quality_measures_at


def _checked(config):
    """The validated config with every experiment resolved, or one line and exit 1."""
    try:
        validate(config)
        check_corpus(config)
        check_references(config)
        names = experiment_names(config)
        return names, {name: resolve_experiment(config, name) for name in names}
    except ConfigError as err:
        sys.exit(f"error: {err}")


EXPERIMENTS, RESOLVED = _checked(config)
RESULTS = results_dir(config)  # results/ or results/{preset}/{corpus}
COMPARE = compare_dir(config)  # the remedy ladder and the experiments table
CORPUS = config["corpus"]["name"]
DATA = data_dir(CORPUS)


wildcard_constraints:
    experiment="|".join(map(re.escape, EXPERIMENTS)),
    step=r"\d+",
    comparison="|".join(map(re.escape, config.get("ab", {}))) or "none",


def config_for(rule_name):
    """Params function: the JSON of the part of the experiment's config ``rule_name`` uses,
    so a change re-runs exactly the jobs that depend on it."""

    def params(wildcards):
        return json.dumps(rule_config(RESOLVED[wildcards.experiment], rule_name), sort_keys=True)

    return params


# The HTML report's categories, numbered: its menu sorts them as text, and the verdict comes first.
REPORT_CATEGORIES = {
    "verdict": "1. Verdict",
    "samples": "2. Samples",
    "ab": "3. A/B",
    "ladder": "4. Remedy ladder",
    "experiments": "5. Experiments",
}


def samples_page_labels(wildcards):
    """Report labels of a samples page (``step_{page}.html``, page ``50`` or ``50.2``): the report
    sorts labels as text, so the checkpoint's rank leads, zero-padded ("02 of 12" before "10 of 12")."""
    step, _, part = wildcards.page.partition(".")
    steps = sorted(experiment_steps(wildcards.experiment))
    rank = steps.index(int(step)) + 1 if int(step) in steps else len(steps) + 1
    width = len(str(len(steps)))
    return {"checkpoint": f"{rank:0{width}d} of {len(steps)}: step {step}", "part": part or "1"}


def depth_first(wildcards):
    """Job priority: the controls first, then the experiments in config order, so that with few
    cores whole experiments finish one after another (a run stopped early keeps finished arms)
    instead of every arm's first segment before any arm's second."""
    controls = {control_of(config, name) for name in EXPERIMENTS} - {None}
    order = sorted(EXPERIMENTS, key=lambda name: name not in controls)  # stable: config order otherwise
    return len(order) - order.index(wildcards.experiment)


def experiment_steps(experiment):
    return RESOLVED[experiment]["train"]["steps"]


# The corpus's files (one corpus per run: config corpus.name) and the data rules' logs.
MANIFEST = f"{DATA}/manifest.csv"
REJECTED = f"{DATA}/rejected.csv"
FRAME_LABELS = f"{DATA}/frame_labels.npz"
REFERENCE_LEVELS = f"{DATA}/reference_levels.json"  # the corpus's own levels of the quality measures


def data_log(rule_name):
    return f"results/logs/{rule_name}/{CORPUS}.log"


def manifest():
    return MANIFEST


def reference_levels():
    """The corpus's own levels of the quality measures (the verdict's reference)."""
    return REFERENCE_LEVELS


def frame_labels():
    """The content-label file training and evaluation read; none with corpus.labels: none."""
    return [] if config["corpus"]["labels"] == "none" else FRAME_LABELS


def labels_flag(wildcards, input):
    return f"--labels {input.labels}" if input.labels else "--labels none"


def quality_measures_flag(wildcards):
    """The quality measures this checkpoint's evaluation runs: where the verdict reads them
    (evaluation.quality_at: verdict) or at every checkpoint."""
    resolved = RESOLVED[wildcards.experiment]
    evaluation = resolved["evaluation"]
    measures = quality_measures_at(int(wildcards.step), resolved["train"]["steps"], evaluation["quality_measures"],
                                   every=evaluation["quality_at"] == "every")
    return "--quality-measures " + " ".join(measures)


def previous_checkpoint(wildcards):
    """step_N is trained from the previous step target of the same experiment (none for the first)."""
    steps = experiment_steps(wildcards.experiment)
    step = int(wildcards.step)
    if step not in steps:
        sys.exit(
            f"error: step {step} is not a step target of experiment {wildcards.experiment} (train.steps: {steps})"
        )
    index = steps.index(step)
    if index == 0:
        return []
    return CHECKPOINT.format(experiment=wildcards.experiment, step=steps[index - 1])


def resume_flag(wildcards, input):
    return f"--resume {input.previous}" if input.previous else ""


# Per-experiment file patterns (wildcards {experiment}, {step}): one home for the rules.
VERDICT = f"{RESULTS}/{{experiment}}/verdict.json"
CHECKPOINT = f"{RESULTS}/{{experiment}}/checkpoints/step_{{step}}.pt"
SCALARS = f"{RESULTS}/{{experiment}}/scalars/step_{{step}}.json"
TENSORBOARD = f"{RESULTS}/{{experiment}}/tensorboard"


def chain_scalars(experiment, up_to=None):
    """The training scalars files of ``experiment``'s step targets (those <= ``up_to``): what
    the curves are read from, so Snakemake sees that evaluation and verdicts depend on them."""
    steps = [s for s in experiment_steps(experiment) if up_to is None or s <= int(up_to)]
    return expand(SCALARS, experiment=experiment, step=steps)


def checkpoint_scalars(wildcards):
    return chain_scalars(wildcards.experiment, wildcards.step)


def experiment_metrics(experiment):
    return expand(
        "{results}/{experiment}/metrics/step_{step}.json",
        results=RESULTS,
        experiment=experiment,
        step=experiment_steps(experiment),
    )


def experiment_samples(experiment):
    return expand(
        "{results}/{experiment}/samples/step_{step}",
        results=RESULTS,
        experiment=experiment,
        step=experiment_steps(experiment),
    )


def verdict_inputs(wildcards):
    inputs = {
        "metrics": experiment_metrics(wildcards.experiment),
        "scalars": chain_scalars(wildcards.experiment),
        "samples": experiment_samples(wildcards.experiment),
        "reference": reference_levels(),
        "manifest": manifest(),
    }
    control = control_of(config, wildcards.experiment)
    if control:
        inputs["control"] = experiment_metrics(control)
    seeds = seed_runs(config, wildcards.experiment)
    if seeds:
        inputs["seed_verdicts"] = expand(VERDICT, experiment=seeds)
    longer = fidelity_variant(config, wildcards.experiment)
    if longer and wildcards.experiment in verdict_arms(config):
        inputs["fidelity_metrics"] = experiment_metrics(longer)
        inputs["fidelity_verdict"] = VERDICT.format(experiment=longer)
    return inputs


def comparison_flags(wildcards, input):
    """The verdict's comparison inputs: the control, the other seeds, the longer protocol."""
    keys = input.keys()
    flags = "--control-metrics " + " ".join(input.control) if "control" in keys else ""
    if "seed_verdicts" in keys:
        flags += " --seed-verdicts " + " ".join(input.seed_verdicts)
    if "fidelity_verdict" in keys:
        flags += f" --fidelity-verdict {input.fidelity_verdict} --fidelity-metrics " + " ".join(input.fidelity_metrics)
    return flags


def comparison_runs(comparison):
    """Experiment names of every arm and seed of an A/B comparison."""
    arms = config["ab"][comparison]["arms"]
    return [name for arm in arms for name in seed_variants(config, arm)]


def ab_inputs(wildcards):
    runs = comparison_runs(wildcards.comparison)
    return {
        "verdicts": expand(VERDICT, experiment=runs),
        "metrics": [m for run in runs for m in experiment_metrics(run)],
    }


def ladder_arms():
    """``(arms, {arm: reason})``: the ladder's arms this machine can build, and those left out
    (an optional quantizer library that is not installed)."""
    arms, skipped = [], {}
    for arm in config["ladder"]["arms"]:
        reason = unavailable_reason(RESOLVED[arm]["model"]["rvq"])
        if reason:
            skipped[arm] = reason
        else:
            arms.append(arm)
    return arms, skipped


def ladder_runs():
    return [name for arm in ladder_arms()[0] for name in seed_variants(config, arm)]


def ladder_inputs(wildcards):
    runs = ladder_runs()
    return {
        "verdicts": expand(VERDICT, experiment=runs),
        "metrics": [m for run in runs for m in experiment_metrics(run)],
        "scalars": [f for run in runs for f in chain_scalars(run)],
        "reference": reference_levels(),
        "table": f"{COMPARE}/experiments.csv",
    }


def ladder_flags(wildcards):
    arms, skipped = ladder_arms()
    flags = "--arms " + " ".join(arms)
    # Phase 2 = the winner's quantizer in the generator of the phase2_gan_repeat experiment (its one home)
    generator = config["experiments"]["phase2_gan_repeat"]
    flags += f" --generator {shell_quote(json.dumps(generator, sort_keys=True))}"
    flags += "".join(" --scalars " + " ".join(chain_scalars(run)) for run in ladder_runs())
    if skipped:
        flags += " --skipped " + " ".join(shell_quote(f"{arm}={reason}") for arm, reason in skipped.items())
    return flags


def table_inputs(wildcards):
    """The experiments table waits for the ladder's runs; it then reads every run under
    RESULTS (inputs would rebuild runs whose config has since changed, so the rest are read,
    not required: `streamvc-rvq experiments` prints the current table at any time)."""
    runs = ladder_runs()
    return {
        "metrics": [m for run in runs for m in experiment_metrics(run)],
        "verdicts": expand(VERDICT, experiment=runs),
    }


def default_targets():
    targets = [VERDICT.format(experiment=config["verdict"]["experiment"])]
    targets += [ab_target(config, comparison) for comparison in config.get("ab", {})]
    return targets


# The catch-all target rules (rules/targets.smk): this config's experiment directories under results/, and
# the input function that stops the plan with one line naming what this config builds.
_OWN = [f"{RESULTS}/{experiment}"[len("results/") :] for experiment in EXPERIMENTS]


def _target_check(kind):
    def check(wildcards):
        target = kind.format(**wildcards)
        wanted = f"results/{wildcards.path}/{target}"
        if wildcards.path in _OWN:  # a real target (the constraint already excludes it)
            return []
        head, _, last = wildcards.path.rpartition("/")
        this = f"this config (preset {config['preset']}, corpus {config['corpus']['name']}) writes to {RESULTS}/"
        if last not in EXPERIMENTS:
            sys.exit(f"error: {wanted}: no experiment {last!r} in this config; its experiments: {', '.join(EXPERIMENTS)}")
        parts = head.split("/") if head else []
        owner = (
            f"preset {parts[0]} on corpus {parts[1]}" if len(parts) == 2 else "the paper preset on the espeak corpus"
        )
        sys.exit(
            f"error: {wanted} belongs to {owner}, but {this}; add that preset's --configfile "
            f"(after the targets) or ask for {RESULTS}/{last}/{target}"
        )

    return check


def cpu_time_notice(workflow):
    """Before a long local CPU run: one line with the whole DAG's training time, measured here
    (streamvc_rvq.training.throughput). Never on a cluster (jobs run elsewhere) or in touch
    mode; never stops the run."""
    if not workflow.local_exec or workflow.touch:
        return
    from streamvc_rvq.training.throughput import cpu_plan_notice, cpu_training_plan, quick_command

    try:
        jobs = [(job.wildcards.experiment, int(job.wildcards.step), job.threads)
                for job in workflow.dag.needrun_jobs() if job.rule.name == "train"]
        planned, job_threads = cpu_training_plan(jobs, RESOLVED)
        cores = max(1, min(workflow.cores or 1, os.cpu_count() or 1))
        overlays = [str(f) for f in workflow.configfiles if Path(f).name != "config.yaml"]
        hint = quick_command(config["corpus"]["name"] if config["corpus"]["type"] == "folder" else None, overlays)
        notice = cpu_plan_notice(planned, cores, job_threads, config["preset"], hint)
    except Exception as err:  # an estimate must never stop the run
        notice = f"(no CPU time estimate: {type(err).__name__}: {err})"
    if notice:
        print(notice, file=sys.stderr, flush=True)
