"""End-to-end: the real workflow on the micro config, through the snakemake command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--configfile", "config/micro.yaml", *args],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=1200,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    """A copy of the workflow (Snakefile, rules, config, profiles) in a fresh directory."""
    work = tmp_path_factory.mktemp("workflow")
    shutil.copy(ROOT / "Snakefile", work)
    for name in ("rules", "config", "profiles", "envs"):
        shutil.copytree(ROOT / name, work / name, symlinks=False)
    return work


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts from snakemake's dry-run 'Job stats' table."""
    counts, in_table = {}, False
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
            elif line.strip().startswith("total"):
                break
    return counts


def test_checkpoint_chain_builds_plans_nothing_after_and_forced_middle_target_rebuilds_downstream(workflow):
    last = "results/phase1/checkpoints/step_20.pt"
    snakemake(workflow, "--cores", "2", last)
    for step in (2, 4, 10, 20):
        assert (workflow / f"results/phase1/checkpoints/step_{step}.pt").stat().st_size > 0
    assert "Nothing to be done" in snakemake(workflow, "-n", last).stdout + snakemake(workflow, "-n", last).stderr
    plan = planned_jobs(snakemake(workflow, "-n", last, "--forcerun", "results/phase1/checkpoints/step_4.pt"))
    assert plan.get("train") == 3  # step_4 and the two targets built from it, not step_2
    assert "prepare_data" not in plan


def test_verdict_and_ab_through_snakemake(workflow):
    snakemake(workflow, "--cores", "2", "results/phase1/verdict.json", "results/ab/commitment_cost.json")
    verdict = json.loads((workflow / "results/phase1/verdict.json").read_text())
    assert verdict["class"] in {"success", "partial", "failure"}
    ids = {c["id"] for c in verdict["criteria"]}
    assert len(ids) >= 10 and {c["step"] for c in verdict["criteria"]} >= {2, 4, 10, 20}
    assert verdict["scaled"] is True
    plots = list((workflow / "results/phase1/report/plots").glob("*.png"))
    assert plots and all(p.stat().st_size > 1000 for p in plots)
    assert (workflow / "results/phase1/report/report.md").read_text().strip()
    ab = json.loads((workflow / "results/ab/commitment_cost.json").read_text())
    assert set(ab["arms"]) == {"phase1", "phase1_beta1"}
    metrics = json.loads((workflow / "results/phase1/metrics/step_2.json").read_text())
    assert metrics["num_active_quantizers"] == 1 and metrics["stages"][0]["perplexity"] >= 1.0
    assert list((workflow / "results/phase1/samples/step_2").glob("*.wav"))
