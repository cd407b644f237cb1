"""Peak memory and time of converting a long source, whole-file against in chunks (the path
``streamvc-rvq infer`` takes), and how far apart the two outputs are.

    python benchmarks/long_source_memory.py --checkpoint results/micro/micro/phase1/checkpoints/step_20.pt --minutes 10

Each conversion runs in its own process; its peak is read from the kernel (ru_maxrss) and shown
next to the peak of a process that only imports torch and loads the model (torch's CUDA build
maps ~650 MB of libraries), so the difference is what the conversion itself holds. Where the
outputs differ by more than 1e-4, the RVQ picked another code for a frame whose two nearest codes
are a rounding apart (the convolutions round differently for different input lengths).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np, soundfile as sf, torch
from streamvc_rvq.inference.conversion import convert, load_trained_model
from streamvc_rvq.inference.infer_file import CHUNK_SECONDS
from streamvc_rvq.quantization.rvq import StageSchedule
checkpoint, source, reference, mode, out = sys.argv[1:6]
torch.set_num_threads(1)
model, cfg, step = load_trained_model(checkpoint)
n = StageSchedule.of(cfg["model"]).in_checkpoint(step)
src = torch.from_numpy(sf.read(source, dtype="float32")[0])
ref = torch.from_numpy(sf.read(reference, dtype="float32")[0])
started = time.perf_counter()
if mode != "load":
    chunk = int(CHUNK_SECONDS * model.sample_rate) // model.hop_length if mode == "chunks" else None
    np.save(out, convert(model, src, ref, n, chunk_frames=chunk).numpy())
print(json.dumps({"mode": mode, "seconds": time.perf_counter() - started,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def speechlike(seconds: float, rate: int, seed: int):
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.05 * t) + 15 * np.sin(2 * np.pi * 0.7 * t)
    tone = np.sin(2 * np.pi * np.cumsum(f0) / rate) * (0.2 + 0.1 * np.sin(2 * np.pi * 0.3 * t))
    return (tone + 0.02 * np.random.default_rng(seed).standard_normal(t.size)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    import numpy as np
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sf.write(tmp / "source.wav", speechlike(60 * args.minutes, 16000, 0), 16000)
        sf.write(tmp / "reference.wav", speechlike(5.0, 16000, 1), 16000)
        rows = {}
        for mode in ("load", "whole", "chunks"):
            proc = subprocess.run([sys.executable, "-c", CHILD, str(args.checkpoint), str(tmp / "source.wav"),
                                   str(tmp / "reference.wav"), mode, str(tmp / f"{mode}.npy")],
                                  capture_output=True, text=True, check=True)
            rows[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        whole, chunks = np.load(tmp / "whole.npy"), np.load(tmp / "chunks.npy")
    base = rows["load"]["peak_mb"]
    print(f"{args.minutes:g}-minute source, {args.checkpoint}")
    print("| path | peak RSS (MB) | above the loaded model (MB) | seconds |")
    print("|---|---|---|---|")
    for mode in ("load", "whole", "chunks"):
        r = rows[mode]
        print(f"| {mode} | {r['peak_mb']:.0f} | {r['peak_mb'] - base:.0f} | {r['seconds']:.1f} |")
    per_frame = np.abs(chunks - whole)[: whole.size // 320 * 320].reshape(-1, 320).max(axis=1)  # 20 ms frames
    print(f"max |chunks - whole| = {float(per_frame.max()):.3g} (output peak {float(np.abs(whole).max()):.3g}); "
          f"{int((per_frame > 1e-4).sum())} of {per_frame.size} frames differ by more than 1e-4, "
          f"median frame {float(np.median(per_frame)):.2g}")


if __name__ == "__main__":
    main()
