"""Speed against the peer implementation and against this machine's floor, in one interleaved run (issue 27).

    python benchmarks/against_peer.py --peer /path/to/yuval-reshef/StreamVC --threads 1 --rounds 3 \
        [--parts floor,offline,stream,train] [--precision fp32|bf16|int8] [--output against_peer.json]

Both models at paper size with random weights, float32 (ours at ``--precision`` for offline and
streamed conversion, the peer's always float32), ``--threads`` torch threads, flush-to-zero
on (without it the peer's training slows several-fold from subnormal gradients). Each round times
every part for us and then for the peer, so a slow spell of a shared machine hits both alike; each
figure is the median over rounds, with the per-round ratio's range.

- ``floor``: this machine's best float32 (and bfloat16) matmul rate and our model's arithmetic per
  second of audio (``streamvc_rvq.model.summary``: the conversion path's multiply-adds): the fastest RTF the
  arithmetic allows. Each of our RTFs is also printed as a multiple of it. And the copy bandwidth
  against the weights a 20 ms chunk reads: the streaming RTF that weight traffic alone allows.
- ``offline``: RTF of one ``--seconds`` conversion.
- ``stream``: RTF and the per-chunk median and p95 over 20 ms chunks (our ``StreamVC.stream``, the
  peer's ``streaming`` context); our streamed output against our offline output (max abs).
- ``train``: one training step, batch 8 x 1.28 s. Ours: the phase1 step of config/config.yaml
  (``Trainer.train_step``: content, decoder and speaker-consistency losses, optimiser). The peer
  trains in two separate loops: its decoder step (generator forward, its ``ReconstructionLoss``,
  backward, AdamW; no discriminator, as our phase1) and its content-encoder step (its
  ``EncoderClassifier`` over 100 labels, cross-entropy, AdamW); the two summed.

The peer is not vendored: ``--peer`` names a checkout; without it (or when it does not import)
its columns are skipped. Two bugs of its streaming convolution are patched at run time, in this
process only (its buffer read ``self.params()``, and a kernel-1 convolution kept its whole input as
its buffer, doubling every chunk); its pitch tracker does not stream and is timed as it is.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from argparse import Namespace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from streaming_rtf import CAUSAL, cpu_name, stream_through, synthetic_voice, write_figures  # noqa: E402
from training_throughput import Stepper  # noqa: E402

from streamvc_rvq.config import deep_merge, load_config  # noqa: E402
from streamvc_rvq.inference.conversion import PRECISIONS, convert  # noqa: E402
from streamvc_rvq.model.streamvc import StreamVC  # noqa: E402
from streamvc_rvq.model.summary import summarize  # noqa: E402

PARTS = ("floor", "offline", "stream", "train")
HOP = 320


def matmul_gflops(dtype: torch.dtype, size: int = 1024, repeats: int = 5) -> float:
    """Best-of-``repeats`` rate of one ``size`` x ``size`` matmul: the arithmetic ceiling."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def memory_gbs(megabytes: int = 256, repeats: int = 3) -> float:
    """Best-of-``repeats`` copy bandwidth (bytes read + written per second), GB/s."""
    a = torch.ones(megabytes * 2**18)
    b = torch.empty_like(a)
    b.copy_(a)
    best = min(_seconds(lambda: b.copy_(a)) for _ in range(repeats))
    return 2 * a.numel() * 4 / best / 1e9


def streamed_weight_bytes(model: StreamVC) -> int:
    """Bytes of the weights every 20 ms chunk reads: all but the speaker encoder's (run once per reference)."""
    return sum(p.numel() * p.element_size() for name, p in model.named_parameters() if not name.startswith("speaker_encoder."))


def flops_per_audio_second(model_cfg: dict) -> float:
    """2 x the multiply-adds per second of converted audio (``model.summary``: every component on
    the conversion path; the speaker encoder runs once per reference and is left out)."""
    rows, _ = summarize(model_cfg)
    return 2 * sum(row.macs_per_second for row in rows if row.name != "speaker encoder")


def load_peer(path: Path | None):
    """The peer's ``StreamVC`` class and its training pieces, or (None, reason)."""
    if path is None:
        return None, "no --peer path"
    if not (path / "streamvc" / "model.py").is_file():
        return None, f"{path} has no streamvc/model.py"
    sys.path.insert(0, str(path))
    try:
        import streamvc.modules as peer_modules
        from streamvc.model import StreamVC as PeerStreamVC
        from streamvc.train.encoder_classifier import EncoderClassifier
        from streamvc.train.loss import ReconstructionLoss
    except Exception as error:  # any import failure of foreign code: skip the peer, say why
        return None, f"the peer does not import: {type(error).__name__}: {error}"
    _patch_peer_streaming(peer_modules.CausalConv1d)
    return Namespace(StreamVC=PeerStreamVC, EncoderClassifier=EncoderClassifier,
                     ReconstructionLoss=ReconstructionLoss), None


