"""How fast a config trains here, and what that means for a planned workflow.

:func:`measure_seconds_per_step` times the real training step (model, losses, optimiser,
clipping) on a synthetic speech-like batch, so no corpus is needed. The workflow calls
:func:`cpu_plan_notice` before it starts: a CPU user asking for the paper-size protocol is
told the whole DAG's training time and pointed at the quick preset before days go by.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
import statistics
import time

import torch

from streamvc_rvq.data.dataset import Batch

MEASURE_FROM_STEPS = 1000  # planned CPU steps below this start without a measurement
QUICK_HINT_SECONDS = 2 * 3600  # a plan longer than this on a CPU names the quick preset
STEADY_STEPS = 3  # timed steps per config for the notice (their median) ...
STEADY_BUDGET_SECONDS = 30.0  # ... unless the timed ones already took this long (paper size on a CPU: ~20 s a step)
QUICK_COMMAND = "snakemake --cores all results/quick/espeak_quick/phase1/verdict.json --configfile config/quick.yaml"


def quick_command(folder_corpus: str | None = None, overlays: list[str] | None = None) -> str:
    """The quick preset's command for the same corpus: the built-in one (``QUICK_COMMAND``),
    or a folder corpus with the user's overlay files after config/quick.yaml."""
    if folder_corpus is None:
        return QUICK_COMMAND
    files = " ".join(["config/quick.yaml", *(f for f in overlays or [] if not f.endswith("quick.yaml"))])
    return f"snakemake --cores all results/quick/{folder_corpus}/phase1/verdict.json --configfile {files}"


def synthetic_batch(batch_size: int, samples: int, frames: int, seed: int, context: int = 0,
                    num_labels: int = 50) -> Batch:
    """Voiced tones with a 3 Hz envelope plus noise; labels at random below ``num_labels``
    (their values do not change the cost of a step)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000
    f0 = 100 + 150 * torch.rand(batch_size, 1, generator=g)
    tone = torch.sin(2 * math.pi * f0 * t) * (0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t))
    audio = 0.2 * tone + 0.02 * torch.randn(batch_size, samples, generator=g)
    labels = torch.randint(0, max(1, num_labels), (batch_size, frames), generator=g)
    return Batch(source=audio, reference=audio.flip(-1), labels=labels,
                 lengths=torch.full((batch_size,), frames, dtype=torch.int64), speakers=["x"] * batch_size,
                 utterance_ids=["x"] * batch_size, reference_ids=["x"] * batch_size, context_frames=context)


def measure_seconds_per_step(cfg: dict, device: torch.device, steps: int = 1, at_step: int | None = None,
                             budget_seconds: float | None = None) -> list[float]:
    """Seconds of each of ``steps`` timed training steps (after one warm-up step) at global
    step ``at_step`` (default: the last step target, all its stages active); with ``budget_seconds``
    no step starts once the timed ones took that long (one is always timed)."""
    from streamvc_rvq.training.trainer import Trainer, build_state

    with torch.random.fork_rng(devices=[]):
        state = build_state(cfg, device)
        trainer = Trainer(cfg, state, device)
        at = cfg["train"]["steps"][-1] if at_step is None else at_step
        frames = trainer.context_frames + trainer.crop_frames
        batch = synthetic_batch(cfg["train"]["batch_size"], frames * trainer.hop, frames, 0, trainer.context_frames,
                                num_labels=cfg["model"]["content_encoder"]["num_labels"])
        trainer.train_step(batch, at)
        times = []
        for i in range(steps):
            if times and budget_seconds is not None and sum(times) >= budget_seconds:
                break
            t0 = time.perf_counter()
            trainer.train_step(batch, at + i)
            times.append(time.perf_counter() - t0)
    return times


def _duration(seconds: float) -> str:
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def makespan(chains: list[float], slots: int) -> float:
    """Wall-clock seconds of independent chains run ``slots`` at a time (longest first, each
    to the least-loaded slot): a checkpoint chain is sequential, chains run side by side."""
    loads = [0.0] * max(1, slots)
    for seconds in sorted(chains, reverse=True):
        loads[loads.index(min(loads))] += seconds
    return max(loads)


def trains_on_cpu(device: str) -> bool:
    """Whether a job with train.device ``device`` trains on this machine's CPU; an explicit
    accelerator is taken at its word (it may exist only where the job runs)."""
    from streamvc_rvq.device import select_device

    return device == "cpu" or (device == "auto" and select_device("auto").type == "cpu")


def segment_steps(cfg: dict, step: int) -> int:
    """Steps the training target ``step`` trains: from the previous configured step (or 0)."""
    steps = cfg["train"]["steps"]
    index = steps.index(step)
    return step - (steps[index - 1] if index else 0)


def cpu_training_plan(train_jobs: Iterable[tuple[str, int, int]], resolved: dict[str, dict]) -> tuple[list[tuple[dict, int]], int]:
    """From a DAG's training jobs ``(experiment, step, threads)``: the ``(config, steps)`` of
    those that train on this CPU (each step target trains from the previous one of its
    experiment) and the most threads a job gets: :func:`cpu_plan_notice`'s inputs."""
    planned, job_threads = [], 1
    for experiment, step, threads in train_jobs:
        cfg = resolved[experiment]
        if not trains_on_cpu(cfg["train"]["device"]):
            continue
        planned.append((cfg, segment_steps(cfg, step)))
        job_threads = max(job_threads, int(threads))
    return planned, job_threads


def cpu_plan_notice(planned: list[tuple[dict, int]], cores: int, job_threads: int, preset: str,
                    hint: str = QUICK_COMMAND) -> str | None:
    """One line on the CPU training time of ``planned`` ``(experiment config, steps)`` jobs,
    or None when the plan is small. Each distinct config's step time is measured once here,
    with the threads a training job gets, as the median of up to :data:`STEADY_STEPS` steps after a
    warm-up one (the first step alone read 33 s where the steady state is 16-23 s, issue 27); each
    experiment's jobs form one sequential chain and ``cores // job_threads`` chains run side by side."""
    total = sum(steps for _, steps in planned)
    if total < MEASURE_FROM_STEPS:
        return None
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, job_threads))
    try:
        per_config: dict[str, float] = {}
        chains: dict[str, float] = {}
        for cfg, steps in planned:
            key = repr(sorted(cfg["model"].items())) + repr(sorted(cfg["train"].items()))
            if key not in per_config:
                per_config[key] = statistics.median(measure_seconds_per_step(
                    cfg, torch.device("cpu"), steps=STEADY_STEPS, budget_seconds=STEADY_BUDGET_SECONDS))
            chains[cfg["experiment"]] = chains.get(cfg["experiment"], 0.0) + steps * per_config[key]
    finally:
        torch.set_num_threads(previous)
    slots = max(1, cores // max(1, job_threads))
    wall = makespan(list(chains.values()), slots)
    rate = total / sum(chains.values())
    line = (f"CPU training: {total} steps in {len(planned)} jobs, {len(chains)} experiments "
            f"{min(slots, len(chains))} at a time, about {rate:.2f} steps/s per job (measured here, "
            f"{job_threads} thread{'s' if job_threads > 1 else ''} each) = about {_duration(wall)} of training for this DAG")
    if wall > QUICK_HINT_SECONDS and preset != "quick":
        line += f"; for a first result, the quick preset runs the same protocol scaled 1/20: {hint}"
    return line
