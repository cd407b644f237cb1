"""Training throughput: steps/s and seconds of audio per second for a config's model.

    python benchmarks/training_throughput.py --config config/config.yaml [--config config/quick.yaml] \
        --threads 2 --steps 5 [--precision fp32 mixed] [--set train.speaker_consistency_rows=2] \
        [--device cuda] --output results/benchmarks/train_default.json

Random weights, synthetic speech-like batches (no corpus needed), the real training step
(model, losses, optimiser, clipping). Prints the figures and writes them as JSON; with
several --precision values or --set variants, each one's speed relative to the first
(variants are timed in turn, round after round, so a slow spell of the machine hits them alike).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import yaml

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
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="a variant of the config (dotted keys, YAML values), timed after the plain config; repeatable")
    parser.add_argument("--rounds", type=int, default=1, help="rounds over the variants (steps per variant: rounds x steps)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = [(precision, {}) for precision in args.precision]
    variants += [(args.precision[0], _overrides(spec)) for spec in args.set]
    steppers = [Stepper(args, precision, overrides) for precision, overrides in variants]
    for _ in range(args.rounds):
        for stepper in steppers:
            stepper.time(args.steps)
    results = [stepper.result() for stepper in steppers]
    for r in results[1:]:
        r["speed_vs_first"] = results[0]["seconds_per_step_median"] / r["seconds_per_step_median"]
        print(f"{r['variant']}: {r['speed_vs_first']:.2f} x the steps/s of {results[0]['variant']}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results if len(results) > 1 else results[0], indent=2) + "\n")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _overrides(spec: str) -> dict:
    """``"train.a=1,model.b=x"`` -> ``{"train.a": 1, "model.b": "x"}`` (YAML values)."""
    pairs = [item.split("=", 1) for item in spec.split(",") if item]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"--set {spec!r}: expected KEY=VALUE[,KEY=VALUE]")
    return {key: yaml.safe_load(value) for key, value in pairs}


def _apply(cfg: dict, overrides: dict) -> None:
    for dotted, value in overrides.items():
        *path, last = dotted.split(".")
        node = cfg
        for key in path:
            node = node[key]
        if last not in node:
            raise SystemExit(f"--set {dotted}: no such config key")
        node[last] = value


class Stepper:
    """One variant's trainer and synthetic batch; :meth:`time` adds timed steps (after one warm-up)."""

    def __init__(self, args: argparse.Namespace, precision: str, overrides: dict):
        cfg = resolve_experiment(load_config(*args.config), args.experiment)
        cfg["train"]["precision"] = precision
        _apply(cfg, overrides)
        self.args, self.cfg, self.device = args, cfg, torch.device(args.device)
        self.variant = ",".join(f"{k}={v}" for k, v in overrides.items()) or precision
        torch.manual_seed(0)
        self.state = build_state(cfg, self.device)
        self.trainer = Trainer(cfg, self.state, self.device)
        train = cfg["train"]
        self.at = args.at_step if args.at_step is not None else train["steps"][-1]
        frames = self.trainer.context_frames + self.trainer.crop_frames
        self.batch = synthetic_batch(train["batch_size"], frames * self.trainer.hop, frames, 0, self.trainer.context_frames)
        self.trainer.train_step(self.batch, self.at)  # warm-up
        self.times: list[float] = []

    def time(self, steps: int) -> None:
        for _ in range(steps):
            _sync(self.device)
            t0 = time.perf_counter()
            self.trainer.train_step(self.batch, self.at + len(self.times))
            _sync(self.device)
            self.times.append(time.perf_counter() - t0)

    def result(self) -> dict:
        cfg, train, args = self.cfg, self.cfg["train"], self.args
        samples = self.trainer.crop_frames * self.trainer.hop  # scored; the left context comes on top
        per_step = statistics.median(self.times)
        audio_per_step = train["batch_size"] * samples / cfg["model"]["sample_rate"]
        result = {
            "configs": [str(p) for p in args.config],
            "experiment": args.experiment,
            "variant": self.variant,
            "device": str(self.device),
            "precision": train["precision"],
            "parameters": sum(p.numel() for p in self.state.model.parameters()),
            "threads": args.threads,
            "batch": f"{train['batch_size']} x {samples / cfg['model']['sample_rate']:.2f} s",
            "active_quantizers": self.trainer.active_stages(self.at),
            "seconds_per_step_median": per_step,
            "seconds_per_step_all": self.times,
            "steps_per_second": 1 / per_step,
            "audio_seconds_per_second": audio_per_step / per_step,
        }
        print(
            f"{'+'.join(p.stem for p in args.config)} {args.experiment} [{self.variant}] on {self.device}: "
            f"{result['parameters'] / 1e6:.2f} M params, "
            f"{args.threads} threads, batch {result['batch']}, {result['active_quantizers']} active stages: "
            f"{per_step:.3f} s/step (median of {len(self.times)}), {1 / per_step:.3f} steps/s, "
            f"{result['audio_seconds_per_second']:.2f} s of audio per s"
        )
        return result


if __name__ == "__main__":
    main()
