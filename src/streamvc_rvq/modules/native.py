"""Small C kernels for the CPU training step: causal stride-1 convolutions on few channels, and ELU.

Why: the quick preset's layers have 8-16 channels at 16 kHz, where oneDNN vectorises over the channels and runs
at ~10 GFLOP/s on a core; ``csrc/kernels.c`` vectorises over time instead (8 -> 8 channels, k=7, 8 x 26,240
samples, forward + both gradients: 7.8 ms against 34-45 ms; docs/measurements/throughput.md). Same maths, another
summation order: outputs within ~1e-6 relative of ``F.conv1d``, gradients within ~3e-5 (tested). torch 2.14's CPU
ELU evaluates expm1 one value at a time on negative inputs; the kernel's is vectorised, within one float ulp of the
exact ELU as torch's is, 4-5x faster, and its backward reads the output (saved anyway by the next convolution;
so the output must not be changed in place, and the slope y + 1 is exact only to ~6e-8 absolute where y nears -1).

The kernel is plain C (GCC/Clang vector extensions, no torch headers): it is compiled on first use for this CPU
(``-march=native``, about a second) into ``$STREAMVC_RVQ_CACHE`` (default ``~/.cache/streamvc_rvq``), keyed by its
source, the compiler and the CPU, and loaded through ctypes (which releases the GIL, so threads split the time axis).
Without a C compiler, or with ``STREAMVC_NATIVE_CONV=0``, every call goes to ``F.conv1d`` as before (one warning).
Only float32 CPU tensors outside autocast take the kernels (convolutions: at most ``MAX_CHANNELS`` channels); MPS,
CUDA, reduced precision and wide layers keep PyTorch's.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["causal_conv1d", "strided_causal_conv1d", "causal_conv_transpose1d", "transposed_as_phases", "elu",
           "native_available", "MAX_CHANNELS", "ENV_SWITCH"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "kernels.c"
ENV_SWITCH = "STREAMVC_NATIVE_CONV"  # "0": PyTorch's convolutions everywhere
# Wider layers stay with oneDNN, which vectorises over channels: forward + both gradients, k=7, batch 8, one thread
# (Zen 4): 16 -> 16 channels x 13,120 samples 16 ms against oneDNN's 34, 32 x 3,280 15 against 19, 64 x 656 12 against 10.
MAX_CHANNELS = 32
MIN_SAMPLES_PER_THREAD = 4096  # below this a thread's share does not pay for its hand-off


def _cpu_identity() -> str:
    text = ""
    try:
        with open("/proc/cpuinfo") as f:
            text = "".join(line for line in f if line.startswith(("model name", "flags", "Features", "CPU part")))
    except OSError:
        pass
    return f"{platform.machine()}|{platform.processor()}|{text}"


def _compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate.split()[0]):
            return candidate
    return None


def _arch_flags() -> list[str]:
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return ["-mcpu=native"]
    return ["-march=native"]


def _cache_dir() -> Path:
    root = os.environ.get("STREAMVC_RVQ_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamvc_rvq"
    return Path(root) / "native"


def _build(compiler: str) -> Path:
    """Compile the kernel for this CPU once (atomic: parallel jobs may race; the last rename wins, all equal)."""
    source = SOURCE.read_bytes()
    flags = ["-O3", "-shared", "-fPIC", *_arch_flags()]
    key = hashlib.sha256(b"\0".join([source, compiler.encode(), " ".join(flags).encode(), _cpu_identity().encode()]))
    target = _cache_dir() / f"kernels-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        cmd = [*compiler.split(), *flags, "-o", str(out), str(SOURCE)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 and flags[-1].startswith(("-march", "-mcpu")):  # an old compiler: portable build
            cmd = [*compiler.split(), *flags[:-1], "-o", str(out), str(SOURCE)]
            result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip().splitlines()[-1:] or result.returncode}")
        os.replace(out, target)
    return target


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    compiler = _compiler()
    try:
        if compiler is None:
            raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
        lib = ctypes.CDLL(str(_build(compiler)))
    except (OSError, RuntimeError) as err:
        log.warning("small-channel convolution kernel unavailable, using torch's convolutions: %s", err)
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.streamvc_correlate.argtypes = [ptr, ptr, ptr, ptr, ptr] + [i64] * 10
    lib.streamvc_correlate.restype = ctypes.c_int  # 0, or -1: out of memory for the edges' padded copies
    lib.streamvc_weight_grad.argtypes = [ptr, ptr, ptr, ptr] + [i64] * 10
    lib.streamvc_weight_grad.restype = ctypes.c_int
    lib.streamvc_vector_floats.restype = ctypes.c_int
    lib.streamvc_elu.argtypes = [ptr, ptr, i64]
    lib.streamvc_elu.restype = None
    lib.streamvc_elu_backward.argtypes = [ptr, ptr, ptr, i64]
    lib.streamvc_elu_backward.restype = None
    return lib


def native_available() -> bool:
    """Whether the kernel is built and switched on (``STREAMVC_NATIVE_CONV`` is not ``0``)."""
    return _library() is not None


@lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="causal-conv")


def _spans(length: int, vector: int) -> list[tuple[int, int]]:
    """``[0, length)`` cut into one span per thread (torch's thread count), each a whole number of vectors."""
    parts = max(1, min(torch.get_num_threads(), length // MIN_SAMPLES_PER_THREAD))
    step = max(vector, -(-length // parts // vector) * vector)
    return [(t, min(t + step, length)) for t in range(0, length, step)] or [(0, 0)]


def _run(calls: list) -> None:
    if len(calls) == 1:
        codes = [calls[0]()]
    else:
        codes = [future.result() for future in [_pool(len(calls)).submit(call) for call in calls]]
    if any(codes):  # the kernels return -1 when malloc fails (ELU returns None)
        raise MemoryError("small-channel convolution kernel: out of memory")


def _correlate(lib: ctypes.CDLL, x: Tensor, weight: Tensor, bias: Tensor | None, dilation: int, offset: int,
               add: Tensor | None = None) -> Tensor:
    """``y[b, o, t] = add[b, o, t] + bias[o] + sum_{i,k} weight[o, i, k] x[b, i, t + k d - offset]`` (zeros outside
    x), ``t < T``."""
    batch, c_in, length = x.shape
    c_out, _, k_size = weight.shape
    y = x.new_empty(batch, c_out, length)
    args = (x.data_ptr(), weight.data_ptr(), None if bias is None else bias.data_ptr(),
            None if add is None else add.data_ptr(), y.data_ptr(),
            batch, c_in, c_out, length, length, k_size, dilation, offset)
    _run([lambda a=a, b=b: lib.streamvc_correlate(*args, a, b) for a, b in _spans(length, lib.streamvc_vector_floats())])
    return y


def _weight_grad(lib: ctypes.CDLL, dy: Tensor, x: Tensor, k_size: int, dilation: int, offset: int) -> Tensor:
    batch, c_out, length = dy.shape
    c_in = x.shape[1]
    vector = lib.streamvc_vector_floats()
    spans = _spans(length, vector)
    grads = dy.new_empty(len(spans), c_out, c_in, k_size)
    scratch = dy.new_empty(len(spans), c_out * c_in * k_size * vector)
    _run([lambda n=n, a=a, b=b: lib.streamvc_weight_grad(
        dy.data_ptr(), x.data_ptr(), grads[n].data_ptr(), scratch[n].data_ptr(),
        batch, c_in, c_out, x.shape[2], length, k_size, dilation, offset, a, b) for n, (a, b) in enumerate(spans)])
    return grads.sum(0) if len(spans) > 1 else grads[0]


class _CausalConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None, dilation: int) -> Tensor:
        lib = _library()
        x, weight = x.contiguous(), weight.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.dilation, ctx.has_bias, ctx.has_residual = dilation, bias is not None, residual is not None
        offset = (weight.shape[-1] - 1) * dilation
        return _correlate(lib, x, weight, None if bias is None else bias.contiguous(), dilation, offset,
                          None if residual is None else residual.contiguous())

    @staticmethod
    @once_differentiable  # the kernels' gradients are not differentiable again: double backward raises
    def backward(ctx, dy: Tensor):
        lib = _library()
        x, weight = ctx.saved_tensors
        dy = dy.contiguous()
        k_size, d = weight.shape[-1], ctx.dilation
        dx = dw = db = None
        if ctx.needs_input_grad[0]:  # a correlation of dy with the kernel flipped in time, channels swapped
            dx = _correlate(lib, dy, weight.flip(-1).transpose(0, 1).contiguous(), None, d, 0)
        if ctx.needs_input_grad[1]:
            dw = _weight_grad(lib, dy, x, k_size, d, (k_size - 1) * d)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum((0, 2))
        dr = dy if ctx.has_residual and ctx.needs_input_grad[3] else None
        return dx, dw, db, dr, None


def _on_cpu_in_float32(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


def _takes_kernel(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None, dilation: int = 1) -> bool:
    """Whether the kernel computes this call; anything it does not cover, a malformed call included (which the C
    code would trust), goes to PyTorch, which raises its own error for the latter."""
    return (
        _on_cpu_in_float32(x)
        and x.dim() == 3
        and weight.dim() == 3
        and weight.shape[1] == x.shape[1]
        and weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and isinstance(dilation, int)
        and dilation >= 1
        and (bias is None or (bias.dtype == torch.float32 and bias.device.type == "cpu"
                              and bias.shape == (weight.shape[0],)))
        and (residual is None
             or (residual.dtype == torch.float32 and residual.device.type == "cpu"
                 and residual.shape == (x.shape[0], weight.shape[0], x.shape[2])))
        and max(weight.shape[0], weight.shape[1]) <= MAX_CHANNELS
        and _library() is not None
    )


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None, dilation: int = 1,
                  residual: Tensor | None = None) -> Tensor:
    """Stride-1 causal convolution ``B x C_in x T -> B x C_out x T``: ``F.conv1d`` on ``(k - 1) * d`` zeros of left
    padding, plus ``residual`` (``B x C_out x T``) if given, by the small-channel kernel where it applies (see the
    module docstring; the kernel sums the residual in its accumulators, saving a pass over memory)."""
    if _takes_kernel(x, weight, bias, residual, dilation):
        return _CausalConv.apply(x, weight, bias, residual, dilation)
    y = F.conv1d(F.pad(x, ((weight.shape[-1] - 1) * dilation, 0)), weight, bias, dilation=dilation)
    return y if residual is None else residual + y


def strided_causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int) -> Tensor:
    """Causal convolution of kernel ``2 * stride``, stride ``s`` (the encoders' downsampling): ``T -> T // s`` frames,
    frame ``n`` reading samples ``(n - 1) s .. (n + 1) s - 1``. By the kernel, in polyphase form: the ``s`` phases of
    the signal as ``C_in * s`` channels at the frame rate, convolved causally over two frames (one copy of the input)."""
    c_out, c_in, k = weight.shape
    frames = x.shape[-1] // stride
    if k == 2 * stride and _takes_kernel(x, weight, bias, None) and c_in * stride <= MAX_CHANNELS:
        batch = x.shape[0]
        phases = x[..., : frames * stride].reshape(batch, c_in, frames, stride).transpose(2, 3)
        taps = weight.reshape(c_out, c_in, 2, stride).transpose(2, 3).reshape(c_out, c_in * stride, 2)
        return _CausalConv.apply(phases.reshape(batch, c_in * stride, frames), taps, bias, None, 1)
    return F.conv1d(F.pad(x, (k - stride, 0)), weight, bias, stride=stride)


def transposed_as_phases(weight: Tensor, stride: int) -> Tensor:
    """A transposed convolution's ``weight: C_in x C_out x K`` (stride ``s``) as a causal convolution over
    ``taps = ceil(K / s)`` input frames with ``s * C_out`` outputs, rows (phase r, out channel), ``(s C_out) x C_in x
    taps``: output sample ``n s + r`` gets ``sum_w x[n - (taps - 1 - w)] . weight[:, :, r + (taps - 1 - w) s]``. The
    offline kernel path and the streaming fold both read it (differentiable; the stream detaches first)."""
    c_in, c_out, k = weight.shape
    taps = math.ceil(k / stride)
    folded = F.pad(weight, (0, taps * stride - k)).reshape(c_in, c_out, taps, stride).flip(2)  # [i, o, w, r]
    return folded.permute(3, 1, 0, 2).reshape(stride * c_out, c_in, taps)


def causal_conv_transpose1d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int) -> Tensor:
    """``F.conv_transpose1d(x, weight, bias, stride)`` (``weight: C_in x C_out x K``) trimmed on the right to
    ``T * stride`` samples, so output sample ``j`` reads input frames ``<= j // stride``. By the kernel as the
    streaming path computes it: a causal convolution over ``ceil(K / s)`` input frames with ``s * C_out`` outputs
    (one per phase), then the phases interleaved (one copy of the output)."""
    c_in, c_out, _ = weight.shape
    if _takes_kernel(x, weight.transpose(0, 1), bias, None) and stride * c_out <= MAX_CHANNELS:
        phases = transposed_as_phases(weight, stride)
        y = _CausalConv.apply(x, phases, None if bias is None else bias.repeat(stride), None, 1)
        batch, _, frames = y.shape
        return y.reshape(batch, stride, c_out, frames).permute(0, 2, 3, 1).reshape(batch, c_out, frames * stride)
    return F.conv_transpose1d(x, weight, bias, stride=stride)[..., : x.shape[-1] * stride]


def _elementwise(length: int, vector: int, call) -> None:
    _run([lambda a=a, b=b: call(a, b - a) for a, b in _spans(length, vector)])


class _ELU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        lib = _library()
        x = x.contiguous()
        y = torch.empty_like(x)
        step = x.element_size()
        _elementwise(x.numel(), lib.streamvc_vector_floats(),
                     lambda a, n: lib.streamvc_elu(x.data_ptr() + a * step, y.data_ptr() + a * step, n))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor) -> Tensor:
        lib = _library()
        (y,) = ctx.saved_tensors
        dy = dy.contiguous()
        dx = torch.empty_like(y)
        step = y.element_size()
        _elementwise(y.numel(), lib.streamvc_vector_floats(), lambda a, n: lib.streamvc_elu_backward(
            dy.data_ptr() + a * step, y.data_ptr() + a * step, dx.data_ptr() + a * step, n))
        return dx


def elu(x: Tensor) -> Tensor:
    """``F.elu(x)`` (alpha 1), by the kernel on float32 CPU tensors (see the module docstring)."""
    if _on_cpu_in_float32(x) and _library() is not None:
        return _ELU.apply(x)
    return F.elu(x)
