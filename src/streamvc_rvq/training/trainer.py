"""Training to a step target: from scratch or from the previous target's checkpoint.

A chain of targets reproduces one straight run exactly (same device, same seed): each
batch is a pure function of (seed, step), the learning rate a pure function of the step,
and the checkpoint carries optimiser, scheduler and RNG states.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from streamvc_rvq import tags
from streamvc_rvq.atomic import remove_temps_of
from streamvc_rvq.data.content_labels import LabelError
from streamvc_rvq.data.dataset import Batch, load_utterances, sample_batch
from streamvc_rvq.device import select_device, use_deterministic_algorithms
from streamvc_rvq.model.streamvc import StreamVC, StreamVCOutput
from streamvc_rvq.modules.discriminator import MultiScaleSTFTDiscriminator
from streamvc_rvq.provenance import provenance
from streamvc_rvq.quantization.frame_stats import frame_scale_stats
from streamvc_rvq.quantization.rvq import StageSchedule
from streamvc_rvq.training import losses
from streamvc_rvq.training.checkpoint import (
    CheckpointError,
    check_model_config,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from streamvc_rvq.training.precision import Precision
from streamvc_rvq.training.settings import TrainSettings
from streamvc_rvq.training.schedule import lr_factor
from streamvc_rvq.training.scalars_file import write_segment_scalars
from streamvc_rvq.training.snapshots import (
    SnapshotPolicy,
    StopRequest,
    find_snapshot,
    origin,
    remove_snapshot,
    snapshot_path,
)
from streamvc_rvq.training.tensorboard_log import SegmentWriter


KMEANS_MAX_BATCHES = 1000  # batches a stage's k-means initialisation may draw


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, unusable checkpoint); the message says where."""


@dataclass
class TrainState:
    """Everything that changes during training and goes into a checkpoint."""

    model: StreamVC
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    discriminator: nn.Module | None
    disc_optimizer: torch.optim.Optimizer | None
    step: int
    precision: Precision


def gan_enabled(train: TrainSettings) -> bool:
    weights = train.loss_weights
    return weights["adversarial"] > 0 or weights["feature_matching"] > 0


def parameter_groups(model: StreamVC, lr: float) -> list[dict]:
    """The optimiser's groups: everything at ``lr`` (first: the group whose rate is logged), and
    the codebooks at ``lr x model.rvq.codebook_lr_scale`` when that is not 1."""
    rvq = model.decoder.rvq
    scale = rvq.settings.codebook_lr_scale
    codebooks = rvq.codebook_parameters() if scale != 1.0 else []
    ids = {id(p) for p in codebooks}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids]}]
    return groups + ([{"params": codebooks, "lr": lr * scale}] if codebooks else [])


def build_state(cfg: dict, device: torch.device) -> TrainState:
    """Fresh model and optimiser, initialised from ``train.seed`` alone."""
    train = TrainSettings.of(cfg["train"])
    torch.manual_seed(train.seed)
    model = StreamVC(cfg["model"]).to(device)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, train.lr), lr=train.lr, betas=train.betas, weight_decay=train.weight_decay,
    )
    total = train.steps[-1]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, train.warmup_steps, total))
    discriminator = disc_optimizer = None
    if gan_enabled(train):
        discriminator = MultiScaleSTFTDiscriminator(**train.discriminator).to(device)
        disc_optimizer = torch.optim.AdamW(
            discriminator.parameters(), lr=train.lr, betas=train.betas, weight_decay=train.weight_decay,
        )
    precision = Precision(train.precision, device)
    return TrainState(model, optimizer, scheduler, discriminator, disc_optimizer, step=0, precision=precision)


def restore_state(state: TrainState, checkpoint: dict[str, Any]) -> None:
    state.model.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler.load_state_dict(checkpoint["scheduler"])
    if state.discriminator is not None:
        if "discriminator" not in checkpoint:
            raise TrainingError("the GAN is on but the checkpoint has no discriminator state")
        state.discriminator.load_state_dict(checkpoint["discriminator"])
        state.disc_optimizer.load_state_dict(checkpoint["disc_optimizer"])
    if state.precision.scaling and "grad_scaler" in checkpoint:
        state.precision.scaler.load_state_dict(checkpoint["grad_scaler"])
    state.step = int(checkpoint["step"])
    set_rng_state(checkpoint["rng"])


