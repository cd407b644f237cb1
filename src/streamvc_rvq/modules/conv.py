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
  buffer), so each layer is one im2col copy of contiguous channel runs and one matrix
  product whose few-row operand is laid out the way BLAS is fast (4x faster than
  ``conv1d`` at 8 frames); :class:`FoldedProduct` picks the product routine per layer.
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
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from streamvc_rvq.modules.native import (causal_conv1d, causal_conv_transpose1d, strided_causal_conv1d,
                                        transposed_as_phases)

__all__ = [
    "StreamingModule",
    "reset_streams",
    "streaming",
    "CausalConv1d",
    "CausalConvTranspose1d",
    "FoldedProduct",
    "int8_active",
    "int8_products",
    "receptive_field",
]


class StreamingModule(nn.Module):
    """A module that can also process a signal chunk by chunk (``stream_step``).

    Subclasses implement :meth:`stream_step` and, if they hold state of their own,
    :meth:`_reset_own_stream`. :meth:`reset_stream` clears the state of the module and of
    every streaming submodule, so a new stream starts from silence; with
    ``keep_weights=True`` the folded weights survive (a restart of the same stream without
    re-folding), otherwise they are folded again from the current weights.
    """

    def stream_step(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _reset_own_stream(self, keep_weights: bool = False) -> None:
        """Forget this module's own streaming state (submodules are handled by reset_stream)."""

    def reset_stream(self, keep_weights: bool = False) -> None:
        reset_streams(self, keep_weights)


def reset_streams(module: nn.Module, keep_weights: bool = False) -> None:
    """Reset every :class:`StreamingModule` inside ``module`` (itself included)."""
    for m in module.modules():
        if isinstance(m, StreamingModule):
            m._reset_own_stream(keep_weights)


@contextmanager
def streaming(module: nn.Module) -> Iterator[nn.Module]:
    """``with streaming(model): ...`` -- streaming state is fresh inside and cleared after."""
    reset_streams(module)
    try:
        yield module
    finally:
        reset_streams(module)


PACK_MIN_K = 448  # inner dimension from which oneDNN's packed product beats addmm
# int8 only for folded weights this large: the few-row, memory-bound layers at low rates, where the bytes are. The
# sample-rate layers (paper size: 448 x 64 and below) stay float32: one activation scale per 20 ms chunk there
# put a noise floor ~40 dB under the chunk's peak into the output's silences.
INT8_MIN_WEIGHTS = 65536
_INT8 = ContextVar("int8_products", default=False)


@contextmanager
def int8_products(enabled: bool = True) -> Iterator[None]:
    """Inside: streaming layers folded here multiply in int8 (``enabled=False``: in float32 again,
    e.g. around the nearest-code search). See :class:`FoldedProduct`."""
    token = _INT8.set(enabled)
    try:
        yield
    finally:
        _INT8.reset(token)


def int8_active() -> bool:
    """Whether layers folded now would multiply in int8 (inside :func:`int8_products`)."""
    return _INT8.get()


def _pack_int8(weight: Tensor, bias: Tensor | None):
    """``W: K x N`` as int8 per output channel (symmetric, scale = max |w| / 127), packed once for
    the CPU's quantized engine (fbgemm/x86, qnnpack on ARM)."""
    if weight.device.type != "cpu":
        raise ValueError(f"int8 products run on the CPU only, not {weight.device.type}")
    rows = weight.t().contiguous().float()  # N x K
    scale = (rows.abs().amax(dim=1) / 127).clamp_min(1e-12).double()
    with warnings.catch_warnings():  # the quantized-tensor constructors warn of their deprecation in torch 2.14
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch.quantize_per_channel(rows, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(quantized, None if bias is None else bias.float())


class FoldedProduct:
    """``rows @ W + b`` for a folded weight ``W: K x N``, by the fastest exact float32 route.

    Chosen once per stream from the shape and the thread count (timings on a 2-core Zen 4
    with the weights out of cache, which is the streaming case: the paper-size model reads
    ~100 MB of weights per 20 ms chunk, so its few-row layers are memory-bound):

    * ``K >= 448`` on a CPU with oneDNN, and several rows or several threads: a oneDNN inner
      product on a weight reordered once to its blocked layout (``torch.ops.mkldnn``),
      1.2-1.7x faster than ``addmm``, which re-packs the whole weight on every call;
    * one row with ``K >= N`` (e.g. the 50 Hz strided conv, 8192 -> 1024): ``addmv`` on ``W^T``
      stored ``N x K``, a GEMV streaming long weight rows (~20 % faster than ``addmm``);
    * otherwise ``addmm``.

    All three are float32 products that differ only in summation order (~1e-7 relative).
    Folded inside an autocast region (reduced-precision inference), the weight is stored in
    the autocast type once and each call's rows are cast to it: no weight cast per chunk.
    Folded inside :func:`int8_products`, a weight of at least ``INT8_MIN_WEIGHTS`` values is
    stored in int8 per output channel and each call quantizes its rows on the fly
    (``quantized::linear_dynamic``, 7-bit activations: ``reduce_range``, safe on CPUs without
    VNNI): a quarter of the weight bytes where the stream reads most of them
    (docs/measurements/speed_against_peer.md has its speed and deviation). One activation scale
    covers a call's rows, i.e. every batch item and every frame of the chunk: int8 outputs depend
    on what shares the call (1-frame, batch-1 streams equal the offline int8 conversion).
    """

    __slots__ = ("weight", "weight_t", "bias", "packed", "dtype", "int8")

    def __init__(self, weight: Tensor, bias: Tensor | None, rows: int):
        device = weight.device.type
        self.int8 = _pack_int8(weight, bias) if _INT8.get() and weight.numel() >= INT8_MIN_WEIGHTS else None
        if self.int8 is not None:
            self.weight = self.weight_t = self.bias = self.packed = None
            self.dtype = torch.float32
            return
        if torch.is_autocast_enabled(device):
            self.dtype = torch.get_autocast_dtype(device)
            weight, bias = weight.to(self.dtype), None if bias is None else bias.to(self.dtype)
        else:
            self.dtype = weight.dtype
        self.weight: Tensor | None = weight
        self.bias = bias
        self.weight_t: Tensor | None = None
        self.packed: Tensor | None = None
        k, n = weight.shape
        if k >= PACK_MIN_K and (rows > 1 or torch.get_num_threads() > 1) and _onednn_usable(weight):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.t().contiguous(), rows)
            self.weight = None  # the packed copy is all a call needs
        elif rows == 1 and k >= n:
            self.weight_t = weight.t().contiguous()
            self.weight = self.weight_t.t()

    def __call__(self, rows: Tensor) -> Tensor:
        if rows.dtype != self.dtype:
            rows = rows.to(self.dtype)
        if self.int8 is not None:
            return torch.ops.quantized.linear_dynamic(rows, self.int8, True)
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [], "")
        if self.weight_t is not None and rows.shape[0] == 1:
            vec = rows.view(-1)
            out = torch.mv(self.weight_t, vec) if self.bias is None else torch.addmv(self.bias, self.weight_t, vec)
            return out.view(1, -1)
        return torch.mm(rows, self.weight) if self.bias is None else torch.addmm(self.bias, rows, self.weight)



