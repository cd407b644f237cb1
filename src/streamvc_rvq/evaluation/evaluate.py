"""Per-checkpoint evaluation: codebook health over the whole validation split, validation
losses, and sample conversions between held-out speakers (written as wavs).

Only valid frames count (:mod:`streamvc_rvq.model.valid_frames`): code histograms, the
pre-RVQ statistics and the validation losses skip each utterance's first
``model.warmup_frames`` frames. A checkpoint at step N is evaluated with the stages it was
trained with (:meth:`StageSchedule.in_checkpoint`); a stage that becomes active at N is listed under
``untrained_stages`` and never judged."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from streamvc_rvq.atomic import write_json
from streamvc_rvq.config import config_hash
from streamvc_rvq.data.audio import save_wav
from streamvc_rvq.data.dataset import load_utterances
from streamvc_rvq.device import select_device
from streamvc_rvq import tags
from streamvc_rvq.evaluation.curves import around_step, curve_facts
from streamvc_rvq.evaluation.conversion_controls import target_controls
from streamvc_rvq.evaluation.pitch_and_oracle_controls import pitch_and_oracle_controls, targets_by_source
from streamvc_rvq.evaluation.speaker_probe import content_speaker_probe
from streamvc_rvq.quality.scorer import KINDS, QualityScorer, quality_line
from streamvc_rvq.quality.reference_levels import spread_over_speakers
from streamvc_rvq.quality.speaker_similarity import cosine, verification_of
from streamvc_rvq.inference.conversion import load_trained_model
from streamvc_rvq.provenance import provenance as run_provenance
from streamvc_rvq.quantization import stats
from streamvc_rvq.quantization.frame_stats import FrameScaleAccumulator
from streamvc_rvq.quantization.rvq import StageSchedule
from streamvc_rvq.training import losses
from streamvc_rvq.training.scalars_file import read_segment_scalars


SPEAKER_UTTERANCES = 32  # held-out utterances whose model speaker embeddings are compared pairwise
TRAIN_ACCURACY_UTTERANCES = 200  # training utterances sampled for the label accuracy when validation is uncapped


def provenance(cfg: dict, checkpoint_cfg: dict, device: torch.device) -> dict:
    """What produced these metrics: preset, corpus, the hash of the training config the
    checkpoint records, and the evaluation's own environment (packages, device, commit and
    the hash of its config, ``config_hash``; the checkpoint holds the training's)."""
    return {
        "preset": cfg.get("preset", checkpoint_cfg.get("preset")),
        "corpus": cfg.get("corpus", {}).get("name", checkpoint_cfg.get("corpus", {}).get("name")),
        "training_config_hash": config_hash(checkpoint_cfg),
        **run_provenance(cfg, device),
    }


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


