"""The remedy ladder's quantizers: DAC-style low-dimensional codes, and vector-quantize-pytorch's
ResidualVQ behind our interface as a cross-check (same codes for the same codebook)."""

import sys

import pytest
import torch

from streamvc_rvq.quantization.build import build_rvq, library_available, unavailable_reason
from streamvc_rvq.quantization.rvq import ResidualVectorQuantizer, nearest_codes

needs_library = pytest.mark.skipif(not library_available(), reason="vector-quantize-pytorch is not installed")


# --- low-dimensional codes (projection_dim) -------------------------------------------------


def test_projection_puts_codes_in_low_dimension_and_every_projection_learns():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(num_quantizers=2, codebook_size=8, codebook_dim=6, projection_dim=2,
                                  distance="cosine")
    assert rvq.layers[0].codebook.shape == (8, 2) and rvq.input_space_codebook(0).shape == (8, 6)
    x = torch.randn(2, 6, 5, requires_grad=True)
    out = rvq.train()(x)
    (out.quantized.pow(2).sum() + out.loss).backward()
    for name, p in rvq.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name  # in_proj, out_proj, codebooks
    assert x.grad.abs().sum() > 0


def test_projection_forward_value_is_the_decoded_codes_and_stage_inputs_give_the_same_codes():
    torch.manual_seed(1)
    rvq = ResidualVectorQuantizer(num_quantizers=3, codebook_size=16, codebook_dim=6, projection_dim=3).eval()
    x = torch.randn(2, 6, 7)
    out = rvq(x)
    torch.testing.assert_close(out.quantized, rvq.decode(out.codes))
    for stage in range(3):
        r = rvq.stage_inputs(x, stage)
        assert r.shape == (14, 3)
        codes = nearest_codes(r, rvq.layers[stage].lookup_codebook(), cosine=False)
        assert torch.equal(codes, out.codes[stage].reshape(-1))


def test_projection_dim_zero_is_the_unprojected_quantizer():
    """The knob reaches the model: 0 builds no projection and the same codes as before."""
    torch.manual_seed(2)
    plain = ResidualVectorQuantizer(num_quantizers=2, codebook_size=8, codebook_dim=4)
    torch.manual_seed(2)
    zero = ResidualVectorQuantizer(num_quantizers=2, codebook_size=8, codebook_dim=4, projection_dim=0)
    assert zero.in_projs is None
    x = torch.randn(1, 4, 9)
    assert all(torch.equal(a, b) for a, b in zip(plain.eval()(x).codes, zero.eval()(x).codes))


# --- vector-quantize-pytorch cross-check ------------------------------------------------------

EMA = dict(num_quantizers=3, codebook_size=16, codebook_dim=4, codebook_update="ema", ema_decay=0.9)


def twins(**extra):
    """Our RVQ and the library's with the same codebooks."""
    torch.manual_seed(3)
    ours = ResidualVectorQuantizer(**EMA, **extra)
    theirs = build_rvq({**EMA, **extra, "implementation": "vector_quantize_pytorch"})
    for mine, layer in zip(ours.layers, theirs.layers):
        layer.codebook = mine.codebook.detach().clone()
        layer._codebook.embed_avg.copy_(mine.embed_sum.unsqueeze(0))
        layer._codebook.cluster_size.copy_(mine.cluster_size.unsqueeze(0))
    return ours, theirs


@needs_library
def test_library_gives_the_same_codes_and_output_for_the_same_codebooks():
    ours, theirs = twins()
    x = torch.randn(2, 4, 11)
    a, b = ours.eval()(x), theirs.eval()(x)
    for stage in range(3):
        assert torch.equal(a.codes[stage], b.codes[stage]), stage
    torch.testing.assert_close(a.quantized, b.quantized)
    torch.testing.assert_close(theirs.decode(b.codes), b.quantized)


@needs_library
def test_library_with_every_stage_is_residualvq_forward():
    _, theirs = twins()
    x = torch.randn(2, 4, 11)
    ours = theirs.eval()(x)
    quantized, indices, _ = theirs.rvq.eval()(x.transpose(1, 2))
    torch.testing.assert_close(ours.quantized, quantized.transpose(1, 2))
    assert torch.equal(torch.stack(ours.codes, dim=-1), indices)


