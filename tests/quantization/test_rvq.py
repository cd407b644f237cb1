"""Residual vector quantizer: losses, gradients, codebook updates, progressive stages."""

import pytest
import torch

from streamvc_rvq.config import load_schema
from streamvc_rvq.quantization.rvq import (
    ResidualVectorQuantizer,
    RVQOutput,
    RVQSettings,
    active_quantizers,
    kmeans,
    laplace_smoothing,
    sample_vectors,
)


def frames(*rows):
    """Hand-written frames (each a D-vector) as one batch item: [1, D, T]."""
    return torch.tensor(rows, dtype=torch.float32).t().unsqueeze(0)


def set_codebook(rvq, stage, rows):
    rvq.layers[stage].codebook.data.copy_(torch.tensor(rows, dtype=torch.float32))


# --- progressive schedule ---------------------------------------------------------------


@pytest.mark.parametrize(
    "step, expected",
    [(0, 1), (1999, 1), (2000, 2), (2001, 2), (13999, 7), (14000, 8), (10**6, 8)],
)
def test_active_quantizers_boundaries(step, expected):
    assert active_quantizers(step, num_quantizers=8, progressive_steps=2000) == expected


def test_active_quantizers_zero_interval_means_all():
    assert active_quantizers(0, 8, 0) == 8
    assert active_quantizers(12345, 3, 0) == 3


# --- construction -------------------------------------------------------------------------


def schema_rvq_defaults():
    props = load_schema()["properties"]["model"]["properties"]["rvq"]["properties"]
    return {key: spec["default"] for key, spec in props.items()}


def test_settings_are_exactly_the_schema_keys_with_its_defaults():
    cfg = schema_rvq_defaults()
    assert RVQSettings(**cfg) == RVQSettings()  # same keys, same defaults
    rvq = ResidualVectorQuantizer(**cfg)
    assert rvq.settings == RVQSettings(**cfg)
    assert len(rvq.layers) == cfg["num_quantizers"]
    assert rvq.layers[0].codebook.shape == (cfg["codebook_size"], cfg["codebook_dim"])
    with pytest.raises(TypeError):
        ResidualVectorQuantizer(**{**cfg, "not_a_key": 1})


def test_bad_choices_raise():
    with pytest.raises(ValueError):
        ResidualVectorQuantizer(distance="manhattan")
    with pytest.raises(ValueError):
        ResidualVectorQuantizer(codebook_update="adam")
    rvq = ResidualVectorQuantizer(num_quantizers=2, codebook_size=4, codebook_dim=2)
    with pytest.raises(ValueError):
        rvq(torch.randn(1, 2, 3), num_active=3)
    with pytest.raises(ValueError):
        rvq(torch.randn(1, 3, 3))


# --- losses match the formulas ------------------------------------------------------------


def test_losses_codes_and_output_match_hand_computation():
    beta = 0.5
    rvq = ResidualVectorQuantizer(num_quantizers=2, codebook_size=3, codebook_dim=2, commitment_cost=beta)
    set_codebook(rvq, 0, [[0, 0], [2, 0], [0, 2]])
    set_codebook(rvq, 1, [[0.25, 0], [0, 0.25], [-0.25, 0.25]])
    x = frames([1.8, 0.1], [0.2, 2.3], [-0.3, 0.2])
    out = rvq.eval()(x)
    assert isinstance(out, RVQOutput)

    # Stage 0: nearest codes 1, 2, 0; residuals (-0.2, 0.1), (0.2, 0.3), (-0.3, 0.2).
    # Stage 1 on those residuals: codes 2, 1, 2; residuals (0.05,-0.15), (0.2,0.05), (-0.05,-0.05).
    assert out.codes[0].tolist() == [[1, 2, 0]]
    assert out.codes[1].tolist() == [[2, 1, 2]]
    sq0 = (0.2**2 + 0.1**2 + 0.2**2 + 0.3**2 + 0.3**2 + 0.2**2) / 6  # ||r0 - e0||^2, mean
    sq1 = (0.05**2 + 0.15**2 + 0.2**2 + 0.05**2 + 0.05**2 + 0.05**2) / 6  # ||r1 - e1||^2, mean
    torch.testing.assert_close(out.codebook_losses[0], torch.tensor(sq0))
    torch.testing.assert_close(out.codebook_losses[1], torch.tensor(sq1))
    torch.testing.assert_close(out.commitment_losses[0], torch.tensor(beta * sq0))
    torch.testing.assert_close(out.commitment_losses[1], torch.tensor(beta * sq1))
    torch.testing.assert_close(out.loss, torch.tensor((1 + beta) * (sq0 + sq1)))
    # quantized = e0 + e1 per frame
    torch.testing.assert_close(out.quantized, frames([1.75, 0.25], [0.0, 2.25], [-0.25, 0.25]))
    torch.testing.assert_close(rvq.decode(out.codes), out.quantized)

    one = rvq(x, num_active=1)
    assert len(one.codes) == len(one.codebook_losses) == len(one.stats) == 1
    torch.testing.assert_close(one.quantized, frames([2.0, 0.0], [0.0, 2.0], [0.0, 0.0]))


