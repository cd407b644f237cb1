"""Causal 1-D convolutions that run offline on a whole signal or chunk by chunk on a stream.

Shapes are ``B x C x T`` everywhere. Causality is exact and tested:

* :class:`CausalConv1d` pads on the **left only**, by ``P = (k - 1) * dilation - (stride - 1)``.
  With stride 1 that is the usual ``(k - 1) * dilation``; with stride ``s`` output frame ``n``
  covers input samples ``[n*s + s - 1 - (k-1)*d, (n+1)*s - 1]``, so it depends on input
  samples ``<= (n+1)*s - 1`` -- the last sample of the ``s`` samples it summarises, never a
  later one. ``T`` inputs give ``T // s`` outputs.
* :class:`CausalConvTranspose1d` (kernel ``k >= s``) computes the full transposed convolution
  and **trims the right side** to ``T * s`` samples, so output sample ``j`` depends on input
  frames ``<= j // s`` only. (Trimming the left side instead looks into the future -- the
  defect SPEC section 3 item 2 forbids.)

Streaming. Every layer here is a :class:`StreamingModule`: ``stream_step(x_chunk)`` processes
the next chunk of the stream and keeps what the next chunk needs in an internal cache (the
last ``P`` inputs of a convolution, the last ``ceil(k/s) - 1`` input frames of a transposed
one); ``reset_stream()`` (or leaving a :func:`streaming` block) forgets it. Feeding a signal
chunk by chunk gives the offline output, whatever the chunking (chunks of a strided layer
must hold whole multiples of its stride; leftovers wait in the cache).

The streaming path is written for speed on a CPU, not as a copy of the offline path:

* On the first step after a reset each layer **folds** its weight (weight norm included)
  once into a ``[k * C_in, C_out]`` matrix; no weight is recomputed per chunk.
* Activations are kept **time-major** in memory (a ``B x C x T`` view of a ``B x T x C``
  buffer), so each layer is one ``unfold`` copy and one ``addmm`` whose skinny operand is
  laid out the way BLAS is fast with few frames (4x faster than ``conv1d`` at 8 frames).
* A transposed convolution with kernel ``k`` and stride ``s`` is, per input frame ``n``,
  a causal convolution over the input frames ``n - ceil(k/s) + 1 .. n`` with ``s * C_out``
  outputs, reshaped to ``s`` output samples: no overlap-add and no work on padding.

Weight normalisation (``weight_norm=True``, the default, as in SoundStream/EnCodec) uses
``torch.nn.utils.parametrizations.weight_norm``; folding makes it free when streaming.
Note that a streaming layer snapshots its weights at the first step after a reset: reset the
stream after changing the weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

__all__ = [
    "StreamingModule",
    "streaming",
    "CausalConv1d",
    "CausalConvTranspose1d",
]


class StreamingModule(nn.Module):
    """A module that can also process a signal chunk by chunk (``stream_step``).

    Subclasses implement :meth:`stream_step` and, if they hold state of their own,
    :meth:`_reset_own_stream`. :meth:`reset_stream` clears the state of the module and of
    every streaming submodule, so a new stream starts from silence.
    """

    def stream_step(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _reset_own_stream(self) -> None:
        """Forget this module's own streaming state (submodules are handled by reset_stream)."""

    def reset_stream(self) -> None:
        for module in self.modules():
            if isinstance(module, StreamingModule):
                module._reset_own_stream()


@contextmanager
def streaming(module: nn.Module) -> Iterator[nn.Module]:
    """``with streaming(model): ...`` -- streaming state is fresh inside and cleared after."""

    def reset() -> None:
        for m in module.modules():
            if isinstance(m, StreamingModule):
                m._reset_own_stream()

    reset()
    try:
        yield module
    finally:
        reset()


