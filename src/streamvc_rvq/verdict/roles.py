"""The protocol's checkpoint roles (1k, 2k, 5k, 10k: the configured steps by position) and
the roles each model-based quality measure is read at. Light on imports: the workflow reads it
to choose each evaluation's measures."""

from __future__ import annotations

from typing import Sequence

ROLES: tuple[tuple[str, int], ...] = (("1k", 1000), ("2k", 2000), ("5k", 5000), ("10k", 10000))
ROLE_ORDER = {role: i for i, (role, _) in enumerate(ROLES)}
# The roles whose checkpoint each model-based quality measure is read at: DNSMOS by
# audio_quality_improving (10k against 5k), the speaker controls, the preconditions and the ladder
# at the last checkpoint. Elsewhere a measure only draws a point on a plot, at ~25 s an evaluation
# on the quick preset (evaluation.quality_at: every keeps those points).
QUALITY_READ_AT: dict[str, tuple[str, ...]] = {"dnsmos": ("5k", "10k"), "speaker": ("10k",), "recognition": ("10k",)}


def quality_measures_at(step: int, steps: Sequence[int], measures: Sequence[str], every: bool = False) -> list[str]:
    """The quality measures one checkpoint's evaluation runs: those the verdict reads at the role
    ``step`` plays among the configured ``steps`` (roles by position, as `decision.protocol_scale`),
    all of them at the last step and wherever ``every``."""
    steps = [int(s) for s in steps]
    if every or int(step) == steps[-1]:
        return list(measures)
    roles = {role for (role, _), s in zip(ROLES, steps) if s == int(step)}
    return [m for m in measures if roles & set(QUALITY_READ_AT[m])]
