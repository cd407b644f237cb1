"""Multi-scale STFT discriminator (EnCodec style), for the adversarial and feature-matching
losses of SPEC section 3 (weight 0 in Phase 1).

Each scale takes the complex STFT of the waveform (Hann window, hop ``n_fft // 4``,
``normalized=True``, ``center=False``), stacks real and imaginary parts as two input channels
laid out as ``[B, 2, frames, freq]`` and runs a stack of weight-normalised 2-D convolutions
with LeakyReLU(0.2):

    conv (3x9)                        2 -> c0
    3 x conv (3x9), stride (1, 2),    dilation (1|2|4, 1) in time, c_{i} -> c_{i+1}
    conv (3x3)                        c3 -> c3
    conv_post (3x3)                   c3 -> 1          (logits, no activation)

with ``c0 = filters`` and ``c_{i+1} = min(filters * filters_scale**i, max_filters)`` -- the
width grows only after the first strided layer, where the grid is already halved, which keeps
the CPU cost moderate. Defaults (filters=32, filters_scale=2, max_filters=64, n_ffts
1024/2048/512) give ~0.70 M parameters in total.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["STFTDiscriminator", "MultiScaleSTFTDiscriminator"]


def _padding(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return ((kernel[0] - 1) * dilation[0] // 2, (kernel[1] - 1) * dilation[1] // 2)


class STFTDiscriminator(nn.Module):
    """One scale of the MS-STFT discriminator.

    ``forward(x [B, T]) -> (logits [B, 1, frames, freq'], [feature maps])``; the feature maps
    are the activations after every LeakyReLU (5 of them).
    """

    def __init__(
        self,
        n_fft: int = 1024,
        hop_length: int | None = None,
        filters: int = 32,
        filters_scale: int = 2,
        max_filters: int = 64,
        kernel_size: tuple[int, int] = (3, 9),
        dilations: Sequence[int] = (1, 2, 4),
        stride: tuple[int, int] = (1, 2),
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length) if hop_length is not None else self.n_fft // 4
        self.negative_slope = float(negative_slope)
        self.register_buffer(
            "window", torch.hann_window(self.n_fft, dtype=torch.float32), persistent=False
        )
        kernel_size = tuple(kernel_size)
        convs = [nn.Conv2d(2, filters, kernel_size, padding=_padding(kernel_size))]
        in_ch = filters
        for i, d in enumerate(dilations):
            out_ch = int(min(filters * filters_scale**i, max_filters))
            convs.append(
                nn.Conv2d(
                    in_ch,
                    out_ch,
                    kernel_size,
                    stride=stride,
                    dilation=(d, 1),
                    padding=_padding(kernel_size, (d, 1)),
                )
            )
            in_ch = out_ch
        k2 = (kernel_size[0], kernel_size[0])
        convs.append(nn.Conv2d(in_ch, in_ch, k2, padding=_padding(k2)))
        self.convs = nn.ModuleList(weight_norm(c) for c in convs)
        self.conv_post = weight_norm(nn.Conv2d(in_ch, 1, k2, padding=_padding(k2)))

    def spectrogram(self, x: Tensor) -> Tensor:
        """``[B, T]`` -> ``[B, 2, frames, n_fft // 2 + 1]`` (real, imag)."""
        if x.shape[-1] < self.n_fft:  # center=False needs at least one full window
            x = F.pad(x, (0, self.n_fft - x.shape[-1]))
        z = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.n_fft,
            window=self.window,
            center=False,
            normalized=True,
            onesided=True,
            return_complex=True,
        )  # [B, freq, frames]
        z = torch.view_as_real(z)  # [B, freq, frames, 2]
        return z.permute(0, 3, 2, 1)  # [B, 2, frames, freq]

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = self.spectrogram(x)
        feats: list[Tensor] = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), self.negative_slope)
            feats.append(h)
        return self.conv_post(h), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    """EnCodec-style multi-scale STFT discriminator.

    ``forward(x [B, T] or [B, 1, T]) -> (logits, features)`` where ``logits[k]`` is the
    ``[B, 1, frames_k, freq_k]`` output of scale ``k`` and ``features[k]`` its list of feature
    maps (for :func:`streamvc_rvq.training.losses.feature_matching_loss`). One
    :class:`STFTDiscriminator` per ``n_ffts`` entry; every other keyword (``filters``,
    ``max_filters``, ...) goes to each of them, as in EnCodec.
    """

    def __init__(
        self,
        *,
        n_ffts: Sequence[int] = (1024, 2048, 512),
        hop_lengths: Sequence[int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        n_ffts = list(n_ffts)
        hops = list(hop_lengths) if hop_lengths is not None else [n // 4 for n in n_ffts]
        if len(hops) != len(n_ffts):
            raise ValueError("hop_lengths must match n_ffts")
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(n_fft=n, hop_length=h, **kwargs) for n, h in zip(n_ffts, hops)
        )

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        if x.dim() == 3 and x.shape[1] == 1:
            x = x.squeeze(1)
        if x.dim() != 2:
            raise ValueError(f"expected [B, T] (or [B, 1, T]), got {tuple(x.shape)}")
        x = x.to(torch.float32)
        logits: list[Tensor] = []
        feats: list[list[Tensor]] = []
        for disc in self.discriminators:
            lg, fm = disc(x)
            logits.append(lg)
            feats.append(fm)
        return logits, feats
