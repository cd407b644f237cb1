"""One table of every experiment that has been evaluated: one row per experiment (and seed),
the training-config values that differ between rows (only those, as DVC's ``exp show``
does), and the key metrics at each checkpoint. Built from the metrics files alone
(``results/.../{experiment}/metrics/step_N.json`` carry their ``training_config``) and the
verdicts next to them, so it covers whatever has been built, whatever config built it."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from streamvc_rvq.metrics_view import flatten, load, load_checkpoints, training_config
from streamvc_rvq.verdict.decision import answers

# (column suffix, path into a metrics dict); one home for what the table shows per checkpoint
CHECKPOINT_METRICS: tuple[tuple[str, tuple], ...] = (
    ("perplexity_q0", ("stages", 0, "perplexity")),
    ("top_code_share_q0", ("stages", 0, "top_code_share")),
    ("loss_stft", ("validation", "loss_stft")),
    ("dnsmos_ovrl", ("outputs", "quality", "convert", "dnsmos", "ovrl")),
    ("towards_target", ("outputs", "quality", "convert", "towards_target_margin")),
    ("frame_tone_db", ("outputs", "quality", "convert", "frame_tone", "excess_db")),
)


def differing_keys(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Sorted keys whose value is not the same in every config (absent counts as a value)."""

    def value(config: dict, key: str) -> str:
        return json.dumps(config[key], sort_keys=True, default=str) if key in config else "<absent>"

    keys = sorted({k for c in configs for k in c})
    return [k for k in keys if len({value(c, k) for c in configs}) > 1]


def _at(tree: Any, path: tuple) -> Any:
    for key in path:
        if isinstance(key, int):
            if not isinstance(tree, list) or len(tree) <= key:
                return None
        elif not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def read_runs(results: Path) -> list[dict]:
    """Every evaluated run under ``results``: ``{"path", "experiment", "seed", "config", "checkpoints", "verdict"}``.
    A run is a directory with ``metrics/step_*.json``; its ``verdict.json`` is read when present."""
    runs = []
    for metrics_dir in sorted(Path(results).glob("**/metrics")):
        files = sorted(metrics_dir.glob("step_*.json"))
        if not files:
            continue
        checkpoints = load_checkpoints(files)
        run_dir = metrics_dir.parent
        verdict_path = run_dir / "verdict.json"
        last = checkpoints[-1]
        runs.append({
            "path": str(run_dir.relative_to(results)),
            "experiment": last.get("experiment") or run_dir.name,
            "seed": last.get("seed"),
            "config": flatten(training_config(last)),
            "checkpoints": checkpoints,
            "verdict": load(verdict_path) if verdict_path.exists() else None,
        })
    return runs


def _control_classes(runs: Sequence[dict]) -> dict[str, str]:
    """The class of each control run as the verdicts that judged against it state it (a control
    has no verdict of its own): ``control: collapse reproduced`` or ``control: not reproduced``."""
    classes = {}
    for run in runs:
        control = (run["verdict"] or {}).get("control") or {}
        if control.get("control_experiment") is not None:
            said = "collapse reproduced" if control.get("collapse_reproduced") else "collapse not reproduced"
            classes.setdefault(control["control_experiment"], f"control: {said}")
    return classes


def build_table(runs: Sequence[dict]) -> tuple[list[str], list[dict]]:
    """(columns, rows): identity, verdict, the differing config values, then each checkpoint's metrics."""
    config_columns = differing_keys([r["config"] for r in runs])
    steps = sorted({int(cp["step"]) for r in runs for cp in r["checkpoints"]})
    metric_columns = [f"{name}@{step}" for step in steps for name, _ in CHECKPOINT_METRICS]
    columns = ["run", "experiment", "seed", "class", "codebook", "conversion", "branch", *config_columns, *metric_columns]
    controls = _control_classes(runs)
    rows = []
    for run in runs:
        codebook, conversion = answers(run["verdict"] or {})
        row = {"run": run["path"], "experiment": run["experiment"], "seed": run["seed"],
               "class": (run["verdict"] or {}).get("class") or controls.get(run["experiment"]),
               "codebook": codebook, "conversion": conversion,
               "branch": (run["verdict"] or {}).get("branch")}
        row.update({k: run["config"].get(k) for k in config_columns})
        for cp in run["checkpoints"]:
            for name, path in CHECKPOINT_METRICS:
                row[f"{name}@{int(cp['step'])}"] = _at(cp, path)
        rows.append({c: row.get(c) for c in columns})
    return columns, rows


def compact(columns: list[str], rows: list[dict]) -> list[str]:
    """The columns a terminal shows: those holding a value in some row, the per-checkpoint
    metrics at the last checkpoint only (``--wide``: every column)."""
    steps = sorted({int(c.rsplit("@", 1)[1]) for c in columns if "@" in c})
    keep = [c for c in columns if "@" not in c or int(c.rsplit("@", 1)[1]) == steps[-1]]
    return [c for c in keep if any(r.get(c) not in (None, "") for r in rows)]


def sort_rows(rows: list[dict], column: str | None, descending: bool = False) -> list[dict]:
    """Rows sorted by ``column`` (missing values last whatever the direction)."""
    if not column:
        return list(rows)
    if rows and column not in rows[0]:
        raise KeyError(f"no column {column!r}; columns: {', '.join(rows[0])}")
    present = [r for r in rows if r[column] is not None]
    absent = [r for r in rows if r[column] is None]
    return sorted(present, key=lambda r: (str(type(r[column])), r[column]), reverse=descending) + absent


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def to_csv(columns: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[_text(r[c]) for c in columns] for r in rows])
    return buffer.getvalue()


def to_markdown(columns: list[str], rows: list[dict]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_text(r[c]).replace("|", "\\|") for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"
