"""The evaluation's conversions: each source encoded once, every output the one :func:`convert` gives."""

from __future__ import annotations

import torch

from streamvc_rvq.data.dataset import Utterance
from streamvc_rvq.evaluation.evaluate import Conversions
from streamvc_rvq.inference.conversion import convert
from streamvc_rvq.model.streamvc import StreamVC

from tests.model.conftest import HOP, tiny_config, voiced


def _utterance(name: str, audio: torch.Tensor) -> Utterance:
    return Utterance(name, name.split("_")[0], "heldout", audio[0], None)


def test_cached_conversions_equal_convert_and_keep_each_source_apart():
    """Outputs equal :func:`convert`'s (and the timbre-only one the model's own ``pitch_reference``) for two
    sources converted to two references in interleaved order, the first source's encoding reused: the
    failing input is a cache keyed on anything but the utterance (the second source would get the first's
    content) or a reused encoding that a decode changed."""
    model = StreamVC(tiny_config(pitch={"target": "reference"})).eval()
    # one speaker's two utterances: a cache keyed on the speaker would hand the second the first's content
    sources = [_utterance("a_0", voiced(0.5, f0=120.0)), _utterance("a_1", voiced(0.45, f0=180.0, seed=3))]
    references = [_utterance("c_0", voiced(0.4, f0=220.0, seed=1)), _utterance("d_0", voiced(0.3, f0=90.0, seed=2))]
    conversions = Conversions(model, 2, "cpu")
    for reference in references:
        for source in sources:
            assert torch.equal(conversions(source, reference), convert(model, source.audio, reference.audio, 2))
            with torch.inference_mode():
                kept = model(source.audio.unsqueeze(0), reference.audio.unsqueeze(0), 2,
                             pitch_reference=source.audio.unsqueeze(0)).audio[0]
            assert torch.equal(conversions(source, reference, keep_pitch=True), kept)
    assert conversions(sources[0], references[0]).numel() == (sources[0].audio.numel() // HOP) * HOP
    assert not torch.equal(conversions(sources[0], references[0])[:4000], conversions(sources[1], references[0])[:4000])
