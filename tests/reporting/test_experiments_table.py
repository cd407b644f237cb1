"""The table of experiments: only differing config columns, metrics per checkpoint, sorting."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streamvc_rvq.metrics_view import flatten
from streamvc_rvq.reporting.experiments_table import build_table, differing_keys, read_runs, sort_rows


def _write_run(root, name, cps, config, verdict=None):
    metrics = root / name / "metrics"
    metrics.mkdir(parents=True)
    for cp in cps:
        cp["training_config"] = config
        (metrics / f"step_{cp['step']}.json").write_text(json.dumps(cp))
    if verdict:
        (root / name / "verdict.json").write_text(json.dumps(verdict))


def test_flatten_and_differing_keys():
    assert flatten({"model": {"rvq": {"distance": "cosine", "steps": [1, 2]}}, "x": 1}) == \
        {"model.rvq.distance": "cosine", "model.rvq.steps": [1, 2], "x": 1}
    configs = [{"a": 1, "b": [1, 2], "c": 3}, {"a": 1, "b": [1, 3]}]
    assert differing_keys(configs) == ["b", "c"]  # c is absent from the second: it differs
    assert differing_keys([{"a": 1}, {"a": 1}]) == []


def test_table_of_runs_on_disk(tmp_path, healthy_run, make_cp, hist):
    base = {"model": {"rvq": {"distance": "euclidean", "codebook_size": 1024}}, "train": {"lr": 1e-4}}
    cosine = {"model": {"rvq": {"distance": "cosine", "codebook_size": 1024}}, "train": {"lr": 1e-4}}
    _write_run(tmp_path, "quick/c/phase1", healthy_run(), base, {"class": "success", "branch": "success"})
    _write_run(tmp_path, "quick/c/phase2_cosine", [make_cp(s, counts=[hist.collapsed()], experiment="phase2_cosine")
                                                    for s in (1000, 2000)], cosine)
    runs = read_runs(tmp_path)
    assert [r["experiment"] for r in runs] == ["phase1", "phase2_cosine"]
    columns, rows = build_table(runs)
    assert columns[:8] == ["run", "experiment", "seed", "class", "codebook", "conversion", "branch", "model.rvq.distance"]
    assert "model.rvq.codebook_size" not in columns and "train.lr" not in columns  # equal everywhere
    by = {r["experiment"]: r for r in rows}
    assert by["phase1"]["class"] == "success" and by["phase2_cosine"]["class"] is None
    # a verdict from before the two answers reads its class as the codebook's, the conversion's unknown
    assert (by["phase1"]["codebook"], by["phase1"]["conversion"]) == ("success", None)
    assert by["phase1"]["perplexity_q0@10000"] == 25.0 and by["phase2_cosine"]["perplexity_q0@10000"] is None
    assert by["phase2_cosine"]["top_code_share_q0@2000"] > 0.99
    ranked = sort_rows(rows, "perplexity_q0@1000")
    assert [r["experiment"] for r in ranked] == ["phase2_cosine", "phase1"]
    assert [r["experiment"] for r in sort_rows(rows, "perplexity_q0@10000", descending=True)] == ["phase1", "phase2_cosine"]
    with pytest.raises(KeyError, match="no column"):
        sort_rows(rows, "nope")


def test_a_two_answer_verdict_shows_both_answers_side_by_side(tmp_path, healthy_run):
    from streamvc_rvq.verdict.decision import decide
    cps = healthy_run()
    cps[-1]["speaker_embedding"]["auc"] = 0.56
    verdict = decide(cps, steps=[1000, 2000, 5000, 10000], progressive_steps=2000,
                     reference={"speaker": {"same_mean": 0.9, "different_mean": 0.65, "auc": 0.99}})
    _write_run(tmp_path, "phase1", cps, {"train": {"lr": 1e-4}}, verdict)
    [row] = build_table(read_runs(tmp_path))[1]
    assert (row["class"], row["codebook"], row["conversion"]) == ("success", "success", "not_evaluable")


def test_cli_prints_and_writes_the_table(tmp_path, healthy_run):
    _write_run(tmp_path / "results", "phase1", healthy_run(), {"train": {"lr": 1e-4}})
    _write_run(tmp_path / "results", "phase1_beta1", healthy_run(experiment="phase1_beta1"), {"train": {"lr": 2e-4}})
    proc = subprocess.run([sys.executable, "-m", "streamvc_rvq", "experiments", "--results", str(tmp_path / "results"),
                           "--sort", "train.lr", "--descending", "--csv", str(tmp_path / "t.csv")],
                          capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    # a terminal gets the columns holding a value (no verdicts here) and the last checkpoint's metrics
    assert lines[0].startswith("| run | experiment | train.lr | perplexity_q0@10000 |") and "@5000" not in lines[0]
    assert "| phase1_beta1 | phase1_beta1 |" in lines[2] and "| phase1 | phase1 |" in lines[3]
    wide = subprocess.run([sys.executable, "-m", "streamvc_rvq", "experiments", "--results", str(tmp_path / "results"),
                           "--wide"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert wide[0].startswith("| run | experiment | seed | class | codebook | conversion | branch | train.lr |")
    assert "perplexity_q0@1000 |" in wide[0]
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("run,experiment,seed,class,codebook,conversion,branch,train.lr,")
    empty = subprocess.run([sys.executable, "-m", "streamvc_rvq", "experiments", "--results", str(tmp_path / "none")],
                           capture_output=True, text=True)
    assert empty.returncode != 0 and "no evaluated experiment" in empty.stderr


def test_a_run_from_before_a_model_key_existed_reads_at_that_keys_default(tmp_path, healthy_run):
    """An older run's metrics lack rvq.projection_dim: it was trained without a projection, so
    the column shows 0 for it, not a blank that would count as a difference."""
    old = {"model": {"rvq": {"distance": "euclidean"}}}
    new = {"model": {"rvq": {"distance": "euclidean", "projection_dim": 8}}}
    _write_run(tmp_path, "phase1", healthy_run(), old)
    _write_run(tmp_path, "lowdim", healthy_run(experiment="lowdim"), new)
    columns, rows = build_table(read_runs(tmp_path))
    assert "model.rvq.projection_dim" in columns and "model.rvq.implementation" not in columns
    assert {r["experiment"]: r["model.rvq.projection_dim"] for r in rows} == {"phase1": 0, "lowdim": 8}


def test_the_control_row_states_what_the_verdicts_found_of_it(tmp_path, healthy_run, make_cp, hist):
    _write_run(tmp_path, "phase1", healthy_run(), {"train": {"lr": 1e-4}},
               {"class": "partial", "control": {"control_experiment": "baseline", "collapse_reproduced": True}})
    _write_run(tmp_path, "baseline", [make_cp(s, counts=[hist.collapsed()], experiment="baseline")
                                      for s in (1000, 2000)], {"train": {"lr": 2e-4}})
    by = {r["experiment"]: r for r in build_table(read_runs(tmp_path))[1]}
    assert by["baseline"]["class"] == "control: collapse reproduced" and by["phase1"]["class"] == "partial"