def test_loss_gradients_reach_the_right_tensors():
    """Gradient mode: the codebook term moves only the codebook, the commitment term only
    the encoder side: d/dx of the loss is beta * 2 (r - e) / numel."""
    beta = 0.5
    rvq = ResidualVectorQuantizer(num_quantizers=1, codebook_size=3, codebook_dim=2, commitment_cost=beta)
    set_codebook(rvq, 0, [[0, 0], [2, 0], [0, 2]])
    x = frames([1.8, 0.1], [0.2, 2.3], [-0.3, 0.2]).requires_grad_(True)
    rvq.eval()(x).loss.backward()
    e = frames([2, 0], [0, 2], [0, 0])
    torch.testing.assert_close(x.grad, beta * 2 * (x.detach() - e) / 6)
    grad_codebook = rvq.layers[0].codebook.grad
    expected = torch.zeros(3, 2)
    expected[[1, 2, 0]] = 2 * (e - x.detach())[0].t() / 6
    torch.testing.assert_close(grad_codebook, expected)


@pytest.mark.parametrize("update", ["gradient", "ema"])
def test_straight_through_gradient_is_identity(update):
    rvq = ResidualVectorQuantizer(num_quantizers=3, codebook_size=16, codebook_dim=4, codebook_update=update)
    x = torch.randn(2, 4, 5)
    jac = torch.autograd.functional.jacobian(lambda inp: rvq.eval()(inp).quantized, x)
    torch.testing.assert_close(jac.reshape(x.numel(), x.numel()), torch.eye(x.numel()))


# --- EMA codebooks ------------------------------------------------------------------------


def test_ema_codebook_is_a_buffer_without_gradient():
    rvq = ResidualVectorQuantizer(num_quantizers=2, codebook_size=8, codebook_dim=4, codebook_update="ema")
    assert list(rvq.parameters()) == []
    for layer in rvq.layers:
        assert not layer.codebook.requires_grad
        assert "codebook" in dict(layer.named_buffers())
    x = torch.randn(2, 4, 6, requires_grad=True)
    out = rvq.train()(x)
    assert all(float(t) == 0.0 for t in out.codebook_losses)
    (out.loss + out.quantized.square().sum()).backward()
    assert all(layer.codebook.grad is None for layer in rvq.layers)
    assert x.grad is not None


def test_ema_update_matches_hand_computation():
    decay, eps = 0.9, 0.1
    rvq = ResidualVectorQuantizer(
        num_quantizers=1, codebook_size=2, codebook_dim=2, codebook_update="ema", ema_decay=decay, laplace_eps=eps
    )
    vq = rvq.layers[0]
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [3.0, 3.0]]))
    vq.embed_sum.copy_(vq.codebook)
    vq.cluster_size.fill_(1.0)
    x = frames([0.5, 0.0], [0.0, 1.0], [2.5, 3.5])  # codes 0, 0, 1

    out = rvq.train()(x)
    assert out.codes[0].tolist() == [[0, 0, 1]]
    # this batch was quantized with the old codebook
    torch.testing.assert_close(out.quantized, frames([0, 0], [0, 0], [3, 3]))
    # counts [2, 1]; sums [[0.5, 1.0], [2.5, 3.5]]
    cs = [0.9 * 1 + 0.1 * 2, 0.9 * 1 + 0.1 * 1]  # [1.1, 1.0]
    es = [[0.9 * 0 + 0.1 * 0.5, 0.9 * 0 + 0.1 * 1.0], [0.9 * 3 + 0.1 * 2.5, 0.9 * 3 + 0.1 * 3.5]]
    n = cs[0] + cs[1]
    n_k = [(c + eps) / (n + 2 * eps) * n for c in cs]
    expected = [[es[k][d] / n_k[k] for d in range(2)] for k in range(2)]
    torch.testing.assert_close(vq.cluster_size, torch.tensor(cs))
    torch.testing.assert_close(vq.embed_sum, torch.tensor(es))
    torch.testing.assert_close(vq.codebook, torch.tensor(expected))
    torch.testing.assert_close(laplace_smoothing(torch.tensor(cs), eps), torch.tensor(n_k))

    before = vq.codebook.clone()
    rvq.eval()(x)
    torch.testing.assert_close(vq.codebook, before)  # no update outside training


