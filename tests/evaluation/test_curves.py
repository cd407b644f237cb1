"""Training-curve facts: window statistics, trends, and reading real TensorBoard event files."""

import math
import time

import pytest

from streamvc_rvq.evaluation.curves import curve_facts, read_scalars, series_facts
from streamvc_rvq.verdict.decision import decide


def line(start, stop, every, f):
    return [(s, f(s)) for s in range(start, stop + 1, every)]


def test_falling_loss_and_exact_slope():
    scalars = {"train/loss_stft": line(0, 990, 10, lambda s: 10.0 - 0.002 * s)}
    f = curve_facts(scalars, up_to_step=1000, window=10)
    facts = f["tags"]["train/loss_stft"]
    assert f["up_to_step"] == 1000 and f["window"] == 10
    assert facts["num_points"] == 100 and facts["window"] == 10
    assert facts["first"] == pytest.approx(10.0 - 0.002 * 45)  # mean of steps 0..90
    assert facts["last"] == pytest.approx(10.0 - 0.002 * 945)  # mean of steps 900..990
    assert facts["slope"] == pytest.approx(-0.002)
    assert facts["falling"] is True


def test_lower_overall_but_climbing_at_the_end_is_not_falling():
    pts = line(0, 890, 10, lambda s: 10.0 - 0.005 * s) + line(900, 990, 10, lambda s: 5.0 + 0.001 * (s - 900))
    facts = curve_facts({"train/loss_stft": pts}, 1000, 10)["tags"]["train/loss_stft"]
    assert facts["last"] < facts["first"] and facts["slope"] > 0
    assert facts["falling"] is False


def test_flat_loss_is_not_falling():
    facts = curve_facts({"train/loss_l1": line(0, 500, 10, lambda s: 0.3)}, 1000, 5)["tags"]["train/loss_l1"]
    assert facts["slope"] == pytest.approx(0.0) and facts["falling"] is False


def test_only_points_up_to_the_step_count():
    pts = line(0, 990, 10, lambda s: 10.0 - 0.002 * s) + line(1000, 2000, 10, lambda s: 100.0 + s)
    at_1k = curve_facts({"train/loss_stft": pts}, 990, 10)["tags"]["train/loss_stft"]
    assert at_1k["num_points"] == 100 and at_1k["last_step"] == 990 and at_1k["falling"] is True
    at_2k = curve_facts({"train/loss_stft": pts}, 2000, 10)["tags"]["train/loss_stft"]
    assert at_2k["falling"] is False


def test_window_is_clamped_so_windows_do_not_overlap():
    f = series_facts([(0, 4.0), (10, 3.0), (20, 2.0), (30, 1.0)], up_to_step=100, window=10)
    assert f["window"] == 2
    assert f["first"] == pytest.approx(3.5) and f["last"] == pytest.approx(1.5)


def test_too_few_points_gives_unknown_trend():
    f = curve_facts({"train/loss_stft": [(5, 3.0)], "train/rvq_perplexity_q0": [(5, 2.0)]}, 10, 10)["tags"]
    assert f["train/loss_stft"]["falling"] is None and f["train/loss_stft"]["slope"] is None
    assert f["train/rvq_perplexity_q0"]["rising"] is None
    empty = curve_facts({"train/loss_stft": [(50, 3.0)]}, 10, 10)["tags"]["train/loss_stft"]
    assert empty["num_points"] == 0 and empty["first"] is None and empty["falling"] is None


def test_non_finite_values_mean_not_falling():
    pts = line(0, 990, 10, lambda s: 10.0 - 0.002 * s)
    pts[50] = (500, math.nan)
    facts = curve_facts({"train/loss_stft": pts}, 1000, 10)["tags"]["train/loss_stft"]
    assert facts["num_nonfinite"] == 1 and math.isfinite(facts["last"])
    assert facts["falling"] is False


