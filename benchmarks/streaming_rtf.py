"""Streaming real-time factor of StreamVC on the CPU, chunk by chunk (SPEC section 6).

Builds the model from the ``model`` section of a config (default: config/config.yaml, the
paper-size model) in its causal form (``pre_rvq_norm: causal``, ``pitch.whitening:
running``), random weights, eval mode; streams ``--seconds`` of a synthetic voiced signal in
``hop``-sample chunks (320 = 20 ms; ``--chunk-frames`` for longer ones) under ``torch.inference_mode()`` with ``--threads``
torch threads, and prints the real-time factor (processing time / audio time) and the
per-chunk latency (mean, median, p95, max). It also checks that the streamed output equals
the offline ``forward`` output (max abs difference) unless ``--no-check``. With ``--precision
bf16`` (or fp16) the stream runs at that precision (``streamvc_rvq.inference.conversion``) and
its deviation from the float32 stream is printed (max abs difference, SI-SDR), with the float32
stream timed in the same run.

    python benchmarks/streaming_rtf.py --threads 1 --seconds 10 --output rtf.json
    python benchmarks/streaming_rtf.py --threads 1 --precision bf16
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from streamvc_rvq.config import deep_merge, load_config  # noqa: E402
from streamvc_rvq.inference.conversion import convert, emulated_precision_note, precision_context  # noqa: E402
from streamvc_rvq.model.streamvc import StreamVC  # noqa: E402
from streamvc_rvq.quality.signal_metrics import si_sdr  # noqa: E402

CAUSAL = {"pre_rvq_norm": "causal", "pitch": {"whitening": "running"}}


def synthetic_voice(seconds: float, sample_rate: int, seed: int) -> torch.Tensor:
    """A voiced-like test signal: harmonics of a gliding f0 (110-220 Hz), plus noise."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * sample_rate)
    t = torch.arange(n, dtype=torch.float32) / sample_rate
    f0 = 165.0 + 55.0 * torch.sin(2 * math.pi * 0.5 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sample_rate
    voice = sum(torch.sin(h * phase) / h for h in range(1, 8))
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 2.0 * t).abs()
    return (0.2 * envelope * voice + 0.01 * torch.randn(n, generator=g)).unsqueeze(0)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def stream_through(model: StreamVC, reference: torch.Tensor, warm: torch.Tensor, audio: torch.Tensor, hop: int,
                   precision: str) -> tuple[torch.Tensor, list[float]]:
    """(the streamed float32 output, each chunk's seconds) after an untimed warm-up stream."""
    with torch.inference_mode(), precision_context(precision, "cpu"):
        converter = model.stream(reference)
        for i in range(0, warm.shape[-1] // hop * hop, hop):
            converter.process(warm[:, i : i + hop])
        converter.reset()
        chunks, latencies = [], []
        clock = time.perf_counter
        for i in range(0, audio.shape[-1], hop):
            chunk = audio[:, i : i + hop]
            t0 = clock()
            chunks.append(converter.process(chunk))
            latencies.append(clock() - t0)
    return torch.cat(chunks, dim=-1).float(), latencies


def write_figures(path: Path | None, result: dict) -> None:
    """The benchmark's figures as JSON at ``path`` (nothing without one)."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml",
                        help="config file whose model section is used (default: config/config.yaml)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of audio streamed (default 10)")
    parser.add_argument("--chunk-frames", type=int, default=1,
                        help="frames of 320 samples per chunk (default 1 = 20 ms, the spec's setting; more "
                        "frames add latency and amortise weight reads)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds streamed first and not timed (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the test signal")
    parser.add_argument("--no-check", action="store_true", help="skip the streamed-vs-offline comparison")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "int8"],
                        help="stream at this precision; other than fp32, the fp32 stream is timed too and the deviation printed")
    parser.add_argument("--output", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model_cfg = deep_merge(load_config(args.config)["model"], CAUSAL)
    model = StreamVC(model_cfg).eval()
    sr = model.sample_rate
    hop = model.hop_length * args.chunk_frames  # samples per chunk
    audio = synthetic_voice(args.seconds, sr, args.seed)
    audio = audio[:, : audio.shape[-1] // hop * hop]
    reference = synthetic_voice(3.0, sr, args.seed + 1)

    warm = synthetic_voice(args.warmup, sr, args.seed + 2)
    streamed, latencies = stream_through(model, reference, warm, audio, hop, args.precision)
    seconds = audio.shape[-1] / sr
    total = sum(latencies)
    lat_ms = sorted(1000 * x for x in latencies)
    result = {
        "rtf": total / seconds,
        "chunk_ms_mean": statistics.fmean(lat_ms),
        "chunk_ms_median": statistics.median(lat_ms),
        "chunk_ms_p95": lat_ms[min(len(lat_ms) - 1, int(0.95 * len(lat_ms)))],
        "chunk_ms_max": lat_ms[-1],
        "chunk_samples": hop,
        "chunk_ms_budget": 1000 * hop / sr,
        "seconds": seconds,
        "threads": args.threads,
        "parameters": sum(p.numel() for p in model.parameters()),
        "algorithmic_delay_samples": model.algorithmic_delay_samples * args.chunk_frames,
        "algorithmic_delay_ms": 1000 * model.algorithmic_delay_samples * args.chunk_frames / sr,
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "config": str(args.config),
        "precision": args.precision,
    }
    if not args.no_check:
        # the project's offline conversion at the same precision (int8: its chunked path, where the int8 products live)
        offline = convert(model, audio[0], reference[0], model.decoder.rvq.num_quantizers, precision=args.precision)[None]
        result["max_abs_diff_vs_offline"] = float((offline - streamed).abs().max())
    if args.precision != "fp32":
        exact, exact_latencies = stream_through(model, reference, warm, audio, hop, "fp32")
        result["fp32_rtf"] = sum(exact_latencies) / seconds
        result["max_abs_diff_vs_fp32"] = float((exact - streamed).abs().max())
        result["si_sdr_vs_fp32_db"] = si_sdr(exact, streamed)

    print(f"StreamVC streaming on {result['cpu']}, {args.threads} thread(s), {result['parameters'] / 1e6:.2f} M parameters")
    print(f"  real-time factor      {result['rtf']:.3f}   ({seconds:.1f} s of audio in {total:.2f} s)")
    print(f"  per-chunk latency ms  mean {result['chunk_ms_mean']:.2f}  median {result['chunk_ms_median']:.2f}  "
          f"p95 {result['chunk_ms_p95']:.2f}  max {result['chunk_ms_max']:.2f}  (chunk = {hop} samples = "
          f"{result['chunk_ms_budget']:.1f} ms)")
    print(f"  algorithmic delay     {result['algorithmic_delay_samples']} samples = {result['algorithmic_delay_ms']:.1f} ms")
    if "max_abs_diff_vs_offline" in result:
        print(f"  streamed vs offline   max abs diff {result['max_abs_diff_vs_offline']:.2e} (both {args.precision})")
    if emulated_precision_note(args.precision, "cpu"):
        print(f"  {emulated_precision_note(args.precision, 'cpu')}")
    if "fp32_rtf" in result:
        print(f"  {args.precision} vs fp32 stream   RTF {result['rtf']:.3f} vs {result['fp32_rtf']:.3f}; max abs diff "
              f"{result['max_abs_diff_vs_fp32']:.2e} (output peak {float(exact.abs().max()):.2f}), "
              f"SI-SDR {result['si_sdr_vs_fp32_db']:.1f} dB")
    write_figures(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
