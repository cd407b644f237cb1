"""Per-step stage statistics: 0-d tensors with the same numbers as the whole-set functions."""

import math

import torch

from streamvc_rvq.quantization import stats


def test_stage_stats_are_the_named_functions_without_a_sync():
    counts = torch.tensor([3.0, 0.0, 1.0, 6.0, 0.0, 0.0, 2.0, 0.0])
    s = stats.stage_stats(counts, stats.dead_code_count(counts, 1.0), 3 / 8)
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in s.values())
    assert s["perplexity"].item() == stats.perplexity(counts)
    assert s["top_code_share"].item() == stats.top_code_share(counts)
    # float32 on the device; the same number as the Python one whenever float32 holds it
    # (here, and for every power-of-two codebook size)
    assert s["usage"].item() == stats.usage(counts) == 0.5
    assert s["dead_codes"].item() == stats.dead_codes(counts) == 4
    assert s["redrawn"].item() == 3 / 8


def test_stage_stats_of_an_empty_histogram_are_nan_where_undefined():
    s = stats.stage_stats(torch.zeros(4), torch.tensor(4), 0.0)
    assert math.isnan(s["perplexity"].item()) and math.isnan(s["top_code_share"].item())
    assert s["usage"].item() == 0.0 and s["dead_codes"].item() == 4
