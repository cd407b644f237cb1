"""The CPU notice before a long run: measured, scaled to the plan, pointing at the quick preset."""

from __future__ import annotations

import re
import shlex

from micro import ROOT, micro_config
from streamvc_rvq.config import load_config, results_dir
from streamvc_rvq.training import throughput
from streamvc_rvq.training.throughput import QUICK_COMMAND, cpu_plan_notice


def test_small_plans_start_without_a_measurement():
    assert cpu_plan_notice([(micro_config(), 20)] * 4, 1, "micro") is None


def test_long_cpu_plan_gets_one_line_with_its_time_and_the_quick_preset(monkeypatch):
    calls = []
    real = throughput.measure_seconds_per_step

    def counted(cfg, device, **kw):
        calls.append(cfg["experiment"])
        return real(cfg, device, **kw)

    monkeypatch.setattr(throughput, "measure_seconds_per_step", counted)
    cfg = micro_config()
    line = cpu_plan_notice([(cfg, 2_000_000), (cfg, 2_000_000), (micro_config("baseline"), 1000)], 1, "paper")
    assert "\n" not in line
    match = re.search(r"(\d+) steps in 3 jobs at about ([\d.]+) steps/s .* = about ([\d.]+) (min|h|days)", line)
    assert match and int(match[1]) == 4_001_000 and float(match[2]) > 0
    assert line.endswith(QUICK_COMMAND)
    assert calls == ["phase1", "baseline"]  # one measurement per distinct config
    assert "quick preset" not in cpu_plan_notice([(cfg, 2_000_000)], 1, "quick")


def test_the_quick_command_names_the_quick_presets_results():
    args = shlex.split(QUICK_COMMAND)
    configs = args[args.index("--configfile") + 1:]
    quick = results_dir(load_config(ROOT / "config" / "config.yaml", *(ROOT / c for c in configs)))
    assert args[3] == f"{quick}/phase1/verdict.json"
