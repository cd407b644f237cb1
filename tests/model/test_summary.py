"""model_summary: every component, parameter counts that add up, MACs, latency."""

from __future__ import annotations

from streamvc_rvq.model.streamvc import StreamVC
from streamvc_rvq.model.summary import model_summary, summarize

from .conftest import tiny_config

COMPONENTS = ["content encoder", "speaker encoder", "pitch (Yin)", "decoder", "quantizer"]


def test_summary_lists_every_component_and_the_latency():
    text = model_summary(tiny_config())
    for name in COMPONENTS:
        assert name in text
    assert "MMAC/s" in text and "parameters" in text
    assert "algorithmic latency: 320 samples = 20.0 ms" in text


def test_parameter_counts_add_up_and_macs_match_the_layers():
    cfg = tiny_config()
    rows, model = summarize(cfg)
    assert [r.name for r in rows] == COMPONENTS
    assert sum(r.parameters for r in rows) == sum(p.numel() for p in StreamVC(cfg).parameters())
    by_name = {r.name: r for r in rows}
    assert by_name["pitch (Yin)"].parameters == 0
    assert by_name["quantizer"].macs_per_second == 3 * 16 * 8 * 50  # stages x codes x dims x frames/s
    # first content-encoder conv alone: 1 -> 4 channels, kernel 7, at 16 kHz
    assert by_name["content encoder"].macs_per_second > 4 * 7 * 16000
    assert all(r.macs_per_second > 0 for r in rows)
