"""Training throughput: steps/s and seconds of audio per second for a config's model.

    python benchmarks/training_throughput.py --config config/config.yaml [--config config/quick.yaml] \
        --threads 2 --steps 5 --output results/benchmarks/train_default.json

Random weights, synthetic speech-like batches (no corpus needed), the real training step
(model, losses, optimiser, clipping). Prints the figures and writes them as JSON.
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = resolve_experiment(load_config(*args.config), args.experiment)
    state = build_state(cfg, torch.device("cpu"))
    trainer = Trainer(cfg, state, torch.device("cpu"))
    train = cfg["train"]
    at = args.at_step if args.at_step is not None else train["steps"][-1]
    samples = trainer.crop_frames * trainer.hop  # scored; the left context comes on top
    frames = trainer.context_frames + trainer.crop_frames
    batch = synthetic_batch(train["batch_size"], frames * trainer.hop, frames, 0, trainer.context_frames)
    trainer.train_step(batch, at)  # warm-up
    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        trainer.train_step(batch, at + i)
        times.append(time.perf_counter() - t0)
    per_step = statistics.median(times)
    audio_per_step = train["batch_size"] * samples / cfg["model"]["sample_rate"]
    result = {
        "configs": [str(p) for p in args.config],
        "experiment": args.experiment,
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
        f"{'+'.join(p.stem for p in args.config)} {args.experiment}: {result['parameters'] / 1e6:.2f} M params, "
        f"{args.threads} threads, batch {result['batch']}, {result['active_quantizers']} active stages: "
        f"{per_step:.3f} s/step (median of {args.steps}), {1 / per_step:.3f} steps/s, "
        f"{result['audio_seconds_per_second']:.2f} s of audio per s"
    )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
