"""How fast a config trains here, and what that means for a planned workflow.

:func:`measure_seconds_per_step` times the real training step (model, losses, optimiser,
clipping) on a synthetic speech-like batch, so no corpus is needed. The workflow calls
:func:`cpu_plan_notice` before it starts: a CPU user asking for the paper-size protocol is
told the whole DAG's training time and pointed at the quick preset before days go by.
"""

from __future__ import annotations

import math
import statistics
import time

import torch

from streamvc_rvq.data.dataset import Batch

MEASURE_FROM_STEPS = 1000  # planned CPU steps below this start without a measurement
QUICK_HINT_SECONDS = 2 * 3600  # a plan longer than this on a CPU names the quick preset
QUICK_COMMAND = "snakemake --cores all results/quick/espeak_quick/phase1/verdict.json --configfile config/quick.yaml"


def synthetic_batch(batch_size: int, samples: int, frames: int, seed: int, context: int = 0) -> Batch:
    """Voiced tones with a 3 Hz envelope plus noise; labels at random (their values do not
    change the cost of a step)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000
    f0 = 100 + 150 * torch.rand(batch_size, 1, generator=g)
    tone = torch.sin(2 * math.pi * f0 * t) * (0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t))
    audio = 0.2 * tone + 0.02 * torch.randn(batch_size, samples, generator=g)
    labels = torch.randint(0, 50, (batch_size, frames), generator=g)
    return Batch(source=audio, reference=audio.flip(-1), labels=labels,
                 lengths=torch.full((batch_size,), frames, dtype=torch.int64), speakers=["x"] * batch_size,
                 utterance_ids=["x"] * batch_size, reference_ids=["x"] * batch_size, context_frames=context)


def measure_seconds_per_step(cfg: dict, device: torch.device, steps: int = 1, at_step: int | None = None) -> list[float]:
    """Seconds of each of ``steps`` timed training steps (after one warm-up step) at global
    step ``at_step`` (default: the last step target, all its stages active)."""
    from streamvc_rvq.training.trainer import Trainer, build_state

    with torch.random.fork_rng(devices=[]):
        state = build_state(cfg, device)
        trainer = Trainer(cfg, state, device)
        at = cfg["train"]["steps"][-1] if at_step is None else at_step
        frames = trainer.context_frames + trainer.crop_frames
        batch = synthetic_batch(cfg["train"]["batch_size"], frames * trainer.hop, frames, 0, trainer.context_frames)
        trainer.train_step(batch, at)
        times = []
        for i in range(steps):
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


def cpu_plan_notice(planned: list[tuple[dict, int]], threads: int, preset: str) -> str | None:
    """One line on the CPU training time of ``planned`` ``(experiment config, steps)`` jobs,
    or None when the plan is small. Each experiment's step time is measured once here."""
    total = sum(steps for _, steps in planned)
    if total < MEASURE_FROM_STEPS:
        return None
    torch.set_num_threads(max(1, threads))
    seconds, per_config = 0.0, {}
    for cfg, steps in planned:
        key = repr(sorted(cfg["model"].items())) + repr(sorted(cfg["train"].items()))
        if key not in per_config:
            per_config[key] = statistics.median(measure_seconds_per_step(cfg, torch.device("cpu")))
        seconds += steps * per_config[key]
    rate = total / seconds
    line = (f"CPU training: {total} steps in {len(planned)} jobs at about {rate:.2f} steps/s "
            f"(measured here, {threads} threads) = about {_duration(seconds)} of training for this DAG")
    if seconds > QUICK_HINT_SECONDS and preset != "quick":
        line += f"; for a first result, the quick preset runs the same protocol scaled 1/20: {QUICK_COMMAND}"
    return line