def checkpoint_payload(state: TrainState, cfg: dict, device: torch.device) -> dict[str, Any]:
    payload = {
        "provenance": provenance(cfg, device),
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "step": state.step,
        "rng": rng_state(),
        "config": cfg,
    }
    if state.discriminator is not None:
        payload["discriminator"] = state.discriminator.state_dict()
        payload["disc_optimizer"] = state.disc_optimizer.state_dict()
    if state.precision.scaling:
        payload["grad_scaler"] = state.precision.scaler.state_dict()
    return payload


class LossTerms:
    """Weighted loss terms of one step; refuses non-finite values, naming the term and step."""

    def __init__(self, weights: dict[str, float], step: int):
        self.weights, self.step = weights, step
        self.raw: dict[str, torch.Tensor] = {}
        self.total: torch.Tensor | None = None

    def add(self, name: str, value: torch.Tensor) -> None:
        if not torch.isfinite(value):
            raise TrainingError(f"non-finite loss at step {self.step}: {name} = {float(value.detach())}")
        self.raw[name] = value
        weighted = self.weights[name] * value
        if not torch.isfinite(weighted):
            raise TrainingError(
                f"non-finite loss at step {self.step}: {name} x weight {self.weights[name]:g} = {float(weighted.detach())}"
            )
        self.total = weighted if self.total is None else self.total + weighted


def clip_groups(model: StreamVC) -> list[list[nn.Parameter]]:
    """Parameter groups whose gradient norms are clipped separately.

    With ``stop_gradient`` the content encoder learns from its label loss alone, a loss
    independent of the rest: one global clip would scale its gradient by the decoder's
    (measured: content encoder norm ~1, total ~40 on the micro model, so its step shrank
    40-fold and ``content_ce`` could not act). Without it, one group as before."""
    if not model.stop_gradient:
        return [list(model.parameters())]
    content = {id(p) for p in model.content_encoder.parameters()}
    return [list(model.content_encoder.parameters()), [p for p in model.parameters() if id(p) not in content]]


