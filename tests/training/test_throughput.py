"""The CPU notice before a long run: measured, scaled to the plan, pointing at the quick preset."""

from __future__ import annotations

import re
import shlex

from micro import ROOT, micro_config
from streamvc_rvq.config import load_config, results_dir
from streamvc_rvq.training import throughput
from streamvc_rvq.training.throughput import QUICK_COMMAND, cpu_plan_notice, makespan


def test_small_plans_start_without_a_measurement():
    assert cpu_plan_notice([(micro_config(), 20)] * 4, 2, 1, "micro") is None


def test_long_cpu_plan_gets_one_line_with_its_time_and_the_quick_preset(monkeypatch):
    calls = []
    real = throughput.measure_seconds_per_step

    def counted(cfg, device, **kw):
        calls.append(cfg["experiment"])
        assert kw["steps"] == throughput.STEADY_STEPS > 1  # a median of steady steps, not the first one
        return real(cfg, device, **kw)

    monkeypatch.setattr(throughput, "measure_seconds_per_step", counted)
    cfg = micro_config()
    line = cpu_plan_notice([(cfg, 2_000_000), (cfg, 2_000_000), (micro_config("baseline"), 1000)], 2, 1, "paper")
    assert "\n" not in line
    match = re.search(r"(\d+) steps in 3 jobs, 2 experiments 2 at a time, about ([\d.]+) steps/s per job .* "
                      r"= about ([\d.]+) (min|h|days)", line)
    assert match and int(match[1]) == 4_001_000 and float(match[2]) > 0
    assert line.endswith(QUICK_COMMAND)
    assert calls == ["phase1", "baseline"]  # one measurement per distinct config
    assert "quick preset" not in cpu_plan_notice([(cfg, 2_000_000)], 2, 1, "quick")


def test_chains_run_side_by_side_up_to_the_free_slots():
    assert makespan([10.0, 10.0], 2) == 10.0
    assert makespan([10.0, 10.0], 1) == 20.0
    assert makespan([8.0, 5.0, 4.0, 3.0], 2) == 11.0  # 8 + 3 | 5 + 4


def test_the_quick_command_names_the_quick_presets_results():
    args = shlex.split(QUICK_COMMAND)
    configs = args[args.index("--configfile") + 1:]
    quick = results_dir(load_config(ROOT / "config" / "config.yaml", *(ROOT / c for c in configs)))
    assert args[3] == f"{quick}/phase1/verdict.json"


def test_the_measurement_draws_labels_the_head_can_hold():
    from streamvc_rvq.config import deep_merge
    import torch

    cfg = deep_merge(micro_config(), {"model": {"content_encoder": {"num_labels": 8}}})
    [seconds] = throughput.measure_seconds_per_step(cfg, torch.device("cpu"))
    assert seconds > 0


def test_the_measurement_times_several_steps_within_its_budget():
    import torch

    cfg = micro_config()
    assert len(throughput.measure_seconds_per_step(cfg, torch.device("cpu"), steps=3)) == 3
    assert len(throughput.measure_seconds_per_step(cfg, torch.device("cpu"), steps=3, budget_seconds=0.0)) == 1


def test_the_dags_training_jobs_become_the_cpu_plan():
    """Each step target trains from the previous one of its experiment; a job on an explicit
    accelerator is not planned on this CPU; the plan keeps the most threads a job gets."""
    phase1, baseline = micro_config(), micro_config("baseline")
    gpu = {**micro_config("phase1_beta1"), "train": {**micro_config("phase1_beta1")["train"], "device": "cuda"}}
    resolved = {"phase1": phase1, "baseline": baseline, "phase1_beta1": gpu}
    steps = phase1["train"]["steps"]
    jobs = [("phase1", steps[0], 1), ("phase1", steps[1], 2), ("baseline", steps[0], 1), ("phase1_beta1", steps[0], 4)]
    planned, threads = throughput.cpu_training_plan(jobs, resolved)
    assert [(cfg["experiment"], n) for cfg, n in planned] == [
        ("phase1", steps[0]), ("phase1", steps[1] - steps[0]), ("baseline", steps[0])]
    assert threads == 2