# --- dead codes ---------------------------------------------------------------------------


def test_dead_codes_are_replaced_by_current_residuals():
    # threshold relative to the expected assignments: 12 frames / 8 codes = 1.5 per code,
    # so 0.5 x 1.5 = 0.75; the usage EMA starts at 1 (alive)
    rvq = ResidualVectorQuantizer(
        num_quantizers=1, codebook_size=8, codebook_dim=4, dead_code_threshold=0.5, ema_decay=0.5
    )
    vq = rvq.layers[0]
    vq.codebook.data.copy_(torch.full((8, 4), 100.0))
    vq.codebook.data[0] = 0.0  # the only reachable code
    rvq.train()

    first = rvq(torch.randn(2, 4, 6) * 0.1)
    assert first.codes[0].unique().tolist() == [0]
    assert first.stats[0]["redrawn"] == 0.0
    # usage EMA of unused codes: 0.5 * 1 + 0.5 * 0 = 0.5 < 0.75
    assert torch.equal(vq.cluster_size[1:], torch.full((7,), 0.5))
    assert first.stats[0]["dead_codes"] == 7

    x = torch.randn(2, 4, 6)
    second = rvq(x)  # codes 1..7 expire and are re-drawn from this batch's residuals
    assert second.stats[0]["redrawn"] == 7 / 8
    vectors = x.transpose(1, 2).reshape(-1, 4)
    assert torch.equal(vq.codebook[0], torch.zeros(4))
    for row in vq.codebook[1:]:
        assert (vectors == row).all(dim=1).any(), "replaced code is not a current residual"


def test_a_redrawn_code_restarts_at_the_expected_count_and_survives_a_grace_period():
    # 4 frames for 16 codes: 0.25 expected assignments per code per step. An absolute
    # threshold of 2 (EnCodec's number) would be unreachable; relative 0.4 -> 0.1.
    rvq = ResidualVectorQuantizer(num_quantizers=1, codebook_size=16, codebook_dim=2,
                                  dead_code_threshold=0.4, ema_decay=0.9)
    vq = rvq.layers[0]
    vq.cluster_size.fill_(0.0)  # everything dead
    rvq.train()
    out = rvq(torch.randn(1, 2, 4))
    assert out.stats[0]["redrawn"] == 1.0
    unused = vq.cluster_size < 0.3  # not chosen in this batch: 0.9 x 0.25 = 0.225 (chosen: >= 0.325)
    assert unused.any()
    torch.testing.assert_close(vq.cluster_size[unused], torch.full((int(unused.sum()),), 0.225))
    # unused codes fall below 0.1 only after ln(0.1/0.225)/ln(0.9) ~ 7.7 more steps without a frame
    redrawn = [rvq(torch.full((1, 2, 4), 1e3)).stats[0]["redrawn"] for _ in range(9)]
    assert redrawn[:8] == [0.0] * 8
    assert redrawn[8] > 0.5  # ... and then they are redrawn


def test_dead_code_replacement_in_ema_mode_and_exact_resume():
    kwargs = dict(
        num_quantizers=2, codebook_size=16, codebook_dim=4, codebook_update="ema", dead_code_threshold=2.0
    )  # 16 frames / 16 codes: threshold 2 x 1 expected > the initial usage EMA of 1
    a = ResidualVectorQuantizer(**kwargs)
    for layer in a.layers:
        layer.codebook.add_(50.0)
        layer.embed_sum.copy_(layer.codebook)
    b = ResidualVectorQuantizer(**kwargs)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 4, 8)

    state = torch.get_rng_state()
    out = a.train()(x)
    torch.set_rng_state(state)
    b.train()(x)
    for la, lb in zip(a.layers, b.layers):
        assert torch.equal(la.codebook, lb.codebook)
    # every code started below the threshold (usage EMA 1 < 2): all re-drawn near the data
    assert a.layers[0].codebook.abs().max() < 10
    assert out.stats[0]["dead_codes"] <= 16


def test_sample_vectors_draws_rows():
    samples = torch.arange(12.0).reshape(6, 2)
    for num in (4, 10):
        drawn = sample_vectors(samples, num)
        assert drawn.shape == (num, 2)
        assert all((samples == row).all(dim=1).any() for row in drawn)
    assert len({tuple(r.tolist()) for r in sample_vectors(samples, 6)}) == 6  # no repeats


