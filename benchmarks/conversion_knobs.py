"""Inference knobs on a trained model's conversions: the speaker vector pushed, fewer RVQ stages (issue 38)

    python benchmarks/conversion_knobs.py --manifest results/data/espeak_quick/manifest.csv \
        --labels results/data/espeak_quick/frame_labels.npz \
        --alphas 1,1.5,2 --stages all,1,2 results/quick/espeak_quick/phase1/checkpoints/step_500.pt

Each held-out utterance converted to the next held-out speakers (the evaluation's trials,
``conversion_pairs``), for every combination of
- ``alpha``: the target's speaker vector pushed away from the mean of the held-out utterances'
  vectors, ``mean + alpha (s - mean)`` (1: the model as evaluated);
- ``stages``: how many RVQ stages the decoder reads (``all``: those the checkpoint was trained
  with, as evaluated). The later stages carry what the first ones leave of the content
  features, speaker detail included; fewer stages may carry less of the source's voice.

Prints, per row, Resemblyzer's identification of the intended target among the source's
targets (Wilson 95 %), the content head's label accuracy on the conversions (the content kept;
the sources' own accuracy and chance in the header), and the DNSMOS OVRL of the evaluation's 24
sample pairs. An inference probe, not a measure of the model: a knob chosen on these trials must
be judged on other seeds.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from streamvc_rvq.data.dataset import load_utterances
from streamvc_rvq.evaluation.conversion_controls import target_controls
from streamvc_rvq.evaluation.evaluate import IDENTIFICATION_SOURCES, LabelAccuracy, conversion_pairs
from streamvc_rvq.evaluation.pitch_and_oracle_controls import targets_by_source
from streamvc_rvq.inference.conversion import load_trained_model
from streamvc_rvq.quality.dnsmos import dnsmos_of_clips
from streamvc_rvq.quality.scorer import QualityScorer
from streamvc_rvq.quality.speaker_similarity import cosine, speaker_embedding
from streamvc_rvq.quantization.rvq import StageSchedule

SAMPLE_PAIRS = 24  # the evaluation's sample conversions (8 sources x 3 targets): DNSMOS on those


def _stages(text: str) -> list[int | None]:
    return [None if s == "all" else int(s) for s in text.split(",")]


@torch.inference_mode()
def knobs(checkpoint: Path, heldout, alphas: list[float], stages: list[int | None]) -> list[dict]:
    model, cfg, step = load_trained_model(checkpoint)
    trained = StageSchedule.of(cfg["model"]).in_checkpoint(step)
    pairs = conversion_pairs(heldout, min(len(heldout), IDENTIFICATION_SOURCES))
    targets_of = targets_by_source(pairs)
    rate, warmup = model.sample_rate, model.warmup_frames
    scorer = QualityScorer(["speaker"], rate, frame_rate=rate / model.hop_length)
    labelled = model.content_encoder.label_head is not None and all(u.labels is not None for u in heldout)
    mean = torch.stack([model.speaker_encoder(u.audio.unsqueeze(0))[0] for u in heldout]).mean(0)
    if labelled:
        own = LabelAccuracy()
        for source in {s.utterance_id: s for s, _ in pairs}.values():
            own.update(model.content_encoder(source.audio.unsqueeze(0))[1], source.labels, warmup)
        kept = own.result()
        print(f"{checkpoint} (step {step}, {trained} stages trained): the sources' label accuracy "
              f"{kept['accuracy']:.3f}, chance {kept['chance']:.3f}", flush=True)
    rows = []
    for active, alpha in itertools.product(stages, alphas):
        active = trained if active is None else min(active, trained)
        trials, clips, content = [], [], LabelAccuracy()
        for source, reference in pairs:
            x, r = model._prepare(source.audio.unsqueeze(0)), reference.audio.unsqueeze(0)
            features, _, stats, valid = model._encode(x, None)
            speaker = mean + alpha * (model.speaker_encoder(r) - mean)
            pitch = model.pitch.retarget(model.pitch(x), model.pitch_statistics(r))
            audio = model.decoder(features, pitch, speaker, active, stats, valid, *model.excitations(pitch))[0].reshape(-1)
            clips.append(audio.float())
            if labelled:
                content.update(model.content_encoder(clips[-1].unsqueeze(0))[1], source.labels, warmup)
            embedding = speaker_embedding(clips[-1], rate)
            trials.append({"source": source.utterance_id, "target": reference.speaker, "embedding": embedding,
                           "to_targets": {spk: cosine(embedding, scorer.utterance_embedding(u))
                                          for spk, u in targets_of[source.utterance_id].items()}})
        ident = target_controls(trials)["identification"]
        label_accuracy = content.result()["accuracy"] if labelled else None
        rows.append({"checkpoint": str(checkpoint), "step": step, "stages": active, "alpha": alpha,
                     "hits": ident["hits"], "trials": ident["num_outputs"], "low": ident["low"], "high": ident["high"],
                     "label_accuracy": label_accuracy, "dnsmos_ovrl": dnsmos_of_clips(clips[:SAMPLE_PAIRS], rate)["ovrl"]})
        accuracy = "-" if label_accuracy is None else f"{label_accuracy:.3f}"
        print(f"| {checkpoint} | {active} | {alpha:g} | {ident['hits']}/{ident['num_outputs']} "
              f"({ident['low']:.0%}-{ident['high']:.0%}) | {accuracy} | {rows[-1]['dnsmos_ovrl']:.3f} |", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--labels", default="manifest",
                        help="frame_labels.npz for the content kept (default: the manifest's label files)")
    parser.add_argument("--alphas", type=lambda text: [float(a) for a in text.split(",")], default=[1.0],
                        help="comma-separated speaker-vector factors (default 1)")
    parser.add_argument("--stages", type=_stages, default=[None],
                        help="comma-separated numbers of RVQ stages, 'all' for the trained ones (default all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    heldout = load_utterances(args.manifest, "heldout", labels=args.labels)
    print("| checkpoint | stages | alpha | identified (Wilson 95 %) | label accuracy | DNSMOS OVRL, sample pairs |\n"
          "|---|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        knobs(checkpoint, heldout, args.alphas, args.stages)


if __name__ == "__main__":
    main()
