"""The frame-rate tone and the harmonicity above 1 kHz of the samples an evaluation wrote, next to
their sources' (issue 38).

    python benchmarks/frame_tone_of_samples.py --manifest results/data/espeak_quick/manifest.csv \
        results/quick/espeak_quick/*/samples/step_*

Reads only the WAV files (no model): for each samples folder the median tone of its conversions
and reconstructions and of their source utterances, and the excess the verdict compares with
``frame_tone_max_excess_db``; and the median harmonics-to-noise ratio of the conversions in 1-4 kHz
(:mod:`streamvc_rvq.quality.band_harmonicity`, on their sources' voiced frames) against their
sources'. Prints a markdown table, one row per folder.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
from pathlib import Path

import soundfile as sf

from streamvc_rvq.quality.band_harmonicity import BAND_HZ, band_hnr_db
from streamvc_rvq.quality.frame_tone import frame_rate_tone_db

SAMPLE = re.compile(r"^(?P<kind>convert|reconstruct)_(?P<source>.+?)(?:_to_(?P<target>[^_]+))?\.wav$")


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="samples/step_N folders")
    parser.add_argument("--manifest", type=Path, required=True, help="the corpus manifest (the sources' audio)")
    parser.add_argument("--frame-rate", type=float, default=50.0, help="the model's frames per second (16 kHz / hop 320)")
    args = parser.parse_args()
    with open(args.manifest, newline="") as f:
        paths = {row["utterance_id"]: args.manifest.parent / row["path"] for row in csv.DictReader(f)}
    tone_of_source: dict[str, float | None] = {}
    hnr_of_source: dict[str, float | None] = {}

    def tone(path: Path) -> float | None:
        audio, rate = sf.read(path, dtype="float32")
        return frame_rate_tone_db(audio, rate, args.frame_rate)

    def hnr(wav: Path, source: Path) -> float | None:
        audio, rate = sf.read(wav, dtype="float32")
        reference, _ = sf.read(source, dtype="float32")
        return band_hnr_db(audio, rate, voicing_reference=reference)

    band = f"{BAND_HZ[0] / 1000:g}-{BAND_HZ[1] / 1000:g} kHz"
    print("| samples | tone: conversions (dB) | reconstructions (dB) | their sources (dB) | excess of conversions (dB) "
          f"| HNR {band}: conversions (dB) | their sources (dB) | n |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in args.folders:
        kinds: dict[str, list] = {"convert": [], "reconstruct": []}
        sources, conv_hnr, source_hnr = [], [], []
        for wav in sorted(folder.glob("*.wav")):
            match = SAMPLE.match(wav.name)
            if not match or match["source"] not in paths:
                continue
            source = match["source"]
            kinds[match["kind"]].append(tone(wav))
            if source not in tone_of_source:
                tone_of_source[source] = tone(paths[source])
                hnr_of_source[source] = hnr(paths[source], paths[source])
            sources.append(tone_of_source[source])
            if match["kind"] == "convert":
                conv_hnr.append(hnr(wav, paths[source]))
                source_hnr.append(hnr_of_source[source])
        conv, recon, src = _median(kinds["convert"]), _median(kinds["reconstruct"]), _median(sources)
        excess = None if conv is None or src is None else conv - src
        cells = [f"{v:.1f}" if v is not None else "—"
                 for v in (conv, recon, src, excess, _median(conv_hnr), _median(source_hnr))]
        print(f"| {folder} | " + " | ".join(cells) + f" | {len(kinds['convert']) + len(kinds['reconstruct'])} |")


if __name__ == "__main__":
    main()
