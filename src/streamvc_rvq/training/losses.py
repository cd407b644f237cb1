"""Training losses (SPEC section 3, "Losses").

* :class:`MultiScaleSpectralLoss` -- SoundStream's multi-scale mel reconstruction loss
  (``loss_stft``).
* :func:`waveform_l1` -- waveform L1 (``loss_l1``).
* :func:`content_cross_entropy` -- content-head CE on frame labels (:func:`label_accuracy` its hit rate).
* Hinge GAN losses and discriminator feature matching
  (:func:`discriminator_hinge_loss`, :func:`generator_adversarial_loss`,
  :func:`feature_matching_loss`), used with
  :class:`streamvc_rvq.modules.discriminator.MultiScaleSTFTDiscriminator`.

All functions work in float32 and avoid float64 / unsupported ops so they run on CPU,
CUDA and MPS alike.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MultiScaleSpectralLoss",
    "waveform_l1",
    "content_cross_entropy",
    "discriminator_hinge_loss",
    "generator_adversarial_loss",
    "feature_matching_loss",
]

DEFAULT_WINDOWS: tuple[int, ...] = tuple(2**k for k in range(6, 12))  # 64 ... 2048


def _as_batch_time(x: Tensor) -> Tensor:
    """Accept ``[B, T]`` or ``[B, 1, T]`` waveforms; return ``[B, T]``."""
    if x.dim() == 3 and x.shape[1] == 1:
        x = x.squeeze(1)
    if x.dim() != 2:
        raise ValueError(f"expected a waveform of shape [B, T] (or [B, 1, T]), got {tuple(x.shape)}")
    return x


class MultiScaleSpectralLoss(nn.Module):
    """SoundStream multi-scale spectral reconstruction loss.

    For every window size ``w`` (default 2^6 ... 2^11), with hop ``w // 4``, a Hann-windowed
    STFT magnitude (``torch.stft(..., normalized=True)``, i.e. divided by ``sqrt(w)`` so
    magnitudes are comparable across scales) is projected onto a mel filterbank
    (``torchaudio.functional.melscale_fbanks``, Slaney-normalised, 0 Hz ... Nyquist) giving
    ``S_w``. The loss is

        L = 1/|W| * sum_w [ mean_{b,t,m} |S_w(x) - S_w(x_hat)|
                            + alpha_w * mean_{b,t} RMS_m( log(S_w(x)+eps) - log(S_w(x_hat)+eps) ) ]

    with ``alpha_w = sqrt(w / 2)`` as in SoundStream. This is SoundStream's
    ``sum_t ||.||_1 + alpha_w sum_t ||.||_2`` (L2 norm over mel bins per frame) with every sum
    replaced by a mean (and the L2 norm by an RMS, i.e. divided by ``sqrt(n_mels_w)``), so the
    value does not depend on batch size, clip length or the number of mel bins. The per-frame
    L2 is a true norm (not squared); its gradient at zero difference is defined as 0, so the
    loss and its gradient are exactly 0 for identical inputs.

    Mel bins per scale: ``min(n_mels, w // 4)`` (64 for w >= 256, 32 for w = 128, 16 for
    w = 64), and filters that would be empty at a small window (fewer linear bins than mel
    bands at low frequencies) are dropped, so every kept filter sees at least one FFT bin.

    Args:
        sample_rate: audio sample rate (Hz).
        windows: STFT window sizes (powers of two recommended).
        n_mels: maximum number of mel bands per scale.
        eps: floor inside the log, ``log(S + eps)``.
        l1_weight: weight of the linear-mel L1 term (1 in SoundStream).
        log_weight: global multiplier on ``alpha_w`` for the log-mel L2 term (1 in SoundStream).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        windows: Sequence[int] = DEFAULT_WINDOWS,
        n_mels: int = 64,
        eps: float = 1e-5,
        l1_weight: float = 1.0,
        log_weight: float = 1.0,
    ) -> None:
        super().__init__()
        import torchaudio.functional as AF

        windows = [int(w) for w in windows]
        if not windows:
            raise ValueError("windows must not be empty")
        if any(w < 8 for w in windows):
            raise ValueError(f"window sizes must be >= 8, got {windows}")
        self.sample_rate = int(sample_rate)
        self.windows = windows
        self.eps = float(eps)
        self.l1_weight = float(l1_weight)
        self.log_weight = float(log_weight)
        self.alphas = [math.sqrt(w / 2.0) for w in windows]
        self.n_mels_per_window: list[int] = []
        for i, w in enumerate(windows):
            n_freqs = w // 2 + 1
            m = max(1, min(int(n_mels), w // 4))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # empty-filter warning: handled below
                fb = AF.melscale_fbanks(
                    n_freqs=n_freqs,
                    f_min=0.0,
                    f_max=self.sample_rate / 2.0,
                    n_mels=m,
                    sample_rate=self.sample_rate,
                    norm="slaney",
                    mel_scale="htk",
                )  # [n_freqs, m]
            fb = fb[:, fb.sum(dim=0) > 0].to(torch.float32).contiguous()
            self.n_mels_per_window.append(fb.shape[1])
            self.register_buffer(f"mel_fb_{i}", fb, persistent=False)
            self.register_buffer(
                f"window_{i}", torch.hann_window(w, dtype=torch.float32), persistent=False
            )

    def mel_spectrogram(self, x: Tensor, index: int) -> Tensor:
        """Mel magnitude spectrogram ``[B, frames, n_mels]`` for window ``self.windows[index]``."""
        w = self.windows[index]
        window: Tensor = getattr(self, f"window_{index}")
        fb: Tensor = getattr(self, f"mel_fb_{index}")
        # reflect padding (center=True) needs T > w // 2; fall back to constant padding
        pad_mode = "reflect" if x.shape[-1] > w // 2 else "constant"
        spec = torch.stft(
            x,
            n_fft=w,
            hop_length=w // 4,
            win_length=w,
            window=window,
            center=True,
            pad_mode=pad_mode,
            normalized=True,
            onesided=True,
            return_complex=True,
        ).abs()  # [B, n_freqs, frames]
        return torch.matmul(spec.transpose(1, 2), fb)  # [B, frames, n_mels]

    def forward(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """Loss between reference ``x`` and reconstruction ``x_hat`` (both ``[B, T]``)."""
        x = _as_batch_time(x)
        x_hat = _as_batch_time(x_hat)
        if x.shape != x_hat.shape:
            raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
        x = x.to(torch.float32)
        x_hat = x_hat.to(torch.float32)
        # The reference usually needs no gradient: transform it separately (under no_grad
        # when possible) so the STFT backward only runs over the reconstruction.
        ref_grad = x.requires_grad and torch.is_grad_enabled()
        total = x_hat.new_zeros(())
        for i, alpha in enumerate(self.alphas):
            with torch.set_grad_enabled(ref_grad):
                s_ref = self.mel_spectrogram(x, i)
            s_hat = self.mel_spectrogram(x_hat, i)
            l1 = (s_ref - s_hat).abs().mean()
            log_diff = torch.log(s_ref + self.eps) - torch.log(s_hat + self.eps)
            # per-frame L2 norm over mel bins, as RMS (norm / sqrt(n_mels)); grad 0 at 0
            l2 = torch.linalg.vector_norm(log_diff, ord=2, dim=-1).mean() / math.sqrt(
                log_diff.shape[-1]
            )
            total = total + self.l1_weight * l1 + self.log_weight * alpha * l2
        return total / len(self.alphas)


def waveform_l1(x: Tensor, x_hat: Tensor) -> Tensor:
    """Mean absolute difference between two waveforms of the same shape."""
    if x.shape != x_hat.shape:
        raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    return (x - x_hat).abs().mean()


def content_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Frame-level cross-entropy of the content head.

    Args:
        logits: ``[B, C, F]`` unnormalised class scores per frame.
        labels: ``[B, F']`` integer class ids per frame (``ignore_index`` frames are skipped).
    If ``F != F'`` both are truncated to the shorter length (the encoder's frame count and the
    label track can differ by a frame or two at the clip end).
    """
    if logits.dim() != 3 or labels.dim() != 2:
        raise ValueError(
            f"expected logits [B, C, F] and labels [B, F], got {tuple(logits.shape)}, {tuple(labels.shape)}"
        )
    n = min(logits.shape[-1], labels.shape[-1])
    return F.cross_entropy(
        logits[..., :n], labels[..., :n].long(), ignore_index=ignore_index
    )


SPEAKER_TEMPERATURE = 0.1  # cosine logits / 0.1: SupCon's and SimCLR's usual temperature


def speaker_contrastive(anchors: Tensor, references: Tensor, speakers: Sequence[str],
                        temperature: float = SPEAKER_TEMPERATURE,
                        reference_speakers: Sequence[str] | None = None) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) between two views per row: row
    ``i``'s anchor embedding (its source crop) against every row's reference embedding,
    the references of the same speaker the positives. Pushes same-speaker embeddings
    together and different speakers apart, with no speaker count in the model (any corpus).
    Offset by ``log |positives|`` so that 0 is the best a row can reach.

    ``anchors: K x D``, ``references: B x D``; ``speakers``: the anchors' ``K`` speaker names,
    and the references' too unless ``reference_speakers`` names their ``B`` (a conversion's
    anchor is the voice it was asked for, not its source's; a sub-batch of ``K < B`` anchors
    scores each against every reference). Rows whose speaker is every reference's have
    nothing to be told apart from and are left out (0 when every row is the same speaker)."""
    reference_speakers = speakers if reference_speakers is None else reference_speakers
    if (anchors.ndim != 2 or references.ndim != 2 or anchors.shape[1] != references.shape[1]
            or anchors.shape[0] != len(speakers) or references.shape[0] != len(reference_speakers)):
        raise ValueError(f"need K x D anchors with K speakers and B x D references with B speakers, got "
                         f"{tuple(anchors.shape)}, {tuple(references.shape)}, {len(speakers)}, {len(reference_speakers)}")
    logits = F.normalize(anchors, dim=-1) @ F.normalize(references, dim=-1).T / temperature
    ids = {name: i for i, name in enumerate(dict.fromkeys([*speakers, *reference_speakers]))}
    labels = torch.tensor([ids[name] for name in speakers], device=anchors.device)
    reference_labels = torch.tensor([ids[name] for name in reference_speakers], device=anchors.device)
    positive = labels.unsqueeze(1) == reference_labels.unsqueeze(0)
    count = positive.sum(1)
    scored = ~positive.all(dim=1) & (count > 0)
    if not bool(scored.any()):
        return logits.sum() * 0.0
    count = count.clamp_min(1)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    per_row = -log_prob.masked_fill(~positive, 0.0).sum(1) / count - torch.log(count.float())
    return per_row[scored].mean()


def label_accuracy(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> float:
    """Share of scored frames (label != ``ignore_index``) whose argmax class is the label;
    NaN when no frame is scored. Shapes as in :func:`content_cross_entropy`."""
    n = min(logits.shape[-1], labels.shape[-1])
    labels = labels[..., :n]
    scored = labels != ignore_index
    hits = (logits[..., :n].argmax(dim=1) == labels) & scored
    return float(hits.sum()) / int(scored.sum()) if bool(scored.any()) else float("nan")


def discriminator_hinge_loss(real_logits: Sequence[Tensor], fake_logits: Sequence[Tensor]) -> Tensor:
    """Hinge loss of a (multi-scale) discriminator, averaged over discriminators:

        1/K * sum_k [ mean(relu(1 - D_k(x))) + mean(relu(1 + D_k(x_hat))) ]

    Pass fake logits computed from a detached generator output.
    """
    if len(real_logits) != len(fake_logits) or len(real_logits) == 0:
        raise ValueError("need the same non-zero number of real and fake logits")
    total = real_logits[0].new_zeros(())
    for r, f in zip(real_logits, fake_logits):
        total = total + F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean()
    return total / len(real_logits)


def generator_adversarial_loss(fake_logits: Sequence[Tensor]) -> Tensor:
    """Hinge generator loss (SoundStream): ``1/K * sum_k mean(relu(1 - D_k(x_hat)))``."""
    if len(fake_logits) == 0:
        raise ValueError("need at least one discriminator output")
    total = fake_logits[0].new_zeros(())
    for f in fake_logits:
        total = total + F.relu(1.0 - f).mean()
    return total / len(fake_logits)


def feature_matching_loss(
    real_feats: Sequence[Sequence[Tensor]],
    fake_feats: Sequence[Sequence[Tensor]],
    eps: float = 1e-8,
) -> Tensor:
    """Relative feature-matching loss (EnCodec / SoundStream):

        mean over (discriminator k, layer l) of  mean|F_kl(x_hat) - sg(F_kl(x))| / mean|sg(F_kl(x))|

    Real features are detached, so only the generator (through the fake features) gets
    gradient.
    """
    if len(real_feats) != len(fake_feats) or len(real_feats) == 0:
        raise ValueError("need the same non-zero number of real and fake feature lists")
    total = None
    count = 0
    for rs, fs in zip(real_feats, fake_feats):
        if len(rs) != len(fs):
            raise ValueError("real and fake feature lists differ in length")
        for r, f in zip(rs, fs):
            r = r.detach()
            term = (f - r).abs().mean() / (r.abs().mean() + eps)
            total = term if total is None else total + term
            count += 1
    if total is None:
        raise ValueError("no feature maps given")
    return total / count
