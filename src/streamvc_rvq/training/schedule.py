"""Learning-rate schedule: linear warm-up, then cosine decay to zero at the last step target.

The schedule is a pure function of the global step, so a chain of step targets follows
exactly the curve of one straight run.
"""

from __future__ import annotations

import math


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))