def _onednn_usable(weight: Tensor) -> bool:
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def _im2col(buf: Tensor, kernel: int, stride: int, dilation: int) -> Tensor:
    """Rows of a causal convolution over a time-major buffer ``buf: B x L x C``.

    Returns ``(B * T_out) x (k * C)`` with rows ordered (tap, channel) -- frame ``t`` reads
    ``buf[t*s + j*d, :]``, each a contiguous run of ``C`` values -- and
    ``T_out = (L - (k - 1) * d - 1) // s + 1``.
    """
    buf = buf.contiguous()
    batch, length, channels = buf.shape
    frames = (length - (kernel - 1) * dilation - 1) // stride + 1
    if kernel == 1 and stride == 1:
        return buf.view(batch * frames, channels)
    windows = buf.as_strided(
        (batch, frames, kernel, channels), (length * channels, stride * channels, dilation * channels, 1)
    )
    return windows.reshape(batch * frames, kernel * channels).contiguous()  # the one copy


class _StreamState:
    """A streaming layer's state between chunks, in a plain object: assigning a module
    attribute goes through ``nn.Module.__setattr__`` (~5 us), too slow for ~60 layers x 50
    chunks per second."""

    __slots__ = ("product", "cache", "kernel", "stride", "dilation", "padding", "out_channels")

    def __init__(self, kernel: int, stride: int, dilation: int, padding: int, out_channels: int):
        self.kernel, self.stride, self.dilation = kernel, stride, dilation
        self.padding, self.out_channels = padding, out_channels
        self.product: FoldedProduct | None = None  # the folded weight
        self.cache: Tensor | None = None  # the inputs the next chunk still needs (None: stream start)

    def reset(self, keep_weights: bool) -> None:
        self.cache = None
        if not keep_weights:
            self.product = None


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
        self._stream = _StreamState(kernel_size, stride, dilation, self.causal_padding, out_channels)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """``residual`` (``B x C_out x T``, stride 1 only) is added to the output: ``residual + conv(x)``."""
        if self.stride[0] == 1:  # few channels: the small-channel kernel (modules/native.py)
            return causal_conv1d(x, self.weight, self.bias, self.dilation[0], residual)
        if residual is not None:
            raise ValueError("a residual needs a stride-1 convolution")
        if self.kernel_size[0] == 2 * self.stride[0] and self.dilation[0] == 1:  # the encoders' downsampling
            return strided_causal_conv1d(x, self.weight, self.bias, self.stride[0])
        return super().forward(F.pad(x, (self.causal_padding, 0)))

    # -- streaming -------------------------------------------------------------------------
    def _reset_own_stream(self, keep_weights: bool = False) -> None:
        self._stream.reset(keep_weights)

    def folded_weight(self) -> tuple[Tensor, Tensor | None]:
        """The effective weight as ``(k * C_in) x C_out`` (rows (tap, channel)) and the bias."""
        w = self.weight.detach()  # C_out x C_in x k; weight norm applied here, once
        folded = w.permute(2, 1, 0).reshape(-1, self.out_channels).contiguous()
        bias = None if self.bias is None else self.bias.detach().clone()
        return folded, bias

    def stream_step(self, x: Tensor) -> Tensor:
        """Next chunk ``x: B x C_in x T`` -> ``B x C_out x (T // stride)`` (time-major storage)."""
        st = self._stream
        xt = x.transpose(1, 2)  # B x T x C (a view)
        cache = st.cache
        if cache is None:  # start of a stream: silence before it, as the offline padding
            cache = xt.new_zeros(xt.shape[0], st.padding, xt.shape[2])
        buf = torch.cat((cache, xt), dim=1) if cache.shape[1] else xt
        frames = (buf.shape[1] - (st.kernel - 1) * st.dilation - 1) // st.stride + 1
        if frames <= 0:  # not enough for one output yet: keep everything
            st.cache = buf
            return xt.new_zeros(xt.shape[0], 0, st.out_channels).transpose(1, 2)
        rows = _im2col(buf, st.kernel, st.stride, st.dilation)
        if st.product is None:
            st.product = FoldedProduct(*self.folded_weight(), rows.shape[0])
        out = st.product(rows).view(xt.shape[0], frames, st.out_channels)
        st.cache = buf[:, frames * st.stride :]
        return out.transpose(1, 2)


