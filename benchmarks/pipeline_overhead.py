"""Workflow overhead: planning the full default DAG, and a no-op rerun that schedules 0 jobs.

    python benchmarks/pipeline_overhead.py [--output results/benchmarks/pipeline.json]

1. ``snakemake -n`` on the default config's full DAG (verdict + A/B, nothing built yet).
2. The micro workflow is built once in a scratch copy, then ``snakemake --cores 2`` is run
   again: it must schedule nothing; its wall time is the price of an up-to-date check.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_workflow(dest: Path) -> None:
    shutil.copy(ROOT / "Snakefile", dest)
    for name in ("rules", "config", "profiles", "envs"):
        shutil.copytree(ROOT / name, dest / name)


def run(cwd: Path, *args: str) -> tuple[float, str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout + proc.stderr


def total_jobs(output: str) -> int:
    match = re.search(r"^total\s+(\d+)", output, re.MULTILINE)
    return int(match[1]) if match else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        full, micro = Path(tmp) / "full", Path(tmp) / "micro"
        full.mkdir(), micro.mkdir()
        copy_workflow(full)
        copy_workflow(micro)
        dry, out = run(full, "-n")
        dry_jobs = total_jobs(out)
        run(micro, "--cores", "2", "--configfile", "config/micro.yaml")
        noop, out = run(micro, "--cores", "2", "--configfile", "config/micro.yaml")
        noop_jobs = total_jobs(out)
    result = {
        "dry_run_full_default_dag_seconds": dry,
        "dry_run_jobs": dry_jobs,
        "noop_rerun_micro_seconds": noop,
        "noop_rerun_jobs": noop_jobs,
    }
    print(f"snakemake -n, full default DAG ({dry_jobs} jobs): {dry:.2f} s")
    print(f"no-op rerun of the built micro workflow ({noop_jobs} jobs scheduled): {noop:.2f} s")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
