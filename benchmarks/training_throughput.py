"""Training throughput: steps/s and seconds of audio per second for a config's model.

    python benchmarks/training_throughput.py --config config/config.yaml [--config config/quick.yaml] \
        --threads 2 --steps 5 [--precision fp32 mixed] [--device cuda] --output results/benchmarks/train_default.json

Random weights, synthetic speech-like batches (no corpus needed), the real training step
(model, losses, optimiser, clipping). Prints the figures and writes them as JSON; with
several --precision values, each one's speed relative to the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from streamvc_rvq.config import load_config, resolve_experiment
from streamvc_rvq.training.throughput import synthetic_batch
from streamvc_rvq.training.trainer import Trainer, build_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", type=Path, required=True)
    parser.add_argument("--experiment", default="phase1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after 1 warm-up step)")
    parser.add_argument("--at-step", type=int, default=None, help="global step to emulate (sets active RVQ stages; default: last step target)")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "mixed"],
                        help="train.precision values to time, in turn (the first is the reference of the ratios)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [measure(args, precision) for precision in args.precision]
    for r in results[1:]:
        r["speed_vs_" + results[0]["precision"]] = results[0]["seconds_per_step_median"] / r["seconds_per_step_median"]
        print(f"{r['precision']}: {r['speed_vs_' + results[0]['precision']]:.2f} x the steps/s of {results[0]['precision']}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results if len(results) > 1 else results[0], indent=2) + "\n")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure(args: argparse.Namespace, precision: str) -> dict:
    cfg = resolve_experiment(load_config(*args.config), args.experiment)
    cfg["train"]["precision"] = precision
    device = torch.device(args.device)
    torch.manual_seed(0)
    state = build_state(cfg, device)
    trainer = Trainer(cfg, state, device)
    train = cfg["train"]
    at = args.at_step if args.at_step is not None else train["steps"][-1]
    samples = trainer.crop_frames * trainer.hop  # scored; the left context comes on top
    frames = trainer.context_frames + trainer.crop_frames
    batch = synthetic_batch(train["batch_size"], frames * trainer.hop, frames, 0, trainer.context_frames)
    trainer.train_step(batch, at)  # warm-up
    times = []
    for i in range(args.steps):
        _sync(device)
        t0 = time.perf_counter()
        trainer.train_step(batch, at + i)
        _sync(device)
        times.append(time.perf_counter() - t0)
    per_step = statistics.median(times)
    audio_per_step = train["batch_size"] * samples / cfg["model"]["sample_rate"]
    result = {
        "configs": [str(p) for p in args.config],
        "experiment": args.experiment,
        "device": str(device),
        "precision": precision,
        "parameters": sum(p.numel() for p in state.model.parameters()),
        "threads": args.threads,
        "batch": f"{train['batch_size']} x {samples / cfg['model']['sample_rate']:.2f} s",
        "active_quantizers": trainer.active_stages(at),
        "seconds_per_step_median": per_step,
        "seconds_per_step_all": times,
        "steps_per_second": 1 / per_step,
        "audio_seconds_per_second": audio_per_step / per_step,
    }
    print(
        f"{'+'.join(p.stem for p in args.config)} {args.experiment} on {device}, {precision}: "
        f"{result['parameters'] / 1e6:.2f} M params, "
        f"{args.threads} threads, batch {result['batch']}, {result['active_quantizers']} active stages: "
        f"{per_step:.3f} s/step (median of {args.steps}), {1 / per_step:.3f} steps/s, "
        f"{result['audio_seconds_per_second']:.2f} s of audio per s"
    )
    return result


if __name__ == "__main__":
    main()