@needs_library
def test_library_ema_step_moves_the_codebook_as_ours_does():
    """One training step of both EMA quantizers (no k-means, no dead codes) on the same valid
    frames: the same Laplace-smoothed EMA, so the same codebooks after it."""
    ours, theirs = twins()
    x = torch.randn(2, 4, 11)
    valid = torch.ones(2, 11, dtype=torch.bool)
    valid[:, :2] = False
    a, b = ours.train()(x, 1, valid), theirs.train()(x, 1, valid)
    assert torch.equal(a.codes[0][valid], b.codes[0][valid])
    torch.testing.assert_close(ours.layers[0].codebook, theirs.layers[0].codebook, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours.layers[0].codebook, twins()[0].layers[0].codebook)  # it did move


@needs_library
def test_library_relative_dead_code_threshold_redraws_unused_codes():
    """Our relative threshold in the library's absolute units: 0.4 x (22 frames / 16 codes).
    The library judges after this batch's EMA update, so only codes this batch left below
    the threshold are redrawn; they restart at the expected count, 22 / 16."""
    _, theirs = twins(dead_code_threshold=0.4)
    before = theirs.layers[0].codebook.clone()
    theirs.layers[0]._codebook.cluster_size.zero_()  # every code unused so far
    theirs.train()(torch.randn(2, 4, 11), 1)
    usage = theirs.layers[0]._codebook.cluster_size[0]
    redrawn = torch.isclose(usage, torch.tensor(22 / 16))
    assert int(redrawn.sum()) >= 8
    assert (usage[~redrawn] >= 0.4 * 22 / 16).all()  # the kept codes are above the threshold
    assert (theirs.layers[0].codebook[redrawn] != before[redrawn]).any(dim=-1).all()


@needs_library
def test_library_multi_batch_kmeans_initialisation_goes_through_the_library():
    _, theirs = twins(kmeans_init=True)
    assert theirs.pending_kmeans(0)
    theirs.init_stage_(0, torch.randn(64, 4), frames_per_step=16)
    assert not theirs.pending_kmeans(0)
    assert float(theirs.layers[0]._codebook.cluster_size.sum()) == pytest.approx(16.0)


def test_the_library_arm_is_reported_unavailable_when_the_package_is_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "vector_quantize_pytorch", None)  # import raises ImportError
    cfg = {**EMA, "implementation": "vector_quantize_pytorch"}
    assert not library_available()
    assert "pip install 'vector-quantize-pytorch" in unavailable_reason(cfg)
    with pytest.raises(ImportError, match="vector-quantize-pytorch"):
        build_rvq(cfg)
    assert unavailable_reason({**EMA, "implementation": "native"}) is None
    assert isinstance(build_rvq({**EMA}), ResidualVectorQuantizer)


def test_settings_the_library_cannot_reproduce_are_refused():
    if not library_available():
        pytest.skip("vector-quantize-pytorch is not installed")
    with pytest.raises(ValueError, match="codebook_update: ema"):
        build_rvq({**EMA, "codebook_update": "gradient", "implementation": "vector_quantize_pytorch"})
    with pytest.raises(ValueError, match="projection_dim"):
        build_rvq({**EMA, "projection_dim": 2, "implementation": "vector_quantize_pytorch"})
    with pytest.raises(ValueError, match="rotation_stage"):
        build_rvq({**EMA, "straight_through": "rotation", "implementation": "vector_quantize_pytorch"})


# --- rotation trick (straight_through: rotation) ---------------------------------------------


