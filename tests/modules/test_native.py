"""The small-channel convolution kernel equals PyTorch's convolution, forward and backward, and is really used."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from streamvc_rvq.modules import native
from streamvc_rvq.modules.conv import CausalConv1d
from streamvc_rvq.modules.native import causal_conv1d

pytestmark = pytest.mark.skipif(not native.native_available(), reason="no C compiler: the kernel is not built")

# (batch, in, out, samples, kernel, dilation): the quick model's shapes, tails that are no whole number of vectors,
# signals shorter than the kernel's span, one input or output channel, output channels off the register block
SHAPES = [
    (2, 8, 8, 2000, 7, 1),
    (2, 8, 8, 1999, 7, 9),
    (1, 16, 16, 777, 7, 3),
    (2, 32, 32, 410, 7, 9),
    (3, 5, 3, 1000, 3, 2),
    (2, 1, 8, 513, 7, 1),
    (2, 8, 1, 515, 7, 1),
    (2, 8, 8, 301, 1, 1),
    (1, 4, 6, 20, 7, 9),  # span 54 > 20 samples: every output reads padding
    (1, 3, 2, 1, 7, 1),
]


def _reference(x, weight, bias, dilation):
    return F.conv1d(F.pad(x, ((weight.shape[-1] - 1) * dilation, 0)), weight, bias, dilation=dilation)


def _grads(conv, x, weight, bias, dilation, dy):
    x, weight, bias = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
    y = conv(x, weight, bias, dilation)
    y.backward(dy)
    return y.detach(), x.grad, weight.grad, bias.grad


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernel_equals_torch_forward_and_gradients(shape):
    batch, c_in, c_out, length, k, d = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c_in, length, generator=gen)
    weight = torch.randn(c_out, c_in, k, generator=gen) * 0.3
    bias = torch.randn(c_out, generator=gen)
    dy = torch.randn(batch, c_out, length, generator=gen)
    ours = _grads(causal_conv1d, x, weight, bias, d, dy)
    ref = _grads(_reference, x, weight, bias, d, dy)
    for name, a, b in zip(("output", "input grad", "weight grad", "bias grad"), ours, ref):
        scale = b.abs().max().item()
        torch.testing.assert_close(a, b, rtol=0, atol=3e-6 * scale * (1 + length / 1000), msg=name)


@pytest.mark.parametrize("shape", [(2, 8, 8, 1999, 1, 1), (1, 16, 16, 300, 7, 9)], ids=["pointwise", "dilated"])
def test_residual_summed_in_the_kernel(shape):
    batch, c_in, c_out, length, k, d = shape
    gen = torch.Generator().manual_seed(5)
    x, weight = torch.randn(batch, c_in, length, generator=gen), torch.randn(c_out, c_in, k, generator=gen)
    bias, residual = torch.randn(c_out, generator=gen), torch.randn(batch, c_out, length, generator=gen)
    dy = torch.randn(batch, c_out, length, generator=gen)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias, residual)]
    y = causal_conv1d(*leaves[:3], d, residual=leaves[3])
    assert type(y.grad_fn).__name__ == "_CausalConvBackward"
    y.backward(dy)
    ref_leaves = [t.clone().requires_grad_() for t in (x, weight, bias, residual)]
    ref = ref_leaves[3] + _reference(*ref_leaves[:3], d)
    ref.backward(dy)
    scale = ref.abs().max().item()
    torch.testing.assert_close(y, ref, rtol=0, atol=3e-6 * scale)
    assert torch.equal(leaves[3].grad, dy)
    for ours, theirs in zip(leaves[:3], ref_leaves[:3]):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=0, atol=1e-5 * theirs.grad.abs().max().item())


def test_a_wrong_kernel_is_caught():
    """The comparison above fails on a convolution that is off by one tap (the control)."""
    gen = torch.Generator().manual_seed(1)
    x, weight = torch.randn(2, 8, 500, generator=gen), torch.randn(8, 8, 7, generator=gen)
    shifted = F.conv1d(F.pad(x, (7, 0))[..., :-1], weight, dilation=1)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(causal_conv1d(x, weight, None, 1), shifted, rtol=0, atol=1e-5)


def test_threads_split_time_with_the_same_result():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 3 * native.MIN_SAMPLES_PER_THREAD + 37, generator=gen)
    weight, bias = torch.randn(8, 8, 7, generator=gen), torch.randn(8, generator=gen)
    dy = torch.randn_like(x)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _grads(causal_conv1d, x, weight, bias, 3, dy)
        torch.set_num_threads(3)
        assert len(native._spans(x.shape[-1], 16)) == 3
        three = _grads(causal_conv1d, x, weight, bias, 3, dy)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], three[0]) and torch.equal(one[1], three[1])  # disjoint outputs: bit for bit
    scale = one[2].abs().max().item()  # partial sums per span: another order
    torch.testing.assert_close(one[2], three[2], rtol=0, atol=1e-5 * scale)


def test_deterministic():
    gen = torch.Generator().manual_seed(3)
    x, weight = torch.randn(2, 8, 5000, generator=gen), torch.randn(8, 8, 7, generator=gen)
    dy = torch.randn(2, 8, 5000, generator=gen)
    first, second = (_grads(causal_conv1d, x, weight, torch.zeros(8), 9, dy) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def _backward_name(conv: CausalConv1d, x: torch.Tensor) -> str:
    return type(conv(x).grad_fn).__name__


def test_model_layers_take_the_kernel_where_it_applies():
    """The lever acts: a narrow stride-1 layer's output comes from the kernel; wide, strided, reduced-precision
    layers keep PyTorch's convolution."""
    x = torch.randn(1, 8, 300, requires_grad=True)
    assert _backward_name(CausalConv1d(8, 8, 7, dilation=3), x) == "_CausalConvBackward"
    assert _backward_name(CausalConv1d(8, 16, 4, stride=2), x) == "_CausalConvBackward"  # polyphase: 16 channels
    wide = torch.randn(1, 16, 300, requires_grad=True)
    assert _backward_name(CausalConv1d(16, 32, 8, stride=4), wide) != "_CausalConvBackward"  # 4 phases x 16: too wide
    assert _backward_name(CausalConv1d(32, 32, 7), torch.randn(1, 32, 300)) == "_CausalConvBackward"
    wide = torch.randn(1, 64, 300, requires_grad=True)
    assert _backward_name(CausalConv1d(64, 64, 7), wide) != "_CausalConvBackward"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _backward_name(CausalConv1d(8, 8, 7), x) != "_CausalConvBackward"