@torch.inference_mode()
def codebook_and_losses(model, utterances, num_active: int, codebook_size: int, sample_rate: int, device) -> dict:
    """Stage statistics from code histograms summed over the valid frames of every utterance
    (not one batch), the frame-scale statistics of the RVQ input, and validation losses on
    the valid part of each utterance. Utterances with no valid frame are skipped (counted)."""
    spectral = losses.MultiScaleSpectralLoss(sample_rate=sample_rate).to(device)
    hop, warmup = model.hop_length, model.warmup_frames
    histograms = [torch.zeros(codebook_size) for _ in range(num_active)]
    frame_acc = FrameScaleAccumulator()
    label_acc = LabelAccuracy() if _labelled(model, utterances) else None
    frames_total, std_sum, n, skipped = 0, 0.0, 0, 0
    per_utterance: dict[str, list[float]] = {"loss_stft": [], "loss_l1": []}
    for utt in utterances:
        frames = utt.audio.numel() // hop
        if frames <= warmup:
            skipped += 1
            continue
        x = utt.audio[: frames * hop].unsqueeze(0).to(device)
        out = model(x, x, num_active)
        valid = out.valid.cpu()
        for i, codes in enumerate(out.rvq.codes):
            histograms[i] += stats.code_histogram(codes.cpu()[valid], codebook_size)
        frame_acc.update(out.rvq_input, out.valid)
        if label_acc is not None:
            label_acc.update(out.content_logits, utt.labels, warmup)
        count = int(valid.sum())
        frames_total += count
        std_sum += float(out.pre_rvq_std) * count
        scored = warmup * hop
        per_utterance["loss_stft"].append(float(spectral(x[:, scored:], out.audio[:, scored:])))
        per_utterance["loss_l1"].append(float(losses.waveform_l1(x[:, scored:], out.audio[:, scored:])))
        n += 1
    if n == 0:
        raise ValueError(f"no validation utterance is longer than the model's {warmup} warm-up frames")
    frame = frame_acc.result(model.decoder.rvq.input_space_codebook(0))
    return {
        "stages": [
            {
                "index": i,
                "perplexity": stats.perplexity(h),
                "usage": stats.usage(h),
                # codes used at least once over the whole pass: unlike batch perplexity, no batch-size effect
                "codes_used": stats.codes_used(h),
                "top_code_share": stats.top_code_share(h),
                "dead_codes": stats.dead_codes(h),
                "num_frames": int(h.sum()),
            }
            for i, h in enumerate(histograms)
        ],
        "pre_rvq_std": std_sum / frames_total,
        "pre_rvq_frame": frame,
        "warmup_frames": warmup,
        "content_labels_valid": label_acc.result() if label_acc is not None else None,
        "validation": {"loss_stft": sum(per_utterance["loss_stft"]) / n, "loss_l1": sum(per_utterance["loss_l1"]) / n,
                       "num_utterances": n, "num_skipped_short": skipped,
                       # in utterance order, so two checkpoints' losses pair up (the verdict's noise allowance)
                       "per_utterance": per_utterance},
    }


class LabelAccuracy:
    """Content-head accuracy and cross-entropy summed over the valid frames of utterances, and
    chance: the share of the most frequent label (what always guessing it scores)."""

    def __init__(self) -> None:
        self.hits, self.ce_sum, self.frames, self.utterances = 0.0, 0.0, 0, 0
        self.counts: dict[int, int] = {}

    def update(self, logits: torch.Tensor, labels: torch.Tensor, warmup: int) -> None:
        """``logits: 1 x C x F`` and ``labels: F'`` of one utterance; its first ``warmup`` frames are not scored."""
        n = min(logits.shape[-1], labels.numel())
        if n <= warmup:
            return
        logits, labels = logits[..., warmup:n].float().cpu(), labels[warmup:n].unsqueeze(0)
        count = labels.numel()
        self.hits += losses.label_accuracy(logits, labels) * count
        self.ce_sum += float(losses.content_cross_entropy(logits, labels)) * count
        self.frames += count
        self.utterances += 1
        for value, k in zip(*torch.unique(labels, return_counts=True)):
            self.counts[int(value)] = self.counts.get(int(value), 0) + int(k)

    def result(self) -> dict | None:
        if self.frames == 0:
            return None
        return {"accuracy": self.hits / self.frames, "chance": max(self.counts.values()) / self.frames,
                "loss_ce": self.ce_sum / self.frames, "num_frames": self.frames, "num_utterances": self.utterances}


def _labelled(model, utterances) -> bool:
    return model.content_encoder.label_head is not None and bool(utterances) and all(u.labels is not None for u in utterances)


