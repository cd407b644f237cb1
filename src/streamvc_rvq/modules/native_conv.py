"""Causal stride-1 convolutions on few channels through a small C kernel, forward and backward.

Why: the quick preset's layers have 8-16 channels at 16 kHz, where oneDNN vectorises over the channels and runs
at ~10 GFLOP/s on a core; ``native/causal_conv.c`` vectorises over time instead (8 -> 8 channels, k=7, 8 x 26,240
samples, forward + both gradients: 8.5 ms against 35-46 ms; docs/measurements/throughput.md). Same maths, another
summation order: outputs within ~1e-6 relative of ``F.conv1d``, gradients within ~3e-5 (tested).

The kernel is plain C (GCC/Clang vector extensions, no torch headers): it is compiled on first use for this CPU
(``-march=native``, about a second) into ``$STREAMVC_RVQ_CACHE`` (default ``~/.cache/streamvc_rvq``), keyed by its
source, the compiler and the CPU, and loaded through ctypes (which releases the GIL, so threads split the time axis).
Without a C compiler, or with ``STREAMVC_NATIVE_CONV=0``, every call goes to ``F.conv1d`` as before (one warning).
Only float32 CPU tensors outside autocast, with at most ``MAX_CHANNELS`` channels, take the kernel; MPS, CUDA,
reduced precision and wide layers keep PyTorch's convolutions.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
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

__all__ = ["causal_conv1d", "native_available", "MAX_CHANNELS", "ENV_SWITCH"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native") / "causal_conv.c"
ENV_SWITCH = "STREAMVC_NATIVE_CONV"  # "0": PyTorch's convolutions everywhere
# Wider layers stay with oneDNN, which vectorises over channels: at 32 -> 32 channels its forward + backward took
# 20 ms against the kernel's 26 (8 x 3,280 samples); at 16 -> 16 the kernel's 20 against 34.
MAX_CHANNELS = 16
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
    target = _cache_dir() / f"causal_conv-{key.hexdigest()[:16]}.so"
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
    lib.streamvc_correlate.argtypes = [ptr, ptr, ptr, ptr] + [i64] * 10
    lib.streamvc_correlate.restype = None
    lib.streamvc_weight_grad.argtypes = [ptr, ptr, ptr, ptr] + [i64] * 10
    lib.streamvc_weight_grad.restype = None
    lib.streamvc_vector_floats.restype = ctypes.c_int
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
    step = -(-length // parts // vector) * vector
    return [(t, min(t + step, length)) for t in range(0, length, step)]


def _run(calls: list) -> None:
    if len(calls) == 1:
        calls[0]()
        return
    for future in [_pool(len(calls)).submit(call) for call in calls]:
        future.result()


def _correlate(lib: ctypes.CDLL, x: Tensor, weight: Tensor, bias: Tensor | None, dilation: int, offset: int) -> Tensor:
    """``y[b, o, t] = bias[o] + sum_{i,k} weight[o, i, k] x[b, i, t + k d - offset]`` (zeros outside x), ``t < T``."""
    batch, c_in, length = x.shape
    c_out, _, k_size = weight.shape
    y = x.new_empty(batch, c_out, length)
    args = (x.data_ptr(), weight.data_ptr(), None if bias is None else bias.data_ptr(), y.data_ptr(),
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
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, dilation: int) -> Tensor:
        lib = _library()
        x, weight = x.contiguous(), weight.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.dilation, ctx.has_bias = dilation, bias is not None
        offset = (weight.shape[-1] - 1) * dilation
        return _correlate(lib, x, weight, None if bias is None else bias.contiguous(), dilation, offset)

    @staticmethod
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
        return dx, dw, db, None


def _takes_kernel(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    return (
        x.device.type == "cpu"
        and x.dim() == 3
        and x.dtype == weight.dtype == torch.float32
        and (bias is None or bias.dtype == torch.float32)
        and max(weight.shape[0], weight.shape[1]) <= MAX_CHANNELS
        and not torch.is_autocast_enabled("cpu")
        and _library() is not None
    )


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None, dilation: int = 1) -> Tensor:
    """Stride-1 causal convolution ``B x C_in x T -> B x C_out x T``: ``F.conv1d`` on ``(k - 1) * d`` zeros of left
    padding, by the small-channel kernel where it applies (see the module docstring)."""
    if _takes_kernel(x, weight, bias):
        return _CausalConv.apply(x, weight, bias, dilation)
    return F.conv1d(F.pad(x, ((weight.shape[-1] - 1) * dilation, 0)), weight, bias, dilation=dilation)