def test_perplexity_rising_usage_and_pre_rvq_std():
    scalars = {
        "train/rvq_perplexity_q0": line(0, 990, 10, lambda s: 1.0 + s / 100),
        "train/rvq_perplexity_q1": line(0, 990, 10, lambda s: 20.0 - s / 100),
        "train/rvq_usage_q0": line(0, 990, 10, lambda s: 0.01 + s / 1e4),
        "train/pre_rvq_std": line(0, 990, 10, lambda s: 1.0 if s >= 900 else 0.3),
        "train/num_active_quantizers": line(0, 990, 10, lambda s: 1.0),
        "train/something_else": [(0, 1.0)],
    }
    f = curve_facts(scalars, 1000, 10)["tags"]
    assert f["train/rvq_perplexity_q0"]["rising"] is True
    assert f["train/rvq_perplexity_q0"]["slope"] == pytest.approx(0.01)
    assert f["train/rvq_perplexity_q1"]["rising"] is False
    assert f["train/rvq_usage_q0"]["rising"] is True
    assert f["train/pre_rvq_std"]["last"] == pytest.approx(1.0)
    assert f["train/num_active_quantizers"]["last_value"] == 1.0
    assert "train/something_else" not in f


def test_bad_window():
    with pytest.raises(ValueError):
        series_facts([(0, 1.0)], 10, 0)


def test_read_scalars_from_summary_writer(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp_path / "tensorboard"
    w = SummaryWriter(log_dir=str(logdir))
    for step in range(0, 100, 10):
        w.add_scalar("train/loss_stft", 5.0 - step / 100, step)
        w.add_scalar("train/rvq_perplexity_q0", 1.0 + step, step)
    w.close()
    time.sleep(0.05)
    # a rebuilt segment: steps 50..90 written again, later, into a second event file
    w = SummaryWriter(log_dir=str(logdir))
    for step in range(50, 100, 10):
        w.add_scalar("train/loss_stft", 1.0 - step / 1000, step)
    w.close()

    scalars = read_scalars(logdir)
    assert set(scalars) == {"train/loss_stft", "train/rvq_perplexity_q0"}
    loss = scalars["train/loss_stft"]
    assert [s for s, _ in loss] == list(range(0, 100, 10))  # one point per step, in step order
    assert dict(loss)[40] == pytest.approx(4.6)  # untouched point of the first file
    assert dict(loss)[50] == pytest.approx(0.95)  # the LAST written value wins
    assert dict(loss)[90] == pytest.approx(0.91)
    assert scalars["train/rvq_perplexity_q0"][-1] == (90, pytest.approx(91.0))

    facts = curve_facts(scalars, 90, 3)
    assert facts["tags"]["train/loss_stft"]["falling"] is True
    assert facts["tags"]["train/rvq_perplexity_q0"]["rising"] is True


def test_read_scalars_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_scalars(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert read_scalars(tmp_path / "empty") == {}


def test_curve_facts_feed_the_verdict(tmp_path):
    """End to end on the curve: facts computed from scalars decide 1k.loss_stft_falling."""
    base = {"experiment": "x", "num_active_quantizers": 1,
            "stages": [{"index": 0, "perplexity": 12.0, "usage": 0.2, "top_code_share": 0.05}],
            "pre_rvq_std": 1.0, "validation": {"loss_stft": 3.0, "loss_l1": 0.05},
            "outputs": {"num_outputs": 2, "num_silent": 0}}
    rising = {"train/loss_stft": line(0, 1000, 10, lambda s: 2.0 + s / 1000)}
    cp = dict(base, step=1000, training_curve=curve_facts(rising, 1000, 10))
    v = decide([cp], steps=[1000], progressive_steps=2000)
    c = next(c for c in v["criteria"] if c["id"] == "1k.loss_stft_falling")
    assert c["passed"] is False and v["branch"] == "partial_other"
    assert v["failed_checks"] == ["1k.loss_stft_falling"]


def test_around_step_sees_a_jump_where_stage_1_starts():
    from streamvc_rvq.evaluation.curves import around_step
    flat = [(s, 3.0) for s in range(5, 201, 5)]
    jump = [(s, 3.0 if s <= 100 else 3.6) for s, _ in flat]
    assert around_step(flat, 100, 25)["ratio"] == 1.0
    a = around_step(jump, 100, 25)
    assert a["ratio"] == pytest.approx(1.2) and (a["num_before"], a["num_after"]) == (5, 5)
    assert around_step([(s, v) for s, v in jump if s <= 100], 100, 25) is None  # nothing after it yet