# --- k-means init -------------------------------------------------------------------------


def blobs(centres, per, noise=0.01):
    centres = torch.tensor(centres, dtype=torch.float32)
    pts = centres.repeat_interleave(per, 0)
    return pts + noise * torch.randn_like(pts)


CENTRES = [[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]]


def test_kmeans_finds_separated_clusters():
    # 32 random seeds over 4 blobs: every blob gets one (Lloyd's cannot move a seed across blobs)
    means, counts = kmeans(blobs(CENTRES, 25), num_clusters=32, num_iters=10)
    assert counts.sum() == 100
    centres = CENTRES
    for c in torch.tensor(centres):
        assert (means - c).norm(dim=1).min() < 0.1


def test_kmeans_init_sets_codebook_on_first_training_forward():
    centres = CENTRES
    x = blobs(centres, 16)[torch.randperm(64)].reshape(2, 32, 2).transpose(1, 2)  # [B=2, D=2, T=32]
    rvq = ResidualVectorQuantizer(num_quantizers=1, codebook_size=32, codebook_dim=2, kmeans_init=True)
    vq = rvq.layers[0]
    rvq.eval()(x)
    assert not bool(vq.initialized)  # no initialisation outside training
    out = rvq.train()(x)
    assert bool(vq.initialized)
    for c in torch.tensor(centres):
        assert (vq.codebook - c).norm(dim=1).min() < 0.1
    assert out.stats[0]["usage"] >= 4 / 32
    # the codebook now sits on the data: every frame is within noise of its code
    assert (out.quantized - x).abs().max() < 0.1


# --- progressive: inactive stages ---------------------------------------------------------


def test_inactive_stages_do_not_run_and_get_no_gradient():
    rvq = ResidualVectorQuantizer(num_quantizers=4, codebook_size=16, codebook_dim=4, dead_code_threshold=1.0)
    calls = [0] * 4
    for i, layer in enumerate(rvq.layers):
        layer.register_forward_pre_hook(lambda mod, args, i=i: calls.__setitem__(i, calls[i] + 1))
    untouched = rvq.layers[2].cluster_size.clone()
    x = torch.randn(2, 4, 8, requires_grad=True)
    out = rvq.train()(x, num_active=2)
    assert calls == [1, 1, 0, 0]
    assert len(out.codes) == len(out.codebook_losses) == len(out.commitment_losses) == len(out.stats) == 2
    (out.loss + out.quantized.square().sum()).backward()
    assert rvq.layers[0].codebook.grad is not None
    assert rvq.layers[1].codebook.grad is not None
    assert rvq.layers[2].codebook.grad is None
    assert rvq.layers[3].codebook.grad is None
    assert torch.equal(rvq.layers[2].cluster_size, untouched)


# --- cosine distance ----------------------------------------------------------------------


def test_cosine_codes_ignore_input_scale():
    rvq = ResidualVectorQuantizer(num_quantizers=4, codebook_size=32, codebook_dim=8, distance="cosine").eval()
    x = torch.randn(2, 8, 10)
    a, b = rvq(x), rvq(7.3 * x)
    for ca, cb in zip(a.codes, b.codes):
        assert torch.equal(ca, cb)
    torch.testing.assert_close(a.quantized, b.quantized)
    torch.testing.assert_close(a.loss, b.loss)
    # stage 0's code is a unit vector (normalised space)
    single = rvq(x, num_active=1).quantized
    torch.testing.assert_close(single.norm(dim=1), torch.ones(2, 10))


# --- stats --------------------------------------------------------------------------------


def test_stats_are_0d_tensors_from_the_batch_histogram():
    """Tensors on the input's device (no sync in forward); the caller converts when it logs."""
    rvq = ResidualVectorQuantizer(num_quantizers=1, codebook_size=4, codebook_dim=2)
    set_codebook(rvq, 0, [[0, 0], [2, 0], [0, 2], [9, 9]])
    x = frames([0.1, 0], [2, 0.1], [1.9, 0], [0, 2.1])  # codes 0, 1, 1, 2
    s = rvq.eval()(x).stats[0]
    assert set(s) == {"perplexity", "usage", "top_code_share", "dead_codes", "redrawn"}
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in s.values())
    assert s["perplexity"].dtype == torch.float32 and s["dead_codes"].dtype == torch.int64
    p = torch.tensor([0.25, 0.5, 0.25])
    assert s["perplexity"].item() == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-6)
    assert s["usage"].item() == 0.75
    assert s["top_code_share"].item() == 0.5
    assert s["dead_codes"].item() == 1
