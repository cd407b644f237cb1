"""The scaled protocol reproduces the paper-size protocol's learning-rate integral, phase by
phase, and every lever of the rule reaches the config the trainer runs."""

import pytest

from streamvc_rvq.config import load_config, resolve_experiment
from streamvc_rvq.training.scaling import phase_integrals, scale_protocol

PAPER = {"steps": [1000, 2000, 5000, 10000], "warmup_steps": 500, "lr": 1.0e-4, "scale": 1.0}
# The protocol's phases in paper steps: warm-up, then each checkpoint interval; the
# progressive schedule's stage boundaries (2000, 4000, 6000, 8000) are phases too.
PAPER_BOUNDARIES = [0, 500, 1000, 2000, 4000, 5000, 6000, 8000, 10000]


def _scaled(scale):
    model = {"rvq": {"progressive_steps": 2000, "ema_decay": 0.99}}
    return scale_protocol(model, {**PAPER, "scale": scale})


@pytest.mark.parametrize("scale", [0.05, 0.1, 0.2])
def test_scaled_protocol_reproduces_paper_lr_integral_per_phase(scale):
    model, train = _scaled(scale)
    paper = phase_integrals(PAPER, PAPER_BOUNDARIES)
    scaled = phase_integrals(train, [round(b * scale) for b in PAPER_BOUNDARIES])
    assert sum(paper) == pytest.approx(0.50, rel=1e-3)  # the paper-size figure
    assert scaled == pytest.approx(paper, rel=2e-3)
    assert train["steps"] == [round(s * scale) for s in PAPER["steps"]]
    assert model["rvq"]["progressive_steps"] == round(2000 * scale)


def test_cutting_steps_alone_loses_the_integral():
    """What the rule fixes: the old quick preset (steps / 20, same lr) had 1/20 of it."""
    old_quick = {**PAPER, "steps": [50, 100, 250, 500], "warmup_steps": 25}
    assert sum(phase_integrals(old_quick, [0, 500])) == pytest.approx(0.025, rel=2e-2)


def test_ema_decay_keeps_the_memory_of_a_protocol_time():
    """The weight of statistics 1/100 of the protocol ago is the paper-size one."""
    model, train = _scaled(0.05)
    paper_weight = 0.99 ** (0.01 * 10000)
    scaled_weight = model["rvq"]["ema_decay"] ** (0.01 * train["steps"][-1])
    assert scaled_weight == pytest.approx(paper_weight, rel=1e-9)
    assert model["rvq"]["ema_decay"] == pytest.approx(0.99 ** 20)


def test_scale_one_is_the_identity_and_zero_counts_stay_zero():
    model = {"rvq": {"progressive_steps": 0, "ema_decay": 0.99}}
    assert scale_protocol(model, PAPER) == (model, PAPER)
    scaled_model, _ = scale_protocol(model, {**PAPER, "scale": 0.05})
    assert scaled_model["rvq"]["progressive_steps"] == 0  # the baseline: every stage from step 0


def test_quick_preset_and_fidelity_variant_resolve_to_the_scaled_runs():
    config = load_config("config/config.yaml", "config/quick.yaml", "config/confidence.yaml")
    quick = resolve_experiment(config, "phase1")
    assert quick["train"]["steps"] == [50, 100, 250, 500]
    assert quick["train"]["lr"] == pytest.approx(2.0e-3)
    longer = resolve_experiment(config, "phase1_x2")
    assert longer["train"]["scale"] == pytest.approx(0.1)
    assert longer["train"]["steps"] == [100, 200, 500, 1000]
    assert longer["train"]["lr"] == pytest.approx(1.0e-3)
    assert longer["model"]["rvq"]["progressive_steps"] == 200
    assert resolve_experiment(config, "phase1_s2")["train"]["seed"] == 2
