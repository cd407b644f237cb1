"""Causal convolutions and SoundStream blocks: causality, streaming == offline, folding."""

from __future__ import annotations

import pytest
import torch

from streamvc_rvq.modules.conv import CausalConv1d, CausalConvTranspose1d, streaming
from streamvc_rvq.modules.seanet import DecoderBlock, EncoderBlock, FiLM, RepeatUpsample, ResidualUnit, SEANetEncoder

CONVS = [
    pytest.param(lambda: CausalConv1d(3, 5, 7), 1, id="k7"),
    pytest.param(lambda: CausalConv1d(3, 5, 7, dilation=9), 1, id="k7-d9"),
    pytest.param(lambda: CausalConv1d(3, 5, 1), 1, id="k1"),
    pytest.param(lambda: CausalConv1d(3, 5, 8, stride=4), 4, id="k8-s4"),
    pytest.param(lambda: CausalConv1d(3, 5, 10, stride=5), 5, id="k10-s5"),
]
TRANSPOSED = [
    pytest.param(lambda: CausalConvTranspose1d(3, 5, 16, stride=8), 8, id="k16-s8"),
    pytest.param(lambda: CausalConvTranspose1d(3, 5, 7, stride=3), 3, id="k7-s3"),
    pytest.param(lambda: CausalConvTranspose1d(3, 5, 2, stride=2), 2, id="k2-s2"),
]


def first_change(a: torch.Tensor, b: torch.Tensor) -> int:
    """Index along the last axis of the first sample where ``a`` and ``b`` differ (-1 if none)."""
    changed = (a != b).flatten(0, -2).any(0).nonzero()
    return int(changed[0]) if len(changed) else -1


def first_output_changed_by(conv, length: int, positions) -> list[int]:
    """For each input position, the first output index that a bump there changes."""
    x = torch.randn(2, 3, length)
    with torch.no_grad():
        y = conv(x)
        out = []
        for t in positions:
            x2 = x.clone()
            x2[..., t] += 1.0
            out.append(first_change(y, conv(x2)))
    return out


