"""Plots: valid, non-empty PNG files, drawn the same way every time."""

from pathlib import Path

import pytest

from streamvc_rvq.reporting.plots import (
    plot_ab,
    plot_codebook,
    plot_conversion,
    plot_fidelity,
    plot_losses,
    plot_pre_rvq_std,
    plot_quality,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path):
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 2000, (path, len(data))
    # IHDR: width and height are non-zero
    assert int.from_bytes(data[16:20], "big") > 100 and int.from_bytes(data[20:24], "big") > 100


def scalars_for(max_step=10000, every=100):
    s = {}
    for step in range(0, max_step + 1, every):
        active = min(8, 1 + step // 2000)
        s.setdefault("train/loss_stft", []).append((step, 5.0 - step / 5000))
        s.setdefault("train/loss_l1", []).append((step, 0.1 - step / 300000))
        s.setdefault("train/pre_rvq_std", []).append((step, 1.0 + 0.02 * ((step // 100) % 3 - 1)))
        for i in range(active):
            s.setdefault(f"train/rvq_perplexity_q{i}", []).append((step, 2.0 + step / 400 - i))
            s.setdefault(f"train/rvq_usage_q{i}", []).append((step, 0.01 + step / 50000))
    return s


@pytest.mark.parametrize("with_scalars", [True, False])
def test_plots_are_valid_pngs(tmp_path, healthy_run, with_scalars):
    cps = healthy_run()
    sc = scalars_for() if with_scalars else None
    for fn, name in ((plot_codebook, "codebook.png"), (plot_pre_rvq_std, "pre_rvq_std.png"),
                     (plot_losses, "losses.png")):
        out = fn(cps, sc, tmp_path / "plots" / name)
        assert out == tmp_path / "plots" / name
        assert_png(out)


def test_same_input_same_bytes(tmp_path, healthy_run):
    """Agg output is deterministic: a re-run that changes nothing rewrites the same plot."""
    cps = healthy_run()
    first = plot_codebook(cps, scalars_for(), tmp_path / "a.png").read_bytes()
    assert plot_codebook(cps, scalars_for(), tmp_path / "b.png").read_bytes() == first


def test_ab_plot(tmp_path):
    def arm(*means, std=0.5):
        return {"perplexity": [{"stage": i, "mean": m, "std": std} for i, m in enumerate(means)]}

    comparison = {"arms": ["phase1", "phase1_beta1"], "steps": [
        {"step": 1000, "arms": {"phase1": arm(6.5), "phase1_beta1": arm(9.0, std=None)}},
        {"step": 2000, "arms": {"phase1": arm(8.5, 6.0), "phase1_beta1": arm(11.0, None)}},
    ]}
    png = plot_ab(comparison, tmp_path / "ab" / "perplexity.png")
    assert png == tmp_path / "ab" / "perplexity.png"
    assert_png(png)


def test_fidelity_plot(tmp_path, healthy_run):
    small, large = healthy_run((50, 100, 250, 500)), healthy_run((100, 200, 500, 1000))
    assert_png(plot_fidelity(small, large, {"scales": [0.05, 0.1]}, tmp_path / "fidelity.png"))


def test_quality_plot(tmp_path, healthy_run, reference):
    cps = healthy_run()
    assert_png(plot_quality(cps, reference, tmp_path / "quality.png"))
    assert_png(plot_quality(cps, None, tmp_path / "quality_no_reference.png"))


def test_conversion_plot_draws_every_measure_and_survives_missing_ones(tmp_path, healthy_run, monkeypatch):
    import matplotlib.pyplot as plt

    cps = healthy_run()
    drawn = []
    original = plt.Axes.plot
    monkeypatch.setattr(plt.Axes, "plot", lambda self, *a, **k: drawn.append(k.get("label")) or original(self, *a, **k))
    assert_png(plot_conversion(cps, tmp_path / "conversion.png"))
    monkeypatch.undo()
    assert {"model speaker embedding AUC", "target identified", "with the target's", "with the source's",
            "on the conversions", "on their sources"} <= set(drawn)
    for cp in cps:
        cp["outputs"]["quality"]["convert"].pop("pitch_level"), cp.pop("speaker_embedding")
    assert_png(plot_conversion(cps, tmp_path / "conversion_partial.png"))


def test_every_arm_of_the_full_ladder_has_its_own_curve_style(tmp_path, healthy_run):
    """With phase1 and 13 arms, no two arms share colour, marker and line (ten colours alone
    gave phase2_ema and phase2_fsq the same green), and the stage plot draws each arm that way."""
    import matplotlib.colors as mcolors
    import yaml

    from streamvc_rvq.reporting.ladder_report import _style, plot_stage_metric

    arms = yaml.safe_load((Path(__file__).parents[2] / "config" / "config.yaml").read_text())["ladder"]["arms"]
    assert len(arms) > 10
    styles = [_style(arm, arms, "phase1") for arm in arms]
    keys = {(mcolors.to_hex(s["color"]), s["marker"], s["linestyle"]) for s in styles}
    assert len(keys) == len(arms), styles
    out = plot_stage_metric({arm: {0: healthy_run()} for arm in arms}, "perplexity", tmp_path / "p.png", reference="phase1")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
