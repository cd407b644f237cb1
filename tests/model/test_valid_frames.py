"""The valid-frames rule: the warm-up is exactly the frames whose receptive field reaches the padding."""

from __future__ import annotations

import pytest
import torch

from .conftest import HOP, tiny_config
from streamvc_rvq.model.streamvc import StreamVC
from streamvc_rvq.model.valid_frames import valid_mask, warmup_frames
from streamvc_rvq.modules.conv import receptive_field
from streamvc_rvq.quantization.normalization import CAUSAL_WARMUP_FRAMES


def test_receptive_field_matches_an_impulse_response():
    # float64: the impulse's effect through the field's edge tap is ~5e-17 here, under float32's rounding
    model = StreamVC(tiny_config()).double()
    encoder = model.content_encoder.encoder
    field = receptive_field(encoder)
    x = torch.zeros(1, 1, 40 * HOP, dtype=torch.float64)
    base = encoder(x)
    last = 20 * HOP - 1  # the last sample of frame 19
    for offset, seen in ((field - 1, True), (field, False)):
        y = x.clone()
        y[..., last - offset] = 1.0
        changed = not torch.allclose(encoder(y)[..., 19], base[..., 19], atol=0, rtol=0)
        assert changed is seen, (offset, field)


@pytest.mark.parametrize("norm", ["utterance", "causal", "none"])
def test_warmup_frames_are_the_frames_that_see_the_start_padding(norm):
    # float64 (a test on the CPU only): the first sample's effect on the edge frame w - 1 passes
    # through the outermost kernel taps and can be ~1e-8, which float32 may round to 0
    model = StreamVC(tiny_config(pre_rvq_norm=norm, pitch={"whitening": "running"})).double().eval()
    w = model.content_warmup_frames
    x = torch.randn(1, 40 * HOP, dtype=torch.float64) * 0.1
    y = x.clone()
    y[0, 0] += 1.0  # the first real sample stands in for "what lies before the start"
    pre = lambda s: model.decoder.pre_rvq(model.content_encoder(s)[0])  # noqa: E731
    diff = (pre(x) - pre(y)).abs().amax(dim=1)[0]
    assert diff[w - 1] > 0 and (diff[w:] == 0).all()
    assert model.warmup_frames == w + (CAUSAL_WARMUP_FRAMES if norm == "causal" else 0)


def test_paper_size_warmup_is_18_frames():
    # content encoder 5314 samples + the pre-RVQ encoder's 2 frames of history
    model = StreamVC({})
    assert receptive_field(model.content_encoder.encoder) == 5314
    assert model.content_warmup_frames == warmup_frames(5314 + 2 * HOP, HOP) == 18


def test_valid_mask_marks_warmup_and_padding():
    mask = valid_mask(10, 3, torch.tensor([10, 6]))
    assert mask.tolist() == [[False] * 3 + [True] * 7, [False] * 3 + [True] * 3 + [False] * 4]
    assert valid_mask(5, 2, batch=2).shape == (2, 5)


def test_invalid_frames_change_no_statistic_and_no_rvq_loss():
    model = StreamVC(tiny_config()).eval()
    x = torch.randn(1, 60 * HOP) * 0.1
    out = model(x, x, 1)
    assert out.valid[0, : model.warmup_frames].eq(False).all() and out.valid[0, model.warmup_frames :].all()
    # replacing the codes' inputs at invalid frames by anything leaves loss and counts alone
    z = out.rvq_input.clone()
    z2 = z.clone()
    z2[..., : model.warmup_frames] = 100.0
    a = model.decoder.rvq(z, 1, out.valid)
    b = model.decoder.rvq(z2, 1, out.valid)
    assert torch.equal(a.loss, b.loss) and a.stats[0] == b.stats[0]
