"""``streamvc-rvq plan TARGET``: what a snakemake command would run, before anything runs: the
jobs by rule, the training steps and the device they train on, and on a CPU the measured
training time of the whole DAG (the estimate the workflow prints when it starts; a dry run
skips it)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

from streamvc_rvq.config import experiment_names, load_config, resolve_experiment

_JOB = re.compile(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", re.M | re.S)
_WILDCARDS = re.compile(r"wildcards: experiment=([\w.-]+), step=(\d+)")


class PlanError(RuntimeError):
    """The dry run failed; the message is snakemake's error."""


def planned_jobs(dry_run_output: str) -> tuple[Counter, list[tuple[str, int]]]:
    """(jobs per rule, the training jobs' ``(experiment, step)``) of ``snakemake -n`` output."""
    rules, training = Counter(), []
    for rule, body in _JOB.findall(dry_run_output):
        rules[rule] += 1
        if rule == "train" and (match := _WILDCARDS.search(body)):
            training.append((match[1], int(match[2])))
    return rules, training


def dry_run(targets: Sequence[str], configfiles: Sequence[str], cores: int, workdir: Path) -> str:
    """The output of ``snakemake -n TARGETS --configfile FILES`` in ``workdir``."""
    command = [sys.executable, "-m", "snakemake", "-n", "--cores", str(cores), *targets]
    if configfiles:
        command += ["--configfile", *configfiles]
    proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        raise PlanError(next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "dry run failed"))
    return proc.stdout + proc.stderr


def plan(targets: Sequence[str], base_config: Path, configfiles: Sequence[str] = (), cores: int = 1,
         workdir: Path = Path(".")) -> str:
    """The plan as the lines to print; ``base_config``: the Snakefile's own configfile."""
    from streamvc_rvq.device import select_device
    from streamvc_rvq.training.throughput import cpu_plan_notice, cpu_training_plan, segment_steps, trains_on_cpu

    rules, training = planned_jobs(dry_run(targets, configfiles, cores, workdir))
    if not rules:
        return "nothing to be done: every requested file is up to date"
    config = load_config(Path(workdir) / base_config, *(Path(workdir) / f for f in configfiles))
    resolved = {name: resolve_experiment(config, name) for name in experiment_names(config)}
    lines = [f"{sum(rules.values())} jobs: " + ", ".join(f"{rule} {n}" for rule, n in sorted(rules.items()))]
    steps = sum(segment_steps(resolved[e], s) for e, s in training)
    devices = sorted({resolved[e]["train"]["device"] for e, _ in training})
    on_cpu = [job for job in training if trains_on_cpu(resolved[job[0]]["train"]["device"])]
    lines.append(f"training: {steps} steps in {len(training)} jobs over {len({e for e, _ in training})} experiments; "
                 f"train.device {', '.join(devices) or '-'} (auto picks {select_device('auto').type} here)")
    if on_cpu:
        planned, threads = cpu_training_plan([(e, s, 1) for e, s in on_cpu], resolved)
        notice = cpu_plan_notice(planned, cores, threads, config["preset"])
        lines.append(notice or f"CPU training: {sum(n for _, n in planned)} steps, too few to be worth timing")
    return "\n".join(lines)

