"""Helpers of the workflow tests (tests/workflow): a scratch copy of the workflow, snakemake through its CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from streamvc_rvq.config import load_config, results_dir

ROOT = Path(__file__).resolve().parents[1]
# Where the micro config's experiment results go (the path scheme has one home: results_dir).
MICRO = results_dir(load_config(ROOT / "config" / "config.yaml", ROOT / "config" / "micro.yaml"))


def copy_workflow(work: Path) -> Path:
    """Snakefile, rules, config, profiles and envs copied into ``work``."""
    shutil.copy(ROOT / "Snakefile", work)
    for name in ("rules", "config", "profiles", "envs"):
        shutil.copytree(ROOT / name, work / name, symlinks=False)
    return work


def run_snakemake(workdir: Path, *args: str, configfiles=("config/micro.yaml",), check: bool = True,
                  timeout: int = 1200, env: dict | None = None) -> subprocess.CompletedProcess:
    """``snakemake ARGS --configfile FILES`` (targets first: --configfile takes what follows);
    ``env``: extra environment variables."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(env or {}))
    tail = ["--configfile", *configfiles] if configfiles else []
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args, *tail], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts from snakemake's dry-run 'Job stats' table."""
    counts, in_table = {}, False
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if line.strip().startswith("total") or (counts and not parts):
                break
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
    return counts