@pytest.mark.parametrize("make, stride", CONVS)
def test_conv_output_frame_depends_on_samples_up_to_its_end(make, stride):
    conv = make().eval()
    assert conv(torch.zeros(2, 3, 200)).shape == (2, 5, 200 // stride)
    positions = (0, 37, 100, 199)
    # output frame n covers samples <= (n + 1) * stride - 1: the first one reading t is t // stride
    assert first_output_changed_by(conv, 200, positions) == [t // stride for t in positions]


@pytest.mark.parametrize("make, stride", TRANSPOSED)
def test_transposed_conv_output_sample_depends_on_frames_up_to_its_own(make, stride):
    conv = make().eval()
    assert conv(torch.zeros(2, 3, 30)).shape == (2, 5, 30 * stride)
    positions = (0, 11, 29)
    # nothing before frame n's samples
    assert first_output_changed_by(conv, 30, positions) == [n * stride for n in positions]


@pytest.mark.parametrize("make, stride", CONVS + TRANSPOSED)
@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_streaming_equals_offline_for_any_chunking(make, stride, chunk):
    conv = make().eval()
    frames = 24 * stride if isinstance(conv, CausalConv1d) else 24
    x = torch.randn(2, 3, frames)
    step = chunk * stride if isinstance(conv, CausalConv1d) else chunk
    with torch.no_grad():
        offline = conv(x)
        with streaming(conv):
            streamed = torch.cat([conv.stream_step(x[..., i : i + step]) for i in range(0, frames, step)], dim=-1)
    torch.testing.assert_close(streamed, offline, rtol=0, atol=1e-5)


def test_strided_stream_keeps_leftover_samples_for_the_next_chunk():
    conv = CausalConv1d(2, 3, 8, stride=4).eval()
    x = torch.randn(1, 2, 40)
    with torch.no_grad(), streaming(conv):
        parts = [conv.stream_step(x[..., a:b]) for a, b in [(0, 3), (3, 10), (10, 11), (11, 40)]]
        assert [p.shape[-1] for p in parts] == [0, 2, 0, 8]
        torch.testing.assert_close(torch.cat(parts, -1), conv(x), rtol=0, atol=1e-5)


def test_weight_norm_is_folded_once_per_stream():
    conv = CausalConv1d(4, 4, 7, dilation=3)
    assert hasattr(conv, "parametrizations")  # weight norm is on
    x = torch.randn(1, 4, 10)
    with torch.no_grad(), streaming(conv):
        conv.stream_step(x)
        product = conv._stream.product
        conv.stream_step(x)
        assert conv._stream.product is product  # folded once, not per chunk
        torch.testing.assert_close(product.weight, conv.weight.permute(2, 1, 0).reshape(-1, 4))
        conv.reset_stream(keep_weights=True)
        assert conv._stream.product is product and conv._stream.cache is None
    assert conv._stream.product is None and conv._stream.cache is None  # leaving the block forgets it all


def test_int8_folds_only_the_large_weights_and_stays_near_float32():
    """Under int8_products a layer whose folded weight holds INT8_MIN_WEIGHTS values or more multiplies in
    int8 (its output moves off float32, within 3 % of its RMS: 7-bit activations over a Gaussian's +-3 sigma
    round with an RMS error near 6 / 127 / sqrt(12) = 1.4 %); a small one stays exactly
    float32 (the sample-rate layers, where one activation scale per chunk would put noise into the silences);
    int8_products(False) inside the region keeps even a large one float32."""
    from streamvc_rvq.modules.conv import INT8_MIN_WEIGHTS, int8_products

    torch.manual_seed(0)
    big, small = CausalConv1d(256, 256, 1), CausalConv1d(8, 8, 7)
    assert big.weight.numel() >= INT8_MIN_WEIGHTS > small.weight.numel()
    x_big, x_small = torch.randn(1, 256, 6), torch.randn(1, 8, 6)
    with torch.no_grad():
        ref_big, ref_small = big(x_big), small(x_small)
        for conv in (big, small):
            conv.reset_stream()
        with int8_products():
            out_big, out_small = big.stream_step(x_big), small.stream_step(x_small)
            assert big._stream.product.int8 is not None and small._stream.product.int8 is None
            big.reset_stream()
            with int8_products(False):
                exact = big.stream_step(x_big)
        assert big._stream.product.int8 is None
    error = (out_big - ref_big).pow(2).mean().sqrt() / ref_big.pow(2).mean().sqrt()
    assert 1e-4 < float(error) < 0.03, float(error)
    torch.testing.assert_close(out_small, ref_small, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(exact, ref_big, atol=1e-5, rtol=1e-5)


def test_reset_restarts_from_silence():
    conv = CausalConv1d(2, 2, 5).eval()
    x = torch.randn(1, 2, 20)
    with torch.no_grad():
        first = conv.stream_step(x)
        conv.stream_step(torch.randn(1, 2, 20))
        conv.reset_stream()
        torch.testing.assert_close(conv.stream_step(x), first)


BLOCKS = [
    pytest.param(lambda: ResidualUnit(4, 9), 1, 1, id="residual-unit"),
    pytest.param(lambda: EncoderBlock(4, 8, 5), 5, 1, id="encoder-block"),
    pytest.param(lambda: DecoderBlock(8, 4, 4), 1, 4, id="decoder-block"),
    pytest.param(lambda: DecoderBlock(8, 4, 4, upsample="repeat"), 1, 4, id="decoder-block-repeat"),
    pytest.param(lambda: SEANetEncoder(2, 6, (2, 4, 5)), 40, 1, id="seanet-encoder"),
]


@pytest.mark.parametrize("make, down, up", BLOCKS)
def test_blocks_are_causal_and_stream_like_offline(make, down, up):
    block = make().eval()
    channels = block.input_conv.in_channels if isinstance(block, SEANetEncoder) else (
        block.up.in_channels if isinstance(block, DecoderBlock) else 4)
    frames = 12 * down
    x = torch.randn(1, channels, frames)
    with torch.no_grad():
        y = block(x)
        assert y.shape[-1] == frames // down * up
        t = 5 * down + down // 2
        x2 = x.clone()
        x2[..., t] += 1.0
        assert first_change(y, block(x2)) == t // down * up
        with streaming(block):
            streamed = torch.cat([block.stream_step(x[..., i : i + 2 * down]) for i in range(0, frames, 2 * down)], -1)
    torch.testing.assert_close(streamed, y, rtol=0, atol=1e-5)


@pytest.mark.parametrize("upsample, periodic", [("transposed", True), ("repeat", False)])
def test_only_the_transposed_upsampler_imprints_a_pattern_at_its_stride(upsample, periodic):
    """A constant input: the transposed conv's output repeats every input step (the frame-rate
    tone's mechanism, issue 38), repetition then a conv gives a constant."""
    torch.manual_seed(0)
    block = DecoderBlock(4, 3, 8, upsample=upsample).up.eval()
    with torch.no_grad():
        y = block(torch.ones(1, 4, 20))[..., 16:]  # past the start-up
    spread = float((y - y.mean(-1, keepdim=True)).abs().max())
    assert (spread > 1e-3) is periodic, spread


@pytest.mark.parametrize("stride", [1, 2, 5, 8])
def test_repeat_upsampler_at_the_input_rate_equals_repeating_then_convolving(stride):
    """The one-pass transposed form and its gradients against the literal repeat + conv; the
    control: the same kernel without the sum over consecutive taps differs."""
    torch.manual_seed(stride)
    up = RepeatUpsample(6, 4, stride)
    x = torch.randn(3, 6, 11, requires_grad=True)
    fast, literal = up(x), up.forward_repeated(x)
    torch.testing.assert_close(fast, literal, rtol=0, atol=1e-5)
    grads = [torch.autograd.grad((y * torch.linspace(-1, 1, y.shape[-1])).sum(), [x, *up.parameters()])
             for y in (up(x), up.forward_repeated(x))]
    for g_fast, g_literal in zip(*grads):
        torch.testing.assert_close(g_fast, g_literal, rtol=1e-5, atol=1e-5)
    unsummed = up.conv.weight.flip(-1).transpose(0, 1)
    wrong = torch.nn.functional.conv_transpose1d(x, unsummed, up.conv.bias, stride=stride)[..., : 11 * stride]
    assert stride == 1 or (wrong - literal).abs().max() > 1e-2


def test_film_starts_near_identity_and_modulates_per_channel():
    film = FiLM(3, 5)
    x = torch.randn(2, 5, 7)
    cond = torch.randn(2, 3)
    gamma, beta = film.coefficients(cond)
    assert gamma.shape == beta.shape == (2, 5, 1)
    torch.testing.assert_close(film(x, cond), x * gamma + beta)
    torch.testing.assert_close(film(x, cond), x, atol=0.2, rtol=0.2)


@pytest.mark.parametrize("rows, k_in", [(1, 64), (1, 512), (8, 512), (8, 64), (3, 1024)])
def test_folded_product_routes_agree_with_addmm(rows, k_in):
    from streamvc_rvq.modules.conv import FoldedProduct

    weight, bias = torch.randn(k_in, 24) / k_in**0.5, torch.randn(24)
    product = FoldedProduct(weight, bias, rows)
    for n in (rows, 2):  # the planned row count and another one
        x = torch.randn(n, k_in)
        torch.testing.assert_close(product(x), torch.addmm(bias, x, weight), rtol=1e-5, atol=1e-5)
