"""Kill training jobs at random moments and check every resumed run equals a straight one.

    python benchmarks/kill_resume.py [--trials 5] [--steps 40] [--every-steps 5] [--seed 0]
        [--config config/config.yaml config/micro.yaml] [--experiment phase1] [--device cpu]
        [--manifest PREPARED/manifest.csv] [--deterministic] [--output results/benchmarks/kill_resume.json]

By default on the micro preset: two straight runs to ``--steps`` (they must agree, or no
resume can: on CUDA that takes ``--deterministic``, i.e. ``train.deterministic``); then each trial starts the same target
through the CLI with snapshots every ``--every-steps`` steps and a TensorBoard folder, kills it
(SIGKILL, every third kill SIGTERM) after a random delay, and starts it again, until a start
finishes. The finished checkpoint must equal the straight run's in every tensor (model,
optimiser, scheduler, RNG), nothing may be left but the checkpoint, and TensorBoard must hold
each step once. Prints the kills, where they landed and the identical results.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from streamvc_rvq.atomic import write_json  # noqa: E402
from streamvc_rvq.config import load_config, resolve_experiment  # noqa: E402
from streamvc_rvq.data.prepare import prepare_corpus  # noqa: E402
from streamvc_rvq.evaluation.curves import read_scalars  # noqa: E402
from streamvc_rvq.training.checkpoint import load_checkpoint  # noqa: E402
from streamvc_rvq.training.snapshots import snapshot_path  # noqa: E402
from streamvc_rvq.training.trainer import train_to_step  # noqa: E402


COMPARED = ("model", "optimizer", "scheduler", "rng", "step")


def differences(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys differ"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, torch.Tensor):
        return [] if torch.equal(a, b) else [where]
    return [] if a == b else [where]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every-steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", nargs="+", type=Path, default=[ROOT / "config/config.yaml", ROOT / "config/micro.yaml"])
    parser.add_argument("--experiment", default="phase1")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--manifest", type=Path, help="a prepared corpus (default: prepare the config's corpus)")
    parser.add_argument("--deterministic", action="store_true", help="train.deterministic: true")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    config = load_config(*args.config)
    manifest = args.manifest
    if manifest is None:
        prepare_corpus(config["corpus"], work / "corpus", progress=False)
        manifest = work / "corpus" / "manifest.csv"
    cfg = resolve_experiment(config, args.experiment)
    cfg["train"].update(steps=[args.steps], log_every=1, deterministic=args.deterministic)

    torch.set_num_threads(1)  # as the jobs below: another thread count sums in another order
    straights, straight_seconds = [], 0.0
    for run in range(2):
        t0 = time.monotonic()
        path = train_to_step(cfg, manifest=manifest, step=args.steps, output=work / f"straight{run}.pt",
                             device=args.device)
        straight_seconds = time.monotonic() - t0
        straights.append({k: v for k, v in load_checkpoint(path).items() if k in COMPARED})
        print(f"straight run {run}: {args.steps} steps in {straight_seconds:.1f} s", file=sys.stderr)
    straight = straights[0]
    straight_runs_agree = not differences(straights[0], straights[1])
    provenance = load_checkpoint(path)["provenance"]
    checkpoint_mb = path.stat().st_size / 1e6

    snapshot_seconds: list[float] = []
    resumed_from: list[int] = []
    kills, landed, identical, clean, tensorboard_ok = 0, {"before first snapshot": 0, "mid write": 0,
                                                        "between snapshots": 0}, 0, 0, 0
    for trial in range(args.trials):
        folder = work / f"trial{trial}"
        out, tb = folder / f"step_{args.steps}.pt", folder / "tb"
        cmd = [sys.executable, "-m", "streamvc_rvq", "train", "--config-json", json.dumps(cfg), "--manifest",
               str(manifest), "--step", str(args.steps), "--output", str(out), "--tensorboard", str(tb),
               "--device", args.device, "--threads", "1", "--snapshot-every-steps", str(args.every_steps),
               "--snapshot-every-minutes", "0"]
        folder.mkdir(parents=True)
        starts = 0
        while True:
            starts += 1
            log = open(folder / f"start{starts}.log", "w")
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
            delay = rng.uniform(0.5, 1.3 * straight_seconds + 3.0)  # start-up included; sometimes too late
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                sig = signal.SIGTERM if (kills + 1) % 3 == 0 else signal.SIGKILL
                proc.send_signal(sig)
                proc.wait()
                log.close()
                kills += 1
                temps = list(folder.glob(".*.tmp"))
                snap = snapshot_path(out)
                where = ("mid write" if temps else "between snapshots" if snap.exists()
                         else "before first snapshot")
                landed[where] += 1
                continue
            log.close()
            if proc.returncode != 0:
                raise SystemExit(f"trial {trial}: a start failed with exit status {proc.returncode}")
            break
        for path in sorted(folder.glob("start*.log")):
            text = path.read_text()
            snapshot_seconds += [float(x) for x in re.findall(r"^snapshot at step \d+ -> .* \(([\d.]+) s\)$", text, re.M)]
            resumed_from += [int(x) for x in re.findall(r"^resuming from snapshot .* at step (\d+)$", text, re.M)]
            path.unlink()
        diffs = differences(straight, {k: v for k, v in load_checkpoint(out).items() if k in COMPARED})
        identical += not diffs
        left = sorted(p.name for p in folder.iterdir())
        clean += left == [out.name, "tb"]
        steps = [s for s, _ in read_scalars(tb)["train/loss_total"]]
        tensorboard_ok += steps == list(range(args.steps))
        print(f"trial {trial}: {starts - 1} kills, identical={not diffs} {diffs[:3]} files={left} "
              f"tensorboard steps once={steps == list(range(args.steps))}", file=sys.stderr)

    result = {"device": provenance["device"], "torch": provenance["packages"]["torch"], "experiment": args.experiment,
              "deterministic": args.deterministic, "steps": args.steps, "straight_seconds": round(straight_seconds, 1),
              "straight_runs_agree": straight_runs_agree, "checkpoint_mb": round(checkpoint_mb, 1),
              "trials": args.trials, "snapshot_every_steps": args.every_steps, "kills": kills,
              "kills_landed": landed, "resumed_from_snapshot": len(resumed_from),
              "snapshot_seconds_mean": round(sum(snapshot_seconds) / len(snapshot_seconds), 3) if snapshot_seconds else None,
              "identical_results": identical, "clean_folders": clean, "tensorboard_each_step_once": tensorboard_ok}
    print(json.dumps(result, indent=2))
    if args.output:
        write_json(args.output, result)


if __name__ == "__main__":
    main()