def _stream_matmul(buf: Tensor, kernel: int, stride: int, dilation: int, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Causal convolution of a time-major buffer ``buf: B x L x C`` with a folded weight.

    ``weight: (k * C) x C_out`` with rows ordered (tap, channel); returns ``B x T_out x C_out``
    with ``T_out = (L - span) // stride + 1`` (``span = (k - 1) * dilation + 1``).
    """
    buf = buf.contiguous()
    batch, length, channels = buf.shape
    frames = (length - (kernel - 1) * dilation - 1) // stride + 1
    if kernel == 1 and stride == 1:
        rows = buf.view(batch * frames, channels)
    else:
        # im2col: frame t reads taps buf[t*s + j*d, :], each a contiguous row of C values.
        windows = buf.as_strided(
            (batch, frames, kernel, channels), (length * channels, stride * channels, dilation * channels, 1)
        )
        rows = windows.reshape(batch * frames, kernel * channels).contiguous()  # the one copy
    out = torch.mm(rows, weight) if bias is None else torch.addmm(bias, rows, weight)
    return out.view(batch, frames, weight.shape[1])


class _CausalStreamState:
    """What a streaming convolution keeps between chunks (plain tensors, not module state)."""

    __slots__ = ("weight", "bias", "cache")

    def __init__(self, weight: Tensor, bias: Tensor | None, cache: Tensor | None):
        self.weight, self.bias, self.cache = weight, bias, cache


class CausalConv1d(nn.Conv1d, StreamingModule):
    """``nn.Conv1d`` padded on the left only (see the module docstring for the exact rule).

    ``forward(x: B x C_in x T) -> B x C_out x (T // stride)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = True,
        weight_norm: bool = True,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, bias=bias)
        self.causal_padding = (kernel_size - 1) * dilation - (stride - 1)
        if self.causal_padding < 0:
            raise ValueError(f"kernel_size {kernel_size} x dilation {dilation} must cover the stride {stride}")
        if weight_norm:
            _weight_norm(self)
        self._stream: _CausalStreamState | None = None

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.causal_padding, 0)))

    # -- streaming -------------------------------------------------------------------------
    def _reset_own_stream(self) -> None:
        self._stream = None

    def folded_weight(self) -> tuple[Tensor, Tensor | None]:
        """The effective weight as ``(k * C_in) x C_out`` (rows (tap, channel)) and the bias."""
        w = self.weight.detach()  # C_out x C_in x k; weight norm applied here, once
        folded = w.permute(2, 1, 0).reshape(-1, self.out_channels).contiguous()
        bias = None if self.bias is None else self.bias.detach().clone()
        return folded, bias

    def stream_step(self, x: Tensor) -> Tensor:
        """Next chunk ``x: B x C_in x T`` -> ``B x C_out x T_out`` (time-major storage)."""
        state = self._stream
        xt = x.transpose(1, 2)  # B x T x C (a view)
        if state is None:
            weight, bias = self.folded_weight()
            cache = xt.new_zeros(xt.shape[0], self.causal_padding, xt.shape[2]) if self.causal_padding else None
            state = self._stream = _CausalStreamState(weight, bias, cache)
        buf = xt if state.cache is None else torch.cat((state.cache, xt), dim=1)
        span = (self.kernel_size[0] - 1) * self.dilation[0] + 1
        stride = self.stride[0]
        if buf.shape[1] < span:  # not enough for one output yet: keep everything
            state.cache = buf
            return xt.new_zeros(xt.shape[0], 0, self.out_channels).transpose(1, 2)
        out = _stream_matmul(buf, self.kernel_size[0], stride, self.dilation[0], state.weight, state.bias)
        if state.cache is not None:
            state.cache = buf[:, out.shape[1] * stride :]
        return out.transpose(1, 2)


class CausalConvTranspose1d(nn.ConvTranspose1d, StreamingModule):
    """``nn.ConvTranspose1d`` (kernel ``k >= stride``) trimmed on the right to ``T * stride``.

    ``forward(x: B x C_in x T) -> B x C_out x (T * stride)``; output sample ``j`` depends on
    input frames ``<= j // stride``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        bias: bool = True,
        weight_norm: bool = True,
    ):
        if kernel_size < stride:
            raise ValueError(f"kernel_size {kernel_size} must be >= stride {stride}")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self.taps = math.ceil(kernel_size / stride)  # input frames each output block reads
        if weight_norm:
            _weight_norm(self)
        self._stream: _CausalStreamState | None = None

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        return y[..., : x.shape[-1] * self.stride[0]]  # trim the right: causal

    # -- streaming -------------------------------------------------------------------------
    def _reset_own_stream(self) -> None:
        self._stream = None

    def folded_weight(self) -> tuple[Tensor, Tensor | None]:
        """The transposed convolution as a causal one over input frames.

        Returns ``W: (taps * C_in) x (s * C_out)`` with rows (window position w, channel)
        and columns (phase r, out channel): output sample ``n*s + r`` gets
        ``sum_w x[n - (taps - 1 - w)] . weight[:, :, r + (taps - 1 - w) * s]``.
        """
        s, taps = self.stride[0], self.taps
        w = self.weight.detach()  # C_in x C_out x k
        w = F.pad(w, (0, taps * s - w.shape[-1]))  # C_in x C_out x (taps * s), zero taps
        w = w.view(w.shape[0], w.shape[1], taps, s).flip(2)  # [..., w, r], w = taps - 1 - q
        folded = w.permute(2, 0, 3, 1).reshape(taps * w.shape[0], s * w.shape[1]).contiguous()
        bias = None if self.bias is None else self.bias.detach().repeat(s)
        return folded, bias

    def stream_step(self, x: Tensor) -> Tensor:
        """Next input frames ``x: B x C_in x T`` -> ``B x C_out x (T * stride)``."""
        state = self._stream
        xt = x.transpose(1, 2)
        if state is None:
            weight, bias = self.folded_weight()
            cache = xt.new_zeros(xt.shape[0], self.taps - 1, xt.shape[2]) if self.taps > 1 else None
            state = self._stream = _CausalStreamState(weight, bias, cache)
        buf = xt if state.cache is None else torch.cat((state.cache, xt), dim=1)
        out = _stream_matmul(buf, self.taps, 1, 1, state.weight, state.bias)  # B x T x (s * C_out)
        if state.cache is not None:
            state.cache = buf[:, out.shape[1] :]
        batch, frames = out.shape[:2]
        return out.view(batch, frames * self.stride[0], self.out_channels).transpose(1, 2)
