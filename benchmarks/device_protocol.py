"""The paper-size protocol's first step targets on an accelerator, inside a deadline (issue 27, item 5).

    python benchmarks/device_protocol.py --device cuda --deadline-s 300 --output results/device/protocol.json \
        [--config config/config.yaml ...] [--experiments phase1 baseline] [--step 1000] [--work results/device]

A lent GPU machine comes for minutes, bare, without Snakemake or eSpeak: this runs what the workflow's
`prepare_data`, `train` and `evaluate` rules run, through the same CLI, without the workflow. Frame labels come from
the corpus's own label files (``--labels manifest``, the CLI's default), which is what `corpus.labels: auto` gives the
built-in corpus; a corpus without label files would need the `frame_labels` rule first. It prepares the
config's corpus (eSpeak NG from the espeakng-loader wheel, every core), trains every experiment to ``--step`` at
once (one process each, sharing the device), stops those still running at the deadline (SIGTERM: the trainer
leaves a resumable snapshot and says where), evaluates each finished checkpoint (codebook statistics over the
validation split, no model-based quality measure: the workflow's own choice below the last step) and prints
per-stage perplexity, codes used, steps/s and peak device memory. Figures only: the verdict needs every step
target, which no single lease reaches at paper size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from streamvc_rvq.atomic import write_json  # noqa: E402
from streamvc_rvq.config import load_config, resolve_experiment  # noqa: E402
from streamvc_rvq.data.prepare import prepare_corpus  # noqa: E402

EVALUATION_SHARE = 0.25  # of the deadline kept for the evaluations after training stops
FINISHED = re.compile(r"^wrote .*: (\d+) steps in ([\d.]+) s \(([\d.]+) steps/s", re.M)
PEAK_MEMORY = re.compile(r"peak device memory ([\d.]+) GiB")
STOPPED = re.compile(r"stopped by signal \d+ after step (\d+)")
PROGRESS = re.compile(r"^step \d+/\d+ .*? ([\d.]+) steps/s", re.M)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamvc_rvq", *args]


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def train_all(configs: dict[str, dict], manifest: Path, work: Path, step: int, device: str, deadline: float) -> dict:
    """Every experiment to ``step`` side by side; SIGTERM (snapshot) to those still running at ``deadline``."""
    procs = {}
    for name, cfg in configs.items():
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        log = open(folder / "train.log", "w")
        cmd = _cli("train", "--config-json", json.dumps(cfg), "--manifest", str(manifest), "--step", str(step),
                   "--output", str(folder / f"step_{step}.pt"), "--scalars-output", str(folder / f"scalars_{step}.json"),
                   "--device", device, "--snapshot-every-minutes", "1")
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
    out = {}
    for name, (proc, log) in procs.items():
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        text = _read(work / name / "train.log")
        finished = FINISHED.search(text)
        progress = PROGRESS.findall(text)
        out[name] = {
            "finished": proc.returncode == 0 and finished is not None,
            "returncode": proc.returncode,
            "reached_step": step if finished else int(stopped.group(1)) if (stopped := STOPPED.search(text)) else 0,
            "steps_per_s": float(finished.group(3)) if finished else (float(progress[-1]) if progress else None),
            "peak_device_memory_gib": float(memory.group(1)) if (memory := PEAK_MEMORY.search(text)) else None,
            "log_tail": text.strip().splitlines()[-3:],
        }
    return out


def evaluate(name: str, cfg: dict, manifest: Path, work: Path, step: int, device: str, deadline: float) -> dict:
    """The evaluate rule's command on one checkpoint (no quality measure); the codebook figures it wrote."""
    folder = work / name
    metrics_path = folder / f"metrics_{step}.json"
    cmd = _cli("evaluate", "--config-json", json.dumps(cfg), "--manifest", str(manifest),
               "--checkpoint", str(folder / f"step_{step}.pt"), "--scalars", str(folder / f"scalars_{step}.json"),
               "--samples-dir", str(folder / f"samples_{step}"), "--output", str(metrics_path), "--device", device,
               "--quality-measures")
    with open(folder / "evaluate.log", "w") as log:
        try:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return {"evaluated": False, "why": "deadline"}
    if not metrics_path.exists():
        return {"evaluated": False, "why": _read(folder / "evaluate.log").strip().splitlines()[-1:]}
    metrics = json.loads(metrics_path.read_text())
    return {"evaluated": True, "num_active": metrics["num_active_quantizers"],
            "perplexity": [round(s["perplexity"], 2) for s in metrics["stages"]],
            "codes_used": [s["codes_used"] for s in metrics["stages"]],
            "top_code_share": [round(s["top_code_share"], 3) for s in metrics["stages"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", type=Path, default=[ROOT / "config/config.yaml"])
    parser.add_argument("--experiments", nargs="+", default=["phase1", "baseline"])
    parser.add_argument("--step", type=int, default=None, help="step target (default: the config's first, the 1k role)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--deadline-s", type=float, default=300.0, help="wall time for all of it, corpus included")
    parser.add_argument("--work", type=Path, default=ROOT / "results/device")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    t0 = time.monotonic()
    deadline = t0 + args.deadline_s
    config = load_config(*args.config)
    configs = {name: resolve_experiment(config, name) for name in args.experiments}
    step = args.step or configs[args.experiments[0]]["train"]["steps"][0]

    corpus_dir = args.work / "corpus"
    if not (corpus_dir / "manifest.csv").exists():
        prepare_corpus(config["corpus"], corpus_dir, workers=os.cpu_count(), progress=False)
    corpus_s = time.monotonic() - t0
    print(f"corpus ready in {corpus_s:.0f} s", file=sys.stderr, flush=True)
    manifest = corpus_dir / "manifest.csv"

    train_deadline = deadline - EVALUATION_SHARE * (deadline - time.monotonic())
    runs = train_all(configs, manifest, args.work, step, args.device, train_deadline)
    for name, run in runs.items():
        if run["finished"]:
            run.update(evaluate(name, configs[name], manifest, args.work, step, args.device, deadline))
        print(f"{name}: {json.dumps(run)}", file=sys.stderr, flush=True)
    result = {"device": args.device, "step": step, "experiments": args.experiments,
              "corpus_seconds": round(corpus_s, 1), "wall_seconds": round(time.monotonic() - t0, 1), "runs": runs}
    print(json.dumps(result, indent=2))
    if args.output:
        write_json(args.output, result)
    if not all(run["finished"] for run in runs.values()):
        print("note: the deadline stopped some runs; each left a snapshot that a later call resumes",
              file=sys.stderr)


if __name__ == "__main__":
    main()
