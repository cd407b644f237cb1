"""Learning-rate schedule: linear warm-up, then cosine decay to zero at the last step target.

The schedule is a pure function of the global step, so a chain of step targets follows
exactly the curve of one straight run. Step ``k`` takes the continuous schedule's value at
the middle of the step (``k + 0.5``): the summed learning rate of any phase is then the
schedule's integral over it at every step count, which is what lets a scaled protocol
(:mod:`streamvc_rvq.training.scaling`) reproduce the paper-size one phase by phase.
"""

from __future__ import annotations

import math


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based)."""
    t = step + 0.5
    if warmup_steps > 0 and t < warmup_steps:
        return t / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (t - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))
