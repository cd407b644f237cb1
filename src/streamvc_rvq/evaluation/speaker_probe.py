"""How much of the speaker the decoder's content input carries: a linear speaker probe per frame.

StreamVC converts by assuming its content path is speaker-free (a stop-gradient content encoder
trained on phoneme labels, a per-utterance normalisation, the RVQ): the voice must come from the
speaker vector. If the codes carried the source's voice, the decoder could copy it whatever the
speaker vector says, and a better codebook (more codes in use) could carry more of it. The probe:
a linear classifier of the speaker from one frame's RVQ output, fitted on training utterances and
scored on other utterances of the same speakers; next to it the same probe on the frame's log-mel
(the ceiling: the voice is in the signal) and chance (the commonest speaker's share of the scored
frames).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio

N_MELS = 40


def linear_probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                          num_classes: int, l2: float = 1e-3, iterations: int = 200) -> float:
    """Accuracy on ``test_x: N x D`` of a softmax-linear classifier fitted to ``train_x`` (features
    standardised by the training statistics; L-BFGS, ``l2`` weight penalty). Deterministic."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-5
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    weight = torch.zeros(train_x.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = F.cross_entropy(train_x @ weight + bias, train_y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    with torch.no_grad():
        return float(((test_x @ weight + bias).argmax(1) == test_y).float().mean())


def frame_log_mel(audio: torch.Tensor, sample_rate: int, hop: int, frames: int) -> torch.Tensor:
    """``frames x N_MELS`` log-mel of 1-D ``audio``, frame ``n`` over the two hops ending where the
    model's frame ``n`` ends."""
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=2 * hop, hop_length=hop, center=False, n_mels=N_MELS)
    padded = F.pad(audio[: frames * hop].float().cpu(), (hop, 0))
    return (mel(padded) + 1e-6).log().T[:frames]


@torch.no_grad()  # not inference_mode: the probe fits on these tensors with autograd
def _frames(model, utterances, num_active: int, speaker_index: dict[str, int], device) -> tuple[dict, torch.Tensor]:
    """The valid frames' RVQ outputs and log-mels of ``utterances``, and their speakers' indices."""
    hop = model.hop_length
    features: dict[str, list[torch.Tensor]] = {"decoder_input": [], "log_mel": []}
    speakers = []
    for utt in utterances:
        frames = utt.audio.numel() // hop
        if frames <= model.warmup_frames:
            continue
        x = utt.audio[: frames * hop].unsqueeze(0).to(device)
        encoded = model.encode(x)  # the codes without the synthesis the probe never reads
        rvq, _ = model.decoder.quantize(encoded.content, num_active, encoded.stats, encoded.valid)
        valid = encoded.valid[0].cpu()
        features["decoder_input"].append(rvq.quantized[0].float().cpu().T[valid])
        features["log_mel"].append(frame_log_mel(utt.audio, model.sample_rate, hop, frames)[valid])
        speakers.append(torch.full((int(valid.sum()),), speaker_index[utt.speaker]))
    return {k: torch.cat(v) for k, v in features.items()}, torch.cat(speakers)


def content_speaker_probe(model, train, test, num_active: int, device) -> dict | None:
    """Per-frame speaker accuracy of the decoder's content input and of the log-mel ceiling, on
    ``test`` utterances of speakers ``train`` has; None with fewer than two such speakers."""
    speakers = sorted({u.speaker for u in train} & {u.speaker for u in test})
    if len(speakers) < 2:
        return None
    index = {s: i for i, s in enumerate(speakers)}
    train_features, train_y = _frames(model, [u for u in train if u.speaker in index], num_active, index, device)
    test_features, test_y = _frames(model, [u for u in test if u.speaker in index], num_active, index, device)
    if not len(train_y) or not len(test_y):
        return None
    result = {kind: linear_probe_accuracy(train_features[kind], train_y, test_features[kind], test_y, len(speakers))
              for kind in train_features}
    return {**result, "chance": float(torch.bincount(test_y).max()) / len(test_y), "num_speakers": len(speakers),
            "num_train_frames": len(train_y), "num_test_frames": len(test_y)}