class Trainer:
    def __init__(self, cfg: dict, state: TrainState, device: torch.device):
        self.cfg, self.state, self.device = cfg, state, device
        self.model_cfg, self.train = cfg["model"], TrainSettings.of(cfg["train"])
        self.spectral = losses.MultiScaleSpectralLoss(sample_rate=self.model_cfg["sample_rate"]).to(device)
        self.hop = state.model.hop_length
        self.crop_frames = max(1, int(round(self.train.crop_seconds * self.model_cfg["sample_rate"])) // self.hop)
        self.context_frames = state.model.warmup_frames  # run, never scored (valid-frames rule)
        self.audio_per_step = self.train.batch_size * self.crop_frames * self.hop / self.model_cfg["sample_rate"]
        self.clip_groups = clip_groups(state.model)

    def active_stages(self, step: int) -> int:
        return StageSchedule.of(self.model_cfg).active_at(step)

    def batch(self, utterances, step: int, stream: str = "batch") -> Batch:
        return sample_batch(
            utterances, self.train.seed, step, self.train.batch_size, self.crop_frames, self.hop,
            context_frames=self.context_frames, stream=stream,
        )

    @torch.no_grad()
    def init_codebooks(self, utterances, step: int) -> None:
        """k-means initialisation of each stage that is active at ``step`` and not yet
        initialised, on ``kmeans_init_frames_per_code x codebook_size`` valid frames of its
        input residuals from dedicated batches (a pure function of seed, step and stage)."""
        rvq = self.state.model.decoder.rvq
        for index in range(self.active_stages(step)):
            if not rvq.pending_kmeans(index):
                continue
            frames, per_step, draw = [], 0, 0
            while sum(f.shape[0] for f in frames) < rvq.kmeans_init_frames:
                if draw >= KMEANS_MAX_BATCHES:
                    raise TrainingError(
                        f"k-means initialisation of stage {index} found {sum(f.shape[0] for f in frames)} valid frames "
                        f"in {draw} batches (needs {rvq.kmeans_init_frames}): are the training utterances shorter "
                        f"than the model's {self.context_frames}-frame warm-up?"
                    )
                batch = self.batch(utterances, step * KMEANS_MAX_BATCHES + draw, stream=f"kmeans{index}")
                z, valid = self.state.model.rvq_input(batch.source.to(self.device), batch.lengths)
                frames.append(rvq.stage_inputs(z, index, valid))
                per_step = per_step or frames[-1].shape[0]
                draw += 1
            samples = torch.cat(frames)
            rvq.init_stage_(index, samples, frames_per_step=per_step)
            print(f"k-means initialised stage {index} at step {step} on {samples.shape[0]} frames "
                  f"({draw} batches)", file=sys.stderr, flush=True)

    def train_step(self, batch: Batch, step: int) -> dict[str, float]:
        state = self.state
        source = batch.source.to(self.device)
        num_active = self.active_stages(step)
        out = self.forward(batch, source, num_active)
        terms, extra = self._loss_terms(batch, source, out, step)
        grad_norms, lr = self._optimise(terms.total, step)
        scalars = {tags.train(f"loss_{name}"): value for name, value in terms.raw.items()}
        scalars.update({
            tags.LOSS_TOTAL: terms.total,
            tags.train("grad_norm"): grad_norms[-1],
            **({tags.train("content_grad_norm"): grad_norms[0]} if len(grad_norms) == 2 else {}),
            tags.train("lr"): lr,
            tags.PRE_RVQ_STD: out.pre_rvq_std,
            tags.NUM_ACTIVE: float(num_active),
        })
        for tag in (tags.train("loss_discriminator"), tags.train("content_label_accuracy")):  # in this order
            if tag in extra:
                scalars[tag] = extra[tag]
        scalars.update(self._codebook_scalars(out))
        # the tensor values (losses, norms, RVQ statistics) become floats in one device sync
        on_device = [tag for tag, value in scalars.items() if isinstance(value, torch.Tensor)]
        scalars.update(zip(on_device, torch.stack([scalars[tag].detach().float() for tag in on_device]).tolist()))
        return scalars

    def forward(self, batch: Batch, source: torch.Tensor, num_active: int) -> StreamVCOutput:
        """The reconstruction of ``source`` (the batch's, on the device) in its reference's voice, at the pitch
        level ``train.reconstruction_pitch`` names."""
        own_pitch = source if self.train.reconstruction_pitch == "source" else None
        with self.state.precision.autocast():  # the forward pass only: losses and the RVQ stay float32
            return self.state.model(source, batch.reference.to(self.device), num_active, lengths=batch.lengths,
                                    pitch_reference=own_pitch)

    def _loss_terms(self, batch: Batch, source: torch.Tensor, out, step: int) -> tuple[LossTerms, dict]:
        """The weighted loss terms of one step and the extra scalars they give (label accuracy,
        the discriminator's loss after its own step)."""
        state, weights = self.state, self.train.loss_weights
        # The left context is run, not scored. The audio losses cover the scored window of
        # every row alike: a short utterance's trailing zero padding is scored as silence (as
        # before), while RVQ statistics and the label loss skip it (``out.valid``).
        scored = batch.context_frames * self.hop
        audio = out.audio[:, scored:].float()
        target = source[:, scored : out.audio.shape[-1]]
        terms, extra = LossTerms(weights, step), {}
        terms.add("stft", self.spectral(target, audio))
        terms.add("l1", losses.waveform_l1(target, audio))
        terms.add("rvq", out.rvq.loss)
        has_labels = out.content_logits is not None and batch.labels is not None and bool(out.valid.any())
        if has_labels and weights["content_ce"] > 0:
            labels = batch.labels.to(self.device).masked_fill(~out.valid, -100)
            logits = out.content_logits.float()
            terms.add("content_ce", losses.content_cross_entropy(logits, labels))
            extra[tags.train("content_label_accuracy")] = losses.label_accuracy(logits.detach(), labels)
        if weights["speaker"] > 0:  # the source crop's embedding against the batch's references
            anchors = state.model.speaker_encoder(source[:, scored:])
            terms.add("speaker", losses.speaker_contrastive(anchors.float(), out.speaker.float(), batch.speakers))
        if weights["speaker_consistency"] > 0:
            terms.add("speaker_consistency", self.speaker_consistency(out, batch.speakers, scored))
        if state.discriminator is not None:
            extra[tags.train("loss_discriminator")] = self._discriminator_step(target, audio, step)
            # real features again, not reused from the discriminator step: that step has
            # just updated the discriminator, and feature matching compares with its new features
            _, real_feats = state.discriminator(target)
            fake_logits, fake_feats = state.discriminator(audio)
            terms.add("adversarial", losses.generator_adversarial_loss(fake_logits))
            terms.add("feature_matching", losses.feature_matching_loss(real_feats, fake_feats))
        return terms, extra

    def _optimise(self, total: torch.Tensor, step: int) -> tuple[list[torch.Tensor], float]:
        """Backward, clipping per group and the optimiser step: (the groups' gradient norms, the lr used)."""
        state, precision = self.state, self.state.precision
        state.optimizer.zero_grad(set_to_none=True)
        precision.scaler.scale(total).backward()
        precision.scaler.unscale_(state.optimizer)
        norms = [torch.nn.utils.clip_grad_norm_(group, self.train.grad_clip) for group in self.clip_groups]
        for norm in norms:
            # with float16 loss scaling an overflow is expected now and then: the scaler
            # skips that step and lowers its scale
            if not torch.isfinite(norm) and not precision.scaling:
                raise TrainingError(f"non-finite gradient norm at step {step}: {float(norm)}")
        lr = state.optimizer.param_groups[0]["lr"]
        precision.scaler.step(state.optimizer)
        precision.scaler.update()
        state.scheduler.step()
        return norms, lr

    def _codebook_scalars(self, out) -> dict:
        """The RVQ input's frame statistics and each active stage's code statistics."""
        frame = frame_scale_stats(out.rvq_input, out.valid, self.state.model.decoder.rvq.input_space_codebook(0))
        scalars = {tags.train(f"pre_rvq_{key}"): frame[key]
                   for key in ("frame_scale", "effective_rank", "first_frames_energy_share")}
        for i, stats in enumerate(out.rvq.stats):
            for key in ("perplexity", "usage", "top_code_share", "redrawn", "rotation_angle", "map_shift"):
                if key in stats:  # the last two only where the arm's trick is on
                    scalars[tags.stage(key, i)] = stats[key]
        return scalars

    def speaker_consistency(self, out, speakers: list[str], scored: int) -> torch.Tensor:
        """Speaker-consistency loss (as YourTTS's): row ``i``'s codes converted to row ``i-1``'s
        voice must be told, by the model's own speaker encoder, to be that speaker.

        Self-reconstruction alone never asks the decoder to change a voice: it can rebuild
        the timbre from the codes and pitch and leave FiLM idle. The encoder judges with its
        weights held (it must not learn to accept what the decoder makes); the gradient reaches
        the decoder and, through FiLM, the embedding it reads. Only the first
        ``train.speaker_consistency_rows`` rows are converted (0: all), each scored against
        every row's reference: the conversion re-runs the decoder, so its cost scales with them."""
        model = self.state.model
        rows = self.train.speaker_consistency_rows or len(speakers)
        order = torch.roll(torch.arange(len(speakers), device=out.speaker.device), 1)[:rows]
        converted = model.reconvert(out, order)[:, scored:]
        encoder = model.speaker_encoder
        held = [p for p in encoder.parameters() if p.requires_grad]
        for p in held:
            p.requires_grad_(False)
        try:
            anchors = encoder(converted)
        finally:
            for p in held:
                p.requires_grad_(True)
        asked = [speakers[i] for i in order.tolist()]
        return losses.speaker_contrastive(anchors.float(), out.speaker.detach().float(), asked,
                                          reference_speakers=speakers)

    def _discriminator_step(self, real: torch.Tensor, fake: torch.Tensor, step: int) -> float:
        state = self.state
        real_logits, _ = state.discriminator(real)
        fake_logits, _ = state.discriminator(fake.detach())
        loss = losses.discriminator_hinge_loss(real_logits, fake_logits)
        if not torch.isfinite(loss):
            raise TrainingError(f"non-finite loss at step {step}: discriminator = {float(loss)}")
        state.disc_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(state.discriminator.parameters(), self.train.grad_clip)
        state.disc_optimizer.step()
        return float(loss.detach())


class Progress:
    """Line-based progress for a log file: steps/s, seconds of audio per second, ETA."""

    def __init__(self, start: int, end: int, audio_seconds_per_step: float, every_seconds: float = 5.0):
        self.start, self.end, self.audio = start, end, audio_seconds_per_step
        self.every, self.t0 = every_seconds, time.monotonic()
        self.last = -math.inf

    def update(self, step: int, scalars: dict[str, float], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        done = step + 1 - self.start
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.end - step - 1) / rate if rate > 0 else float("inf")
        print(
            f"step {step + 1}/{self.end} [{100 * (step + 1 - self.start) / max(1, self.end - self.start):5.1f}%] "
            f"{rate:.2f} steps/s {rate * self.audio:.1f} audio-s/s ETA {eta:.0f}s | "
            f"loss {scalars[tags.LOSS_TOTAL]:.4f} stft {scalars[tags.LOSS_STFT]:.4f} "
            f"l1 {scalars[tags.LOSS_L1]:.4f}{_content(scalars)}{_speaker(scalars)} ppl_q0 {scalars.get(tags.stage('perplexity', 0), float('nan')):.2f} "
            f"pre_rvq_std {scalars[tags.PRE_RVQ_STD]:.3f} frame_scale {scalars[tags.train('pre_rvq_frame_scale')]:.3f} "
            f"active {int(scalars[tags.NUM_ACTIVE])}",
            file=sys.stderr,
            flush=True,
        )

    def finished(self, output: Path) -> None:
        steps, elapsed = self.end - self.start, time.monotonic() - self.t0
        print(f"wrote {output}: {steps} steps in {elapsed:.1f} s ({steps / elapsed:.3f} steps/s, "
              f"{steps * self.audio / elapsed:.2f} s of audio per s{_peak_memory()})", file=sys.stderr, flush=True)


def _peak_memory() -> str:
    """CUDA's peak allocated memory, for sizing a paper-size run on a rented GPU; nothing elsewhere."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return ""
    return f", peak device memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"


def _content(scalars: dict[str, float]) -> str:
    if tags.train("loss_content_ce") not in scalars:
        return " content_ce off"
    return (f" content_ce {scalars[tags.train('loss_content_ce')]:.3f} "
            f"label_acc {scalars[tags.train('content_label_accuracy')]:.3f}")


def _speaker(scalars: dict[str, float]) -> str:
    parts = [(label, scalars.get(tags.train(f"loss_{name}")))
             for label, name in (("speaker", "speaker"), ("consistency", "speaker_consistency"))]
    return "".join(f" {label} {value:.3f}" for label, value in parts if value is not None)


def check_content_supervision(cfg: dict, utterances) -> None:
    """Refuse training whose content encoder would get no gradient (unless opted in), and
    labels the label head cannot represent."""
    from streamvc_rvq.config import content_gradient_problem

    problem = content_gradient_problem(cfg)
    if problem:
        raise TrainingError(problem)
    encoder, allow = cfg["model"]["content_encoder"], TrainSettings.of(cfg["train"]).allow_untrained_content_encoder
    unlabelled = sum(u.labels is None for u in utterances)
    if unlabelled and encoder["stop_gradient"] and not allow:
        raise TrainingError(
            f"the content encoder would never be trained: {unlabelled} of {len(utterances)} training utterances have "
            "no frame labels; pass --labels FRAME_LABELS.npz (`streamvc-rvq labels` makes one for any corpus) or set "
            "train.allow_untrained_content_encoder: true"
        )
    top = max((int(u.labels.max()) for u in utterances if u.labels is not None and u.labels.numel()), default=-1)
    if top >= encoder["num_labels"] and encoder["num_labels"] > 0:
        raise TrainingError(
            f"frame labels go up to {top} but model.content_encoder.num_labels is {encoder['num_labels']}; "
            f"set it to at least {top + 1}"
        )


def _supervision(cfg: dict, utterances, labels) -> str:
    """What trains the content encoder, in words, for the log's first lines."""
    encoder = cfg["model"]["content_encoder"]
    if any(u.labels is None for u in utterances) or encoder["num_labels"] == 0 or TrainSettings.of(cfg["train"]).loss_weights["content_ce"] == 0:
        return "NOT trained by labels" + (" (stop_gradient: random and frozen)" if encoder["stop_gradient"] else "")
    classes = len({int(v) for u in utterances for v in u.labels.unique()})
    source = "the corpus's label files" if labels == "manifest" else str(labels)
    return f"trained on frame labels from {source} ({classes} classes in the training split)"


def _log_audio_example(writer, trainer: Trainer, utterance, step: int) -> None:
    """Reconstruction of one fixed validation utterance, so each checkpoint can be heard.

    Runs in eval mode without gradients: it changes no state and draws no random numbers,
    so logging it at a chained target does not break exact resume."""
    model, sample_rate = trainer.state.model, trainer.model_cfg["sample_rate"]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        audio = utterance.audio[: 4 * sample_rate].unsqueeze(0).to(trainer.device)
        out = model(audio, audio, StageSchedule.of(trainer.model_cfg).in_checkpoint(step))
        writer.add_audio("audio/reconstruction", out.audio[0].clamp(-1, 1).cpu(), step, sample_rate=sample_rate)
        writer.add_audio("audio/input", audio[0].cpu(), step, sample_rate=sample_rate)
    model.train(was_training)


def train_to_step(
    cfg: dict,
    *,
    manifest: Path,
    step: int,
    output: Path,
    resume: Path | None = None,
    tensorboard_dir: Path | None = None,
    device: str | None = None,
    labels: str | Path | None = "manifest",
    snapshots: SnapshotPolicy = SnapshotPolicy(),
    scalars_output: Path | None = None,
) -> Path:
    """Train experiment ``cfg`` from ``resume`` (or scratch) to global ``step``; write ``output``
    (and the logged points to ``scalars_output``: the workflow's declared record of the curves).

    ``labels``: where the frame labels come from (see :func:`load_utterances`). A snapshot
    this job left when it was killed is resumed from (see :mod:`.snapshots`)."""
    output, train = Path(output), TrainSettings.of(cfg["train"])
    device_ = select_device(device or train.device)
    use_deterministic_algorithms(train.deterministic)
    _remove_leftovers(output)
    state = build_state(cfg, device_)
    if resume is not None:
        _restore_checkpoint(state, Path(resume), cfg["model"], device_)
    start = state.step
    if step <= start:
        raise TrainingError(f"target step {step} is not after the checkpoint's step {start}")
    train_utts = _training_utterances(cfg, manifest, labels)
    made_from = origin(resume, step, cfg, manifest, labels, device_)
    logged = _resume_from_snapshot(output, made_from, start, state, device_)
    trainer = Trainer(cfg, state, device_)
    _announce(trainer, step, train_utts, labels)
    writer = SegmentWriter(tensorboard_dir, start, step, resume_from=state.step) if tensorboard_dir else None
    progress = Progress(state.step, step, trainer.audio_per_step)
    try:
        _train_segment(trainer, train_utts, start, step, writer, logged, progress,
                       lambda: _save_snapshot(output, state, cfg, device_, made_from, logged), snapshots)
        if writer is not None:
            valid_utts = load_utterances(manifest, "valid", labels=None)
            if valid_utts:
                _log_audio_example(writer, trainer, valid_utts[0], step)
            writer.close()  # a failed event write stops the job before its checkpoint exists
        if scalars_output is not None:
            write_segment_scalars(scalars_output, logged, cfg.get("experiment"))
        save_checkpoint(output, checkpoint_payload(state, cfg, device_))
    except BaseException:
        if writer is not None:
            writer.abandon()
        raise
    # The snapshot goes before the curves are published: a job killed while publishing then
    # retrains its segment whole and republishes it, rather than resuming and losing the
    # points it had already moved.
    remove_snapshot(output)
    if writer is not None:
        writer.publish()  # only now do this segment's curves replace the previous run's
    progress.finished(output)
    return output


def _remove_leftovers(output: Path) -> None:
    """This job owns its target: any host's half-written files of it or its snapshot go."""
    for path in (output, snapshot_path(output)):
        for stale in remove_temps_of(path):
            print(f"removed {stale} (left by a killed write)", file=sys.stderr, flush=True)


def _restore_checkpoint(state: TrainState, resume: Path, model_cfg: dict, device: torch.device) -> None:
    try:
        checkpoint = load_checkpoint(resume, map_location=device)
        check_model_config(checkpoint, model_cfg, resume)
    except CheckpointError as err:
        raise TrainingError(str(err)) from None
    restore_state(state, checkpoint)


def _training_utterances(cfg: dict, manifest: Path, labels: str | Path | None) -> list:
    try:
        utterances = load_utterances(manifest, "train", labels=labels)
    except LabelError as err:
        raise TrainingError(str(err)) from None
    check_content_supervision(cfg, utterances)
    return utterances


def _resume_from_snapshot(output: Path, made_from: dict, start: int, state: TrainState,
                          device: torch.device) -> dict[str, list[tuple[int, float]]]:
    """Restore this job's snapshot, if it left a usable one; the points it had logged."""
    snapshot = find_snapshot(output, made_from, start, device)
    if snapshot is None:
        return {}
    restore_state(state, snapshot)
    print(f"resuming from snapshot {snapshot_path(output)} at step {state.step}", file=sys.stderr, flush=True)
    return {tag: [(int(s), float(v)) for s, v in points] for tag, points in snapshot.get("logged_scalars", {}).items()}


def _announce(trainer: Trainer, end: int, train_utts, labels) -> None:
    state, cfg = trainer.state, trainer.cfg
    precision = "float32" if state.precision.dtype is None else f"mixed precision, {state.precision.dtype}"
    print(
        f"training {cfg.get('experiment', '?')} from step {state.step} to {end} on {trainer.device} ({precision}) "
        f"({sum(p.numel() for p in state.model.parameters()) / 1e6:.2f} M parameters, "
        f"{torch.get_num_threads()} threads)",
        file=sys.stderr, flush=True,
    )
    print(f"content encoder: {_supervision(cfg, train_utts, labels)}", file=sys.stderr, flush=True)


def _train_segment(trainer: Trainer, utterances, start: int, end: int, writer: SegmentWriter | None,
                   logged: dict[str, list[tuple[int, float]]], progress: "Progress", save_snapshot,
                   snapshots: SnapshotPolicy) -> None:
    """Steps ``state.step .. end - 1``, logging every ``train.log_every`` steps, with snapshots
    as ``snapshots`` says and at the next step after SIGTERM/SIGINT (then it stops)."""
    state, log_every = trainer.state, trainer.train.log_every
    state.model.train()
    last_snapshot = time.monotonic()
    with StopRequest() as stop:
        for s in range(state.step, end):
            trainer.init_codebooks(utterances, s)
            scalars = trainer.train_step(trainer.batch(utterances, s), s)
            state.step = s + 1
            if s % log_every == 0:
                for tag, value in scalars.items():
                    # float32, as TensorBoard stores it: the file and the event log agree
                    logged.setdefault(tag, []).append((s, float(np.float32(value))))
                    if writer is not None:
                        writer.add_scalar(tag, value, s)
            progress.update(s, scalars, force=(s == end - 1))
            if state.step < end and (stop.signal or snapshots.due(state.step, start, last_snapshot, time.monotonic())):
                if writer is not None:
                    writer.new_part(state.step)  # the points up to here stay with this snapshot
                save_snapshot()
                last_snapshot = time.monotonic()
                if stop.signal:
                    raise TrainingError(
                        f"stopped by signal {stop.signal} after step {state.step}: state saved to a snapshot; "
                        "run the same target again to resume"
                    )


def _save_snapshot(output: Path, state: TrainState, cfg: dict, device: torch.device, made_from: dict,
                   logged: dict) -> None:
    t0 = time.monotonic()
    payload = dict(checkpoint_payload(state, cfg, device), snapshot_origin=made_from, logged_scalars=logged)
    save_checkpoint(snapshot_path(output), payload)
    print(f"snapshot at step {state.step} -> {snapshot_path(output)} ({time.monotonic() - t0:.1f} s)",
          file=sys.stderr, flush=True)
