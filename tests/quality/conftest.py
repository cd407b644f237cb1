"""Hand-made checkpoint metrics (tests/checkpoint_metrics.py) as fixtures here."""

from checkpoint_metrics import healthy_run, hist, make_cp, reference  # noqa: F401