@torch.inference_mode()
def content_label_metrics(model, utterances, device) -> dict | None:
    """:class:`LabelAccuracy` of the content head alone on ``utterances``; None without a
    label head or labels."""
    if not _labelled(model, utterances):
        return None
    acc = LabelAccuracy()
    for utt in utterances:
        frames = min(utt.audio.numel() // model.hop_length, utt.labels.numel())
        _, logits = model.content_encoder(utt.audio[: frames * model.hop_length].unsqueeze(0).to(device))
        acc.update(logits, utt.labels, model.warmup_frames)
    return acc.result()


TARGETS_PER_SOURCE = 3  # each source is converted to this many other held-out speakers (fewer if the corpus has fewer)
# sources of the identification trials (every held-out utterance up to this many): the quick preset's 28 give 84
# trials, a Wilson interval of +-10 points; the cap bounds the cost on a large held-out split
IDENTIFICATION_SOURCES = 40


def conversion_pairs(heldout, count: int, targets_per_source: int = TARGETS_PER_SOURCE) -> list[tuple]:
    """Deterministic (source, target reference) pairs between different held-out speakers:
    ``count`` sources taken round-robin over the speakers, each converted to the next
    ``targets_per_source`` speakers (one fixed reference utterance per target speaker), so the
    target-blind controls of :mod:`conversion_controls` can compare one source's outputs."""
    by_speaker: dict[str, list] = {}
    for utt in heldout:
        by_speaker.setdefault(utt.speaker, []).append(utt)
    speakers = sorted(by_speaker)
    if len(speakers) < 2:
        return []
    pairs = []
    for k in range(count):
        src_spk = speakers[k % len(speakers)]
        src_list = by_speaker[src_spk]
        source = src_list[(k // len(speakers)) % len(src_list)]
        for j in range(1, min(targets_per_source, len(speakers) - 1) + 1):
            pairs.append((source, by_speaker[speakers[(k + j) % len(speakers)]][0]))
    return pairs


@torch.inference_mode()
def speaker_embedding_separation(model, utterances, device) -> dict | None:
    """How well the model's own speaker embedding separates speakers: :func:`verification_of`
    over every pair of ``utterances`` (AUC near 0.5: a constant embedding)."""
    if len({u.speaker for u in utterances}) < 2:
        return None
    embed = _own_embedder(model, device)
    embeddings = [(u.speaker, embed(u.audio)) for u in utterances if u.audio.numel() >= model.hop_length]
    return {**verification_of(embeddings), "num_utterances": len(embeddings),
            "num_speakers": len({s for s, _ in embeddings})}


def _own_embedder(model, device):
    """``embed(audio, key=None)``: the model's own speaker embedding of 1-D ``audio`` (numpy),
    cached by ``key`` (a reference is embedded once)."""
    cache: dict[str, np.ndarray] = {}

    @torch.inference_mode()
    def embed(audio: torch.Tensor, key: str | None = None) -> np.ndarray:
        if key is not None and key in cache:
            return cache[key]
        value = model.speaker_encoder(audio.unsqueeze(0).to(device))[0].float().cpu().numpy()
        if key is not None:
            cache[key] = value
        return value

    return embed


@torch.inference_mode()
def _label_logits(model, audio: torch.Tensor, device) -> torch.Tensor:
    """The content head's logits ``1 x L x F`` on 1-D ``audio`` (a conversion or its source)."""
    return model.content_encoder(audio.unsqueeze(0).to(device))[1]


def _count_content(model, content: dict, sources_read: set[str], src, out: torch.Tensor, device) -> None:
    """The content head's label accuracy on a conversion, and once per source on the source itself."""
    content["output"].update(_label_logits(model, out, device), src.labels, model.warmup_frames)
    if src.utterance_id not in sources_read:
        sources_read.add(src.utterance_id)
        content["source"].update(_label_logits(model, src.audio, device), src.labels, model.warmup_frames)


def _quality_summary(scorer: QualityScorer, by_kind: dict, controls: list | None, own_controls: list,
                     content: dict, recognition_skipped: str | None) -> dict:
    """Each kind's summary, the conversions' controls (Resemblyzer's when it ran, the model's own
    encoder's), their content kept, the measures that ran and what they cost."""
    quality = {kind: scorer.summarise(*by_kind[kind]) for kind in KINDS}
    if controls is not None:
        quality["convert"]["controls"] = target_controls(controls)
    quality["convert"]["content_labels"] = {which: acc.result() for which, acc in content.items()}
    # the training judge of the speaker-consistency loss: far above Resemblyzer's rate, the decoder
    # satisfies its own encoder with cues an independent speaker model does not weigh
    quality["convert"]["identified_by_model"] = target_controls(own_controls)["identification"]
    quality["measures"] = list(scorer.measures)
    if recognition_skipped:
        quality["recognition_skipped"] = recognition_skipped
    quality["seconds"] = {**scorer.seconds, "total": sum(scorer.seconds.values())}
    return quality


class Conversions:
    """The evaluation's conversions of corpus utterances, each source encoded once (its content path is
    over half a conversion's time, and the identification trials convert every source to three targets
    and again at its own pitch), decoded per reference: the outputs of :func:`convert` to the bit."""

    def __init__(self, model, num_active: int, device) -> None:
        self.model, self.num_active, self.device = model, num_active, device
        self._encoded: dict[str, object] = {}

    @torch.inference_mode()
    def __call__(self, source, reference, keep_pitch: bool = False) -> torch.Tensor:
        """1-D float32 CPU output of utterance ``source`` in utterance ``reference``'s voice; ``keep_pitch``:
        at the source's own pitch level (the timbre alone)."""
        audio = source.audio.to(self.device).unsqueeze(0)
        encoded = self._encoded.get(source.utterance_id)
        if encoded is None:
            encoded = self._encoded[source.utterance_id] = self.model.encode(audio)
        out = self.model.decode(encoded, reference.audio.to(self.device).unsqueeze(0), self.num_active,
                                pitch_reference=audio if keep_pitch else None)
        return out.audio[0].float().cpu()


def write_samples(model, valid, heldout, num_active: int, count: int, samples_dir: Path, sample_rate: int,
                  silence_std: float, device, measures: tuple[str, ...] = ()) -> dict:
    """Writes ``count`` conversions between held-out speakers and ``count`` reconstructions of
    validation utterances, and measures each (:mod:`streamvc_rvq.quality.scorer`)."""
    samples_dir.mkdir(parents=True, exist_ok=True)
    jobs = [("convert", f"convert_{s.utterance_id}_to_{t.speaker}", s, t) for s, t in conversion_pairs(heldout, count)]
    jobs += [("reconstruct", f"reconstruct_{u.utterance_id}", u, u) for u in valid[:count]]
    scorer = QualityScorer(measures, sample_rate, frame_rate=sample_rate / model.hop_length)
    recognition_skipped = scorer.probe_recognition(list({src.utterance_id: src for _, _, src, _ in jobs}.values()))
    targets_of = targets_by_source([(src, ref) for kind, _, src, ref in jobs if kind == "convert"])
    entries, by_kind = [], {kind: ([], [], [], []) for kind in KINDS}
    controls, own_controls = [], []  # Resemblyzer's judgement, and the model's own speaker encoder's
    own_embedding = _own_embedder(model, device)
    conversions = Conversions(model, num_active, device)
    content = {"output": LabelAccuracy(), "source": LabelAccuracy()}  # is the source's content still there?
    sources_read: set[str] = set()
    for kind, name, src, ref in jobs:
        out = conversions(src, ref)
        if kind == "convert" and _labelled(model, [src]):
            _count_content(model, content, sources_read, src, out, device)
        save_wav(samples_dir / f"{name}.wav", out, sample_rate)
        measured, embedding = scorer.score(kind, src, ref, out)
        entry = {"name": name, "kind": kind, "source": src.utterance_id, "target_reference": ref.utterance_id,
                 "target_speaker": ref.speaker,
                 "std": float(out.std()), "rms_ratio": _rms(out) / max(_rms(src.audio[: out.numel()]), 1e-8), **measured}
        if kind == "convert":
            mine = own_embedding(out)
            own_controls.append({"source": src.utterance_id, "target": ref.speaker, "embedding": mine, "to_targets": {
                speaker: cosine(mine, own_embedding(r.audio, r.utterance_id))
                for speaker, r in targets_of[src.utterance_id].items()}})
        if kind == "convert" and embedding is not None:
            entry["similarity_to_targets"] = {
                speaker: cosine(embedding, scorer.utterance_embedding(r)) for speaker, r in targets_of[src.utterance_id].items()}
            controls.append({"source": src.utterance_id, "target": ref.speaker, "embedding": embedding,
                             "to_targets": entry["similarity_to_targets"]})
        entries.append(entry)
        for store, value in zip(by_kind[kind], (entry, out, embedding, ref.speaker)):
            store.append(value)
    quality = _quality_summary(scorer, by_kind, controls if "speaker" in measures else None, own_controls, content,
                               recognition_skipped)
    if "speaker" in measures:
        with scorer.timed("speaker"):
            # every held-out utterance a source: the model, its floor and its ceiling on the same trials
            known = {(c["source"], c["target"]): c["embedding"] for c in controls}
            quality["convert"]["reference_controls"] = pitch_and_oracle_controls(
                scorer, conversion_pairs(heldout, min(len(heldout), IDENTIFICATION_SOURCES)), heldout, sample_rate, model.hop_length,
                convert=conversions, known=known,
                convert_timbre=lambda source, reference: conversions(source, reference, keep_pitch=True))
        quality["seconds"] = {**scorer.seconds, "total": sum(scorer.seconds.values())}
    stds = [e["std"] for e in entries]
    return {
        "samples": entries,
        "std": stds,
        "num_outputs": len(entries),
        "num_silent": sum(not s > silence_std for s in stds),  # a NaN output is silent too
        "rms_ratio": sum(e["rms_ratio"] for e in entries) / max(1, len(entries)),
        "quality": quality,
    }


def evaluate_checkpoint(
    cfg: dict, *, checkpoint: Path, manifest: Path, scalars: Sequence[Path], samples_dir: Path,
    output: Path, device: str | None = None, labels: str | Path | None = "manifest",
    quality_measures: Sequence[str] | None = None,
) -> dict:
    """Metrics of one checkpoint; ``labels`` as in :func:`load_utterances` (content-label accuracy);
    ``scalars``: the training scalars files of the chain up to the checkpoint (curve facts);
    ``quality_measures``: those to run here (None: ``evaluation.quality_measures``)."""
    eval_cfg = cfg["evaluation"]
    device_ = select_device(device or eval_cfg["device"])
    model, ckpt_cfg, step = load_trained_model(checkpoint, cfg["model"], device_)
    model_cfg = ckpt_cfg["model"]
    schedule = StageSchedule.of(model_cfg)
    num_active = schedule.in_checkpoint(step)
    cap = eval_cfg["max_validation_utterances"]
    valid = load_utterances(manifest, "valid", labels=labels)
    if cap:
        valid = valid[:cap]
    heldout = load_utterances(manifest, "heldout", labels=labels)  # labels: the conversions' content measure
    print(f"evaluating {checkpoint} (step {step}, {num_active} active stages) on {len(valid)} validation utterances", file=sys.stderr, flush=True)
    metrics = {
        "experiment": cfg.get("experiment"),
        "seed": ckpt_cfg["train"]["seed"],
        "step": step,
        "num_active_quantizers": num_active,
        "provenance": provenance(cfg, ckpt_cfg, device_),
        # what trained the checkpoint, so a table of experiments can be read from metrics alone
        "training_config": {key: ckpt_cfg[key] for key in ("model", "train") if key in ckpt_cfg},
    }
    metrics.update(codebook_and_losses(model, valid, num_active, model_cfg["rvq"]["codebook_size"], model_cfg["sample_rate"], device_))
    train_sample = (load_utterances(manifest, "train", labels=labels, max_utterances=cap or TRAIN_ACCURACY_UTTERANCES)
                    if labels is not None else [])
    metrics["content_labels"] = {
        "train": content_label_metrics(model, train_sample, device_),
        "valid": metrics.pop("content_labels_valid"),  # measured in the pass above
    }
    metrics["untrained_stages"] = _stage_ages(metrics["stages"], step, num_active, schedule)
    metrics["speaker_embedding"] = speaker_embedding_separation(
        model, spread_over_speakers(heldout, SPEAKER_UTTERANCES), device_)
    measures = tuple(eval_cfg["quality_measures"] if quality_measures is None else quality_measures)
    if "speaker" in measures:  # where the conversions are judged: does the content path carry the source's voice?
        probe_train = train_sample or load_utterances(manifest, "train", labels=None,
                                                      max_utterances=cap or TRAIN_ACCURACY_UTTERANCES)
        metrics["content_speaker"] = content_speaker_probe(model, probe_train, valid, num_active, device_)
    metrics["outputs"] = write_samples(
        model, valid, heldout, num_active, eval_cfg["num_conversions"], Path(samples_dir),
        model_cfg["sample_rate"], eval_cfg["silence_std"], device_, measures,
    )
    metrics["training_curve"] = _training_curve(scalars, step, schedule.progressive_steps)
    write_json(output, metrics)
    _print_summary(metrics, step)
    return metrics


def _stage_ages(stages: list[dict], step: int, num_active: int, schedule: StageSchedule) -> list[dict]:
    """Sets each measured stage's ``trained_steps``; returns the stages the schedule has started
    but this checkpoint does not run yet (0 steps trained)."""
    for entry in stages:
        entry["trained_steps"] = schedule.trained_steps(entry["index"], step)
    return [{"index": i, "trained_steps": 0} for i in range(num_active, schedule.active_at(step))]


def _training_curve(scalars: Sequence[Path], step: int, progressive: int) -> dict:
    """The chain's training-curve facts up to ``step``, and the curve around stage 1's start."""
    points = read_segment_scalars(scalars)
    curve = curve_facts(points, up_to_step=step, window=20) if points else {}
    if points and progressive > 0 and step > progressive:  # the curve around stage 1's start (the 2k disturbance)
        curve["stage1_start"] = around_step(
            [(s, v) for s, v in points.get(tags.LOSS_STFT, []) if s <= step], progressive, max(1, progressive // 4))
    return curve


def _print_summary(metrics: dict, step: int) -> None:
    print(quality_line(metrics["outputs"]["quality"]), file=sys.stderr, flush=True)
    probe = metrics.get("content_speaker")
    if probe:
        print(f"speaker from one frame, linear probe: decoder input {probe['decoder_input']:.3f}, log-mel "
              f"{probe['log_mel']:.3f}, chance {probe['chance']:.3f} ({probe['num_speakers']} speakers)",
              file=sys.stderr, flush=True)
    q0 = metrics["stages"][0]
    for split, content in metrics["content_labels"].items():
        if content:
            print(f"content labels, {split}: accuracy {content['accuracy']:.3f} (chance {content['chance']:.3f})",
                  file=sys.stderr, flush=True)
    print(
        f"step {step}: perplexity_q0 {q0['perplexity']:.2f} usage_q0 {q0['usage']:.3f} top_share_q0 {q0['top_code_share']:.3f} "
        f"pre_rvq_std {metrics['pre_rvq_std']:.3f} frame_scale {metrics['pre_rvq_frame']['frame_scale']:.3f} "
        f"effective_rank {metrics['pre_rvq_frame']['effective_rank']:.2f} loss_stft {metrics['validation']['loss_stft']:.3f} "
        f"silent {metrics['outputs']['num_silent']}/{metrics['outputs']['num_outputs']}",
        file=sys.stderr, flush=True,
    )
