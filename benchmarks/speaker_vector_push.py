"""Does a trained decoder follow its speaker vector further than training took it? (issue 38)

    python benchmarks/speaker_vector_push.py --manifest results/data/espeak_quick/manifest.csv \
        --alphas 1,1.5,2 results/quick/espeak_quick/phase1/checkpoints/step_500.pt

Each held-out utterance converted to the next held-out speakers (the evaluation's trials,
``conversion_pairs``), with the target's speaker vector pushed away from the mean of the held-out
utterances' vectors: ``mean + alpha (s - mean)`` (alpha 1: the model as evaluated). Prints, per
checkpoint and alpha, Resemblyzer's identification of the intended target among the source's
targets and the DNSMOS OVRL of the evaluation's 24 sample pairs. An inference probe, not a
measure of the model: alpha chosen on these trials must be judged on other seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from streamvc_rvq.data.dataset import load_utterances
from streamvc_rvq.evaluation.conversion_controls import target_controls
from streamvc_rvq.evaluation.evaluate import IDENTIFICATION_SOURCES, conversion_pairs
from streamvc_rvq.evaluation.pitch_and_oracle_controls import targets_by_source
from streamvc_rvq.inference.conversion import load_trained_model
from streamvc_rvq.quality.dnsmos import dnsmos_of_clips
from streamvc_rvq.quality.scorer import QualityScorer
from streamvc_rvq.quality.speaker_similarity import cosine, speaker_embedding
from streamvc_rvq.quantization.rvq import StageSchedule

SAMPLE_PAIRS = 24  # the evaluation's sample conversions (8 sources x 3 targets): DNSMOS on those


@torch.inference_mode()
def push(checkpoint: Path, heldout, alphas: list[float]) -> list[dict]:
    model, cfg, step = load_trained_model(checkpoint)
    model.eval()
    active = StageSchedule.of(cfg["model"]).in_checkpoint(step)
    pairs = conversion_pairs(heldout, min(len(heldout), IDENTIFICATION_SOURCES))
    targets_of = targets_by_source(pairs)
    rate = model.sample_rate
    scorer = QualityScorer(["speaker"], rate, frame_rate=rate / model.hop_length)
    mean = torch.stack([model.speaker_encoder(u.audio.unsqueeze(0))[0] for u in heldout]).mean(0)
    rows = []
    for alpha in alphas:
        trials, clips = [], []
        for source, reference in pairs:
            x, r = model._prepare(source.audio.unsqueeze(0)), reference.audio.unsqueeze(0)
            content, _, stats, valid = model._encode(x, None)
            speaker = mean + alpha * (model.speaker_encoder(r) - mean)
            pitch = model.pitch.retarget(model.pitch(x), model.pitch_statistics(r))
            audio = model.decoder(content, pitch, speaker, active, stats, valid, model._excitation(pitch))[0].reshape(-1)
            clips.append(audio.float())
            embedding = speaker_embedding(clips[-1], rate)
            trials.append({"source": source.utterance_id, "target": reference.speaker, "embedding": embedding,
                           "to_targets": {spk: cosine(embedding, scorer.utterance_embedding(u))
                                          for spk, u in targets_of[source.utterance_id].items()}})
        ident = target_controls(trials)["identification"]
        rows.append({"checkpoint": str(checkpoint), "step": step, "alpha": alpha, "hits": ident["hits"],
                     "trials": ident["num_outputs"], "low": ident["low"], "high": ident["high"],
                     "dnsmos_ovrl": dnsmos_of_clips(clips[:SAMPLE_PAIRS], rate)["ovrl"]})
        print(f"| {checkpoint} | {alpha:g} | {ident['hits']}/{ident['num_outputs']} ({ident['low']:.0%}-{ident['high']:.0%}) "
              f"| {rows[-1]['dnsmos_ovrl']:.3f} |", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--alphas", type=lambda text: [float(a) for a in text.split(",")], default=[1.0, 1.5, 2.0],
                        help="comma-separated factors (default 1,1.5,2)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    heldout = load_utterances(args.manifest, "heldout", labels=None)
    print("| checkpoint | alpha | identified (Wilson 95 %) | DNSMOS OVRL, sample pairs |\n|---|---|---|---|")
    for checkpoint in args.checkpoints:
        push(checkpoint, heldout, args.alphas)


if __name__ == "__main__":
    main()
