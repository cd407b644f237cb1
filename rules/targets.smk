# Targets this config does not build get one line naming what it does build, instead of
# Snakemake's generic "No rule to produce". Each catch-all rule below matches any path of
# its kind; for a path the real rules build it steps aside (no input, lower rule order).
import os


def _target_check(kind):
    def check(wildcards):
        wanted = f"results/{wildcards.path}/{kind.format(**wildcards)}"
        for experiment in EXPERIMENTS:
            if wanted == f"{RESULTS}/{experiment}/{kind.format(**wildcards)}":
                return []
        head, _, last = wildcards.path.rpartition("/")
        this = f"this config (preset {config['preset']}, corpus {config['corpus']['name']})"
        if last in EXPERIMENTS:
            sys.exit(
                f"error: {wanted} is not built by {this}: its results go to {RESULTS}/; "
                f"ask for {RESULTS}/{last}/{kind.format(**wildcards)}"
            )
        sys.exit(
            f"error: {wanted}: no experiment {last!r} in {this}; its experiments: {', '.join(EXPERIMENTS)} "
            f"(results in {RESULTS}/)"
        )

    return check


rule unknown_verdict:
    input:
        _target_check("verdict.json"),
    output:
        "results/{path}/verdict.json",
    shell:
        "false"


rule unknown_checkpoint:
    input:
        _target_check("checkpoints/step_{step}.pt"),
    output:
        "results/{path}/checkpoints/step_{step}.pt",
    shell:
        "false"


rule unknown_metrics:
    input:
        _target_check("metrics/step_{step}.json"),
    output:
        "results/{path}/metrics/step_{step}.json",
    shell:
        "false"


ruleorder: verdict > unknown_verdict
ruleorder: train > unknown_checkpoint
ruleorder: evaluate > unknown_metrics


def cpu_time_notice(workflow):
    """Before a long CPU run: one line with the whole DAG's training time (measured here)."""
    from streamvc_rvq.device import select_device
    from streamvc_rvq.training.throughput import cpu_plan_notice

    planned = []
    for job in workflow.dag.needrun_jobs():
        if job.rule.name != "train":
            continue
        cfg = RESOLVED[job.wildcards.experiment]
        if select_device(cfg["train"]["device"]).type != "cpu":
            continue
        steps = experiment_steps(job.wildcards.experiment)
        step = int(job.wildcards.step)
        index = steps.index(step)
        planned.append((cfg, step - (steps[index - 1] if index else 0)))
    threads = max(1, min(workflow.cores or 1, os.cpu_count() or 1))
    notice = cpu_plan_notice(planned, threads, config["preset"])
    if notice:
        print(notice, file=sys.stderr, flush=True)