def _patch_peer_streaming(conv_class) -> None:
    def init(self):
        self.streaming_buffer = torch.zeros(self.in_channels, self.causal_padding, device=self.weight.device)

    def remove(self):
        self.streaming_buffer = torch.tensor([], device=self.weight.device)

    def streaming_forward(self, x):
        full = x if self.streaming_buffer.numel() == 0 else torch.cat([self.streaming_buffer, x], dim=-1)
        n = full.shape[-1]
        field = self.dilation * (self.kernel_size - 1) + 1
        strides = (n - field) // self.stride + 1
        self.streaming_buffer = full[..., strides * self.stride:]
        return torch.nn.Conv1d.forward(self, full[..., : field + (strides - 1) * self.stride])

    conv_class.init_streaming_buffer, conv_class.remove_streaming_buffer = init, remove
    conv_class.streaming_forward = streaming_forward


class Ours:
    def __init__(self, args: argparse.Namespace):
        torch.manual_seed(0)
        self.model_cfg = deep_merge(load_config(args.config)["model"], CAUSAL)
        self.model = StreamVC(self.model_cfg).eval()
        self.precision = args.precision
        self.train_args = Namespace(config=[args.config], experiment="phase1", at_step=None, device="cpu")
        self.stepper = None

    def offline(self, audio, reference) -> torch.Tensor:
        """The project's offline conversion at ``--precision`` (1 x T)."""
        return convert(self.model, audio[0], reference[0], self.model.decoder.rvq.num_quantizers,
                       precision=self.precision)[None]

    def stream(self, audio, reference, warm) -> tuple[torch.Tensor, list[float]]:
        return stream_through(self.model, reference, warm, audio, HOP, self.precision)

    def train_step(self) -> float:
        if self.stepper is None:
            self.stepper = Stepper(self.train_args, "fp32", {})
        self.stepper.time(1)
        return self.stepper.times[-1]


