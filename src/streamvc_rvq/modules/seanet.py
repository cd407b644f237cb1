"""SoundStream building blocks (Zeghidour et al. 2021), causal, each with a streaming form.

Shapes are ``B x C x T``. All convolutions are :mod:`streamvc_rvq.modules.conv` causal ones,
so a block is causal because its layers are.

* :class:`ResidualUnit` ``(channels, dilation)``: ``x + conv1x1(ELU(conv7_dilated(ELU(x))))``
  (pre-activation, as EnCodec's SEANet block); SoundStream uses dilations 1, 3, 9.
* :class:`EncoderBlock` ``(in, out, stride)``: three residual units at ``in`` channels,
  ELU, then a strided causal conv (kernel ``2 * stride``) to ``out`` channels.
* :class:`DecoderBlock` ``(in, out, stride, upsample)``: ELU, upsampling by ``stride`` to ``out``
  channels, three residual units. ``upsample: transposed`` (SoundStream's): a causal transposed
  conv, kernel ``2 * stride``; ``repeat`` (:class:`RepeatUpsample`): each frame repeated ``stride``
  times, then a causal conv of kernel ``2 * stride``. A transposed conv is periodic in time with
  the stride (a constant input gives a pattern repeating every input frame: the "checkerboard"
  of Odena et al. 2016); after the first block, whose input is the 50 Hz frames, that period is
  20 ms: the frame-rate tone of issue 38. Repetition then a convolution is time-invariant.
* :class:`SEANetEncoder`: conv7 to ``C``, one encoder block per stride with the channels
  doubling (``C -> 2C -> 4C ...``), ELU, conv3 to ``D``; ``T`` samples give ``T // prod(strides)``
  frames, frame ``n`` depending on samples ``<= (n + 1) * prod(strides) - 1``.
* :class:`FiLM` ``(cond_dim, channels)``: ``x * gamma + beta`` with ``gamma = 1 + W_g c``,
  ``beta = W_b c`` from a conditioning vector ``c`` (the speaker embedding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamvc_rvq.modules.conv import CausalConv1d, CausalConvTranspose1d, StreamingModule
from streamvc_rvq.modules.native import causal_conv_transpose1d, elu

__all__ = ["ResidualUnit", "EncoderBlock", "DecoderBlock", "RepeatUpsample", "SEANetEncoder", "FiLM", "DILATIONS",
           "UPSAMPLERS"]

DILATIONS = (1, 3, 9)
KERNEL = 7
UPSAMPLERS = ("transposed", "repeat")


class ResidualUnit(StreamingModule):
    def __init__(self, channels: int, dilation: int, kernel_size: int = KERNEL):
        super().__init__()
        self.conv = CausalConv1d(channels, channels, kernel_size, dilation=dilation)
        self.pointwise = CausalConv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(elu(self.conv(elu(x))), residual=x)  # x + conv1x1(...), summed in the kernel

    def stream_step(self, x: Tensor) -> Tensor:
        h = self.conv.stream_step(elu(x))
        return x + self.pointwise.stream_step(elu(h))


class EncoderBlock(StreamingModule):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.units = nn.ModuleList(ResidualUnit(in_channels, d) for d in DILATIONS)
        self.down = CausalConv1d(in_channels, out_channels, 2 * stride, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        for unit in self.units:
            x = unit(x)
        return self.down(elu(x))

    def stream_step(self, x: Tensor) -> Tensor:
        for unit in self.units:
            x = unit.stream_step(x)
        return self.down.stream_step(elu(x))


class RepeatUpsample(StreamingModule):
    """Each input step repeated ``stride`` times, then a causal conv (kernel ``2 * stride``):
    ``B x C_in x T -> B x C_out x (T * stride)``, output sample ``j`` depending on input steps
    ``<= j // stride``. A constant input gives a constant output (no pattern at the stride).

    ``forward`` computes the same thing at the input rate: repetition then a conv of kernel
    ``K`` is the transposed conv (stride ``s``) whose kernel is the conv's, time-reversed and
    summed over every ``s`` consecutive taps (length ``K + s - 1``): ``stride`` times fewer
    multiply-adds than convolving the repeated signal, and no repeated copy in memory
    (:meth:`forward_repeated` is the literal form, kept as the reference)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.conv = CausalConv1d(in_channels, out_channels, 2 * stride)

    def transposed_weight(self) -> Tensor:
        """``C_in x C_out x (K + s - 1)``: tap ``d`` sums the conv's delays ``d - s + 1 .. d``."""
        delays = self.conv.weight.flip(-1).transpose(0, 1)  # C_in x C_out x K, index = delay
        s = self.stride
        return sum(F.pad(delays, (r, s - 1 - r)) for r in range(s))

    def forward(self, x: Tensor) -> Tensor:
        return causal_conv_transpose1d(x, self.transposed_weight(), self.conv.bias, self.stride)

    def forward_repeated(self, x: Tensor) -> Tensor:
        return self.conv(x.repeat_interleave(self.stride, dim=-1))

    def stream_step(self, x: Tensor) -> Tensor:
        return self.conv.stream_step(x.repeat_interleave(self.stride, dim=-1))


class DecoderBlock(StreamingModule):
    def __init__(self, in_channels: int, out_channels: int, stride: int, upsample: str = "transposed"):
        super().__init__()
        if upsample not in UPSAMPLERS:
            raise ValueError(f"upsample must be one of {UPSAMPLERS}, got {upsample!r}")
        self.up = (CausalConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride) if upsample == "transposed"
                   else RepeatUpsample(in_channels, out_channels, stride))
        self.units = nn.ModuleList(ResidualUnit(out_channels, d) for d in DILATIONS)

    def forward(self, x: Tensor) -> Tensor:
        x = self.up(elu(x))
        for unit in self.units:
            x = unit(x)
        return x

    def stream_step(self, x: Tensor) -> Tensor:
        x = self.up.stream_step(elu(x))
        for unit in self.units:
            x = unit.stream_step(x)
        return x


class SEANetEncoder(StreamingModule):
    """Waveform ``B x 1 x T`` -> features ``B x dim x (T // prod(strides))``, causal."""

    def __init__(self, channels: int, dim: int, strides: list[int] | tuple[int, ...]):
        super().__init__()
        self.strides = tuple(strides)
        self.input_conv = CausalConv1d(1, channels, KERNEL)
        widths = [channels * 2**i for i in range(len(strides) + 1)]
        self.blocks = nn.ModuleList(
            EncoderBlock(widths[i], widths[i + 1], s) for i, s in enumerate(self.strides)
        )
        self.output_conv = CausalConv1d(widths[-1], dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.input_conv(x)
        for block in self.blocks:
            x = block(x)
        return self.output_conv(elu(x))

    def stream_step(self, x: Tensor) -> Tensor:
        x = self.input_conv.stream_step(x)
        for block in self.blocks:
            x = block.stream_step(x)
        return self.output_conv.stream_step(elu(x))


class FiLM(nn.Module):
    """Feature-wise linear modulation of ``x: B x C x T`` by ``cond: B x cond_dim``."""

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.normal_(self.proj.weight, std=0.02)  # start near the identity: gamma ~ 1, beta ~ 0
        nn.init.zeros_(self.proj.bias)

    def coefficients(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        """``(gamma, beta)``, each ``B x C x 1``; a stream computes them once per reference."""
        gamma, beta = self.proj(cond).unsqueeze(-1).chunk(2, dim=1)
        return 1.0 + gamma, beta

    @staticmethod
    def modulate(x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        return torch.addcmul(beta, x, gamma)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        gamma, beta = self.coefficients(cond)
        return self.modulate(x, gamma, beta)
