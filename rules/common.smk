# Helpers shared by the rules: experiment resolution, step chains and target lists.
import json
import re

from streamvc_rvq.config import experiment_names, resolve_experiment, seed_variants

EXPERIMENTS = experiment_names(config)


wildcard_constraints:
    experiment="|".join(map(re.escape, EXPERIMENTS)),
    step=r"\d+",
    corpus=re.escape(config["corpus"]["name"]),
    comparison="|".join(config.get("ab", {})) or "none",


def experiment_config(experiment):
    return resolve_experiment(config, experiment)


def experiment_json(wildcards):
    """The experiment's resolved config, passed to the CLI; a change re-runs the job."""
    return json.dumps(experiment_config(wildcards.experiment), sort_keys=True)


def experiment_steps(experiment):
    return experiment_config(experiment)["train"]["steps"]


def manifest():
    return f"results/data/{config['corpus']['name']}/manifest.csv"


def previous_checkpoint(wildcards):
    """step_N is trained from the previous step target of the same experiment (none for the first)."""
    steps = experiment_steps(wildcards.experiment)
    step = int(wildcards.step)
    if step not in steps:
        raise ValueError(
            f"step {step} is not a step target of experiment {wildcards.experiment} (train.steps: {steps})"
        )
    index = steps.index(step)
    if index == 0:
        return []
    return f"results/{wildcards.experiment}/checkpoints/step_{steps[index - 1]}.pt"


def resume_flag(wildcards, input):
    return f"--resume {input.previous}" if input.previous else ""


def experiment_metrics(experiment):
    return expand(
        "results/{experiment}/metrics/step_{step}.json",
        experiment=experiment,
        step=experiment_steps(experiment),
    )


def verdict_inputs(wildcards):
    inputs = {"metrics": experiment_metrics(wildcards.experiment)}
    control = config["verdict"].get("control")
    if control and control != wildcards.experiment:
        inputs["control"] = experiment_metrics(control)
    return inputs


def control_flag(wildcards, input):
    return "--control-metrics " + " ".join(input.control) if "control" in input.keys() else ""


def comparison_runs(comparison):
    """Experiment names of every arm and seed of an A/B comparison."""
    arms = config["ab"][comparison]["arms"]
    return [name for arm in arms for name in seed_variants(config, arm)]


def ab_inputs(wildcards):
    runs = comparison_runs(wildcards.comparison)
    return {
        "verdicts": expand("results/{experiment}/verdict.json", experiment=runs),
        "metrics": [m for run in runs for m in experiment_metrics(run)],
    }


def default_targets():
    targets = [f"results/{config['verdict']['experiment']}/verdict.json"]
    targets += expand("results/ab/{comparison}.json", comparison=list(config.get("ab", {})))
    return targets
