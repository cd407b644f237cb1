# Targets this config does not build get one line naming what it does build, instead of
# Snakemake's generic "No rule to produce". The catch-all rules below match only paths the
# real rules do not build (their `path` wildcard excludes every experiment of this config),
# so they can never stand in for a real target; asking for one stops the plan with the line.
import os

_OWN = [f"{RESULTS}/{experiment}"[len("results/") :] for experiment in EXPERIMENTS]


wildcard_constraints:
    # not one of this config's experiment directories followed by the target's own one or two
    # path components (a lookahead sees the rest of the whole path, not just the wildcard)
    path=r"(?!(?:%s)/[^/]+(?:/[^/]+)?$).+" % "|".join(re.escape(own) for own in _OWN),


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


def _trains_on_cpu(device):
    """Whether a job with train.device ``device`` trains on this machine's CPU; an explicit
    accelerator is taken at its word (it may exist only where the job runs)."""
    from streamvc_rvq.device import select_device

    return device == "cpu" or (device == "auto" and select_device("auto").type == "cpu")


def cpu_time_notice(workflow):
    """Before a long local CPU run: one line with the whole DAG's training time, measured here.
    Never on a cluster (jobs run elsewhere) or in touch mode; never stops the run."""
    if not workflow.local_exec or workflow.touch:
        return
    from streamvc_rvq.training.throughput import cpu_plan_notice, quick_command

    try:
        planned, job_threads = [], 1
        for job in workflow.dag.needrun_jobs():
            if job.rule.name != "train":
                continue
            cfg = RESOLVED[job.wildcards.experiment]
            if not _trains_on_cpu(cfg["train"]["device"]):
                continue
            steps = experiment_steps(job.wildcards.experiment)
            step = int(job.wildcards.step)
            index = steps.index(step)
            planned.append((cfg, step - (steps[index - 1] if index else 0)))
            job_threads = max(job_threads, int(job.threads))
        cores = max(1, min(workflow.cores or 1, os.cpu_count() or 1))
        overlays = [str(f) for f in workflow.configfiles if Path(f).name != "config.yaml"]
        hint = quick_command(config["corpus"]["name"] if config["corpus"]["type"] == "folder" else None, overlays)
        notice = cpu_plan_notice(planned, cores, job_threads, config["preset"], hint)
    except Exception as err:  # an estimate must never stop the run
        notice = f"(no CPU time estimate: {type(err).__name__}: {err})"
    if notice:
        print(notice, file=sys.stderr, flush=True)