def test_switched_off_and_without_a_compiler_torch_runs(monkeypatch, tmp_path, caplog):
    x = torch.randn(1, 8, 300, requires_grad=True)
    conv = CausalConv1d(8, 8, 7)
    try:
        native._library.cache_clear()
        monkeypatch.setenv(native.ENV_SWITCH, "0")
        assert _backward_name(conv, x) != "_CausalConvBackward"
        native._library.cache_clear()
        monkeypatch.delenv(native.ENV_SWITCH)
        monkeypatch.setenv("STREAMVC_RVQ_CACHE", str(tmp_path))
        monkeypatch.setenv("CC", "false")  # a "compiler" that fails: one warning, torch's convolution
        with caplog.at_level("WARNING"):
            assert _backward_name(conv, x) != "_CausalConvBackward"
        assert "kernel unavailable" in caplog.text
        assert not list(tmp_path.rglob("*.so"))
    finally:
        monkeypatch.undo()
        native._library.cache_clear()
    assert native.native_available()


def test_layer_output_equals_torch_layer():
    """A weight-normed CausalConv1d through the kernel equals the same layer through F.conv1d."""
    torch.manual_seed(4)
    conv = CausalConv1d(16, 16, 7, dilation=9)
    x = torch.randn(2, 16, 4000)
    ref = F.conv1d(F.pad(x, (conv.causal_padding, 0)), conv.weight, conv.bias, dilation=9)
    torch.testing.assert_close(conv(x), ref, rtol=0, atol=1e-5 * ref.abs().max().item())