def test_rotation_trick_is_q_forward_and_the_rotation_backward():
    """Forward: exactly the code. Backward: (s R)^T g, with R mapping x's direction onto q's;
    the straight-through estimator would pass g unchanged (the input on which it must differ)."""
    from streamvc_rvq.quantization.rvq import rotation_trick

    torch.manual_seed(0)
    x = torch.randn(5, 4, requires_grad=True)
    q = torch.randn(5, 4)
    g = torch.randn(5, 4)
    out = rotation_trick(x, q)
    torch.testing.assert_close(out, q)
    out.backward(g)
    for i in range(5):
        u, v = x[i].detach() / x[i].detach().norm(), q[i] / q[i].norm()
        w = (u + v) / (u + v).norm()
        R = torch.eye(4) - 2 * torch.outer(w, w) + 2 * torch.outer(v, u)
        torch.testing.assert_close(R @ u, v)  # a rotation onto q's direction
        torch.testing.assert_close(R.T @ R, torch.eye(4), atol=1e-5, rtol=0)  # orthogonal
        s = q[i].norm() / x[i].detach().norm()
        torch.testing.assert_close(x.grad[i], s * R.T @ g[i], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(x.grad, g, atol=1e-2)
    # opposite directions (u = -v): still a map onto q
    x2 = torch.tensor([[1.0, 0.0]], requires_grad=True)
    torch.testing.assert_close(rotation_trick(x2, torch.tensor([[-2.0, 0.0]])), torch.tensor([[-2.0, 0.0]]))


@pytest.mark.parametrize("projection_dim", [0, 3])
def test_rotation_rvq_has_the_same_codes_and_value_but_another_input_gradient(projection_dim):
    torch.manual_seed(2)
    x = torch.randn(2, 6, 7)
    grads, values = {}, {}
    for mode in ("identity", "rotation"):
        torch.manual_seed(3)
        rvq = ResidualVectorQuantizer(num_quantizers=2, codebook_size=16, codebook_dim=6,
                                      projection_dim=projection_dim, straight_through=mode).train()
        xi = x.clone().requires_grad_(True)
        out = rvq(xi)
        out.quantized.pow(3).sum().backward()
        grads[mode], values[mode] = xi.grad, out.quantized.detach()
    torch.testing.assert_close(values["identity"], values["rotation"])
    assert (grads["identity"] - grads["rotation"]).abs().max() > 1e-3


def _input_gradient(rvq, x):
    xi = x.clone().requires_grad_(True)
    out = rvq(xi)
    out.quantized.pow(3).sum().backward()
    return xi.grad, out.quantized.detach()


def test_per_stage_rotation_rotates_each_stage_from_its_residual_to_its_code():
    """``rotation_stage``: the input's gradient is the sum over stages of (s_i R_i)^T g, each
    rotation taken from that stage's residual to its code; the whole-stack rotation takes one
    from the input to the summed codes (the input on which the two must differ)."""
    from streamvc_rvq.quantization.rvq import rotation_trick

    torch.manual_seed(2)
    x = torch.randn(2, 6, 7)
    results = {}
    for mode in ("identity", "rotation", "rotation_stage"):
        torch.manual_seed(3)
        rvq = ResidualVectorQuantizer(num_quantizers=3, codebook_size=8, codebook_dim=6, straight_through=mode).eval()
        results[mode] = _input_gradient(rvq, x)
    torch.testing.assert_close(results["rotation_stage"][1], results["identity"][1])
    # by hand: the stages' residuals and codes, each rotation's backward applied to g = 3 q^2
    flat = x.transpose(1, 2).reshape(-1, 6)
    g = 3 * results["identity"][1].transpose(1, 2).reshape(-1, 6) ** 2
    expected, residual = torch.zeros_like(flat), flat
    for layer in rvq.layers:
        e = layer.lookup_codebook()[nearest_codes(residual, layer.lookup_codebook(), cosine=False)].detach()
        r = residual.clone().requires_grad_(True)
        rotation_trick(r, e).backward(g)
        expected += r.grad
        residual = residual - e
    torch.testing.assert_close(results["rotation_stage"][0].transpose(1, 2).reshape(-1, 6), expected,
                               atol=1e-5, rtol=1e-5)
    assert (results["rotation_stage"][0] - results["rotation"][0]).abs().max() > 1e-2


@needs_library
def test_per_stage_rotation_gives_the_library_rotation_tricks_gradient():
    torch.manual_seed(2)
    x = torch.randn(2, 4, 9)
    ours, theirs = twins(straight_through="rotation_stage")
    grad_ours, value_ours = _input_gradient(ours.train(), x)  # the library rotates only when training
    grad_theirs, value_theirs = _input_gradient(theirs.train(), x)
    torch.testing.assert_close(value_ours, value_theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_ours, grad_theirs, atol=1e-4, rtol=1e-4)


def test_straight_through_mode_is_checked():
    with pytest.raises(ValueError, match="straight_through"):
        ResidualVectorQuantizer(num_quantizers=1, codebook_size=4, codebook_dim=2, straight_through="gumbel")


# --- SimVQ (codebook_update: simvq) ------------------------------------------------------------


def test_simvq_moves_every_code_while_a_gradient_codebook_moves_only_the_chosen():
    """The input on which the plain codebook fails: frames that pick 2 of 64 codes. Its codebook
    term reaches those 2 rows only; SimVQ's reaches the shared map, so all 64 codes move."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 1).expand(1, 4, 40).contiguous() + 0.01 * torch.randn(1, 4, 40)
    moved = {}
    for update in ("gradient", "simvq"):
        torch.manual_seed(1)
        rvq = ResidualVectorQuantizer(num_quantizers=1, codebook_size=64, codebook_dim=4,
                                      codebook_update=update).train()
        before = rvq.layers[0].lookup_codebook().detach().clone()
        out = rvq(x)
        out.loss.backward()
        with torch.no_grad():
            for p in rvq.parameters():
                p -= 0.1 * p.grad
        delta = (rvq.layers[0].lookup_codebook().detach() - before).norm(dim=-1)
        moved[update] = int((delta > 1e-6).sum())
        assert len(out.codes[0].unique()) <= 2
    assert moved["gradient"] <= 2 and moved["simvq"] == 64
    layer = ResidualVectorQuantizer(num_quantizers=1, codebook_size=8, codebook_dim=4, codebook_update="simvq").layers[0]
    assert not isinstance(layer.codebook, torch.nn.Parameter) and layer.transform.weight.requires_grad


def test_simvq_starts_at_the_base_codebooks_scale():
    """The arm changes how codes learn, not their starting scale: its initial codes are the
    gradient codebook's N(0, 1) (nn.Linear's default map would give std ~0.58)."""
    for size, dim in ((1024, 32), (32, 8)):
        torch.manual_seed(0)
        simvq = ResidualVectorQuantizer(num_quantizers=2, codebook_size=size, codebook_dim=dim, codebook_update="simvq")
        torch.manual_seed(0)
        base = ResidualVectorQuantizer(num_quantizers=2, codebook_size=size, codebook_dim=dim)
        for layer in simvq.layers:
            std = float(layer.lookup_codebook().detach().std())
            assert 0.8 <= std <= 1.25, std
        # the first stage's codes are the very base codebook (later stages draw after the map's init)
        assert torch.equal(simvq.layers[0].lookup_codebook().detach(), base.layers[0].lookup_codebook().detach())


def test_simvq_refuses_writes_into_its_frozen_base():
    for bad in ({"kmeans_init": True}, {"dead_code_threshold": 0.4}):
        with pytest.raises(ValueError, match="frozen"):
            ResidualVectorQuantizer(num_quantizers=1, codebook_size=8, codebook_dim=4, codebook_update="simvq", **bad)


# --- residual FSQ (implementation: fsq) --------------------------------------------------------


def _fsq(**kw):
    settings = {"num_quantizers": 2, "codebook_size": 60, "codebook_dim": 6, "implementation": "fsq",
                "fsq_levels": [5, 4, 3], **kw}
    return build_rvq(settings)


def test_fsq_codes_round_trip_and_cover_the_grid_on_uniform_input():
    """No codebook to collapse: spread inputs use (nearly) every grid point of stage 0, and
    codes decode to the forward value; a constant input uses one code (where usage must fail)."""
    from streamvc_rvq.quantization import fsq

    levels = torch.tensor([5.0, 4.0, 3.0])
    every = torch.arange(60)
    torch.testing.assert_close(fsq.codes_of(fsq.grid_of(every, levels), levels), every)
    torch.manual_seed(0)
    rvq = _fsq().eval()
    with torch.no_grad():  # make project_in the identity on the first 3 channels, scaled wide
        rvq.project_in.weight.zero_()
        rvq.project_in.weight[:, :3] = 3.0 * torch.eye(3)
        rvq.project_in.bias.zero_()
    spread = torch.randn(4, 6, 500)
    out = rvq(spread)
    assert len(out.codes) == 2 and out.codes[0].max() < 60
    assert float(out.stats[0]["usage"]) > 0.9
    torch.testing.assert_close(out.quantized, rvq.decode(out.codes), atol=1e-5, rtol=1e-5)
    constant = rvq(torch.ones(1, 6, 50))
    assert float(constant.stats[0]["usage"]) == pytest.approx(1 / 60)
    assert rvq.input_space_codebook(0).shape == (60, 6)


def test_fsq_passes_gradients_straight_through_to_its_input():
    rvq = _fsq().train()
    x = torch.randn(2, 6, 9, requires_grad=True)
    out = rvq(x)
    out.quantized.sum().backward()
    assert x.grad.abs().sum() > 0 and float(out.loss) == 0.0
    assert rvq.project_in.weight.grad.abs().sum() > 0 and rvq.project_out.weight.grad.abs().sum() > 0


def test_fsq_refuses_codebook_settings_and_a_wrong_size():
    with pytest.raises(ValueError, match="product of fsq_levels"):
        _fsq(codebook_size=64)
    with pytest.raises(ValueError, match="does not apply to FSQ"):
        _fsq(dead_code_threshold=0.4)


# --- affine re-parameterisation (affine_codebook) ----------------------------------------------


def test_affine_codebook_moves_unchosen_codes_towards_shifted_inputs():
    """Inputs 5 units off the N(0, 1) codebook pick few codes; the plain codebook term moves only
    those, the shared shift moves every code towards the inputs."""
    torch.manual_seed(0)
    x = 5.0 + 0.1 * torch.randn(1, 4, 64)
    mean_distance = {}
    for affine in (False, True):
        torch.manual_seed(1)
        rvq = ResidualVectorQuantizer(num_quantizers=1, codebook_size=32, codebook_dim=4, affine_codebook=affine).train()
        before = rvq.layers[0].lookup_codebook().detach().clone()
        opt = torch.optim.SGD(rvq.parameters(), lr=0.5)
        for _ in range(20):
            opt.zero_grad()
            rvq(x).loss.backward()
            opt.step()
        after = rvq.layers[0].lookup_codebook().detach()
        unchosen = (after - before).norm(dim=-1) < 1e-6
        mean_distance[affine] = float((after - 5.0).norm(dim=-1).mean())
        assert bool(unchosen.any()) != affine  # without affine some codes never moved
    assert mean_distance[True] < mean_distance[False] - 1.0  # the whole codebook came a unit or more closer


def test_affine_codebook_stores_kmeans_and_redrawn_vectors_through_the_inverse_map():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(num_quantizers=1, codebook_size=8, codebook_dim=3, affine_codebook=True,
                                  dead_code_threshold=0.5)
    layer = rvq.layers[0]
    with torch.no_grad():
        layer.affine["scale"].fill_(2.0)
        layer.affine["shift"].fill_(-1.0)
    samples = torch.randn(64, 3)
    layer.init_codebook_(samples)
    codes = nearest_codes(samples, layer.lookup_codebook(), cosine=False)
    means = torch.stack([samples[codes == k].mean(0) if bool((codes == k).any()) else layer.lookup_codebook()[k]
                         for k in range(8)])
    assert (layer.lookup_codebook() - means).abs().max() < 1.0  # k-means centres, not 2x - 1 of them
    layer.cluster_size.zero_()
    layer.expire_codes_(samples)
    looked_up = layer.lookup_codebook().detach()
    assert all(bool((samples - row).norm(dim=-1).min() < 1e-5) for row in looked_up)  # each is a drawn sample
    with pytest.raises(ValueError, match="affine_codebook needs"):
        ResidualVectorQuantizer(codebook_update="ema", affine_codebook=True)