class Peer:
    def __init__(self, peer: Namespace, batch: int, samples: int):
        torch.manual_seed(0)
        self.peer, self.model = peer, peer.StreamVC().eval()
        self.batch, self.samples = batch, samples
        self.trainable = None

    def offline(self, audio, reference) -> None:
        with torch.no_grad():
            self.model(audio[0], reference[0])

    def stream(self, audio, reference, warm) -> tuple[torch.Tensor, list[float]]:
        latencies = []
        with self.model.streaming(reference[0]) as streamer:
            for i in range(0, warm.shape[-1] // HOP * HOP, HOP):
                streamer.forward(warm[0, i : i + HOP])
        with self.model.streaming(reference[0]) as streamer:
            chunks = []
            for i in range(0, audio.shape[-1], HOP):
                t0 = time.perf_counter()
                chunks.append(streamer.forward(audio[0, i : i + HOP]))
                latencies.append(time.perf_counter() - t0)
        return torch.cat(chunks, dim=-1), latencies

    def train_step(self) -> float:
        if self.trainable is None:
            self._build_training()
            self._steps()  # warm-up
        return self._steps()

    def _build_training(self) -> None:
        torch.manual_seed(0)
        model = self.peer.StreamVC().train()
        classifier = self.peer.EncoderClassifier(model.content_encoder, 64, 100).train()
        generator_params = [p for name, p in model.named_parameters() if not name.startswith("content_encoder.")]
        self.trainable = Namespace(
            model=model, classifier=classifier, loss=self.peer.ReconstructionLoss(),
            generator_opt=torch.optim.AdamW(generator_params, lr=1e-4, betas=(0.9, 0.99)),
            content_opt=torch.optim.AdamW(classifier.parameters(), lr=1e-4, betas=(0.9, 0.99)),
            audio=synthetic_voice(self.batch * self.samples / 16000, 16000, 3).reshape(self.batch, self.samples),
            labels=torch.randint(0, 100, (self.batch, self.samples // HOP)),
        )

    def _steps(self) -> float:
        t, t0 = self.trainable, time.perf_counter()
        t.generator_opt.zero_grad()
        predicted = t.model(t.audio, t.audio)
        t.loss(t.audio, predicted, torch.ones(self.batch)).backward()
        t.generator_opt.step()
        t.content_opt.zero_grad()
        logits = t.classifier(t.audio)
        frames = min(logits.shape[1], t.labels.shape[1])
        torch.nn.functional.cross_entropy(logits[:, :frames].reshape(-1, 100), t.labels[:, :frames].reshape(-1)).backward()
        t.content_opt.step()
        return time.perf_counter() - t0


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", type=Path, help="a checkout of yuval-reshef/StreamVC (skipped when absent)")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml",
                        help="our config (default: config/config.yaml, the paper-size model)")
    parser.add_argument("--parts", type=lambda text: text.split(","), default=list(PARTS),
                        help=f"comma-separated, of {','.join(PARTS)} (default all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per offline and streamed conversion")
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                        help="our offline and streamed conversion at this precision (the peer's stays float32; training: fp32)")
    parser.add_argument("--output", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {', '.join(unknown)} (known: {', '.join(PARTS)})")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    ours = Ours(args)
    peer_code, skipped = load_peer(args.peer)
    peer = Peer(peer_code, 8, 20480) if peer_code is not None else None
    sr = ours.model.sample_rate
    audio = synthetic_voice(args.seconds, sr, 0)
    audio = audio[:, : audio.shape[-1] // HOP * HOP]
    reference, warm = synthetic_voice(3.0, sr, 1), synthetic_voice(1.0, sr, 2)
    seconds = audio.shape[-1] / sr
    result: dict = {"cpu": cpu_name(), "torch": torch.__version__, "threads": args.threads, "rounds": args.rounds,
                    "precision": args.precision,
                    "seconds": seconds, "peer": str(args.peer) if peer else None, "peer_skipped": skipped}
    print(f"{result['cpu']}, torch {torch.__version__}, {args.threads} thread(s), {args.rounds} rounds, ours in {args.precision}; "
          f"ours {sum(p.numel() for p in ours.model.parameters()) / 1e6:.1f} M parameters"
          + (f", peer {sum(p.numel() for p in peer.model.parameters()) / 1e6:.1f} M" if peer else f"; peer skipped: {skipped}"))

    if "floor" in args.parts:
        fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
        flops = flops_per_audio_second(ours.model_cfg)
        bandwidth, weights = memory_gbs(), streamed_weight_bytes(ours.model)
        result["floor"] = {"matmul_gflops_fp32": fp32, "matmul_gflops_bf16": bf16, "gflop_per_audio_second": flops / 1e9,
                           "rtf_floor_fp32": flops / 1e9 / fp32, "rtf_floor_bf16": flops / 1e9 / bf16,
                           "memory_gbs": bandwidth, "streamed_weight_mb": weights / 1e6,
                           "stream_memory_floor_rtf": weights / 1e9 / bandwidth / (HOP / ours.model.sample_rate)}
        print(f"floor: matmul {fp32:.0f} GFLOP/s fp32, {bf16:.0f} bf16; ours {flops / 1e9:.1f} GFLOP per second of audio "
              f"-> RTF floor {result['floor']['rtf_floor_fp32']:.3f} fp32, {result['floor']['rtf_floor_bf16']:.3f} bf16")
        print(f"       memory {bandwidth:.1f} GB/s (copy); every 20 ms chunk reads {weights / 1e6:.0f} MB of weights "
              f"-> streaming RTF floor {result['floor']['stream_memory_floor_rtf']:.3f} from weight reads alone "
              "(unless they stay in cache)")

    timed: dict[str, dict[str, list]] = {}
    for _ in range(args.rounds):
        for name, impl in (("ours", ours), ("peer", peer)):
            if impl is None:
                continue
            rows = timed.setdefault(name, {})
            if "offline" in args.parts:
                rows.setdefault("offline_rtf", []).append(_seconds(lambda: impl.offline(audio, reference)) / seconds)
            if "stream" in args.parts:
                streamed, latencies = impl.stream(audio, reference, warm)
                rows.setdefault("stream_rtf", []).append(sum(latencies) / seconds)
                rows.setdefault("chunk_ms_median", []).append(1000 * statistics.median(latencies))
                rows.setdefault("chunk_ms_p95", []).append(1000 * _p95(latencies))
                if name == "ours" and "stream_vs_offline_max_abs" not in result:
                    result["stream_vs_offline_max_abs"] = float((ours.offline(audio, reference) - streamed).abs().max())
            if "train" in args.parts:
                rows.setdefault("train_step_s", []).append(impl.train_step())
    result["timed"] = timed
    floor = result.get("floor", {}).get("rtf_floor_fp32")
    print("| figure | ours (median) | peer (median) | ours / peer: median [per-round range] | ours / fp32 floor |\n"
          "|---|---|---|---|---|")
    for key in timed.get("ours", {}):
        mine = timed["ours"][key]
        row = f"| {key} | {statistics.median(mine):.3f} | "
        if "peer" in timed:
            theirs = timed["peer"][key]
            ratios = [a / b for a, b in zip(mine, theirs)]
            result.setdefault("ratios", {})[key] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
            row += f"{statistics.median(theirs):.3f} | {statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}] | "
        else:
            row += "- | - | "
        row += f"{statistics.median(mine) / floor:.1f}x |" if floor and key.endswith("rtf") else "- |"
        print(row)
    if "stream_vs_offline_max_abs" in result:
        print(f"our streamed output against our offline output ({args.precision}): max abs {result['stream_vs_offline_max_abs']:.1e}")
    write_figures(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