def _ulps(a: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    return (a.double() - exact).abs() / (exact.abs() * 2.0**-23).clamp_min(2.0**-149)


def test_elu_within_one_ulp_of_the_exact_and_its_gradient():
    x = torch.cat([torch.randn(3, 8, 1001) * 3, torch.linspace(-100, 2, 20001).view(1, 1, -1).expand(3, 8, -1),
                   -torch.logspace(-30, 1.9, 1001).view(1, 1, -1).expand(3, 8, -1)], -1).contiguous()
    exact = F.elu(x.double())
    ours = native.elu(x)
    assert _ulps(ours, exact).max() <= 1.0
    assert _ulps(F.elu(x), exact).max() <= 1.0  # torch's own float32 ELU: the same bar
    xr, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    dy = torch.randn_like(x)
    native.elu(xr).backward(dy)
    F.elu(xt).backward(dy)
    # the slope from the output, y + 1, loses e^x's relative precision where y rounds to -1: absolute error < 1e-7
    torch.testing.assert_close(xr.grad, xt.grad, rtol=1e-6, atol=1e-7 * dy.abs().max().item())
    assert type(native.elu(xr).grad_fn).__name__ == "_ELUBackward"


def test_elu_control_a_cruder_exponential_fails_the_bar():
    """The one-ulp bar above catches exp(x) - 1, which loses expm1's precision near zero."""
    x = -torch.logspace(-8, -1, 1000)
    assert _ulps(torch.exp(x) - 1, F.elu(x.double())).max() > 1.0


def test_elu_special_values():
    x = torch.tensor([float("nan"), float("inf"), float("-inf"), 0.0, -1e-45, -200.0, 3.0] * 5)
    ours, ref = native.elu(x), F.elu(x)
    assert torch.equal(ours.isnan(), ref.isnan())
    assert torch.equal(ours[~ref.isnan()], ref[~ref.isnan()])


def test_empty_signals_and_double_backward():
    for length in (0, 1):
        x = torch.randn(2, 8, length, requires_grad=True)
        weight = torch.randn(8, 8, 7, requires_grad=True)
        y = causal_conv1d(x, weight, None, 3)
        assert y.shape == (2, 8, length)
        if length:  # (F.conv1d refuses an empty signal)
            torch.testing.assert_close(y, _reference(x, weight, None, 3))
        native.elu(y).sum().backward()
        assert x.grad.shape == x.shape and weight.grad.shape == weight.shape
    x = torch.randn(1, 8, 100, requires_grad=True)
    (grad,) = torch.autograd.grad(causal_conv1d(x, torch.randn(8, 8, 7), None).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|double backward|differentiable"):
        grad.sum().backward()


def _leaves_grads(fn, tensors, dy):
    leaves = [t.clone().requires_grad_() for t in tensors]
    y = fn(*leaves)
    y.backward(dy)
    return [y.detach()] + [leaf.grad for leaf in leaves]


def _assert_all_close(ours, ref, names):
    for name, a, b in zip(names, ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * b.abs().max().item(), msg=name)


@pytest.mark.parametrize("c_in,c_out,stride,length", [(8, 16, 2, 2000), (8, 16, 2, 2001), (4, 8, 4, 403), (1, 3, 5, 50)])
def test_strided_polyphase_equals_torch(c_in, c_out, stride, length):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, c_in, length, generator=gen)
    weight, bias = torch.randn(c_out, c_in, 2 * stride, generator=gen), torch.randn(c_out, generator=gen)
    dy = torch.randn(2, c_out, length // stride, generator=gen)
    ours = _leaves_grads(lambda *a: native.strided_causal_conv1d(*a, stride), (x, weight, bias), dy)
    ref = _leaves_grads(lambda x, w, b: F.conv1d(F.pad(x, (stride, 0)), w, b, stride=stride), (x, weight, bias), dy)
    _assert_all_close(ours, ref, ("output", "input grad", "weight grad", "bias grad"))
    x_req = x.clone().requires_grad_()
    assert type(native.strided_causal_conv1d(x_req, weight, bias, stride).grad_fn).__name__ == "_CausalConvBackward"


@pytest.mark.parametrize("c_in,c_out,stride,kernel", [(16, 8, 2, 4), (4, 4, 4, 8), (8, 4, 2, 5), (16, 8, 2, 7)])
def test_transposed_as_phases_equals_torch(c_in, c_out, stride, kernel):
    """Kernel 2s (SoundStream's upsampling), an odd one, and 3s - 1 (RepeatUpsample's summed taps)."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, c_in, 301, generator=gen)
    weight, bias = torch.randn(c_in, c_out, kernel, generator=gen), torch.randn(c_out, generator=gen)
    dy = torch.randn(2, c_out, 301 * stride, generator=gen)
    ours = _leaves_grads(lambda *a: native.causal_conv_transpose1d(*a, stride), (x, weight, bias), dy)
    ref = _leaves_grads(lambda x, w, b: F.conv_transpose1d(x, w, b, stride=stride)[..., : 301 * stride],
                        (x, weight, bias), dy)
    _assert_all_close(ours, ref, ("output", "input grad", "weight grad", "bias grad"))
    x_req = x.clone().requires_grad_()
    assert "_CausalConvBackward" in _graph_names(native.causal_conv_transpose1d(x_req, weight, bias, stride).grad_fn)


def _graph_names(fn, depth: int = 6) -> set[str]:
    """The autograd nodes within ``depth`` steps of ``fn`` (the phases' interleaving copies come first)."""
    if fn is None or depth == 0:
        return set()
    names = {type(fn).__name__}
    for nxt, _ in fn.next_functions:
        names |= _graph_names(nxt, depth - 1)
    return names


def test_malformed_calls_raise_as_torch_does():
    """The C code trusts its shapes: a call it cannot compute goes to PyTorch, which raises (found in review: the
    kernel read past the weight and returned numbers)."""
    x = torch.randn(2, 8, 100)
    for weight, bias, dilation in ((torch.randn(8, 4, 3), None, 1), (torch.randn(8, 16, 3), None, 1),
                                   (torch.randn(8, 8, 3), torch.randn(2), 1), (torch.randn(8, 8, 3), None, 0)):
        with pytest.raises(RuntimeError):
            causal_conv1d(x, weight, bias, dilation)