def receptive_field(module: nn.Module) -> int:
    """Input samples that one output sample of ``module`` depends on (its receptive field).

    Walks the :class:`CausalConv1d` layers in registration order as one chain:
    ``1 + sum_i (k_i - 1) * d_i * J_i`` with ``J_i`` the product of the strides before layer
    ``i``. Exact for the encoders here (a chain of convolutions whose residual branches only
    add shorter paths); tested against an impulse response.
    """
    field, jump = 1, 1
    for layer in module.modules():
        if isinstance(layer, CausalConvTranspose1d):
            raise ValueError("receptive_field covers downsampling chains of CausalConv1d only")
        if isinstance(layer, CausalConv1d):
            field += (layer.kernel_size[0] - 1) * layer.dilation[0] * jump
            jump *= layer.stride[0]
    return field


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
        # streamed as a causal conv over input frames: kernel taps, stride 1, s * C_out outputs
        self._stream = _StreamState(self.taps, 1, 1, self.taps - 1, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return causal_conv_transpose1d(x, self.weight, self.bias, self.stride[0])  # trimmed on the right: causal

    # -- streaming -------------------------------------------------------------------------
    def _reset_own_stream(self, keep_weights: bool = False) -> None:
        self._stream.reset(keep_weights)

    def folded_weight(self) -> tuple[Tensor, Tensor | None]:
        """The transposed convolution as a causal one over input frames.

        Returns ``W: (taps * C_in) x (s * C_out)`` with rows (window position w, channel)
        and columns (phase r, out channel): output sample ``n*s + r`` gets
        ``sum_w x[n - (taps - 1 - w)] . weight[:, :, r + (taps - 1 - w) * s]``.
        """
        s = self.stride[0]
        phases = transposed_as_phases(self.weight.detach(), s)  # (s C_out) x C_in x taps, as the offline path's
        folded = phases.permute(2, 1, 0).reshape(-1, phases.shape[0]).contiguous()  # rows (w, channel), as CausalConv1d
        bias = None if self.bias is None else self.bias.detach().repeat(s)
        return folded, bias

    def stream_step(self, x: Tensor) -> Tensor:
        """Next input frames ``x: B x C_in x T`` -> ``B x C_out x (T * stride)``."""
        st = self._stream
        xt = x.transpose(1, 2)
        cache = st.cache
        if cache is None:
            cache = xt.new_zeros(xt.shape[0], st.padding, xt.shape[2])
        buf = torch.cat((cache, xt), dim=1) if cache.shape[1] else xt
        rows = _im2col(buf, st.kernel, 1, 1)  # (B * T) x (taps * C_in)
        if st.product is None:
            st.product = FoldedProduct(*self.folded_weight(), rows.shape[0])
        batch, frames = xt.shape[0], xt.shape[1]
        st.cache = buf[:, frames:]
        out = st.product(rows)  # (B * T) x (s * C_out), columns (phase, channel)
        return out.view(batch, frames * self.stride[0], st.out_channels).transpose(1, 2)
