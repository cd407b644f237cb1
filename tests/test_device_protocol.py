"""benchmarks/device_protocol.py: what a lent GPU machine runs, tried here on the CPU with the micro preset."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from micro import CONFIG_FILES, ROOT

SCRIPT = ROOT / "benchmarks" / "device_protocol.py"


def _run(work, *args: str) -> dict:
    cmd = [sys.executable, str(SCRIPT), "--config", *map(str, CONFIG_FILES), "--device", "cpu", "--work", str(work), *args]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


@pytest.mark.slow
def test_trains_each_arm_evaluates_it_and_stops_at_the_deadline_with_a_snapshot(micro_manifest, tmp_path):
    (tmp_path / "corpus").symlink_to(micro_manifest.parent)
    done = _run(tmp_path, "--step", "2", "--deadline-s", "300")
    for name in ("phase1", "baseline"):
        run = done["runs"][name]
        assert run["finished"] and run["reached_step"] == 2 and run["evaluated"], run
        assert len(run["perplexity"]) == len(run["codes_used"]) == run["num_active"]
    # read from the checkpoints, not from the config: the unfixed control sits on one code from its first steps
    assert done["runs"]["baseline"]["codes_used"][0] == 1 < done["runs"]["phase1"]["codes_used"][0]

    stopped = _run(tmp_path, "--step", "100000", "--deadline-s", "45")
    for name in ("phase1", "baseline"):
        run = stopped["runs"][name]
        assert not run["finished"] and 0 < run["reached_step"] < 100000, run
        assert (tmp_path / name / "step_100000.pt.snapshot").exists()  # what a later call resumes from
